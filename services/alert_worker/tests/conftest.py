"""Fixtures of the alert worker tests: the migrated database as the worker's own role, a store on it.

Helpers live in alerts_support.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from plantmon_alerts.store import AlertStore, make_pool
from plantmon_common.settings import DatabaseSettings
from pydantic import SecretStr

from services.alert_worker.tests.amqp_peer import EventHubPeer


@pytest.fixture(autouse=True)
def alerts_state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test's worker keeps its durable state (outbox, open alerts) in its own folder."""
    state = tmp_path / "alerts-state"
    monkeypatch.setenv("ALERTS_STATE_DIR", str(state))
    monkeypatch.delenv("ALERTS_EVENTHUB_CONNECTION_STRING", raising=False)
    return state


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


@pytest.fixture
def eventhub_peer() -> Iterator[EventHubPeer]:
    """A real AMQP 1.0 Event Hubs peer (python-qpid-proton) behind its relay, on loopback."""
    with EventHubPeer() as peer:
        yield peer
