"""pytest fixtures for a real PostgreSQL: one ephemeral cluster per session, a fresh database per test."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import psycopg
import pytest
from plantmon_dev.postgres import PostgresCluster, ephemeral_cluster
from psycopg import sql

_counter = itertools.count()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    """A PostgreSQL 15 cluster on a free port, stopped and deleted after the session."""
    with ephemeral_cluster() as cluster:
        yield cluster


@pytest.fixture
def pg_dbname(pg_cluster: PostgresCluster) -> Iterator[str]:
    """The name of a new, empty database in the session cluster (dropped afterwards)."""
    name = f"t{next(_counter)}"
    with psycopg.connect(pg_cluster.conninfo("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield name
    with psycopg.connect(pg_cluster.conninfo("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def pg_env(pg_cluster: PostgresCluster, pg_dbname: str) -> dict[str, str]:
    """libpq variables (superuser) for the test's database."""
    return pg_cluster.env(pg_dbname)
