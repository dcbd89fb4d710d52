"""Grafana's provisioning is well formed: datasources with unique uids (PostgreSQL as the read-only
role with the TimescaleDB option, Prometheus), a file provider for the mounted dashboards folder,
dashboards with unique uids that reference only provisioned datasources and variables they define,
and Grafana's own security settings (admin password from the environment, anonymous access off).
The dashboards' SQL is executed against the real schema in tests/grafana."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from tests.deploy.deploy_files import REPO

Resolve = Callable[..., dict[str, Any]]
PROVISIONING = REPO / "grafana" / "provisioning"
DASHBOARDS = REPO / "grafana" / "dashboards"
PG_TYPES = {"grafana-postgresql-datasource", "postgres"}


def load_yaml(path: Path) -> dict[str, Any]:
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(document, dict), path
    return document


def datasources() -> list[dict[str, Any]]:
    found = []
    for path in sorted((PROVISIONING / "datasources").glob("*.y*ml")):
        document = load_yaml(path)
        assert document["apiVersion"] == 1, path
        found += document["datasources"]
    return found


def dashboards() -> dict[Path, dict[str, Any]]:
    return {path: json.loads(path.read_text(encoding="utf-8")) for path in sorted(DASHBOARDS.rglob("*.json"))}


def datasource_refs(node: Any) -> Iterator[dict[str, Any]]:
    """Every ``"datasource": {...}`` object anywhere in a dashboard (panels, targets, variables)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource" and isinstance(value, dict):
                yield value
            yield from datasource_refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from datasource_refs(item)


def test_datasources_have_unique_uids_and_names() -> None:
    sources = datasources()
    assert len({ds["uid"] for ds in sources}) == len(sources)
    assert len({ds["name"] for ds in sources}) == len(sources)
    assert sum(bool(ds.get("isDefault")) for ds in sources) == 1


def test_postgres_datasource_is_the_read_only_role_with_timescaledb_on() -> None:
    (pg,) = [ds for ds in datasources() if ds["type"] in PG_TYPES]
    assert pg["user"] == "plantmon_reader"
    assert pg["url"] == "db:5432"
    assert pg["jsonData"]["timescaledb"] is True
    assert pg["secureJsonData"]["password"] == "$DB_READER_PASSWORD", "the password comes from the environment"
    (prometheus,) = [ds for ds in datasources() if ds["type"] == "prometheus"]
    assert prometheus["url"] == "http://prometheus:9090"


def test_grafana_container_defines_every_variable_the_provisioning_expands(resolve: Resolve) -> None:
    text = "\n".join(path.read_text(encoding="utf-8") for path in PROVISIONING.rglob("*.y*ml"))
    text = re.sub(r"(^|\s)#.*$", "", text, flags=re.MULTILINE)
    used = set(re.findall(r"\$\{?(\w+)", text))
    grafana = resolve()["services"]["grafana"]
    assert used <= set(grafana["environment"]), sorted(used - set(grafana["environment"]))
    assert grafana["environment"]["GF_AUTH_ANONYMOUS_ENABLED"] == "false"


def test_dashboard_provider_loads_the_mounted_dashboards_folder(resolve: Resolve) -> None:
    providers = []
    for path in (PROVISIONING / "dashboards").glob("*.y*ml"):
        document = load_yaml(path)
        assert document["apiVersion"] == 1, path
        providers += document["providers"]
    assert [p["options"]["path"] for p in providers] == ["/var/lib/grafana/dashboards"]
    assert all(p["type"] == "file" for p in providers)
    mounts = {v.split(":")[1]: v.split(":")[0] for v in resolve()["services"]["grafana"]["volumes"]}
    assert mounts["/var/lib/grafana/dashboards"] == str(DASHBOARDS)
    assert mounts["/etc/grafana/provisioning"] == str(PROVISIONING)


def test_dashboards_have_unique_uids_and_reference_only_provisioned_datasources() -> None:
    boards = dashboards()
    assert boards, "no dashboard in grafana/dashboards"
    uids = [board["uid"] for board in boards.values()]
    assert len(set(uids)) == len(uids) and all(uids)
    known = {ds["uid"]: ds["type"] for ds in datasources()}
    for path, board in boards.items():
        for ref in datasource_refs(board):
            assert ref["uid"] in known, f"{path.name}: unknown datasource {ref}"
            assert ref.get("type", known[ref["uid"]]) == known[ref["uid"]], f"{path.name}: {ref}"


def test_grafana_takes_its_admin_password_from_the_environment_and_refuses_anonymous_users(resolve: Resolve) -> None:
    environment = resolve()["services"]["grafana"]["environment"]
    assert environment["GF_SECURITY_ADMIN_PASSWORD"].startswith("test-only-"), "from .env, never a default"
    assert environment["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    compose_text = (REPO / "docker-compose.yaml").read_text(encoding="utf-8")
    assert "GF_SECURITY_ADMIN_PASSWORD: ${GF_SECURITY_ADMIN_PASSWORD:?" in compose_text


def test_the_three_dashboards_are_provisioned() -> None:
    titles = {board["uid"]: board["title"] for board in dashboards().values()}
    assert set(titles) == {"plantmon-overview", "plantmon-alerts", "plantmon-stack"}


def test_panels_have_unique_ids_and_do_not_overlap() -> None:
    for path, board in dashboards().items():
        panels = board["panels"]
        assert len({panel["id"] for panel in panels}) == len(panels), path.name
        cells: set[tuple[int, int]] = set()
        for panel in panels:
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= 24, f"{path.name}: {panel['title']} is wider than the grid"
            mine = {
                (x, y) for x in range(grid["x"], grid["x"] + grid["w"]) for y in range(grid["y"], grid["y"] + grid["h"])
            }
            assert not mine & cells, f"{path.name}: {panel['title']} overlaps another panel"
            cells |= mine


def test_dashboards_use_only_variables_they_define() -> None:
    builtins = {"__interval", "__interval_ms", "__rate_interval", "__range", "__data", "__value", "__from", "__to"}
    for path, board in dashboards().items():
        defined = {variable["name"] for variable in board["templating"]["list"]}
        text = json.dumps(board["panels"])
        used = set(re.findall(r"\$\{(\w+)", text)) | set(re.findall(r"\$(\w+)", text))
        used = {name for name in used if not name.startswith("__")} | (used & builtins)
        assert used - builtins <= defined, f"{path.name}: undefined variables {sorted(used - builtins - defined)}"


def test_every_prometheus_panel_query_names_a_metric_the_stack_exports() -> None:
    exported = ("plantmon_", "up", "pg_", "node_", "process_", "ALERTS")
    for path, board in dashboards().items():
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                if target.get("datasource", panel["datasource"])["uid"] != "plantmon-prometheus":
                    continue
                names = re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*(?=[{\[\s)]|$)", target["expr"])
                metrics = [n for n in names if n not in {"sum", "rate", "min", "max", "by"}]
                assert metrics and all(m.startswith(exported) for m in metrics), f"{path.name}: {target['expr']}"
