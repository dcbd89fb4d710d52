"""Every SQL query of every provisioned dashboard, run the way Grafana runs it, against the real schema.

Each query is expanded as Grafana's PostgreSQL datasource expands it (TimescaleDB option on; see
``grafana_queries``), executed as ``plantmon_reader`` on a freshly migrated database holding two
years of a small plant's history, and checked for what its panel type needs: a ``time`` column
first and numeric values for time series and heatmaps, the mapped numeric fields for the XY
chart, numeric fields for gauges and stats, the linked ``id`` column for tables. Trend panels run
at 1 h, 6 h, 30 days and 2 years, and EXPLAIN must show the one relation that width should read:
raw ``samples``, ``samples_5s``, ``samples_1m`` or ``samples_1h``.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from tests.grafana.grafana_queries import (
    QueryContext,
    SqlTarget,
    Variable,
    dashboards,
    grafana_sql,
    sql_targets,
)
from tests.plugins.database import role_conninfo

LAYERS = ("samples", "samples_5s", "samples_1m", "samples_1h")
# Time ranges a trend panel is run at, and the relation each must read (max data points 1500).
TREND_RANGES = {
    "1h": (timedelta(hours=1), "samples"),
    "6h": (timedelta(hours=6), "samples_5s"),
    "30d": (timedelta(days=30), "samples_1m"),
    "2y": (timedelta(days=730), "samples_1h"),
}
NUMERIC = {"int2", "int4", "int8", "float4", "float8", "numeric"}
DATASOURCE_MIN_INTERVAL = "1s"  # grafana/provisioning/datasources: jsonData.timeInterval
DEFAULT_MAX_DATA_POINTS = 1000  # a panel without maxDataPoints gets about its width in pixels

MAIN_TAGS = {
    "Plant/Temperature/Upper": ("temperature", "upper", 81.5, 70.0),
    "Plant/Temperature/Lower": ("temperature", "lower", 64.0, 55.0),
    "Plant/RPM/MainShaft": ("rpm", "main_shaft", 1500.0, 1200.0),
    "Plant/Voltage/MainSupply": ("voltage", "main_supply", 12.1, 12.0),
}
BANDS = {f"Plant/Audio/Spectrum/Band_{n}": -60.0 + n for n in range(32)}


def is_trend(target: SqlTarget) -> bool:
    return all(f"FROM {layer} " in target.sql for layer in LAYERS)


TARGETS = sql_targets()


def superuser(env: dict[str, str]) -> str:
    return psycopg.conninfo.make_conninfo(
        host=env["PGHOST"], port=env["PGPORT"], dbname=env["PGDATABASE"], user=env["PGUSER"], password=env["PGPASSWORD"]
    )


def seed(env: dict[str, str], now: datetime) -> None:
    """The last hour at 20 s for every main tag and spectrum band (constant values), a sample every
    12 h for two years of the main tags (other values), three alerts; then the maintenance task
    builds the rollups and drops raw rows past their retention, as in production."""
    with psycopg.connect(superuser(env), autocommit=True) as conn:
        ids: dict[str, int] = {}
        for path, (sensor, tag, *_values) in MAIN_TAGS.items():
            ids[path] = conn.execute(
                "INSERT INTO tags (path, sensor, tag) VALUES (%s, %s, %s) RETURNING id", (path, sensor, tag)
            ).fetchone()[0]  # type: ignore[index]
        for n, path in enumerate(BANDS):
            ids[path] = conn.execute(
                "INSERT INTO tags (path, sensor, tag, unit) VALUES (%s, 'audio', %s, 'dB') RETURNING id",
                (path, f"spectrum/band_{n}"),
            ).fetchone()[0]  # type: ignore[index]
        conn.execute(
            "INSERT INTO tags (path, sensor, tag) "
            "VALUES ('Plant/Audio/MFCC/Coefficient_0', 'audio', 'mfcc/coefficient_0')"
        )
        recent = {path: values[2] for path, values in MAIN_TAGS.items()} | BANDS
        history = {path: values[3] for path, values in MAIN_TAGS.items()}
        for path, value in recent.items():
            conn.execute(
                "INSERT INTO samples (time, tag_id, value, status) "
                "SELECT %s - make_interval(secs => 20 * g), %s, %s, 0 FROM generate_series(1, 165) g",
                (now, ids[path], value),
            )
        for path, value in history.items():
            conn.execute(
                "INSERT INTO samples (time, tag_id, value, status) "
                "SELECT %s - make_interval(hours => 12 * g), %s, %s, 0 FROM generate_series(1, 2 * 729) g",
                (now, ids[path], value),
            )
        conn.execute(
            """
            INSERT INTO alerts (rule, tag_path, severity, state, message, value_at_raise, peak_value,
                                raised_at, acknowledged_at, acknowledged_by, cleared_at)
            VALUES
              ('upper_high', 'Plant/Temperature/Upper', 4, 'active', 'upper too hot', 112, 115,
               %(now)s - interval '10 minutes', NULL, NULL, NULL),
              ('lower_high', 'Plant/Temperature/Lower', 3, 'acknowledged', 'lower hot', 101, 103,
               %(now)s - interval '20 minutes', %(now)s - interval '20 minutes' + interval '90 seconds', 'ops', NULL),
              ('voltage_low', 'Plant/Voltage/MainSupply', 2, 'cleared', 'supply low', 10.5, 10.2,
               %(now)s - interval '40 minutes', %(now)s - interval '40 minutes' + interval '30 seconds', 'ops',
               %(now)s - interval '35 minutes')
            """,
            {"now": now},
        )
        conn.execute("SELECT * FROM plantmon_maintain()")


@pytest.fixture
def plant_db(migrated_db: dict[str, str]) -> Iterator[tuple[psycopg.Connection[Any], datetime]]:
    """A migrated database with the plant's history, and a connection to it as plantmon_reader."""
    now = datetime.now(UTC).replace(microsecond=0)
    seed(migrated_db, now)
    reader = role_conninfo(migrated_db, "plantmon_reader", migrated_db["reader_password"])
    with psycopg.connect(reader, autocommit=True) as conn:
        yield conn, now


