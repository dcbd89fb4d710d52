"""Each profile other than fullstack starts what the README's profile table says, and nothing else.

The table, the compose files' profiles and what runs are compared. Grafana and cAdvisor have no
stand-in here (compose_support.LEFT_OUT), so the profile's other services are named on the
command line; compose starts whatever they depend on, which must stay inside the profile."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from plantmon_dev.docker_engine import DockerEngine

from tests.containers.compose_support import LEFT_OUT, PROFILE_SERVICES, Compose
from tests.containers.conftest import stack_env_file
from tests.deploy.deploy_files import JOBS, REPO

pytestmark = [pytest.mark.containers, pytest.mark.timeout(900, func_only=True)]


def readme_profile_table() -> dict[str, set[str]]:
    """``| `profile` | services |`` rows of the README's profile table."""
    table: dict[str, set[str]] = {}
    for line in (REPO / "README.md").read_text(encoding="utf-8").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[0].startswith("`") and cells[0].strip("`") in PROFILE_SERVICES:
            table[cells[0].strip("`")] = {word.strip("`") for word in cells[2].split()}
    return table


@pytest.mark.parametrize("profile", sorted(PROFILE_SERVICES))
def test_the_profile_sets_are_the_readmes_and_the_compose_files(
    engine: DockerEngine, profile: str, tmp_path: Path
) -> None:
    table = readme_profile_table()
    assert set(table) == set(PROFILE_SERVICES)
    compose = Compose(engine, "plantmon-config", stack_env_file(tmp_path))
    # (docker-compose 1.29's `config --services` lists every service whatever the profile)
    services = yaml.safe_load(compose.run("config").stdout)["services"]
    configured = {name for name, service in services.items() if profile in service.get("profiles", [])}
    assert table[profile] == configured
    assert configured - LEFT_OUT == PROFILE_SERVICES[profile]


@pytest.mark.parametrize("profile", ["infrastructure", "opc", "sensors_only"])
def test_profile_starts_what_the_readme_says_and_nothing_else(
    engine: DockerEngine, images: dict[str, float], tmp_path_factory: pytest.TempPathFactory, profile: str
) -> None:
    compose = Compose(engine, f"plantmon-{profile.replace('_', '-')}", stack_env_file(tmp_path_factory.mktemp(profile)))
    compose.down(volumes=True)
    try:
        compose.up(profile)
        expected = sorted(PROFILE_SERVICES[profile])
        compose.wait_healthy(expected, timeout=300)
        started = compose.containers()
        assert set(started) == set(expected)
        for name, item in started.items():
            if name in JOBS:
                assert item["State"]["ExitCode"] == 0
            else:
                assert item["State"]["Running"], name
    finally:
        compose.down(volumes=True)
