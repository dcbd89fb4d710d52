"""Fixtures of the alert worker tests: the migrated database as the worker's own role, a store on it.

Helpers live in alerts_support.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from plantmon_alerts.store import AlertStore, make_pool
from plantmon_common.settings import DatabaseSettings
from pydantic import SecretStr


@pytest.fixture
def alerts_db(migrated_db: dict[str, str]) -> DatabaseSettings:
    """The migrated test database, connected to as ``plantmon_alerts`` (the worker's role)."""
    return DatabaseSettings(
        host=migrated_db["PGHOST"],
        port=int(migrated_db["PGPORT"]),
        database=migrated_db["PGDATABASE"],
        user="plantmon_alerts",
        password=SecretStr(migrated_db["alerts_password"]),
    )


@pytest.fixture
def superuser_conninfo(migrated_db: dict[str, str]) -> str:
    """For the tests' own checks of the table."""
    return DatabaseSettings(
        host=migrated_db["PGHOST"],
        port=int(migrated_db["PGPORT"]),
        database=migrated_db["PGDATABASE"],
        user=migrated_db["PGUSER"],
        password=SecretStr(migrated_db["PGPASSWORD"]),
    ).conninfo()


@pytest.fixture
async def store(alerts_db: DatabaseSettings) -> AsyncIterator[AlertStore]:
    pool = make_pool(alerts_db.conninfo(), timeout=5.0)
    await pool.open(wait=True, timeout=10)
    try:
        yield AlertStore(pool)
    finally:
        await pool.close()