def template_variables(board: dict[str, Any], conn: psycopg.Connection[Any]) -> dict[str, Variable]:
    """The dashboard's variables at their provisioned selection; a query variable asks the database."""
    variables = {}
    for spec in board.get("templating", {}).get("list", []):
        if spec["type"] == "query":
            options = tuple(str(row[0]) for row in conn.execute(spec["query"]).fetchall())
        elif spec["type"] == "custom":
            options = tuple(value.strip() for value in spec["query"].split(","))
        elif spec["type"] in {"textbox", "constant"}:
            options = (spec["query"],)
        else:
            raise AssertionError(f"variable type {spec['type']} is not modelled")
        current = spec.get("current", {}).get("value", options[0] if options else "")
        current = current if isinstance(current, list) else [current]
        selected = options if "$__all" in current else tuple(current)
        assert selected, f"{board['uid']}: variable {spec['name']} has no value"
        variables[spec["name"]] = Variable(spec["name"], selected, bool(spec.get("multi") or spec.get("includeAll")))
    return variables


def context(target: SqlTarget, now: datetime, span: timedelta) -> QueryContext:
    return QueryContext(
        start=now - span,
        end=now,
        max_data_points=int(target.panel.get("maxDataPoints", DEFAULT_MAX_DATA_POINTS)),
        min_interval=target.panel.get("interval") or DATASOURCE_MIN_INTERVAL,
    )


def run(conn: psycopg.Connection[Any], sql: str) -> tuple[list[tuple[str, str]], list[tuple[Any, ...]]]:
    """``([(column, type name)], rows)`` of a statement."""
    cursor = conn.execute(sql)  # type: ignore[arg-type]
    types = {oid: name for oid, name in conn.execute("SELECT oid, typname FROM pg_type").fetchall()}
    columns = [(column.name, types[column.type_code]) for column in cursor.description or []]
    return columns, cursor.fetchall()


