"""The plain-PostgreSQL storage path: rollups with the same columns as TimescaleDB's continuous
aggregates kept current by plantmon_maintain() (called by the scraper as plantmon_writer),
retention per layer from storage_settings, the seed's queries, and upgrades that keep data."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from plantmon_db.migrate import MigrationError, StoragePath, load_migrations, migrate
from plantmon_dev.postgres import PostgresCluster
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

N = 3900


def plain_migrations() -> list[str]:
    return [m.name for m in load_migrations() if m.applies_to(StoragePath.PLAIN)]


def superuser(env: dict[str, str]) -> str:
    return role_conninfo(env, env["PGUSER"], env["PGPASSWORD"])


def writer(env: dict[str, str]) -> str:
    return role_conninfo(env, "plantmon_writer", env["writer_password"])


def load_series(conn: psycopg.Connection[tuple[Any, ...]], n: int = N) -> tuple[int, int]:
    upper, lower = (int(r[0]) for r in conn.execute(INSERT_TAGS).fetchall())  # type: ignore[call-overload]
    conn.execute(INSERT_SAMPLES, {"start": START, "upper": upper, "lower": lower, "n": n})
    conn.commit()
    return upper, lower


def maintain(conninfo: str) -> tuple[int, int]:
    with psycopg.connect(conninfo) as conn:
        return conn.execute("SELECT ranges_refreshed, rows_expired FROM plantmon_maintain()").fetchone()  # type: ignore[return-value]


def test_rollups_have_the_continuous_aggregates_columns(migrated_db: dict[str, str]) -> None:
    with psycopg.connect(superuser(migrated_db)) as conn:
        for table in ROLLUPS:
            columns = conn.execute(COLUMNS_QUERY, (table,)).fetchall()
            assert [c for c, _ in columns] == ROLLUP_COLUMNS
            types = {str(c): str(t) for c, t in columns}
            assert types["count"] == "bigint" and types["bucket"] == "timestamp with time zone"


def test_maintenance_by_the_writer_makes_every_layer_exact(migrated_db: dict[str, str]) -> None:
    with psycopg.connect(superuser(migrated_db)) as conn:
        load_series(conn)
    assert maintain(writer(migrated_db))[0] == 1
    raw = series(N)
    with psycopg.connect(role_conninfo(migrated_db, "plantmon_reader", migrated_db["reader_password"])) as conn:
        for table in ROLLUPS:
            for tag in ("upper", "lower"):
                rows = conn.execute(sql.SQL(ROLLUP_QUERY).format(table=sql.Identifier(table)), (tag,)).fetchall()
                check_rollup(rows, expected_rollup(raw[tag], WIDTHS[table]), f"{table}/{tag}")
    # Nothing changed: nothing to refresh.
    assert maintain(writer(migrated_db)) == (0, 0)


def test_late_rows_of_a_replay_update_the_rollups(migrated_db: dict[str, str]) -> None:
    with psycopg.connect(superuser(migrated_db)) as conn:
        upper, _ = load_series(conn, 600)
    maintain(writer(migrated_db))
    late = START + timedelta(seconds=2, milliseconds=500)  # inside the first 5 s bucket
    with psycopg.connect(writer(migrated_db)) as conn:
        conn.execute("INSERT INTO samples VALUES (%s, %s, 100.0, 0)", (late, upper))
    maintain(writer(migrated_db))
    with psycopg.connect(superuser(migrated_db)) as conn:
        row = conn.execute(
            "SELECT avg, count, max, last FROM samples_5s WHERE tag_id = %s AND bucket = %s", (upper, START)
        ).fetchone()
        assert row == ((0 + 1 + 2 + 3 + 4 + 100) / 6, 6, 100.0, 4.0)
        (count_1h,) = conn.execute(
            "SELECT count FROM samples_1h WHERE tag_id = %s AND bucket = %s", (upper, START)
        ).fetchone()  # type: ignore[misc]
        assert count_1h == 601


def test_retention_per_layer_follows_storage_settings(migrated_db: dict[str, str]) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    with psycopg.connect(superuser(migrated_db)) as conn:
        (tag,) = conn.execute(
            "INSERT INTO tags (path, sensor, tag) VALUES ('Plant/RPM/MainShaft', 'rpm', 'main_shaft') RETURNING id"
        ).fetchone()  # type: ignore[misc]
        ages = [timedelta(days=d) for d in (1, 20, 40, 100, 800, 4000)]
        conn.execute(
            "INSERT INTO samples SELECT %s::timestamptz - a, %s, 1.0, 0 FROM unnest(%s::interval[]) a",
            (now, tag, ages),
        )
        conn.commit()
    migrate(superuser(migrated_db), storage={"raw_retention": "10 days"})
    maintain(writer(migrated_db))
    with psycopg.connect(superuser(migrated_db)) as conn:

        def ages_left(table: str, column: str) -> list[int]:
            rows = conn.execute(
                sql.SQL("SELECT {c} FROM {t} ORDER BY {c} DESC").format(
                    t=sql.Identifier(table), c=sql.Identifier(column)
                )
            ).fetchall()
            return [round((now - r[0]).total_seconds() / 86400) for r in rows]  # type: ignore[operator]

        assert ages_left("samples", "time") == [1]  # raw: 10 days
        assert ages_left("samples_5s", "bucket") == [1, 20, 40]  # 90 days
        assert ages_left("samples_1m", "bucket") == [1, 20, 40, 100]  # 2 years
        assert ages_left("samples_1h", "bucket") == [1, 20, 40, 100, 800]  # 10 years


def test_storage_settings_refuse_nonsense(migrated_db: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        migrate(superuser(migrated_db), storage={"raw_retention_days": "3"})
    with pytest.raises(MigrationError):
        migrate(superuser(migrated_db), storage={"raw_retention": "-3 days"})


def test_writer_may_maintain_but_not_delete(migrated_db: dict[str, str]) -> None:
    with psycopg.connect(writer(migrated_db)) as conn:
        for statement in ("DELETE FROM samples_5s", "SELECT plantmon_refresh_rollups(now(), now())"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
            conn.rollback()


def test_seed_join_of_two_aggregates_runs_on_plain_postgresql(migrated_db: dict[str, str]) -> None:
    with psycopg.connect(superuser(migrated_db)) as conn:
        load_series(conn, 60)
    with psycopg.connect(role_conninfo(migrated_db, "plantmon_reader", migrated_db["reader_password"])) as conn:
        rows = conn.execute(SEED_QUERY, (START, START + timedelta(seconds=20))).fetchall()
        assert rows == [(START + timedelta(seconds=5 * k), 5 * k + 2.0) for k in range(4)]
        joined = conn.execute(SEED_JOIN_QUERY, {"lo": START, "hi": START + timedelta(seconds=10)}).fetchall()
        lower = series(60)["lower"]
        assert [(r[0], r[1]) for r in joined] == [(START, 2.0), (START + timedelta(seconds=5), 7.0)]
        assert joined[0][2] == sum(v for _, v in lower[:5] if v is not None) / 5


@pytest.mark.parametrize("previous", ["newest-but-one", "0005_roles"])
def test_upgrade_from_an_earlier_schema_keeps_the_data(
    pg_cluster: PostgresCluster, pg_dbname: str, previous: str
) -> None:
    names = plain_migrations()
    target = names[-2] if previous == "newest-but-one" else previous
    conninfo = pg_cluster.conninfo(pg_dbname)
    migrate(conninfo, target=target)
    with psycopg.connect(conninfo) as conn:
        load_series(conn, 600)
        before = conn.execute("SELECT tag_id, time, value, status FROM samples ORDER BY 1, 2").fetchall()
    assert migrate(conninfo) == names[names.index(target) + 1 :]
    with psycopg.connect(conninfo) as conn:
        assert conn.execute("SELECT tag_id, time, value, status FROM samples ORDER BY 1, 2").fetchall() == before
    maintain(conninfo)
    with psycopg.connect(conninfo) as conn:
        check_rollup(
            conn.execute(sql.SQL(ROLLUP_QUERY).format(table=sql.Identifier("samples_1m")), ("upper",)).fetchall(),
            expected_rollup(series(600)["upper"], WIDTHS["samples_1m"]),
            "samples_1m after the upgrade",
        )
