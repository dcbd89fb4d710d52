"""The durable outbox and local alert state: restarts (kill -9 included), database down, retention."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from plantmon_alerts.delivery import StateJournal, event_factory, transition_id
from plantmon_alerts.engine import Cleared, PeakUpdated, Raised
from plantmon_alerts.settings import AlertSettings
from plantmon_alerts.worker import AlertWorker
from plantmon_common.opcua import Sample
from plantmon_common.settings import DatabaseSettings
from plantmon_dev.procs import free_port, stop_process
from plantmon_dev.waiting import eventually
from prometheus_client import CollectorRegistry

from services.alert_worker.tests.alerts_support import OPC_PASSWORD, OPC_USER, plant_server
from services.alert_worker.tests.amqp_peer import EventHubPeer
from services.alert_worker.tests.delivery_support import alert_rows, body, wait_events, wait_rows, worker_settings

UPPER = "Plant/Temperature/Upper"
T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


def raised(value: float = 120.0, at: datetime = T0, severity: int = 4) -> Raised:
    return Raised(uuid.uuid4(), "temperature_high", UPPER, severity, f"hot: {value}", value, at)


# -- the state file ------------------------------------------------------------------------------


def test_the_state_file_keeps_transitions_events_and_open_alerts_in_order_across_reopen(tmp_path: Path) -> None:
    make = event_factory("site-a", min_severity=3)
    first, second = raised(120.0), raised(95.0, T0 + timedelta(minutes=1), severity=2)
    journal = StateJournal.in_dir(tmp_path)
    journal.record([first, second], make)
    journal.record([PeakUpdated(first.alert_id, first.rule, UPPER, 4, 130.0, T0 + timedelta(minutes=2))], make)
    journal.record([Cleared(first.alert_id, first.rule, UPPER, 4, 50.0, T0 + timedelta(minutes=3))], make)
    journal.close()

    again = StateJournal.in_dir(tmp_path)
    writes = again.pending_writes(100)
    assert [type(t).__name__ for _, t in writes] == ["Raised", "Raised", "PeakUpdated", "Cleared"]
    assert writes[0][1] == first and writes[1][1] == second  # the same values, uuids and times
    assert [seq for seq, _ in writes] == sorted(seq for seq, _ in writes)
    events = again.pending_events(100)
    # Severity 2 is below the minimum; a peak is no lifecycle event; the clear carries the peak.
    assert [(e.alert_id, e.event["event"]) for e in events] == [
        (str(first.alert_id), "raised"),
        (str(first.alert_id), "cleared"),
    ]
    assert [e.transition_id for e in events] == [
        transition_id(first.alert_id, "raised"),
        transition_id(first.alert_id, "cleared"),
    ]
    assert (events[1].event["peak_value"], events[1].event["value_at_raise"]) == (130.0, 120.0)
    assert [a.alert_id for a in again.open_alerts()] == [second.alert_id]  # the first one cleared
    assert (again.write_depth, again.event_depth) == (4, 2)

    again.written([writes[0][0], writes[1][0]])
    again.delivered([events[0].seq])
    again.close()
    last = StateJournal.in_dir(tmp_path)
    assert [type(t).__name__ for _, t in last.pending_writes(100)] == ["PeakUpdated", "Cleared"]
    assert [e.event["event"] for e in last.pending_events(100)] == ["cleared"]
    last.close()


# -- restarts ------------------------------------------------------------------------------------


def _feed(worker: AlertWorker, value: float) -> None:
    worker.sink(Sample(UPPER, value, 0, datetime.now(UTC)))


async def _evaluated(worker: AlertWorker) -> None:
    async def empty() -> bool | None:
        return True if worker.queue.empty() else None

    await eventually(empty, what="the queue evaluated")


async def test_open_alerts_survive_a_restart_while_the_database_is_down(tmp_path: Path) -> None:
    dead = DatabaseSettings(host="127.0.0.1", port=free_port(), user="plantmon_alerts", connect_timeout=1)
    settings = worker_settings(tmp_path, dead, "opc.tcp://127.0.0.1:1/unused/", None, db_timeout_s=1.0)

    first = AlertWorker(settings, CollectorRegistry())
    stop = asyncio.Event()
    task = asyncio.create_task(first.evaluate(stop))
    _feed(first, 120.0)
    await _evaluated(first)
    stop.set()
    await task
    [open_before] = [a for a in first.engine.active() if a.rule == "temperature_high"]
    first.journal.close()

    registry = CollectorRegistry()
    second = AlertWorker(settings, registry)  # the database is still down
    [open_after] = [a for a in second.engine.active() if a.rule == "temperature_high"]
    assert (open_after.alert_id, open_after.value_at_raise, open_after.raised_at) == (
        open_before.alert_id,
        120.0,
        open_before.raised_at,
    )
    assert (
        registry.get_sample_value("plantmon_alerts_raised_total", {"rule": "temperature_high", "severity": "4"}) is None
    )
    stop = asyncio.Event()
    task = asyncio.create_task(second.evaluate(stop))
    _feed(second, 125.0)  # the same condition: no second alert, a peak of the first
    _feed(second, 40.0)  # cools down: the restored alert clears
    await _evaluated(second)
    stop.set()
    await task
    pending = [t for _, t in second.journal.pending_writes(100) if t.rule == "temperature_high"]
    assert [type(t).__name__ for t in pending] == ["Raised", "PeakUpdated", "Cleared"]
    assert {t.alert_id for t in pending} == {open_before.alert_id}
    assert second.engine.active() == []
    second.journal.close()


def _state(state_dir: Path) -> tuple[int, int]:
    """(open alerts, pending events) in a state file another process writes."""
    path = state_dir / "alerts-state.sqlite3"
    if not path.exists():
        return (0, 0)
    with sqlite3.connect(path, timeout=5) as conn:
        try:
            opened = conn.execute("SELECT count(*) FROM open_alerts WHERE rule = 'temperature_high'").fetchone()[0]
            events = conn.execute("SELECT count(*) FROM event_outbox").fetchone()[0]
        except sqlite3.OperationalError:
            return (0, 0)
    return (int(opened), int(events))


def _worker_env(settings: AlertSettings, dead_pg_port: int, connection_string: str) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("ALERTS_", "PG"))},
        "ALERTS_OPCUA__URL": settings.opcua.url,
        "ALERTS_OPCUA__USERNAME": OPC_USER,
        "ALERTS_OPCUA__PASSWORD": OPC_PASSWORD,
        "ALERTS_OPCUA__CERT_DIR": str(settings.opcua.cert_dir),
        "ALERTS_OPCUA__HOSTNAME": "localhost",
        "ALERTS_OPCUA__PUBLISHING_INTERVAL_MS": "50",
        "ALERTS_HTTP_HOST": "127.0.0.1",
        "ALERTS_HTTP_PORT": str(free_port()),
        "ALERTS_RULES_FILE": str(settings.rules_file),
        "ALERTS_STATE_DIR": str(settings.state_dir),
        "ALERTS_API_TOKEN": "a-token-for-the-killed-worker",
        "ALERTS_EVENTHUB_CONNECTION_STRING": connection_string,
        "ALERTS_EVENTHUB_BACKOFF_MAX_S": "1",
        "ALERTS_DB_TIMEOUT_S": "1",
        "ALERTS_LOG_FORMAT": "text",
        "PGHOST": "127.0.0.1",
        "PGPORT": str(dead_pg_port),
        "PGUSER": "plantmon_alerts",
        "PGPASSWORD": "unused",
        "PGCONNECT_TIMEOUT": "1",
    }


async def test_a_worker_killed_with_sigkill_loses_nothing_the_next_one_writes_and_delivers_it(
    tmp_path: Path, alerts_db: DatabaseSettings, superuser_conninfo: str, eventhub_peer: EventHubPeer
) -> None:
    eventhub_peer.stop_front()  # Event Hubs unreachable while the first worker runs
    async with plant_server(tmp_path / "server-cert") as plant:
        settings = worker_settings(tmp_path, alerts_db, plant.url, eventhub_peer.connection_string)
        env = _worker_env(settings, free_port(), eventhub_peer.connection_string)  # the database is down too
        log = (tmp_path / "killed-worker.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "plantmon_alerts"], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path
        )
        try:

            async def recorded() -> bool | None:
                await plant.write(plant.upper, 120.0)
                if proc.poll() is not None:
                    raise AssertionError((tmp_path / "killed-worker.log").read_text())
                return True if await asyncio.to_thread(_state, settings.state_dir) == (1, 1) else None

            await eventually(recorded, timeout=60, what="the killed worker to record the alert and its event")
            proc.kill()  # SIGKILL: no clean-up, no final flush
            proc.wait(timeout=10)
        finally:
            stop_process(proc)
            log.close()
        assert alert_rows(superuser_conninfo) == []  # nothing reached the database
        assert len(eventhub_peer.events()) == 0

        # The next worker: database and Event Hubs reachable again.
        eventhub_peer.start_front()
        registry = CollectorRegistry()
        worker = AlertWorker(settings, registry)
        [restored] = [a for a in worker.engine.active() if a.rule == "temperature_high"]
        stop = asyncio.Event()
        run = asyncio.create_task(worker.run(stop))
        try:
            [row] = await wait_rows(superuser_conninfo, 1, "the alert written", rule="temperature_high")
            assert (row["id"], row["value_at_raise"], row["state"]) == (restored.alert_id, 120.0, "active")
            [event] = await wait_events(eventhub_peer, "the undelivered event", event="raised", rule="temperature_high")
            assert body(event)["alert_id"] == str(restored.alert_id) == event.properties["alert_id"]
        finally:
            stop.set()
            await asyncio.wait_for(run, timeout=60)
    raised_again = registry.get_sample_value(
        "plantmon_alerts_raised_total", {"rule": "temperature_high", "severity": "4"}
    )
    assert raised_again is None  # continued, not raised twice
    assert [r["rule"] for r in alert_rows(superuser_conninfo)].count("temperature_high") == 1


# -- retention -----------------------------------------------------------------------------------


def _insert(conninfo: str, raised_at: datetime, cleared_at: datetime | None) -> uuid.UUID:
    alert_id = uuid.uuid4()
    with psycopg.connect(conninfo) as conn:
        conn.execute(
            "INSERT INTO alerts (id, rule, tag_path, severity, state, message, raised_at, cleared_at) "
            "VALUES (%s, %s, %s, 4, %s, 'old', %s, %s)",
            (alert_id, f"rule_{alert_id.hex[:8]}", UPPER, "cleared" if cleared_at else "active", raised_at, cleared_at),
        )
    return alert_id


async def test_retention_deletes_only_cleared_alerts_older_than_the_setting(
    tmp_path: Path, alerts_db: DatabaseSettings, superuser_conninfo: str
) -> None:
    now = datetime.now(UTC)
    year = timedelta(days=365)
    eight_years = _insert(superuser_conninfo, now - 8 * year - timedelta(days=1), now - 8 * year)
    six_years = _insert(superuser_conninfo, now - 6 * year - timedelta(days=1), now - 6 * year)
    open_for_nine_years = _insert(superuser_conninfo, now - 9 * year, None)
    yesterday = _insert(superuser_conninfo, now - timedelta(days=2), now - timedelta(days=1))

    def remaining() -> set[uuid.UUID]:
        return {r["id"] for r in alert_rows(superuser_conninfo)}

    default = worker_settings(tmp_path, alerts_db, "opc.tcp://127.0.0.1:1/unused/", None)
    assert default.retention_days == 2557 >= 7 * 365  # at least 7 years by default
    worker = AlertWorker(default, CollectorRegistry())
    await worker.pool.open(wait=True, timeout=10)
    try:
        await worker.sync_once()  # the first round runs the maintenance step
        assert remaining() == {six_years, open_for_nine_years, yesterday}
        assert await worker.maintain() == 0
    finally:
        await worker.pool.close()
        worker.journal.close()

    short = worker_settings(tmp_path, alerts_db, "opc.tcp://127.0.0.1:1/unused/", None, retention_days=30)
    worker = AlertWorker(short, CollectorRegistry())
    await worker.pool.open(wait=True, timeout=10)
    try:
        assert await worker.maintain() == 1
        assert remaining() == {open_for_nine_years, yesterday}  # an open alert is never deleted
    finally:
        await worker.pool.close()
        worker.journal.close()
    assert eight_years not in remaining()


async def test_the_worker_role_deletes_only_through_the_retention_function(
    alerts_db: DatabaseSettings, superuser_conninfo: str
) -> None:
    now = datetime.now(UTC)
    recent = _insert(superuser_conninfo, now - timedelta(days=3), now - timedelta(days=2))
    async with await psycopg.AsyncConnection.connect(alerts_db.conninfo(), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            await conn.execute("DELETE FROM alerts")
        with pytest.raises(psycopg.errors.RaiseException, match="at least 1"):
            await conn.execute("SELECT purge_cleared_alerts(0)")
        assert await (await conn.execute("SELECT purge_cleared_alerts(1)")).fetchone() == (1,)
    assert recent not in {r["id"] for r in alert_rows(superuser_conninfo)}


def test_retention_setting_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGUSER", "plantmon_alerts")
    monkeypatch.setenv("ALERTS_RETENTION_DAYS", "3650")
    assert AlertSettings().retention_days == 3650
    monkeypatch.setenv("ALERTS_RETENTION_DAYS", "0")
    with pytest.raises(ValueError, match="retention_days"):
        AlertSettings()
