"""The one image recipe (services/Dockerfile) passes hadolint and keeps the build contract:
multi-stage on the pinned slim bookworm base, CI's install commands with the image's own lock, a
non-root user, a /health check; and every image the compose file builds uses it, with arguments
that match the compose service (its script, health port, and the folders its volumes mount)."""

from __future__ import annotations

import fnmatch
import re
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.deploy_files import BASE, REPO

RECIPE = REPO / "services" / "Dockerfile"
STANDINS = sorted((REPO / "tests" / "containers" / "standins").glob("*/Dockerfile"))


@dataclass(frozen=True)
class Image:
    service: str  # the compose service
    args: dict[str, str]

    @property
    def sources(self) -> tuple[str, ...]:
        return ("services/common", self.args["SERVICE_DIR"])

    @property
    def lock(self) -> str:
        return self.args["LOCK"]


def compose_services() -> dict[str, dict[str, Any]]:
    return yaml.safe_load(BASE.read_text(encoding="utf-8"))["services"]  # type: ignore[no-any-return]


IMAGES = {
    name: Image(name, {k: str(v) for k, v in service["build"]["args"].items()})  # type: ignore[index]
    for name, service in compose_services().items()
    if "build" in service
}


def instructions(path: Path) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` pairs, continuation lines joined, comments dropped."""
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    return [(m.group(1).upper(), m.group(2).strip()) for m in re.finditer(r"^(\w+)\s+(.*)$", joined, re.MULTILINE)]


@pytest.mark.parametrize("path", [RECIPE, *STANDINS], ids=lambda p: str(p.relative_to(REPO)))
def test_dockerfile_passes_hadolint(hadolint: str, path: Path) -> None:
    result = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "info", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_recipe_builds_a_venv_with_ci_commands_and_runs_it_slim_and_unprivileged() -> None:
    steps = instructions(RECIPE)
    args = [value for key, value in steps if key == "ARG"]
    assert re.fullmatch(r"PYTHON_IMAGE=python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", args[0])
    stages = [value for key, value in steps if key == "FROM"]
    assert stages == ["${PYTHON_IMAGE} AS builder", "${PYTHON_IMAGE} AS runtime"]
    runs = " ".join(value for key, value in steps if key == "RUN")
    assert "pip install --no-cache-dir --require-hashes -r requirements/images/${LOCK}.txt" in runs
    assert "pip install --no-cache-dir --no-deps ./services/common ./${SERVICE_DIR}" in runs
    runtime = steps[[i for i, (key, _) in enumerate(steps) if key == "FROM"][1] :]
    assert ("COPY", "--from=builder /opt/venv /opt/venv") in runtime
    assert not any(key == "COPY" and "--from" not in value for key, value in runtime), "only the venv"
    users = [value for key, value in runtime if key == "USER"]
    assert users and users[-1].split(":")[0] not in {"0", "root"}
    assert ("ENTRYPOINT", '["plantmon-service"]') in runtime
    check = dict(runtime)["HEALTHCHECK"]
    assert '"python", "-c"' in check and "urllib.request.urlopen" in check and "/health" in check


def test_there_is_one_recipe() -> None:
    recipes = sorted(str(p.relative_to(REPO)) for p in REPO.glob("*/**/Dockerfile") if "node_modules" not in p.parts)
    assert [r for r in recipes if not r.startswith("tests/containers/standins/")] == ["services/Dockerfile"]


def console_scripts(source_dir: str) -> dict[str, str]:
    project = tomllib.loads((REPO / source_dir / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return dict(project.get("scripts", {}))


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_image_arguments_match_its_compose_service(name: str) -> None:
    image, service = IMAGES[name], compose_services()[name]
    build = service["build"]
    assert build["context"] == "." and build["dockerfile"] == "services/Dockerfile"  # type: ignore[index]
    assert set(image.args) <= {
        "SERVICE_DIR", "LOCK", "SCRIPT", "BUILD_PACKAGES", "RUNTIME_PACKAGES", "DATA_DIRS",
        "HEALTH_PORT_VAR", "HEALTH_PORT",
    }  # fmt: skip
    assert image.args["SCRIPT"] in console_scripts(image.args["SERVICE_DIR"])
    assert (REPO / "requirements" / "images" / f"{image.lock}.txt").is_file()
    # Every named volume the service mounts is a folder the image made for its user.
    mounts = [str(v).split(":")[1] for v in service.get("volumes", []) if not str(v).startswith(("/", "."))]  # type: ignore[union-attr]
    assert set(mounts) <= set(image.args.get("DATA_DIRS", "").split()), f"{name}: volumes {mounts}"
    # The image's healthcheck asks the port the compose service's own healthcheck asks.
    port_var, port = image.args.get("HEALTH_PORT_VAR", ""), image.args.get("HEALTH_PORT", "")
    health = service.get("healthcheck", {})
    if health.get("disable"):  # type: ignore[union-attr]
        assert (port_var, port) == ("", ""), "a job has no port to probe"
    else:
        test = " ".join(health["test"])  # type: ignore[index]
        assert f"os.environ.get('{port_var}', '{port}')" in test
        assert port_var in service["environment"]  # type: ignore[operator]


def test_sensors_image_has_a_compiler_only_in_the_builder_and_portaudio_and_the_numba_cache() -> None:
    args = IMAGES["sensors"].args
    assert args["BUILD_PACKAGES"].split() == ["gcc", "libc6-dev"]
    assert args["RUNTIME_PACKAGES"].split() == ["libportaudio2"]
    assert "/var/cache/plantmon/numba" in args["DATA_DIRS"].split()
    assert all("BUILD_PACKAGES" not in image.args for name, image in IMAGES.items() if name != "sensors")


def dockerignore_excludes(path: str) -> bool:
    """Docker's rule: the last matching pattern decides (``!`` re-includes); a folder's match covers its files."""
    excluded = False
    for raw in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if pattern.startswith("**/"):
            matched = any(fnmatch.fnmatch(part, pattern[3:]) for part in parts)
        else:
            matched = any(fnmatch.fnmatchcase(prefix, pattern) for prefix in prefixes)
        if matched:
            excluded = not negate
    return excluded


def test_dockerignore_sends_what_the_images_copy_and_nothing_private() -> None:
    needed = {"services/common/src/plantmon_common/tags.py"}
    for image in IMAGES.values():
        needed.add(f"requirements/images/{image.lock}.txt")
        needed.update(f"{source}/pyproject.toml" for source in image.sources)
    for path in sorted(needed):
        assert not dockerignore_excludes(path), path
    for private in (".env", ".git/config", ".venv/bin/python", "services/sensors/tests/test_x.py", "docs/a.md"):
        assert dockerignore_excludes(private), private


def pins(lock: Path) -> dict[str, tuple[str, frozenset[str]]]:
    """``name -> (version, hashes)`` of a ``uv pip compile --generate-hashes`` file."""
    found: dict[str, tuple[str, frozenset[str]]] = {}
    text = re.sub(r"\\\n\s*", " ", lock.read_text(encoding="utf-8"))
    for line in text.splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-\[\]]+)==(\S+)(.*)$", line)
        if match:
            name = re.sub(r"\[.*\]", "", match.group(1)).lower()
            found[name] = (match.group(2), frozenset(re.findall(r"--hash=(sha256:[0-9a-f]{64})", match.group(3))))
    return found


def declared(distribution_dir: Path) -> set[str]:
    """The third-party names a distribution's pyproject.toml declares (plantmon-* left out)."""
    import tomllib

    project = tomllib.loads((distribution_dir / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    names = {re.split(r"[\s<>=!~;\[@]", dep, maxsplit=1)[0].lower() for dep in project["dependencies"]}
    return {name for name in names if not name.startswith("plantmon-")}


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_image_lock_has_what_its_distributions_declare_at_the_runtime_locks_versions(name: str) -> None:
    """Each image installs its own lock, not the union of every service's: the migrate image has no
    compiler, so a source-only package of the sensors (spidev) must not be in its lock."""
    image = IMAGES[name]
    lock = pins(REPO / "requirements" / "images" / f"{image.lock}.txt")
    runtime = pins(REPO / "requirements" / "runtime.txt")
    for package, (version, hashes) in lock.items():
        assert package in runtime, f"{package} is in the {image.lock} lock but not in runtime.txt"
        assert runtime[package] == (version, hashes), f"{package}: {version} differs from runtime.txt"
        assert hashes, f"{package} has no hash"
    wanted = set().union(*(declared(REPO / source) for source in image.sources))
    assert wanted <= set(lock), f"declared but not locked: {sorted(wanted - set(lock))}"
    (REPO / "requirements" / "images" / f"{image.lock}.in").read_text(encoding="utf-8")
    if name != "sensors":
        assert "spidev" not in lock and "librosa" not in lock
