"""Helpers of the delivery, outbox and operator-page tests: worker settings, table reads, the peer."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import psycopg
from plantmon_alerts.settings import AlertSettings, AlertsOpcUaSettings
from plantmon_common.settings import DatabaseSettings
from plantmon_dev.procs import free_port
from plantmon_dev.waiting import eventually
from pydantic import SecretStr

from services.alert_worker.tests.alerts_support import OPC_PASSWORD, OPC_USER, TEMPERATURE_HIGH_RULE
from services.alert_worker.tests.amqp_peer import EventHubPeer, ReceivedEvent

TOKEN = "delivery-ack-token-for-tests"

# A severity-4 rule (published) and a severity-2 one (below the default minimum of 3: not published).
RULES = (
    "rules:\n"
    + TEMPERATURE_HIGH_RULE
    + """\
  - name: temperature_notice
    kind: threshold
    tags: Plant/Temperature/*
    high: 90
    hysteresis: 5
    for: 0
    severity: 2
    message: "{tag} is warm: {value:.0f}"
"""
)


def worker_settings(
    tmp_path: Path, database: DatabaseSettings, opc_url: str, connection_string: str | None, **extra: Any
) -> AlertSettings:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    values: dict[str, Any] = {
        "http_host": "127.0.0.1",
        "http_port": free_port(),
        "rules_file": rules,
        "api_token": SecretStr(TOKEN),
        "database": database,
        "state_dir": tmp_path / "alerts-state",
        "site": "test-site",
        "eventhub_connection_string": SecretStr(connection_string) if connection_string else None,
        "eventhub_backoff_max_s": 2.0,
        "opcua": AlertsOpcUaSettings(
            url=opc_url,
            username=OPC_USER,
            password=SecretStr(OPC_PASSWORD),
            cert_dir=tmp_path / "client-cert",
            hostname="localhost",
            publishing_interval_ms=50,
            reconnect_initial_s=0.2,
            reconnect_max_s=1.0,
        ),
    }
    values.update(extra)
    return AlertSettings(**values)


def alert_rows(conninfo: str) -> list[dict[str, Any]]:
    with psycopg.connect(conninfo, row_factory=psycopg.rows.dict_row) as conn:
        return conn.execute("SELECT * FROM alerts ORDER BY raised_at").fetchall()


async def wait_rows(conninfo: str, count: int, what: str, timeout: float = 30.0, **match: Any) -> list[dict[str, Any]]:
    """At least ``count`` rows matching ``match`` (bounded wait)."""

    async def probe() -> list[dict[str, Any]] | None:
        rows = [r for r in await asyncio.to_thread(alert_rows, conninfo) if all(r[k] == v for k, v in match.items())]
        return rows if len(rows) >= count else None

    return await eventually(probe, timeout=timeout, what=what)


def body(event: ReceivedEvent) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(event.body)
    return decoded


async def wait_events(peer: EventHubPeer, what: str, timeout: float = 30.0, **match: Any) -> list[ReceivedEvent]:
    """The events whose JSON body has ``match`` (at least one; bounded wait)."""

    async def probe() -> list[ReceivedEvent] | None:
        found = [e for e in peer.events() if all(body(e).get(k) == v for k, v in match.items())]
        return found or None

    return await eventually(probe, timeout=timeout, what=what)
