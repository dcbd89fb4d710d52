"""The ci/ folder (CI for a user's own forge) stays true to the repository: the multi-architecture
bake file builds exactly the compose file's project images from the same recipe and arguments for amd64 and
arm64, and the GitHub Actions workflow runs the scripts .ci/run runs."""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

from tests.deploy.deploy_files import BASE, REPO

CI = REPO / "ci"


def bake() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((CI / "docker-bake.json").read_text(encoding="utf-8"))
    return loaded


def resolved_targets() -> dict[str, dict[str, Any]]:
    """Bake targets with ``inherits`` applied and ``${VAR}`` defaults substituted."""
    spec = bake()
    defaults = {name: var["default"] for name, var in spec["variable"].items()}
    targets: dict[str, dict[str, Any]] = {}
    for name in spec["group"]["default"]["targets"]:
        target: dict[str, Any] = {}
        for parent in spec["target"][name].get("inherits", []):
            target.update(spec["target"][parent])
        target.update(spec["target"][name])
        target["tags"] = [re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], tag) for tag in target["tags"]]
        targets[name] = target
    return targets


def test_bake_builds_every_compose_image_for_amd64_and_arm64_from_its_dockerfile() -> None:
    services = yaml.safe_load(BASE.read_text(encoding="utf-8"))["services"]
    built = {
        service["image"].replace("${PLANTMON_VERSION:-dev}", "dev"): service["build"]
        for service in services.values()
        if "build" in service
    }
    targets = resolved_targets()
    by_tag = {target["tags"][0]: target for target in targets.values()}
    assert set(by_tag) == set(built)
    for tag, target in by_tag.items():
        assert target["dockerfile"] == built[tag]["dockerfile"]
        assert target["args"] == {key: str(value) for key, value in built[tag]["args"].items()}
        assert (REPO / target["dockerfile"]).is_file()
        assert target["context"] == "."
        assert sorted(target["platforms"]) == ["linux/amd64", "linux/arm64"]


def test_the_workflow_runs_what_ci_runs() -> None:
    workflow = yaml.safe_load((CI / "github-actions.yml").read_text(encoding="utf-8"))
    jobs = workflow["jobs"]
    assert {"tests", "containers", "multiarch"} <= set(jobs)
    ci_run = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert "bash scripts/bootstrap.sh test" in ci_run and "./task test" in ci_run

    def commands(job: str) -> str:
        return "\n".join(step.get("run", "") for step in jobs[job]["steps"])

    for job in ("tests", "containers"):
        assert "bash scripts/bootstrap.sh test" in commands(job)
        assert "./task test" in commands(job)
    assert "./task lint" in commands("tests")
    assert jobs["tests"]["env"]["PLANTMON_CONTAINER_TESTS"] == "skip"
    assert "tests/containers" in commands("containers")
    assert "ci/build-multiarch.sh" in commands("multiarch")
    assert (CI / "build-multiarch.sh").stat().st_mode & 0o111
