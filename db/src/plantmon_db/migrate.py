"""The migration runner: applies ``plantmon_db/migrations/NNNN_name[.path].sql`` in order.

File names decide where a migration runs: ``0003_tags_samples.sql`` runs on every database,
``0001_timescaledb.timescale.sql`` only on the TimescaleDB path and ``0002_time_bucket.plain.sql``
only on plain PostgreSQL. The path is chosen once per database: TimescaleDB when the extension is
installed or available (and the database was not already built on the plain path), else plain.

Each migration runs in its own transaction together with its row in ``schema_migrations``.
Statements that PostgreSQL refuses inside a transaction (TimescaleDB's
``refresh_continuous_aggregate``) follow a line ``-- plantmon:outside-transaction``; they run
one by one after the commit and must be idempotent. A session-level advisory lock makes
concurrent runners wait for each other, after which the second one finds nothing to do. The
service roles are cluster-wide: the SQL creates them NOLOGIN, and the runner gives a role LOGIN
with the password the environment provides (as a SCRAM verifier, so the
clear-text password never reaches the server or its logs).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources

import psycopg
import sqlparse
from plantmon_common.logging import setup_logging
from plantmon_common.settings import DatabaseSettings, PlaceholderSecretError, require_secret
from psycopg import sql
from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

logger = logging.getLogger(__name__)

ROLES = ("plantmon_writer", "plantmon_alerts", "plantmon_reader")
"""The service roles the migrations create (cluster-wide, NOLOGIN until given a password)."""

# Any constant works; it only has to be the same for every runner of this schema.
ADVISORY_LOCK_KEY = 0x706C_616E_746D_6F6E  # "plantmon"

OUTSIDE_TRANSACTION_MARKER = "-- plantmon:outside-transaction"

STORAGE_SETTINGS = (
    "raw_retention",
    "rollup_5s_retention",
    "rollup_1m_retention",
    "rollup_1h_retention",
    "compress_after",
)
"""Rows of ``storage_settings`` (intervals) that :func:`migrate` may set."""

_FILE_NAME = re.compile(r"^(?P<number>\d{4})_(?P<name>[a-z0-9_]+?)(?:\.(?P<path>timescale|plain))?\.sql$")


class StoragePath(StrEnum):
    """Where samples live: TimescaleDB hypertables or plain PostgreSQL tables."""

    TIMESCALE = "timescale"
    PLAIN = "plain"


class MigrationError(RuntimeError):
    """A migration file is malformed or a migration failed to apply."""


@dataclass(frozen=True, slots=True)
class Migration:
    """One SQL file: ``name`` is its file name without ``.sql``, ``only`` its path or None for both."""

    number: int
    name: str
    only: StoragePath | None
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    def applies_to(self, path: StoragePath) -> bool:
        return self.only is None or self.only is path

    @property
    def transactional_sql(self) -> str:
        """The part that runs in the migration's transaction."""
        return self.sql.split(OUTSIDE_TRANSACTION_MARKER, 1)[0]

    @property
    def outside_statements(self) -> list[str]:
        """Statements after the outside-transaction marker, each run on its own after the commit."""
        parts = self.sql.split(OUTSIDE_TRANSACTION_MARKER, 1)
        if len(parts) == 1:
            return []
        # sqlparse's tokenizer knows quoted strings, dollar-quoted bodies and comments, so a ";"
        # inside any of them does not end a statement; comment-only pieces are left out.
        statements = (stmt.strip() for stmt in sqlparse.split(parts[1]))
        return [stmt for stmt in statements if sqlparse.format(stmt, strip_comments=True).strip()]


def load_migrations() -> list[Migration]:
    """Every migration shipped in the package, in order (number, then name)."""
    found: list[Migration] = []
    for entry in resources.files("plantmon_db").joinpath("migrations").iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = _FILE_NAME.match(entry.name)
        if match is None:
            raise MigrationError(f"migration file {entry.name!r} does not look like NNNN_name[.timescale|.plain].sql")
        only = StoragePath(match["path"]) if match["path"] else None
        found.append(Migration(int(match["number"]), entry.name.removesuffix(".sql"), only, entry.read_text("utf-8")))
    found.sort(key=lambda m: (m.number, m.name))
    return found


