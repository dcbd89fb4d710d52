"""``task --list`` (the real go-task from the venv) lists every target the issue names, each with a
description, and the packaging target answers to ``install_poetry`` as well as its real name."""

from __future__ import annotations

import re
import subprocess

import yaml

from tests.deploy.deploy_files import REPO, find_tool

REQUIRED = (
    "install_docker",
    "install_pyenv",
    "install_poetry",
    "deploy_full_stack",
    "ci",
    "up",
    "down",
    "test",
    "lint",
    "bench",
    "logs",
)
LISTED = re.compile(r"^\* (?P<name>[\w:-]+):\s+(?P<desc>.+?)(?:\s+\(aliases: (?P<aliases>[^)]*)\))?\s*$")


def listed_tasks() -> dict[str, str]:
    """Task name (and each alias) -> description, as ``task --list`` prints them."""
    task = find_tool("task", ".venv/bin/pip install go-task-bin")
    result = subprocess.run(
        [task, "--dir", str(REPO), "--color=false", "--list"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    found: dict[str, str] = {}
    for line in result.stdout.splitlines():
        match = LISTED.match(line)
        if match:
            found[match["name"]] = match["desc"]
            for alias in (match["aliases"] or "").split(","):
                if alias.strip():
                    found[alias.strip()] = match["desc"]
    return found


def test_task_list_describes_every_required_target() -> None:
    tasks = listed_tasks()
    missing = [name for name in REQUIRED if name not in tasks]
    assert not missing, f"task --list does not show {missing}"
    for name in REQUIRED:
        assert len(tasks[name]) >= 15, f"{name} has no real description: {tasks[name]!r}"


def test_install_poetry_is_an_alias_of_the_packaging_tool_that_is_explained_in_the_docs() -> None:
    tasks = yaml.safe_load((REPO / "Taskfile.yaml").read_text(encoding="utf-8"))["tasks"]
    (owner,) = [name for name, task in tasks.items() if "install_poetry" in (task.get("aliases") or [])]
    assert "poetry" in (REPO / "docs" / "operations.md").read_text(encoding="utf-8")
    assert owner == "install_uv"


def test_deploy_full_stack_uses_the_pi_override_and_the_fullstack_profile() -> None:
    tasks = yaml.safe_load((REPO / "Taskfile.yaml").read_text(encoding="utf-8"))
    commands = " ".join(tasks["tasks"]["deploy_full_stack"]["cmds"])
    assert "-f docker-compose.pi.yaml" in commands and "--profile fullstack up -d" in commands
    assert tasks["vars"]["COMPOSE"].startswith("docker compose --env-file .env -f docker-compose.yaml")
