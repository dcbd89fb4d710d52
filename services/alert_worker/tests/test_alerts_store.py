"""The alerts table through the store, as role plantmon_alerts on a migrated PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from plantmon_alerts.engine import Cleared, Engine, PeakUpdated, Raised
from plantmon_alerts.rules import DEFAULT_RULES_FILE, load_rules
from plantmon_alerts.store import AlertNotFoundError, AlertNotOpenError, AlertStore, Outbox
from plantmon_common.opcua import Sample

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
UPPER = "Plant/Temperature/Upper"


def sample(seconds: float, value: float) -> Sample:
    return Sample(UPPER, value, 0, T0 + timedelta(seconds=seconds))


def raised(alert_id: uuid.UUID | None = None, value: float = 120.0) -> Raised:
    return Raised(alert_id or uuid.uuid4(), "temperature_high", UPPER, 4, "too hot", value, T0)


async def test_raise_peak_and_clear_are_one_row_with_the_workers_id(store: AlertStore) -> None:
    r = raised()
    await store.write([r, PeakUpdated(r.alert_id, r.rule, UPPER, 4, 130.0, T0 + timedelta(seconds=5))])
    row = await store.get(r.alert_id)
    assert row is not None
    assert (row["state"], row["value_at_raise"], row["peak_value"], row["raised_at"]) == ("active", 120.0, 130.0, T0)
    await store.write([Cleared(r.alert_id, r.rule, UPPER, 4, 50.0, T0 + timedelta(seconds=9))])
    row = await store.get(r.alert_id)
    assert row is not None
    assert (row["state"], row["cleared_at"], row["acknowledged_at"]) == ("cleared", T0 + timedelta(seconds=9), None)


async def test_acknowledged_alert_still_clears_and_keeps_its_acknowledgement(store: AlertStore) -> None:
    r = raised()
    await store.write([r])
    row = await store.acknowledge(r.alert_id, "operator", "looking at it")
    assert (row["state"], row["acknowledged_by"], row["ack_comment"]) == ("acknowledged", "operator", "looking at it")
    await store.write([Cleared(r.alert_id, r.rule, UPPER, 4, 50.0, T0 + timedelta(seconds=9))])
    cleared = await store.get(r.alert_id)
    assert cleared is not None
    assert cleared["state"] == "cleared" and cleared["acknowledged_by"] == "operator"
    assert cleared["acknowledged_at"] is not None


async def test_only_open_unacknowledged_alerts_can_be_acknowledged(store: AlertStore) -> None:
    with pytest.raises(AlertNotFoundError):
        await store.acknowledge(uuid.uuid4(), "operator", None)
    r = raised()
    await store.write([r])
    await store.acknowledge(r.alert_id, "first", None)
    with pytest.raises(AlertNotOpenError):
        await store.acknowledge(r.alert_id, "second", None)
    await store.write([Cleared(r.alert_id, r.rule, UPPER, 4, 50.0, T0)])
    with pytest.raises(AlertNotOpenError):
        await store.acknowledge(r.alert_id, "third", None)
    row = await store.get(r.alert_id)
    assert row is not None and row["acknowledged_by"] == "first"


async def test_writing_a_raise_twice_keeps_one_row(store: AlertStore) -> None:
    r = raised()
    await store.write([r])
    await store.write([r])  # a retry after a lost commit answer
    assert len(await store.open_alerts()) == 1


async def test_restart_continues_the_open_alert_instead_of_raising_again(store: AlertStore) -> None:
    rules = load_rules(DEFAULT_RULES_FILE)
    before = Engine(rules)
    outbox = Outbox(store)
    for s in range(0, 31, 10):
        outbox.put(before.feed(sample(s, 120.0)))
    await outbox.flush()
    [stored] = await store.open_alerts()

    after = Engine(rules)  # the restarted worker
    assert after.restore(await store.open_alerts(), T0) == []
    assert after.feed(sample(100, 119.0)) == []  # still above the clear level, nothing new
    [cleared] = after.feed(sample(110, 50.0))
    assert isinstance(cleared, Cleared) and cleared.alert_id == stored.alert_id
    outbox.put([cleared])
    await outbox.flush()
    assert await store.open_alerts() == []


async def test_a_raise_meeting_an_open_row_of_the_same_condition_adopts_it(store: AlertStore) -> None:
    first = raised()
    await store.write([first])
    second = raised(value=125.0)  # raised by a worker that could not restore its state
    await store.write([second, PeakUpdated(second.alert_id, second.rule, UPPER, 4, 140.0, T0)])
    await store.write([Cleared(second.alert_id, second.rule, UPPER, 4, 50.0, T0)])
    row = await store.get(first.alert_id)
    assert row is not None and (row["peak_value"], row["state"]) == (140.0, "cleared")
    assert await store.get(second.alert_id) is None


async def test_the_worker_role_cannot_delete_alerts(store: AlertStore, superuser_conninfo: str) -> None:
    await store.write([raised()])
    async with store.pool.connection() as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            await conn.execute("DELETE FROM alerts")
    with psycopg.connect(superuser_conninfo) as conn:
        assert conn.execute("SELECT count(*) FROM alerts").fetchone() == (1,)
