"""Every distribution declares exactly what its code imports, and nothing it does not import.

The imports are read from the sources with ``ast`` (nested and lazy imports included), mapped to
distributions with the development venv's ``importlib.metadata``, and compared with each
``pyproject.toml``'s dependencies (the common package's optional extras count as declared). The
images install each distribution's declared set (requirements/images), so an undeclared import
is an image that fails to start, and a stale declaration is an image that carries dead weight.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

from tests.deploy.deploy_files import REPO

DISTRIBUTIONS = {
    "plantmon-common": REPO / "services/common",
    "plantmon-sensors": REPO / "services/sensors",
    "plantmon-opc-server": REPO / "services/opc_server",
    "plantmon-scraper": REPO / "services/opc_scraper",
    "plantmon-alerts": REPO / "services/alert_worker",
    "plantmon-db": REPO / "db",
}
# Needed at run time although never imported by name, each for the reason given.
RUNTIME_ONLY = {
    "plantmon-alerts": {
        "aiohttp": "azure-eventhub's AMQP-over-WebSocket transport imports it",
        "python-multipart": "FastAPI's Form(...) parsing of the operator page imports it",
    },
    "plantmon-sensors": {"lgpio": "gpiozero's pin factory on the Pi 5 (aarch64 only)"},
}
# Namespace packages: the distribution is named by the first two parts of the module.
NAMESPACES = {"azure"}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    return canonical(re.split(r"[\s<>=!~;\[@]", requirement, maxsplit=1)[0])


def imported_modules(source_dir: Path) -> set[str]:
    """Top-level names (two levels for namespace packages) of every absolute import."""
    found: set[str] = set()
    for path in source_dir.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                parts = name.split(".")
                found.add(".".join(parts[:2]) if parts[0] in NAMESPACES else parts[0])
    return found


def distribution_of(module: str) -> str | None:
    """The distribution that provides ``module``, or None for the standard library."""
    top = module.split(".")[0]
    if top in sys.stdlib_module_names or top == "__future__":
        return None
    if top.startswith("plantmon_"):
        return {"plantmon_scraper": "plantmon-scraper", "plantmon_opc_server": "plantmon-opc-server"}.get(
            top, canonical(top)
        )
    if top in NAMESPACES:
        return canonical(module)
    providers = packages_distributions().get(top)
    assert providers, f"no installed distribution provides {module}"
    assert len(providers) == 1, f"{module} is provided by {providers}"
    return canonical(providers[0])


def declared(directory: Path) -> set[str]:
    project = tomllib.loads((directory / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    names = {requirement_name(dep) for dep in project["dependencies"]}
    for extra in project.get("optional-dependencies", {}).values():
        names |= {requirement_name(dep) for dep in extra}
    return names


@pytest.mark.parametrize("distribution", sorted(DISTRIBUTIONS))
def test_distribution_declares_exactly_what_it_imports(distribution: str) -> None:
    directory = DISTRIBUTIONS[distribution]
    imports = {distribution_of(module) for module in imported_modules(directory / "src")} - {None, distribution}
    runtime_only = set(RUNTIME_ONLY.get(distribution, {}))
    wanted = {name for name in imports if name is not None} | runtime_only
    have = declared(directory)
    assert not wanted - have, f"{distribution} imports but does not declare: {sorted(wanted - have)}"
    assert not have - wanted, f"{distribution} declares but does not import: {sorted(have - wanted)}"


def test_the_common_packages_web_and_database_parts_are_extras() -> None:
    """plantmon-common's FastAPI/uvicorn service helpers and its libpq connection string are optional
    extras, so the scraper, OPC UA server and migrate images carry no web framework."""
    project = tomllib.loads((DISTRIBUTIONS["plantmon-common"] / "pyproject.toml").read_text(encoding="utf-8"))
    core = {requirement_name(dep) for dep in project["project"]["dependencies"]}
    assert not core & {"fastapi", "uvicorn", "psycopg"}
    extras = project["project"]["optional-dependencies"]
    assert {requirement_name(dep) for dep in extras["web"]} == {"fastapi", "uvicorn"}
    assert {requirement_name(dep) for dep in extras["db"]} == {"psycopg"}
    for name in ("plantmon-scraper", "plantmon-opc-server", "plantmon-db"):
        deps = tomllib.loads((DISTRIBUTIONS[name] / "pyproject.toml").read_text(encoding="utf-8"))["project"]
        common = [dep for dep in deps["dependencies"] if requirement_name(dep) == "plantmon-common"]
        assert common and "web" not in common[0], name


def test_asyncua_is_pinned_to_the_minor_release_whose_internals_the_code_uses() -> None:
    for name, directory in DISTRIBUTIONS.items():
        project = tomllib.loads((directory / "pyproject.toml").read_text(encoding="utf-8"))["project"]
        for dep in project["dependencies"]:
            if requirement_name(dep) == "asyncua":
                assert dep.replace(" ", "") == "asyncua>=2.1,<2.2", name