def relations_read(conn: psycopg.Connection[Any], sql: str) -> set[str]:
    """Every relation the plan of ``sql`` scans."""
    (plan,) = conn.execute("EXPLAIN (FORMAT JSON) " + sql).fetchone()  # type: ignore[misc,operator]

    def walk(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            if "Relation Name" in node:
                yield node["Relation Name"]
            for value in node.values():
                yield from walk(value)
        elif isinstance(node, list):
            for item in node:
                yield from walk(item)

    return set(walk(plan))


def field_names(panel: dict[str, Any]) -> set[str]:
    """Fields the panel's configuration refers to by name (overrides, XY mapping)."""
    names = {
        override["matcher"]["options"]
        for override in panel.get("fieldConfig", {}).get("overrides", [])
        if override["matcher"]["id"] == "byName"
    }
    for series in panel.get("options", {}).get("series", []):
        names |= {series[axis]["matcher"]["options"] for axis in ("x", "y") if axis in series}
    return names


def check_shape(target: SqlTarget, columns: list[tuple[str, str]]) -> None:
    """The columns the panel type needs (Grafana's SQL response to data frame rules)."""
    panel, names = target.panel, [name for name, _ in columns]
    kinds = dict(columns)
    numeric = [name for name, kind in columns if kind in NUMERIC]
    assert len(names) == len(set(names)), f"duplicate column names {names}"
    assert field_names(panel) <= set(names), f"panel refers to missing fields {field_names(panel) - set(names)}"
    if target.target["format"] == "time_series":
        assert names[0] == "time" and kinds["time"] == "timestamptz", f"time series need time first: {columns}"
        others = [(name, kind) for name, kind in columns[1:] if name != "metric"]
        assert others and all(kind in NUMERIC for _, kind in others), f"value columns must be numeric: {columns}"
        if "metric" in kinds:
            assert kinds["metric"] == "text"
    if panel["type"] in {"timeseries", "heatmap"}:
        assert target.target["format"] == "time_series", f"{panel['type']} is fed as time series"
    if panel["type"] == "xychart":
        assert len(numeric) >= 2, f"an XY chart needs two numeric fields: {columns}"
        for series in panel["options"]["series"]:
            for axis in ("x", "y"):
                assert kinds[series[axis]["matcher"]["options"]] in NUMERIC
    if panel["type"] in {"gauge", "stat", "bargauge"}:
        assert numeric, f"{panel['type']} needs a numeric field: {columns}"
    if panel["type"] == "table":
        assert names, "a table needs columns"


@pytest.mark.parametrize("target", TARGETS, ids=[t.name for t in TARGETS])
def test_dashboard_query_runs_as_the_reader_and_returns_what_its_panel_needs(
    plant_db: tuple[psycopg.Connection[Any], datetime], target: SqlTarget
) -> None:
    conn, now = plant_db
    board = dashboards()[target.dashboard]
    variables = template_variables(board, conn)
    spans = {name: span for name, (span, _) in TREND_RANGES.items()} if is_trend(target) else {"1h": timedelta(hours=1)}
    results = {}
    for name, span in spans.items():
        sql = grafana_sql(target.sql, context(target, now, span), variables)
        columns, rows = run(conn, sql)
        check_shape(target, columns)
        results[name] = ([column for column, _ in columns], rows)
        if is_trend(target):
            read = relations_read(conn, sql) & set(LAYERS)
            assert read == {TREND_RANGES[name][1]}, f"{target.name} at {name} reads {read}"
    EXPECTATIONS.get(target.name, lambda _: None)(results)


# --- what the seeded plant must look like in each panel ------------------------------------------------


def by_column(result: tuple[list[str], list[tuple[Any, ...]]]) -> list[dict[str, Any]]:
    names, rows = result
    return [dict(zip(names, row, strict=True)) for row in rows]


def expect_temperatures(results: dict[str, Any]) -> None:
    recent = by_column(results["1h"])
    assert {(row["metric"], row["value"]) for row in recent} == {("lower", 64.0), ("upper", 81.5)}
    for wide in ("30d", "2y"):  # raw rows older than 30 days are gone: the history comes from rollups
        upper = {round(row["value"], 6) for row in by_column(results[wide]) if row["metric"] == "upper"}
        assert 70.0 in upper, f"{wide}: no historic value in {sorted(upper)[:5]}"
    assert len(by_column(results["2y"])) > 2 * 700, "about one point per 12 h over two years, per tag"


def expect_health(results: dict[str, Any]) -> None:
    (row,) = by_column(results["1h"])
    assert row["Temperature upper"] == 81.5 and row["Temperature lower"] == 64.0
    assert row["Shaft speed"] == 1500.0 and row["Supply voltage"] == 12.1
    assert 0 <= float(row["Data age"]) < 3600


def expect_xy(results: dict[str, Any]) -> None:
    assert {(row["rpm"], row["temperature_upper"]) for row in by_column(results["1h"])} == {(1500.0, 81.5)}
    assert len(by_column(results["2y"])) > 700


def expect_anomaly(results: dict[str, Any]) -> None:
    assert {row["metric"] for row in by_column(results["1h"])} == set(MAIN_TAGS)
    assert all(row["value"] == 0 for row in by_column(results["1h"])), "constant values are never anomalous"
    assert max(row["value"] for row in by_column(results["30d"])) > 1, "the recent hour stands out over 30 days"


def expect_spectrum(results: dict[str, Any]) -> None:
    levels = {row["metric"]: row["value"] for row in by_column(results["1h"])}
    assert levels == {f"band {n:02d}": -60.0 + n for n in range(32)}


def expect_alert_history(results: dict[str, Any]) -> None:
    rows = by_column(results["1h"])
    assert [row["state"] for row in rows] == ["active", "acknowledged", "cleared"]
    assert all(len(row["id"]) == 36 for row in rows), "the id links to /ui/alerts/{id}"


def expect_active(results: dict[str, Any]) -> None:
    assert by_column(results["1h"]) == [{"active": 1}]


def expect_by_severity(results: dict[str, Any]) -> None:
    assert by_column(results["1h"]) == [
        {"severity": "severity 3", "alerts": 1},
        {"severity": "severity 4", "alerts": 1},
    ]


def expect_ack_time(results: dict[str, Any]) -> None:
    (row,) = by_column(results["1h"])
    assert (row["median"], row["90th percentile"], row["never acknowledged"]) == (60.0, 84.0, 1)


def expect_open(results: dict[str, Any]) -> None:
    assert [row["severity"] for row in by_column(results["1h"])] == [4, 3]


EXPECTATIONS = {
    "plantmon-overview/Temperature trends/A": expect_temperatures,
    "plantmon-overview/System health/A": expect_health,
    "plantmon-overview/Shaft speed vs upper temperature/A": expect_xy,
    "plantmon-overview/Anomaly heatmap/A": expect_anomaly,
    "plantmon-overview/Audio spectrogram/A": expect_spectrum,
    "plantmon-overview/Alert history/A": expect_alert_history,
    "plantmon-alerts/Active alerts/A": expect_active,
    "plantmon-alerts/Open alerts by severity/A": expect_by_severity,
    "plantmon-alerts/Acknowledgement time/A": expect_ack_time,
    "plantmon-alerts/Open alerts/A": expect_open,
}


def test_every_expectation_names_an_existing_query() -> None:
    assert set(EXPECTATIONS) <= {target.name for target in TARGETS}


def test_the_overview_has_the_original_panels_and_every_trend_reads_the_rollups() -> None:
    overview = [t for t in TARGETS if t.dashboard == "plantmon-overview"]
    kinds = {t.panel["title"]: t.panel["type"] for t in overview}
    assert kinds == {
        "Temperature trends": "timeseries",
        "System health": "gauge",
        "Shaft speed vs upper temperature": "xychart",
        "Anomaly heatmap": "heatmap",
        "Audio spectrogram": "heatmap",
        "Alert history": "table",
    }
    trends = {t.panel["title"] for t in overview if is_trend(t)}
    assert trends == {"Temperature trends", "Shaft speed vs upper temperature", "Anomaly heatmap", "Audio spectrogram"}


def test_alert_tables_link_each_alert_to_the_operator_page() -> None:
    tables = [t for t in TARGETS if t.panel["type"] == "table" and "FROM alerts" in t.sql]
    assert len(tables) == 2
    for target in tables:
        board = dashboards()[target.dashboard]
        assert "alerts_url" in {v["name"] for v in board["templating"]["list"]}
        links = [
            link
            for override in target.panel["fieldConfig"]["overrides"]
            if override["matcher"]["options"] == "id"
            for prop in override["properties"]
            if prop["id"] == "links"
            for link in prop["value"]
        ]
        assert [link["url"] for link in links] == ["${alerts_url}/ui/alerts/${__data.fields.id}"]


def test_the_relation_check_catches_a_trend_query_that_reads_every_layer(
    plant_db: tuple[psycopg.Connection[Any], datetime],
) -> None:
    """A guard the planner cannot fold (here a sub-select) keeps every layer in the plan."""
    conn, now = plant_db
    (target,) = [t for t in TARGETS if t.name == "plantmon-overview/Temperature trends/A"]
    unguarded = SqlTarget(
        target.dashboard,
        target.panel,
        {**target.target, "rawSql": target.sql.replace("$__interval_ms", "(SELECT $__interval_ms)")},
    )
    variables = template_variables(dashboards()[target.dashboard], conn)
    sql = grafana_sql(unguarded.sql, context(unguarded, now, timedelta(days=730)), variables)
    assert relations_read(conn, sql) & set(LAYERS) == set(LAYERS)