def _ensure_bookkeeping(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    conn.execute(
        """
        CREATE TABLE IF NOT EXISTS schema_migrations (
            name text PRIMARY KEY,
            storage_path text NOT NULL,
            checksum text NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )


def _choose_path(conn: psycopg.Connection[tuple[object, ...]], applied: dict[str, str]) -> StoragePath:
    installed = conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
    available = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'").fetchone()
    if installed:
        return StoragePath.TIMESCALE
    if applied and StoragePath.PLAIN.value in applied.values():
        # The path is chosen once per database; switching needs a dump and restore.
        if available:
            logger.warning("TimescaleDB is available but this database was built on plain PostgreSQL; staying plain")
        return StoragePath.PLAIN
    return StoragePath.TIMESCALE if available else StoragePath.PLAIN


def _set_role_passwords(conn: psycopg.Connection[tuple[object, ...]], role_passwords: dict[str, str]) -> None:
    for role in ROLES:
        password = role_passwords.get(role)
        if password:
            # libpq's own SCRAM-SHA-256 verifier: the password never reaches the server or its logs.
            verifier = conn.pgconn.encrypt_password(password.encode("utf-8"), role.encode(), b"scram-sha-256")
            statement = sql.SQL("ALTER ROLE {} WITH LOGIN PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(verifier.decode("ascii"))
            )
            _retry_on_race(conn, functools.partial(conn.execute, statement))
            logger.info("role can log in with the configured password", extra={"role": role})
            continue
        row = conn.execute("SELECT rolcanlogin FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
        can_login = bool(row and row[0])
        logger.info(
            "no password configured for role; its login is unchanged",
            extra={"role": role, "can_login": can_login},
        )


def _apply(conn: psycopg.Connection[tuple[object, ...]], migration: Migration, path: StoragePath) -> None:
    with conn.transaction():
        conn.execute(migration.transactional_sql.encode("utf-8"))
        conn.execute(
            "INSERT INTO schema_migrations (name, storage_path, checksum) VALUES (%s, %s, %s)",
            (migration.name, path.value, migration.checksum),
        )


def _is_race(exc: psycopg.Error) -> bool:
    """Errors from two databases of one cluster changing the same (cluster-wide) role at once."""
    if isinstance(exc, psycopg.errors.SerializationFailure | psycopg.errors.DeadlockDetected):
        return True
    return isinstance(exc, psycopg.errors.InternalError_) and "concurrently" in str(exc)


def _retry_on_race(conn: psycopg.Connection[tuple[object, ...]], action: Callable[[], object]) -> None:
    """Run ``action`` (a transaction of its own), again after a race on cluster-wide objects.

    The advisory lock serialises runners of one database only; roles are shared by every
    database of the cluster, and PostgreSQL reports concurrent updates of one role as an error.
    """
    for attempt in range(1, 6):
        try:
            action()
            return
        except psycopg.Error as exc:
            if not _is_race(exc) or attempt == 5:
                raise
            logger.info("concurrent change of a cluster-wide object, retrying", extra={"attempt": attempt})
            time.sleep(0.05 * attempt)


def migrate(
    conninfo: str,
    role_passwords: dict[str, str] | None = None,
    *,
    storage: dict[str, str] | None = None,
    target: str | None = None,
    prepare_threshold: int | None = 5,
) -> list[str]:
    """Apply the pending migrations to the database ``conninfo`` names; return their names.

    ``conninfo`` must connect as the schema owner (a superuser or a role that may create
    roles). ``role_passwords`` maps role names (:data:`ROLES`) to passwords; a role with a
    password gets LOGIN, one without keeps its current login state (NOLOGIN when new).
    ``storage`` sets rows of ``storage_settings`` (:data:`STORAGE_SETTINGS` -> an interval such
    as ``"45 days"``) and re-applies the TimescaleDB policies. ``target`` stops after that
    migration (upgrade tests build "the previous schema" with it). ``prepare_threshold=None``
    turns off server-side prepared statements (for poolers and the WASM TimescaleDB bridge).
    """
    role_passwords = role_passwords or {}
    storage = storage or {}
    unknown = set(role_passwords) - set(ROLES)
    if unknown:
        raise ValueError(f"unknown roles {sorted(unknown)}; expected some of {list(ROLES)}")
    unknown = set(storage) - set(STORAGE_SETTINGS)
    if unknown:
        raise ValueError(f"unknown storage settings {sorted(unknown)}; expected some of {list(STORAGE_SETTINGS)}")
    migrations = load_migrations()
    if target is not None:
        names = [m.name for m in migrations]
        if target not in names:
            raise ValueError(f"unknown target migration {target!r}")
        migrations = migrations[: names.index(target) + 1]
    done: list[str] = []
    with psycopg.connect(conninfo, autocommit=True, prepare_threshold=prepare_threshold) as conn:
        # Session-level: held across the per-migration transactions, released on close.
        conn.execute("SELECT pg_advisory_lock(%s)", (ADVISORY_LOCK_KEY,))
        try:
            _ensure_bookkeeping(conn)
            applied = {
                str(name): str(path)
                for name, path in conn.execute("SELECT name, storage_path FROM schema_migrations").fetchall()
            }
            path = _choose_path(conn, applied)
            _refuse_changed(conn, migrations)
            logger.info(
                "storage path: TimescaleDB"
                if path is StoragePath.TIMESCALE
                else "storage path: plain PostgreSQL (TimescaleDB not available)",
                extra={"storage_path": path.value},
            )
            for migration in migrations:
                if migration.name in applied or not migration.applies_to(path):
                    continue
                logger.info("applying migration", extra={"migration": migration.name})
                try:
                    _retry_on_race(conn, functools.partial(_apply, conn, migration, path))
                    for statement in migration.outside_statements:
                        logger.info("running after commit", extra={"migration": migration.name, "sql": statement})
                        conn.execute(statement.encode("utf-8"))
                except psycopg.Error as exc:
                    raise MigrationError(f"migration {migration.name} failed: {exc}") from exc
                done.append(migration.name)
            _apply_storage_settings(conn, path, storage)
            _set_role_passwords(conn, role_passwords)
        finally:
            if not conn.closed:
                conn.execute("SELECT pg_advisory_unlock(%s)", (ADVISORY_LOCK_KEY,))
    logger.info("migrations done", extra={"applied": done, "storage_path": path.value})
    return done


def _apply_storage_settings(
    conn: psycopg.Connection[tuple[object, ...]], path: StoragePath, storage: dict[str, str]
) -> None:
    if not storage:
        return
    if conn.execute("SELECT to_regclass('storage_settings')").fetchone() == (None,):
        raise MigrationError("storage settings given but the schema has no storage_settings table yet")
    try:
        with conn.transaction():
            for name, value in storage.items():
                conn.execute(
                    "UPDATE storage_settings SET value = %s::interval, updated_at = now() WHERE name = %s",
                    (value, name),
                )
            applied = conn.execute("SELECT to_regprocedure('plantmon_apply_storage_policies()')").fetchone()
            if path is StoragePath.TIMESCALE and applied != (None,):
                conn.execute("SELECT plantmon_apply_storage_policies()")
    except psycopg.Error as exc:
        raise MigrationError(f"invalid storage settings {storage}: {exc}") from exc
    logger.info("storage settings applied", extra={"settings": storage, "storage_path": path.value})


def _refuse_changed(conn: psycopg.Connection[tuple[object, ...]], migrations: list[Migration]) -> None:
    """An applied migration whose file has changed since is an error: the database and the code
    disagree on the schema, and nothing is applied until the file is restored (add a new one)."""
    recorded = {str(n): str(c) for n, c in conn.execute("SELECT name, checksum FROM schema_migrations").fetchall()}
    changed = [m.name for m in migrations if recorded.get(m.name, m.checksum) != m.checksum]
    if changed:
        raise MigrationError(
            f"applied migrations changed since they were applied: {changed}; restore them and add a new migration"
        )


class MigrateSettings(BaseSettings):
    """The service roles' passwords (``DB_*``); the connection itself comes from ``PG*``."""

    model_config = SettingsConfigDict(extra="ignore", env_prefix="DB_", hide_input_in_errors=True)

    writer_password: SecretStr | None = Field(default=None, description="Password of plantmon_writer (scraper)")
    alerts_password: SecretStr | None = Field(default=None, description="Password of plantmon_alerts (alert worker)")
    reader_password: SecretStr | None = Field(default=None, description="Password of plantmon_reader (Grafana)")
    retention_raw: str | None = Field(default=None, description="Keep raw samples this long (default 30 days)")
    retention_5s: str | None = Field(default=None, description="Keep the 5 s rollup this long (default 90 days)")
    retention_1m: str | None = Field(default=None, description="Keep the 1 min rollup this long (default 2 years)")
    retention_1h: str | None = Field(default=None, description="Keep the 1 h rollup this long (default 10 years)")
    compress_after: str | None = Field(
        default=None, description="Compress raw chunks older than this (TimescaleDB; default 7 days)"
    )
    log_level: str = "INFO"
    log_format: str = "json"

    def storage(self) -> dict[str, str]:
        """``storage_settings`` rows to set: only the variables given (an unset one keeps its row)."""
        pairs = {
            "raw_retention": self.retention_raw,
            "rollup_5s_retention": self.retention_5s,
            "rollup_1m_retention": self.retention_1m,
            "rollup_1h_retention": self.retention_1h,
            "compress_after": self.compress_after,
        }
        return {name: value for name, value in pairs.items() if value}

    def role_passwords(self) -> dict[str, str]:
        """Role name -> password for the roles whose password is set; placeholders are refused."""
        out: dict[str, str] = {}
        for role, env, value in (
            ("plantmon_writer", "DB_WRITER_PASSWORD", self.writer_password),
            ("plantmon_alerts", "DB_ALERTS_PASSWORD", self.alerts_password),
            ("plantmon_reader", "DB_READER_PASSWORD", self.reader_password),
        ):
            checked = require_secret(env, value)
            if checked is not None:
                out[role] = checked.get_secret_value()
        return out


def main() -> None:
    """``plantmon-migrate``: migrate the database ``PG*`` names, set role passwords from ``DB_*``."""
    settings = MigrateSettings()
    setup_logging("migrate", settings.log_level, "text" if settings.log_format == "text" else "json")
    try:
        passwords = settings.role_passwords()
        database = DatabaseSettings()  # type: ignore[call-arg]  # PGUSER comes from the environment
        migrate(database.conninfo(), passwords, storage=settings.storage())
    except PlaceholderSecretError as exc:
        logger.error("refusing a placeholder secret", extra={"error": str(exc)})
        sys.exit(2)
    except ValidationError as exc:
        logger.error("invalid settings", extra={"error": str(exc)})
        sys.exit(2)
    except (psycopg.Error, MigrationError) as exc:
        logger.error("migration failed", extra={"error": str(exc)})
        sys.exit(1)


if __name__ == "__main__":
    main()
