"""Every image's Dockerfile passes hadolint and keeps the build contract: multi-stage on the pinned
slim bookworm base, CI's install commands, a non-root user, the service's ports and a /health check."""

from __future__ import annotations

import fnmatch
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.deploy.deploy_files import REPO


@dataclass(frozen=True)
class Image:
    dockerfile: str
    sources: tuple[str, ...]
    script: str
    ports: tuple[int, ...]  # EXPOSEd; the last one serves /health
    lock: str  # requirements/images/<lock>.txt: only what this image's distributions need


IMAGES = {
    "sensors": Image(
        "services/sensors/Dockerfile", ("services/common", "services/sensors"), "plantmon-sensors", (8080,), "sensors"
    ),
    "opc_server": Image(
        "services/opc_server/Dockerfile",
        ("services/common", "services/opc_server"),
        "plantmon-opc-server",
        (4840, 9101),
        "opc-server",
    ),
    "opc_scraper": Image(
        "services/opc_scraper/Dockerfile",
        ("services/common", "services/opc_scraper"),
        "plantmon-scraper",
        (9102,),
        "scraper",
    ),
    "alert_worker": Image(
        "services/alert_worker/Dockerfile",
        ("services/common", "services/alert_worker"),
        "plantmon-alerts",
        (9103,),
        "alerts",
    ),
    "migrate": Image("db/Dockerfile", ("services/common", "db"), "plantmon-migrate", (), "migrate"),
}


def instructions(path: Path) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` pairs, continuation lines joined, comments dropped."""
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    return [(m.group(1).upper(), m.group(2).strip()) for m in re.finditer(r"^(\w+)\s+(.*)$", joined, re.MULTILINE)]


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_dockerfile_passes_hadolint(hadolint: str, name: str) -> None:
    result = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "info", str(REPO / IMAGES[name].dockerfile)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_image_builds_a_venv_with_ci_commands_and_runs_it_slim_and_unprivileged(name: str) -> None:
    image = IMAGES[name]
    steps = instructions(REPO / image.dockerfile)
    args = {key: value for key, value in steps if key == "ARG"}
    assert re.fullmatch(r"PYTHON_IMAGE=python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", args["ARG"])
    stages = [value for key, value in steps if key == "FROM"]
    assert stages == ["${PYTHON_IMAGE} AS builder", "${PYTHON_IMAGE} AS runtime"]
    runs = " ".join(value for key, value in steps if key == "RUN")
    assert f"pip install --no-cache-dir --require-hashes -r requirements/images/{image.lock}.txt" in runs
    installs = " ".join(f"./{source}" for source in image.sources)
    assert f"pip install --no-cache-dir --no-deps {installs}" in runs
    runtime = steps[[key for key, _ in steps].index("FROM", 1) :]
    assert ("COPY", "--from=builder /opt/venv /opt/venv") in runtime
    users = [value for key, value in runtime if key == "USER"]
    assert users and users[-1].split(":")[0] not in {"0", "root"}
    assert ("ENTRYPOINT", f'["{image.script}"]') in runtime


@pytest.mark.parametrize("name", sorted(set(IMAGES) - {"migrate"}))
def test_service_image_exposes_its_ports_and_checks_its_health_endpoint(name: str) -> None:
    image = IMAGES[name]
    steps = dict(instructions(REPO / image.dockerfile))
    assert sorted(int(port) for port in steps["EXPOSE"].split()) == sorted(image.ports)
    check = steps["HEALTHCHECK"]
    assert '"python", "-c"' in check and "urllib.request.urlopen" in check
    assert f"'{image.ports[-1]}') + '/health'" in check


def test_sensors_image_has_the_numba_cache_folder_and_portaudio() -> None:
    text = (REPO / IMAGES["sensors"].dockerfile).read_text(encoding="utf-8")
    assert "NUMBA_CACHE_DIR=/var/cache/plantmon/numba" in text
    assert re.search(r"install -d -o plantmon -g plantmon .*/var/cache/plantmon/numba", text)
    assert "libportaudio2" in text and "rm -rf /var/lib/apt/lists/*" in text


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
        for key, value in instructions(REPO / image.dockerfile):
            if key == "COPY" and not value.startswith("--from"):
                source = value.split()[0]
                needed.add(source if "." in Path(source).name else f"{source}/pyproject.toml")
    assert {f"requirements/images/{image.lock}.txt" for image in IMAGES.values()} <= needed
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
