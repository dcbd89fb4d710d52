"""The migrations against a real PostgreSQL: order, idempotence, concurrency, roles, time_bucket."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from plantmon_db.migrate import ROLES, Migration, MigrationError, StoragePath, load_migrations, migrate
from plantmon_dev.postgres import PostgresCluster
from psycopg import sql

from tests.plugins.database import role_conninfo

PLAIN_MIGRATIONS = [m.name for m in load_migrations() if m.applies_to(StoragePath.PLAIN)]
TIMESCALE_ORIGIN = datetime(2000, 1, 3, tzinfo=UTC)


def superuser(env: dict[str, str]) -> str:
    return role_conninfo(env, env["PGUSER"], env["PGPASSWORD"])


def applied_names(conninfo: str) -> list[str]:
    with psycopg.connect(conninfo) as conn:
        return [r[0] for r in conn.execute("SELECT name FROM schema_migrations ORDER BY name").fetchall()]


def test_migration_files_are_ordered_and_split_by_storage_path() -> None:
    migrations = load_migrations()
    assert [m.number for m in migrations] == sorted(m.number for m in migrations)
    assert any(m.only is StoragePath.TIMESCALE for m in migrations)
    assert any(m.only is StoragePath.PLAIN for m in migrations)
    assert "0001_timescaledb.timescale" not in PLAIN_MIGRATIONS


def test_statements_outside_the_transaction_split_where_postgresql_would(pg_env: dict[str, str]) -> None:
    """A ";" in a dollar-quoted body, a string or a comment does not end a statement; each piece
    runs on its own (autocommit, as the runner does)."""
    body = (
        "CREATE TABLE split_check (note text);\n"
        "-- plantmon:outside-transaction\n"
        "-- a comment; with a semicolon\n"
        "DO $$\nBEGIN\n  INSERT INTO split_check VALUES ('in a body;');\n"
        "  INSERT INTO split_check VALUES ('second;\n');\nEND\n$$;\n"
        "INSERT INTO split_check VALUES ($tag$a; b$tag$); INSERT INTO split_check VALUES ('x');\n"
        "/* a block comment; */\n"
    )
    migration = Migration(99, "0099_split_check", None, body)
    statements = migration.outside_statements
    assert len(statements) == 3, statements
    assert statements[0].rstrip(";").endswith("$$")
    with psycopg.connect(superuser(pg_env), autocommit=True) as conn:
        conn.execute(migration.transactional_sql.encode())
        for statement in statements:
            conn.execute(statement.encode())
        notes = [r[0] for r in conn.execute("SELECT note FROM split_check ORDER BY note").fetchall()]
        conn.execute("DROP TABLE split_check")
    assert notes == sorted(["in a body;", "second;\n", "a; b", "x"])


def test_migrations_apply_on_plain_postgresql_and_create_the_schema(pg_env: dict[str, str]) -> None:
    conninfo = superuser(pg_env)
    assert migrate(conninfo) == PLAIN_MIGRATIONS
    with psycopg.connect(conninfo) as conn:
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        assert {"tags", "samples", "alerts", "schema_migrations"} <= tables
        views = {r[0] for r in conn.execute("SELECT viewname FROM pg_views WHERE schemaname = 'public'")}
        assert "sensor_data" in views
        columns = [
            r[0]
            for r in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'sensor_data' "
                "ORDER BY ordinal_position"
            )
        ]
        assert columns == ["timestamp", "sensorname", "tagname", "value"]
        paths = {r[0] for r in conn.execute("SELECT storage_path FROM schema_migrations")}
        assert paths == {"plain"}
        roles = {
            r[0]: r[1] for r in conn.execute("SELECT rolname, rolsuper FROM pg_roles WHERE rolname LIKE 'plantmon%'")
        }
        assert set(roles) == set(ROLES)
        assert not any(roles.values())


def test_second_run_applies_nothing(pg_env: dict[str, str]) -> None:
    conninfo = superuser(pg_env)
    migrate(conninfo)
    assert migrate(conninfo) == []
    assert applied_names(conninfo) == sorted(PLAIN_MIGRATIONS)


def test_a_changed_applied_migration_is_refused_and_nothing_is_applied(pg_env: dict[str, str]) -> None:
    conninfo = superuser(pg_env)
    applied = migrate(conninfo, target="0003_tags_samples")
    assert applied
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("UPDATE schema_migrations SET checksum = 'edited' WHERE name = %s", (applied[0],))
    with pytest.raises(MigrationError, match=applied[0]):
        migrate(conninfo)
    assert applied_names_or_none(conninfo) == applied


def test_concurrent_runners_apply_each_migration_once(pg_env: dict[str, str]) -> None:
    conninfo = superuser(pg_env)
    results: list[list[str]] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(3)

    def run() -> None:
        barrier.wait()
        try:
            results.append(migrate(conninfo))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert sorted(results, key=len) == [[], [], PLAIN_MIGRATIONS]
    assert applied_names(conninfo) == sorted(PLAIN_MIGRATIONS)


def test_two_migrate_processes_at_once_both_succeed(pg_env: dict[str, str]) -> None:
    env = {**os.environ, **pg_env, "DB_WRITER_PASSWORD": "writer-Secret-1", "LOG_FORMAT": "text"}
    cmd = [sys.executable, "-m", "plantmon_db.migrate"]
    procs = [
        subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)
    ]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert applied_names(superuser(pg_env)) == sorted(PLAIN_MIGRATIONS)
    logs = "".join(err for _, err in outputs)
    assert "plain" in logs
    with psycopg.connect(role_conninfo(pg_env, "plantmon_writer", "writer-Secret-1")) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("plantmon_writer",)


def test_migrate_refuses_placeholder_passwords(pg_env: dict[str, str]) -> None:
    env = {**os.environ, **pg_env, "DB_READER_PASSWORD": "changeme"}
    proc = subprocess.run(
        [sys.executable, "-m", "plantmon_db.migrate"], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert "DB_READER_PASSWORD" in proc.stderr
    assert applied_names_or_none(superuser(pg_env)) is None


def applied_names_or_none(conninfo: str) -> list[str] | None:
    with psycopg.connect(conninfo) as conn:
        if conn.execute("SELECT to_regclass('schema_migrations')").fetchone() == (None,):
            return None
    return applied_names(conninfo)


def test_role_without_password_cannot_log_in(pg_cluster: PostgresCluster, pg_dbname: str) -> None:
    conninfo = pg_cluster.conninfo(pg_dbname)
    migrate(conninfo, {"plantmon_writer": "w-Secret-123"})
    with psycopg.connect(conninfo) as conn:
        # Roles are cluster-wide: earlier tests may have given them LOGIN; take it away to test.
        conn.execute("ALTER ROLE plantmon_reader NOLOGIN")
        conn.commit()
    migrate(conninfo, {"plantmon_writer": "w-Secret-123"})
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(pg_cluster.conninfo(pg_dbname, "plantmon_reader", "anything")).close()
    psycopg.connect(pg_cluster.conninfo(pg_dbname, "plantmon_writer", "w-Secret-123")).close()
    # What the server stores is libpq's SCRAM-SHA-256 verifier, never the password.
    with psycopg.connect(conninfo) as conn:
        (stored,) = conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = 'plantmon_writer'").fetchone()  # type: ignore[misc]
    assert stored.startswith("SCRAM-SHA-256$") and "w-Secret-123" not in stored


def test_writer_registers_tags_and_appends_samples_but_cannot_touch_alerts(migrated_db: dict[str, str]) -> None:
    with psycopg.connect(role_conninfo(migrated_db, "plantmon_writer", migrated_db["writer_password"])) as conn:
        (tag_id,) = conn.execute(
            "INSERT INTO tags (path, sensor, tag, unit) "
            "VALUES ('Plant/Temperature/Upper', 'temperature', 'upper', '°C') "
            "ON CONFLICT (path) DO UPDATE SET last_seen = now() RETURNING id"
        ).fetchone()  # type: ignore[misc]
        conn.execute("CREATE TEMP TABLE staging (LIKE samples) ON COMMIT DROP")
        conn.execute("INSERT INTO staging VALUES (now(), %s, 1.5, 0)", (tag_id,))
        conn.execute("INSERT INTO samples SELECT * FROM staging ON CONFLICT (tag_id, time) DO NOTHING")
        conn.commit()
        for statement in (
            "SELECT * FROM alerts",
            "INSERT INTO alerts (rule, tag_path, severity, state, message, raised_at) "
            "VALUES ('r', 'Plant/X/Y', 1, 'active', 'm', now())",
            "DELETE FROM samples",
            "DROP TABLE samples",
            # Without a foreign key on samples (0011), a stored row keeps its tag because the
            # writer can neither delete a tag nor change its id or path.
            "DELETE FROM tags",
            "UPDATE tags SET id = DEFAULT",
            "UPDATE tags SET path = 'Plant/Temperature/Other'",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
            conn.rollback()
        conn.execute("UPDATE tags SET unit = 'K', description = 'upper', last_seen = now() WHERE id = %s", (tag_id,))


def test_samples_have_no_foreign_key_but_the_primary_key_and_time_index(migrated_db: dict[str, str]) -> None:
    """0011: the per-row foreign-key check is gone; the key that makes replays idempotent stays."""
    with psycopg.connect(superuser(migrated_db)) as conn:
        constraints: dict[str, str] = dict(
            conn.execute(
                "SELECT contype, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'samples'::regclass"
            )
        )
        assert constraints == {
            "p": 'PRIMARY KEY (tag_id, "time")',
            "c": "CHECK (((status >= 0) AND (status <= '4294967295'::bigint)))",
        }
        indexes = {r[0] for r in conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'samples'")}
        assert indexes == {"samples_pkey", "samples_time"}


def test_alerts_role_manages_alerts_and_reads_data_only(migrated_db: dict[str, str]) -> None:
    with psycopg.connect(role_conninfo(migrated_db, "plantmon_alerts", migrated_db["alerts_password"])) as conn:
        (alert_id,) = conn.execute(
            "INSERT INTO alerts (rule, tag_path, severity, state, message, raised_at) "
            "VALUES ('high', 'Plant/Temperature/Upper', 3, 'active', 'too hot', now()) RETURNING id"
        ).fetchone()  # type: ignore[misc]
        conn.execute("UPDATE alerts SET state = 'acknowledged', acknowledged_at = now() WHERE id = %s", (alert_id,))
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(
                "INSERT INTO alerts (rule, tag_path, severity, state, message, raised_at) "
                "VALUES ('high', 'Plant/Temperature/Upper', 3, 'active', 'again', now())"
            )
        conn.rollback()
        conn.execute("SELECT count(*) FROM sensor_data").fetchone()
        conn.execute("SELECT count(*) FROM tags").fetchone()
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("INSERT INTO tags (path, sensor, tag) VALUES ('Plant/A/B', 'a', 'b')")


def test_reader_is_read_only_with_a_statement_timeout(migrated_db: dict[str, str]) -> None:
    with psycopg.connect(role_conninfo(migrated_db, "plantmon_reader", migrated_db["reader_password"])) as conn:
        for table in ("tags", "samples", "alerts", "sensor_data"):
            conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()
        assert conn.execute("SHOW statement_timeout").fetchone() == ("30s",)
        assert conn.execute("SHOW default_transaction_read_only").fetchone() == ("on",)
        conn.rollback()
        with pytest.raises((psycopg.errors.ReadOnlySqlTransaction, psycopg.errors.InsufficientPrivilege)):
            conn.execute("INSERT INTO tags (path, sensor, tag) VALUES ('Plant/A/B', 'a', 'b')")
        conn.rollback()
        conn.execute("SET TRANSACTION READ WRITE")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("INSERT INTO tags (path, sensor, tag) VALUES ('Plant/A/B', 'a', 'b')")


def timescale_bucket(width: timedelta, ts: datetime) -> datetime:
    """TimescaleDB's rule for fixed widths: floor relative to the origin 2000-01-03 00:00:00+00."""
    return TIMESCALE_ORIGIN + ((ts - TIMESCALE_ORIGIN) // width) * width


@pytest.mark.parametrize(
    "width, text",
    [
        (timedelta(seconds=5), "5s"),
        (timedelta(minutes=1), "1 minute"),
        (timedelta(hours=1), "1 hour"),
        (timedelta(minutes=7), "7 minutes"),
    ],
)
def test_time_bucket_matches_timescaledb(migrated_db: dict[str, str], width: timedelta, text: str) -> None:
    stamps = [
        datetime(2000, 1, 3, tzinfo=UTC),
        datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(1970, 1, 1, 0, 3, 2, tzinfo=UTC),
        datetime(2026, 11, 23, 12, 52, 4, 123456, tzinfo=UTC),
        datetime(2026, 11, 23, 12, 55, 0, tzinfo=UTC),
        datetime(2031, 6, 1, 7, 13, 59, 999999, tzinfo=UTC),
    ]
    with psycopg.connect(superuser(migrated_db)) as conn:
        for ts in stamps:
            (got,) = conn.execute("SELECT time_bucket(%s::interval, %s::timestamptz)", (text, ts)).fetchone()  # type: ignore[misc]
            assert got == timescale_bucket(width, ts), ts
        # Known TimescaleDB answers: 7-minute buckets start at the Monday origin, not at the epoch.
        (seven,) = conn.execute("SELECT time_bucket('7 min', timestamptz '2000-01-03 00:10:00+00')").fetchone()  # type: ignore[misc]
        assert seven == datetime(2000, 1, 3, 0, 7, tzinfo=UTC)
        volatility = conn.execute(
            "SELECT provolatile, proparallel FROM pg_proc WHERE proname = 'time_bucket'"
        ).fetchone()
        assert volatility == ("i", "s")


def test_time_bucket_refuses_month_widths(migrated_db: dict[str, str]) -> None:
    with psycopg.connect(superuser(migrated_db)) as conn, pytest.raises(psycopg.errors.FeatureNotSupported):
        conn.execute("SELECT time_bucket('1 month', now())")


def test_seed_dashboard_query_runs_for_the_reader(migrated_db: dict[str, str]) -> None:
    start = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)
    with psycopg.connect(superuser(migrated_db)) as conn:
        (upper,) = conn.execute(
            "INSERT INTO tags (path, sensor, tag) VALUES ('Plant/Temperature/Upper', 'temperature', 'upper') "
            "RETURNING id"
        ).fetchone()  # type: ignore[misc]
        (lower,) = conn.execute(
            "INSERT INTO tags (path, sensor, tag) VALUES ('Plant/Temperature/Lower', 'temperature', 'lower') "
            "RETURNING id"
        ).fetchone()  # type: ignore[misc]
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO samples (time, tag_id, value, status) VALUES (%s, %s, %s, 0)",
                [(start + timedelta(seconds=i), tag, float(i)) for i in range(20) for tag in (upper, lower)],
            )
    with psycopg.connect(role_conninfo(migrated_db, "plantmon_reader", migrated_db["reader_password"])) as conn:
        rows = conn.execute(
            "SELECT time_bucket('5s', timestamp) AS time, avg(value) FROM sensor_data "
            "WHERE sensorname = 'temperature' AND tagname = 'upper' AND timestamp BETWEEN %s AND %s "
            "GROUP BY time ORDER BY time",
            (start, start + timedelta(minutes=1)),
        ).fetchall()
    assert rows == [(start + timedelta(seconds=5 * k), 5 * k + 2.0) for k in range(4)]


def test_migrations_of_two_databases_at_once_share_the_roles(pg_cluster: PostgresCluster) -> None:
    names = ["concurrent_a", "concurrent_b"]
    for name in names:
        pg_cluster.create_database(name)
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(names))

    def run(name: str) -> None:
        barrier.wait()
        try:
            migrate(pg_cluster.conninfo(name), {"plantmon_reader": "r-Secret-shared"})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(name,)) for name in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    try:
        assert not errors
        for name in names:
            assert applied_names(pg_cluster.conninfo(name)) == sorted(PLAIN_MIGRATIONS)
            with psycopg.connect(pg_cluster.conninfo(name, "plantmon_reader", "r-Secret-shared")) as conn:
                conn.execute("SELECT count(*) FROM sensor_data").fetchone()
    finally:
        with psycopg.connect(pg_cluster.conninfo("postgres"), autocommit=True) as conn:
            for name in names:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
