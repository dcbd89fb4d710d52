"""pytest fixtures for a migrated plantmon database: the schema, the roles and their passwords.

Roles are cluster-wide and the migrations run once per test database, so every run sets fresh
passwords; a test uses the passwords its own ``migrated_db`` returned.
"""

from __future__ import annotations

import secrets

import pytest
from plantmon_db.migrate import migrate
from plantmon_dev.postgres import PostgresCluster
from psycopg.conninfo import make_conninfo

ROLE_KEYS = {
    "plantmon_writer": "writer_password",
    "plantmon_alerts": "alerts_password",
    "plantmon_reader": "reader_password",
}


def role_conninfo(env: dict[str, str], role: str, password: str) -> str:
    """A libpq connection string for ``role`` to the database ``env`` (a ``migrated_db``) names."""
    return make_conninfo(host=env["PGHOST"], port=env["PGPORT"], dbname=env["PGDATABASE"], user=role, password=password)


def role_env(env: dict[str, str], role: str) -> dict[str, str]:
    """``PG*`` variables for a service that connects as ``role`` (e.g. the scraper as plantmon_writer)."""
    return {**{k: v for k, v in env.items() if k.startswith("PG")}, "PGUSER": role, "PGPASSWORD": env[ROLE_KEYS[role]]}


@pytest.fixture
def migrated_db(pg_cluster: PostgresCluster, pg_dbname: str) -> dict[str, str]:
    """The test's database with every migration applied and LOGIN passwords for the three roles.

    Returns the superuser ``PG*`` variables plus ``writer_password``, ``alerts_password`` and
    ``reader_password``.
    """
    env = pg_cluster.env(pg_dbname)
    passwords = {role: secrets.token_urlsafe(18) for role in ROLE_KEYS}
    migrate(pg_cluster.conninfo(pg_dbname), passwords)
    return {**env, **{ROLE_KEYS[role]: password for role, password in passwords.items()}}
