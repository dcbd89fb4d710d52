"""Every TimescaleDB migration, the continuous aggregates and the seed's queries on a real
TimescaleDB (2.23, PostgreSQL 17, compiled to WebAssembly; see conftest.py), through the same
runner and files as production. Policies are created but never run here (no background workers),
so the tests refresh the aggregates themselves."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg
import pytest
from plantmon_db.migrate import ROLES, StoragePath, load_migrations, migrate
from psycopg import sql

from db.tests.storage_queries import (
    COLUMNS_QUERY,
    INSERT_SAMPLES,
    INSERT_TAGS,
    ROLLUP_COLUMNS,
    ROLLUP_QUERY,
    ROLLUPS,
    SEED_JOIN_QUERY,
    SEED_QUERY,
    START,
    WIDTHS,
    check_rollup,
    expected_rollup,
    series,
)
from tests.plugins.database import role_conninfo
from tests.timescale.conftest import WasmTimescale


def timescale_migrations() -> list[str]:
    return [m.name for m in load_migrations() if m.applies_to(StoragePath.TIMESCALE)]


N = 3900  # one sample a second: two 1 h buckets, 65 minutes, 780 five-second buckets


def migrate_wasm(db: WasmTimescale, **kwargs: object) -> list[str]:
    return migrate(db.conninfo(), prepare_threshold=None, **kwargs)  # type: ignore[arg-type]


def load_series(conn: psycopg.Connection[tuple[Any, ...]], n: int = N) -> tuple[int, int]:
    upper, lower = (int(r[0]) for r in conn.execute(INSERT_TAGS).fetchall())  # type: ignore[call-overload]
    conn.execute(INSERT_SAMPLES, {"start": START, "upper": upper, "lower": lower, "n": n})
    return upper, lower


def refresh_all(conn: psycopg.Connection[tuple[Any, ...]]) -> None:
    for view in ROLLUPS:
        conn.execute(sql.SQL("CALL refresh_continuous_aggregate({}, NULL, NULL)").format(sql.Literal(view)))


def test_every_timescale_migration_applies_once_and_builds_the_hypertable(wasm_timescale: WasmTimescale) -> None:
    expected = timescale_migrations()
    assert migrate_wasm(wasm_timescale, role_passwords={"plantmon_reader": "r-Secret-1"}) == expected
    assert migrate_wasm(wasm_timescale) == []
    with wasm_timescale.connect() as conn:
        assert {str(r[0]) for r in conn.execute("SELECT storage_path FROM schema_migrations")} == {"timescale"}
        (interval,) = conn.execute(
            "SELECT time_interval FROM timescaledb_information.dimensions WHERE hypertable_name = 'samples'"
        ).fetchone()  # type: ignore[misc]
        assert interval == timedelta(hours=6)
        segment = conn.execute(
            "SELECT attname, segmentby_column_index, orderby_column_index, orderby_asc "
            "FROM timescaledb_information.compression_settings WHERE hypertable_name = 'samples' ORDER BY attname"
        ).fetchall()
        assert segment == [("tag_id", 1, None, None), ("time", None, 1, False)]
        views = dict(
            conn.execute(
                "SELECT view_name, materialized_only FROM timescaledb_information.continuous_aggregates"
            ).fetchall()
        )
        assert views == {"samples_5s": False, "samples_1m": False, "samples_1h": False}
        # The stack: 1 min reads 5 s, 1 h reads 1 min.
        sources = dict(
            conn.execute(
                "SELECT view_name, view_definition FROM timescaledb_information.continuous_aggregates"
            ).fetchall()
        )
        assert "FROM samples_5s" in str(sources["samples_1m"]) and "FROM samples_1m" in str(sources["samples_1h"])
        roles = {str(r[0]) for r in conn.execute("SELECT rolname FROM pg_roles WHERE rolname LIKE 'plantmon%'")}
        assert roles == set(ROLES)
        # 0011: no foreign key on the hypertable, nor on a chunk created before or after it.
        load_series(conn, 60)
        assert samples_foreign_keys(conn) == (1, [])


def samples_foreign_keys(conn: psycopg.Connection[tuple[Any, ...]]) -> tuple[int, list[str]]:
    """The chunks of ``samples``, and every relation with a foreign key to ``tags`` (the hypertable,
    its chunks, their compressed tables: wherever TimescaleDB keeps a copy of the key)."""
    (chunks,) = conn.execute(
        "SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_name = 'samples'"
    ).fetchone()  # type: ignore[misc]
    foreign = conn.execute(
        "SELECT conrelid::regclass::text FROM pg_constraint WHERE contype = 'f' AND confrelid = 'tags'::regclass"
    ).fetchall()
    return int(chunks), sorted(str(r[0]) for r in foreign)  # type: ignore[call-overload]


def jobs(conn: psycopg.Connection[tuple[Any, ...]]) -> dict[tuple[str, str], dict[str, object]]:
    rows = conn.execute(
        "SELECT hypertable_name, proc_name, config FROM timescaledb_information.jobs WHERE hypertable_name IS NOT NULL"
    ).fetchall()
    out: dict[tuple[str, str], dict[str, object]] = {}
    views = dict(
        conn.execute(
            "SELECT materialization_hypertable_name, view_name FROM timescaledb_information.continuous_aggregates"
        ).fetchall()
    )
    for table, proc, config in rows:
        out[(str(views.get(table, table)), str(proc))] = config  # type: ignore[assignment]
    return out


def as_interval(conn: psycopg.Connection[tuple[Any, ...]], text: object) -> timedelta:
    (value,) = conn.execute("SELECT %s::interval", (str(text),)).fetchone()  # type: ignore[misc]
    return value  # type: ignore[no-any-return]


def test_policies_follow_the_storage_settings_and_stay_inside_retention(wasm_timescale: WasmTimescale) -> None:
    migrate_wasm(wasm_timescale)
    with wasm_timescale.connect() as conn:
        policy = jobs(conn)
        assert as_interval(conn, policy[("samples", "policy_compression")]["compress_after"]) == timedelta(days=7)
        for table, keep in (("samples", 30), ("samples_5s", 90), ("samples_1m", 730), ("samples_1h", 3650)):
            assert as_interval(conn, policy[(table, "policy_retention")]["drop_after"]).days >= keep * 0.99, table
        source_keep = {"samples_5s": 30, "samples_1m": 90, "samples_1h": 730}
        for view, keep in source_keep.items():
            start = as_interval(conn, policy[(view, "policy_refresh_continuous_aggregate")]["start_offset"])
            # Inside the source's retention, and longer than compress_after (late rows of a replay).
            assert timedelta(days=7) < start < timedelta(days=keep), view

    migrate_wasm(
        wasm_timescale,
        storage={"raw_retention": "14 days", "compress_after": "3 days", "rollup_1h_retention": "5 years"},
    )
    with wasm_timescale.connect() as conn:
        policy = jobs(conn)
        assert as_interval(conn, policy[("samples", "policy_retention")]["drop_after"]) == timedelta(days=14)
        assert as_interval(conn, policy[("samples", "policy_compression")]["compress_after"]) == timedelta(days=3)
        start = as_interval(conn, policy[("samples_5s", "policy_refresh_continuous_aggregate")]["start_offset"])
        assert timedelta(days=3) < start < timedelta(days=14)
        # Replaced, not stacked.
        (count,) = conn.execute(
            "SELECT count(*) FROM timescaledb_information.jobs WHERE proc_name = 'policy_retention'"
        ).fetchone()  # type: ignore[misc]
        assert count == 4


def test_continuous_aggregates_are_exact_at_every_layer_and_real_time(wasm_timescale: WasmTimescale) -> None:
    migrate_wasm(wasm_timescale)
    with wasm_timescale.connect() as conn:
        load_series(conn)
        refresh_all(conn)
        raw = series(N)
        for table in ROLLUPS:
            for tag in ("upper", "lower"):
                rows = conn.execute(sql.SQL(ROLLUP_QUERY).format(table=sql.Identifier(table)), (tag,)).fetchall()
                check_rollup(rows, expected_rollup(raw[tag], WIDTHS[table]), f"{table}/{tag}")
        # Real-time aggregation: rows after the last refresh show up without one.
        (upper,) = conn.execute("SELECT id FROM tags WHERE tag = 'upper'").fetchone()  # type: ignore[misc]
        late = START + timedelta(hours=3)
        conn.execute(
            "INSERT INTO samples VALUES (%s, %s, 42.0, 0), (%s, %s, 44.0, 0)",
            (late, upper, late + timedelta(seconds=1), upper),
        )
        for table in ROLLUPS:
            row = conn.execute(
                sql.SQL("SELECT avg, count, last FROM {} WHERE tag_id = %s AND bucket = %s").format(
                    sql.Identifier(table)
                ),
                (upper, late),
            ).fetchone()
            assert row == (43.0, 2, 44.0), table


def test_compressed_chunks_stay_queryable(wasm_timescale: WasmTimescale) -> None:
    migrate_wasm(wasm_timescale)
    with wasm_timescale.connect() as conn:
        load_series(conn, 600)
        (compressed,) = conn.execute("SELECT count(compress_chunk(c)) FROM show_chunks('samples') c").fetchone()  # type: ignore[misc]
        assert compressed >= 1
        rows = conn.execute(SEED_QUERY, (START, START + timedelta(seconds=20))).fetchall()
        assert rows == [(START + timedelta(seconds=5 * k), 5 * k + 2.0) for k in range(4)]


def test_seed_queries_run_unchanged_for_the_reader(wasm_timescale: WasmTimescale) -> None:
    migrate_wasm(wasm_timescale, role_passwords={"plantmon_reader": "r-Secret-2"})
    with wasm_timescale.connect() as conn:
        load_series(conn, 60)
        # The reader role exists and may read every relation Grafana uses.
        conn.execute("SET ROLE plantmon_reader")
        rows = conn.execute(SEED_QUERY, (START, START + timedelta(seconds=20))).fetchall()
        assert rows == [(START + timedelta(seconds=5 * k), 5 * k + 2.0) for k in range(4)]
        joined = conn.execute(SEED_JOIN_QUERY, {"lo": START, "hi": START + timedelta(seconds=10)}).fetchall()
        lower = series(60)["lower"]
        assert [(r[0], r[1]) for r in joined] == [(START, 2.0), (START + timedelta(seconds=5), 7.0)]
        assert joined[0][2] == sum(v for _, v in lower[:5] if v is not None) / 5
        for table in ROLLUPS:
            conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()
        conn.execute("RESET ROLE")


def test_rollup_columns_are_the_same_on_both_paths(wasm_timescale: WasmTimescale, migrated_db: dict[str, str]) -> None:
    migrate_wasm(wasm_timescale)
    plain = role_conninfo(migrated_db, migrated_db["PGUSER"], migrated_db["PGPASSWORD"])
    with wasm_timescale.connect() as ts, psycopg.connect(plain) as pg:
        for table in (*ROLLUPS, "samples", "tags", "sensor_data"):
            ts_columns = ts.execute(COLUMNS_QUERY, (table,)).fetchall()
            assert ts_columns == pg.execute(COLUMNS_QUERY, (table,)).fetchall(), table
            if table in ROLLUPS:
                assert [c for c, _ in ts_columns] == ROLLUP_COLUMNS


@pytest.mark.parametrize("previous", ["newest-but-one", "0005_roles"])
def test_upgrade_from_an_earlier_schema_keeps_the_data(wasm_timescale: WasmTimescale, previous: str) -> None:
    names = timescale_migrations()
    target = names[-2] if previous == "newest-but-one" else previous
    assert migrate_wasm(wasm_timescale, target=target) == names[: names.index(target) + 1]
    with wasm_timescale.connect() as conn:
        load_series(conn, 600)
        before = conn.execute("SELECT tag_id, time, value, status FROM samples ORDER BY 1, 2").fetchall()
        chunks, foreign = samples_foreign_keys(conn)
        assert "samples" in foreign and len(foreign) >= chunks + 1  # the key before 0011 (chunks from 0007)
        if chunks:
            # A deployment older than compress_after has compressed chunks: the key must go from those too.
            compressed = conn.execute("SELECT count(compress_chunk(c)) FROM show_chunks('samples') c").fetchone()
            assert compressed == (chunks,)
    assert migrate_wasm(wasm_timescale) == names[names.index(target) + 1 :]
    with wasm_timescale.connect() as conn:
        assert conn.execute("SELECT tag_id, time, value, status FROM samples ORDER BY 1, 2").fetchall() == before
        assert samples_foreign_keys(conn)[1] == []  # 0011 dropped it on the hypertable and its chunks
        refresh_all(conn)
        check_rollup(
            conn.execute(sql.SQL(ROLLUP_QUERY).format(table=sql.Identifier("samples_1m")), ("upper",)).fetchall(),
            expected_rollup(series(600)["upper"], WIDTHS["samples_1m"]),
            "samples_1m after the upgrade",
        )
