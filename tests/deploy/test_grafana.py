"""Grafana's provisioning is well formed: datasources with unique uids (PostgreSQL as the read-only
role with the TimescaleDB option, Prometheus), a file provider for the mounted dashboards folder,
dashboards with unique uids that reference only provisioned datasources; and the dashboards' SQL
runs as plantmon_reader against the real schema."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
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


def sql_targets() -> list[tuple[str, str]]:
    """``(dashboard uid / panel title, rawSql)`` of every SQL query of every dashboard."""
    pg_uids = {ds["uid"] for ds in datasources() if ds["type"] in PG_TYPES}
    queries = []
    for dashboard in dashboards().values():
        for panel in dashboard.get("panels", []):
            for target in panel.get("targets", []):
                uid = (target.get("datasource") or panel.get("datasource") or {}).get("uid")
                if uid in pg_uids:
                    queries.append((f"{dashboard['uid']}/{panel['title']}", target["rawSql"]))
    return queries


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


def test_a_panel_trends_the_temperatures_from_sensor_data() -> None:
    queries = [sql for _, sql in sql_targets()]
    assert any("FROM sensor_data" in sql and "sensorname = 'temperature'" in sql for sql in queries)


def expand_macros(sql: str, start: datetime, end: datetime, interval: str = "60s") -> str:
    """What Grafana's PostgreSQL datasource (TimescaleDB option on) sends for the macros used here."""

    def time_group(match: re.Match[str], alias: bool) -> str:
        column = match.group(1).strip()
        expression = f"time_bucket('{interval}', {column})"
        return f'{expression} AS "time"' if alias else expression

    sql = re.sub(r"\$__timeGroupAlias\(([^,]+),\s*\$__interval\)", lambda m: time_group(m, True), sql)
    sql = re.sub(r"\$__timeGroup\(([^,]+),\s*\$__interval\)", lambda m: time_group(m, False), sql)
    sql = re.sub(
        r"\$__timeFilter\(([^)]+)\)",
        lambda m: f"{m.group(1)} BETWEEN '{start.isoformat()}' AND '{end.isoformat()}'",
        sql,
    )
    assert "$__" not in sql, f"a macro this test does not expand: {sql}"
    return sql


def seed_temperatures(migrated_db: dict[str, str], at: datetime) -> None:
    """Two temperature tags and a voltage tag with one sample each, written as the superuser."""
    superuser = psycopg.conninfo.make_conninfo(
        host=migrated_db["PGHOST"],
        port=migrated_db["PGPORT"],
        dbname=migrated_db["PGDATABASE"],
        user=migrated_db["PGUSER"],
        password=migrated_db.get("PGPASSWORD"),
    )
    with psycopg.connect(superuser) as conn:
        for path, sensor, tag, value in (
            ("Plant/Temperature/Upper", "temperature", "upper", 81.5),
            ("Plant/Temperature/Lower", "temperature", "lower", 64.0),
            ("Plant/Voltage/MainSupply", "voltage", "main_supply", 12.1),
        ):
            row = conn.execute(
                "INSERT INTO tags (path, sensor, tag, unit) VALUES (%s, %s, %s, '') RETURNING id", (path, sensor, tag)
            ).fetchone()
            assert row is not None
            conn.execute(
                "INSERT INTO samples (time, tag_id, value, status) VALUES (%s, %s, %s, 0)", (at, row[0], value)
            )


@pytest.mark.parametrize("name, sql", sql_targets(), ids=[name for name, _ in sql_targets()])
def test_dashboard_sql_runs_as_the_reader_against_the_real_schema(
    migrated_db: dict[str, str], name: str, sql: str
) -> None:
    end = datetime.now(UTC)
    seed_temperatures(migrated_db, end - timedelta(minutes=5))
    reader = psycopg.conninfo.make_conninfo(
        host=migrated_db["PGHOST"],
        port=migrated_db["PGPORT"],
        dbname=migrated_db["PGDATABASE"],
        user="plantmon_reader",
        password=migrated_db["reader_password"],
    )
    with psycopg.connect(reader) as conn:
        cursor = conn.execute(expand_macros(sql, end - timedelta(hours=1), end))  # type: ignore[arg-type]
        columns = [column.name for column in cursor.description or []]
        rows = cursor.fetchall()
    assert columns[0] == "time", "Grafana's time series format needs the time column first"
    if "sensorname = 'temperature'" in sql:
        assert sorted((row[1], row[2]) for row in rows) == [("lower", 64.0), ("upper", 81.5)]
