"""The whole worker: a secure asyncua server -> run(...) -> alerts table and HTTP API; a database outage."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from plantmon_alerts.settings import AlertSettings, AlertsOpcUaSettings
from plantmon_alerts.worker import AlertWorker, run
from plantmon_common.opcua import Sample
from plantmon_common.settings import DatabaseSettings
from plantmon_dev.procs import free_port
from plantmon_dev.waiting import eventually
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from services.alert_worker.tests.alerts_support import (
    OPC_PASSWORD,
    OPC_USER,
    TEMPERATURE_HIGH_RULE,
    CuttableProxy,
    plant_server,
)

TOKEN = "worker-ack-token-for-tests"
RULES = "rules:\n" + TEMPERATURE_HIGH_RULE


def settings_for(tmp_path: Path, database: DatabaseSettings, opc_url: str, **extra: Any) -> AlertSettings:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    return AlertSettings(
        http_host="127.0.0.1",
        http_port=free_port(),
        rules_file=rules,
        api_token=SecretStr(TOKEN),
        database=database,
        opcua=AlertsOpcUaSettings(
            url=opc_url,
            username=OPC_USER,
            password=SecretStr(OPC_PASSWORD),
            cert_dir=tmp_path / "client-cert",
            hostname="localhost",
            publishing_interval_ms=50,
            reconnect_initial_s=0.2,
            reconnect_max_s=1.0,
        ),
        **extra,
    )


def rows(conninfo: str) -> list[dict[str, Any]]:
    with psycopg.connect(conninfo, row_factory=psycopg.rows.dict_row) as conn:
        return conn.execute("SELECT * FROM alerts ORDER BY raised_at").fetchall()


async def row_where(conninfo: str, **expected: Any) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        for row in await asyncio.to_thread(rows, conninfo):
            if all(row[k] == v for k, v in expected.items()):
                return row
        return None

    return await eventually(probe, timeout=30, what=f"an alert row with {expected}")


@pytest.fixture
async def running_worker(
    tmp_path: Path, alerts_db: DatabaseSettings
) -> AsyncIterator[tuple[Any, AlertSettings, CollectorRegistry]]:
    async with plant_server(tmp_path / "server-cert") as plant:
        settings = settings_for(tmp_path, alerts_db, plant.url)
        registry = CollectorRegistry()
        stop = asyncio.Event()
        task = asyncio.create_task(run(settings, stop, registry=registry))
        try:
            yield plant, settings, registry
        finally:
            stop.set()
            await asyncio.wait_for(task, timeout=30)


async def test_hot_value_on_the_opc_server_raises_an_alert_row_and_cooling_clears_it(
    running_worker: tuple[Any, AlertSettings, CollectorRegistry], superuser_conninfo: str
) -> None:
    plant, settings, registry = running_worker
    base = f"http://127.0.0.1:{settings.http_port}"
    async with httpx.AsyncClient(base_url=base, timeout=10, follow_redirects=True) as http:

        async def healthy() -> bool | None:
            try:
                return True if (await http.get("/health")).status_code == 200 else None
            except httpx.TransportError:
                return None

        await eventually(healthy, what="a healthy worker (subscribed, database up)")
        await plant.write(plant.upper, 120.0)
        raised = await row_where(superuser_conninfo, rule="temperature_high", tag_path="Plant/Temperature/Upper")
        assert (raised["state"], raised["value_at_raise"], raised["severity"]) == ("active", 120.0, 4)
        assert raised["message"] == "Plant/Temperature/Upper is 120, above 100"

        await plant.write(plant.upper, 130.0)
        await row_where(superuser_conninfo, id=raised["id"], peak_value=130.0)
        await plant.write(plant.upper, 50.0)
        cleared = await row_where(superuser_conninfo, id=raised["id"], state="cleared")
        assert cleared["acknowledged_at"] is None and cleared["cleared_at"] is not None

        # A second episode, acknowledged over HTTP while open.
        await plant.write(plant.upper, 121.0)
        second = await row_where(superuser_conninfo, state="active")
        url = f"/api/v1/alerts/{second['id']}/ack"
        body = {"by": "operator", "comment": "valve opened"}
        assert (await http.post(url, json=body)).status_code == 401
        assert (await http.post(url, json=body, headers={"Authorization": "Bearer wrong"})).status_code == 401
        active = (await http.get("/api/v1/alerts", params={"state": "active"})).json()["alerts"]
        assert [(a["id"], a["acknowledged_by"]) for a in active] == [(str(second["id"]), None)]  # refused: unchanged
        ok = await http.post(url, json=body, headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200 and ok.json()["state"] == "acknowledged"
        listed = (await http.get("/api/v1/alerts", params={"state": "acknowledged"})).json()
        assert [a["id"] for a in listed["alerts"]] == [str(second["id"])]

        await plant.write(plant.upper, 40.0)
        done = await row_where(superuser_conninfo, id=second["id"], state="cleared")
        assert done["acknowledged_by"] == "operator" and done["ack_comment"] == "valve opened"
        assert (await http.post(url, json=body, headers={"Authorization": f"Bearer {TOKEN}"})).status_code == 409
        after = await row_where(superuser_conninfo, id=second["id"])
        assert (after["state"], after["acknowledged_at"], after["ack_comment"]) == (
            "cleared",
            done["acknowledged_at"],
            "valve opened",
        )

        metrics = (await http.get("/metrics")).text
    assert registry.get_sample_value("plantmon_alerts_raised_total", {"rule": "temperature_high", "severity": "4"}) == 2
    assert (
        registry.get_sample_value("plantmon_alerts_cleared_total", {"rule": "temperature_high", "severity": "4"}) == 2
    )
    assert registry.get_sample_value("plantmon_alerts_outbox_depth") == 0
    assert "plantmon_alerts_evaluation_latency_seconds_bucket" in metrics
    assert "plantmon_alerts_active" in metrics
    assert len(rows(superuser_conninfo)) == 2


async def test_alerting_goes_on_through_a_database_outage_and_the_backlog_is_written_in_order(
    tmp_path: Path, alerts_db: DatabaseSettings, superuser_conninfo: str
) -> None:
    proxy = CuttableProxy(alerts_db.port)
    await proxy.start()
    through_proxy = alerts_db.model_copy(update={"port": proxy.port})
    settings = settings_for(tmp_path, through_proxy, "opc.tcp://127.0.0.1:1/unused/", db_timeout_s=1.0)
    registry = CollectorRegistry()
    worker = AlertWorker(settings, registry)
    stop = asyncio.Event()
    await worker.pool.open(wait=False)
    tasks = [asyncio.create_task(worker.evaluate(stop)), asyncio.create_task(worker.write(stop))]
    path = "Plant/Temperature/Upper"

    def feed(value: float) -> None:
        worker.sink(Sample(path, value, 0, datetime.now(UTC)))

    async def depth_is(n: int) -> bool | None:
        return True if registry.get_sample_value("plantmon_alerts_outbox_depth") == n and worker.queue.empty() else None

    try:
        feed(120.0)
        first = await row_where(superuser_conninfo, state="active")

        await proxy.cut()
        feed(50.0)  # clears the first alert
        feed(125.0)  # raises a second one
        feed(135.0)  # its peak
        await eventually(lambda: depth_is(3), what="three transitions waiting for the database")
        assert [a.value_at_raise for a in worker.engine.active()] == [125.0]  # alerting went on
        assert rows(superuser_conninfo)[0]["state"] == "active"  # nothing written meanwhile

        await proxy.start()
        await eventually(lambda: depth_is(0), timeout=60, what="the backlog written")
        stored = rows(superuser_conninfo)
        assert [(r["id"], r["state"]) for r in stored] == [(first["id"], "cleared"), (stored[1]["id"], "active")]
        assert (stored[1]["value_at_raise"], stored[1]["peak_value"]) == (125.0, 135.0)
        assert isinstance(stored[1]["id"], uuid.UUID) and stored[1]["id"] == worker.engine.active()[0].alert_id
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        await worker.pool.close()
        await proxy.cut()


async def test_a_restarted_worker_continues_the_open_alert_instead_of_raising_it_again(
    tmp_path: Path, alerts_db: DatabaseSettings, superuser_conninfo: str
) -> None:
    async with plant_server(tmp_path / "server-cert") as plant:
        settings = settings_for(tmp_path, alerts_db, plant.url)
        registries = []
        for value in (120.0, 125.0):
            stop = asyncio.Event()
            registries.append(registry := CollectorRegistry())
            task = asyncio.create_task(run(settings, stop, registry=registry))
            try:
                # Written until the worker has seen it (the first notification may precede its subscription).
                async def seen(value: float = value) -> dict[str, Any] | None:
                    await plant.write(plant.upper, value)
                    found = [r for r in await asyncio.to_thread(rows, superuser_conninfo) if r["peak_value"] == value]
                    return found[0] if found else None

                await eventually(seen, what=f"the worker to see {value}")
            finally:
                stop.set()
                await asyncio.wait_for(task, timeout=30)
        raised = [
            r.get_sample_value("plantmon_alerts_raised_total", {"rule": "temperature_high", "severity": "4"})
            for r in registries
        ]
        assert raised == [1, None]  # the second worker restored the alert; it did not raise one
        [only] = rows(superuser_conninfo)
        assert (only["state"], only["value_at_raise"], only["peak_value"]) == ("active", 120.0, 125.0)
