"""Fixtures of the container suite: the engine, the images (built once per run), and the stack.

The suite needs a Docker engine: as root it starts Debian's ``dockerd`` itself (``scripts/bootstrap.sh
test`` installs ``docker.io``, ``debootstrap`` and ``docker-compose``); ``PLANTMON_DOCKER_HOST`` names
one already running instead. Without either it fails and says so; ``PLANTMON_CONTAINER_TESTS=skip``
opts out explicitly (a laptop without root), and the run then says it skipped them.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from plantmon_dev.docker_engine import BASE_IMAGE, DockerEngine, EngineError
from plantmon_dev.procs import is_root

from services.alert_worker.tests.amqp_peer import EventHubPeer
from tests.containers.compose_support import ALL_BUILT, Compose
from tests.deploy.deploy_files import template_values

logger = logging.getLogger(__name__)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("PLANTMON_CONTAINER_TESTS") != "skip":
        return
    skip = pytest.mark.skip(reason="PLANTMON_CONTAINER_TESTS=skip: the container suite was not run")
    for item in items:
        if "tests/containers/" in item.nodeid:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def engine() -> Iterator[DockerEngine]:
    engine = DockerEngine()
    if not engine.host and not is_root() and not engine.answers():
        pytest.fail(
            "the container suite needs a Docker engine: run as root (it starts Debian's dockerd itself), "
            "set PLANTMON_DOCKER_HOST to a running engine, or set PLANTMON_CONTAINER_TESTS=skip"
        )
    try:
        try:
            engine.start()
            remove_leftovers(engine)
            engine.ensure_base_image()
        except EngineError as exc:
            pytest.fail(str(exc))
        yield engine
    finally:
        engine.stop()


def remove_leftovers(engine: DockerEngine) -> None:
    """Containers and networks of the suite's projects that an interrupted run left on a kept data
    root: a leftover DMZ network holds the fixed DMZ subnet, and every later ``up`` would fail."""
    leftovers = engine.docker("ps", "-aq", "--filter", "label=com.docker.compose.project").stdout.split()
    ours = [
        cid
        for cid in leftovers
        if engine.docker("inspect", "--format", '{{index .Config.Labels "com.docker.compose.project"}}', cid)
        .stdout.strip()
        .startswith("plantmon-")
    ]
    if ours:
        engine.docker("rm", "-f", *ours, timeout=300)
    engine.docker("network", "prune", "-f", "--filter", "label=com.docker.compose.project", timeout=120)


def stack_env_file(directory: Path, **overrides: str) -> Path:
    """The README's ``.env`` made from ``.env.template``: every CHANGE_ME placeholder a fresh secret."""
    values = template_values()
    for name, value in values.items():
        if value.startswith("CHANGE_ME"):
            values[name] = f"t{secrets.token_hex(12)}"
    values.update(overrides)
    path = directory / "stack.env"
    path.write_text("".join(f"{name}={value}\n" for name, value in values.items()), encoding="utf-8")
    return path


def read_env(path: Path) -> dict[str, str]:
    pairs = (line.partition("=") for line in path.read_text(encoding="utf-8").splitlines() if "=" in line)
    return {name: value for name, _, value in pairs}


@pytest.fixture(scope="session")
def images(engine: DockerEngine, tmp_path_factory: pytest.TempPathFactory) -> dict[str, float]:
    """Every image of the CI stack, built once (the engine's layer cache is kept between runs).

    Returns the seconds the build took, by what was built."""
    env_file = stack_env_file(tmp_path_factory.mktemp("build"))
    compose = Compose(engine, "plantmon-build", env_file)
    started = time.monotonic()
    compose.run("--profile", "fullstack", "build", "--parallel", *sorted(ALL_BUILT), timeout=3600)
    seconds = time.monotonic() - started
    print(f"images built in {seconds:.0f} s (base image {BASE_IMAGE})")
    return {"all": seconds}


@pytest.fixture(scope="session")
def eventhub_peer(engine: DockerEngine) -> Iterator[EventHubPeer]:
    """The tests' Event Hubs AMQP peer on the engine's bridge, reached from the alert worker's
    container as ``host.docker.internal``."""
    with EventHubPeer(front_host=engine.bridge_gateway(), advertised_host="host.docker.internal") as peer:
        yield peer
