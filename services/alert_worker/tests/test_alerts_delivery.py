"""Event Hubs delivery: the real, unpatched azure-eventhub SDK against a real AMQP 1.0 peer on loopback.

The worker runs whole (asyncua server -> subscription -> engine -> durable outbox -> SDK -> relay
-> proton peer); the tests look at what the peer received and at the alerts table.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from azure.eventhub import TransportType
from azure.eventhub.aio import EventHubProducerClient
from azure.eventhub.exceptions import EventHubError
from plantmon_alerts.delivery import (
    DeliveryMetrics,
    EventHubOptions,
    EventHubPublisher,
    NewEvent,
    StateJournal,
    producer_kwargs,
    transition_id,
)
from plantmon_alerts.settings import AlertSettings
from plantmon_alerts.worker import run
from plantmon_common.settings import DatabaseSettings
from plantmon_dev.waiting import eventually
from prometheus_client import CollectorRegistry

from services.alert_worker.tests.alerts_support import PlantServer, plant_server
from services.alert_worker.tests.amqp_peer import EventHubPeer, HttpProxy
from services.alert_worker.tests.delivery_support import (
    TOKEN,
    alert_rows,
    body,
    wait_events,
    wait_rows,
    worker_settings,
)

UPPER = "Plant/Temperature/Upper"


@contextlib.asynccontextmanager
async def running(settings: AlertSettings, registry: CollectorRegistry) -> AsyncIterator[httpx.AsyncClient]:
    """The worker until the block ends, and an HTTP client on its API once it is subscribed."""
    stop = asyncio.Event()
    task = asyncio.create_task(run(settings, stop, registry=registry))
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{settings.http_port}", timeout=10) as http:

            async def subscribed() -> bool | None:
                if task.done():
                    task.result()
                try:
                    answer = (await http.get("/health")).json()
                except (httpx.TransportError, ValueError):
                    return None
                return True if answer.get("opcua") == "connected" else None

            await eventually(subscribed, what="the worker subscribed")
            yield http
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=60)


async def hot_then_cool(plant: PlantServer, conninfo: str, episode: int) -> None:
    """One alert episode of temperature_high: raised, then cleared (both seen in the table)."""
    await plant.write(plant.upper, 120.0 + episode)
    await wait_rows(conninfo, episode, f"raise {episode}", rule="temperature_high")
    await plant.write(plant.upper, 50.0)
    await wait_rows(conninfo, episode, f"clear {episode}", rule="temperature_high", state="cleared")


async def test_the_hub_receives_each_transition_as_sent(
    tmp_path: Path, alerts_db: DatabaseSettings, superuser_conninfo: str, eventhub_peer: EventHubPeer
) -> None:
    registry = CollectorRegistry()
    async with plant_server(tmp_path / "server-cert") as plant:
        settings = worker_settings(tmp_path, alerts_db, plant.url, eventhub_peer.connection_string)
        async with running(settings, registry) as http:
            await plant.write(plant.upper, 120.0)
            [raised] = await wait_events(eventhub_peer, "the raised event", event="raised", rule="temperature_high")
            [row] = await wait_rows(superuser_conninfo, 1, "the alert row", rule="temperature_high")
            alert_id = str(row["id"])
            assert raised.properties == {
                "alert_id": alert_id,
                "transition_id": transition_id(alert_id, "raised"),
                "event": "raised",
                "severity": 4,
                "tag": UPPER,
                "site": "test-site",
                "rule": "temperature_high",
            }
            assert raised.partition_key == "temperature"  # the asset: the tag's sensor
            sent = body(raised)
            assert sent["schema"] == "plantmon.alert.v1"
            assert (sent["alert_id"], sent["severity"], sent["tag"], sent["site"]) == (alert_id, 4, UPPER, "test-site")
            assert (sent["value"], sent["message"]) == (120.0, "Plant/Temperature/Upper is 120, above 100")
            assert sent["raised_at"] == row["raised_at"].isoformat()

            await plant.write(plant.upper, 130.0)  # a peak: stored, not a lifecycle event
            await wait_rows(superuser_conninfo, 1, "the peak", peak_value=130.0)
            ack = await http.post(
                f"/api/v1/alerts/{alert_id}/ack",
                json={"by": "operator", "comment": "valve opened"},
                headers={"Authorization": f"Bearer {TOKEN}"},
            )
            assert ack.status_code == 200
            [acked] = await wait_events(eventhub_peer, "the acknowledged event", event="acknowledged")
            assert (body(acked)["acknowledged_by"], body(acked)["comment"]) == ("operator", "valve opened")
            assert acked.properties["alert_id"] == alert_id

            await plant.write(plant.upper, 50.0)
            [cleared] = await wait_events(eventhub_peer, "the cleared event", event="cleared", rule="temperature_high")
            assert (body(cleared)["alert_id"], body(cleared)["value"], body(cleared)["peak_value"]) == (
                alert_id,
                50.0,
                130.0,
            )
            assert body(cleared)["value_at_raise"] == 120.0
            notice_rows = [r for r in alert_rows(superuser_conninfo) if r["rule"] == "temperature_notice"]
            assert notice_rows, "the severity-2 rule raised and cleared in the table"

            async def all_delivered() -> bool | None:
                return True if registry.get_sample_value("plantmon_alerts_outbox_depth") == 0 else None

            await eventually(all_delivered, what="an empty outbox")

    # Severity 2 is below ALERTS_EVENTHUB_MIN_SEVERITY (3): stored, never published.
    events = eventhub_peer.events()
    assert [body(e)["event"] for e in events] == ["raised", "acknowledged", "cleared"]
    assert registry.get_sample_value("plantmon_alerts_events_delivered_total") == 3
    assert registry.get_sample_value("plantmon_alerts_delivery_latency_seconds_count") == 3
    assert registry.get_sample_value("plantmon_alerts_eventhub_up") == 1


async def test_every_alert_raised_during_a_30_s_hub_outage_arrives_afterwards(
    tmp_path: Path, alerts_db: DatabaseSettings, superuser_conninfo: str, eventhub_peer: EventHubPeer
) -> None:
    registry = CollectorRegistry()
    async with plant_server(tmp_path / "server-cert") as plant:
        settings = worker_settings(tmp_path, alerts_db, plant.url, eventhub_peer.connection_string)
        async with running(settings, registry):
            await hot_then_cool(plant, superuser_conninfo, 1)
            await wait_events(eventhub_peer, "the first episode delivered", event="cleared")

            eventhub_peer.stop_front()
            outage_started = time.monotonic()
            for episode in (2, 3, 4):
                await hot_then_cool(plant, superuser_conninfo, episode)

            async def failing() -> bool | None:
                failures = registry.get_sample_value("plantmon_alerts_delivery_failures_total") or 0
                return True if failures > 0 else None

            await eventually(failing, what="failed delivery attempts during the outage")

            async def six_waiting() -> bool | None:  # 3 raised + 3 cleared, the database is up
                return True if registry.get_sample_value("plantmon_alerts_outbox_depth") == 6 else None

            await eventually(six_waiting, what="six events waiting in the outbox")
            assert registry.get_sample_value("plantmon_alerts_eventhub_up") == 0
            assert len(eventhub_peer.events()) == 2
            await asyncio.sleep(max(0.0, 30.0 - (time.monotonic() - outage_started)))
            eventhub_peer.start_front()

            rows = alert_rows(superuser_conninfo)
            expected = {
                (str(r["id"]), kind) for r in rows if r["rule"] == "temperature_high" for kind in ("raised", "cleared")
            }
            assert len(expected) == 8

            async def everything_arrived() -> bool | None:
                got = {(body(e)["alert_id"], body(e)["event"]) for e in eventhub_peer.events()}
                return True if expected <= got else None

            await eventually(everything_arrived, timeout=60, what="every alert of the outage delivered")

            async def drained() -> bool | None:
                return True if registry.get_sample_value("plantmon_alerts_outbox_depth") == 0 else None

            await eventually(drained, what="an empty outbox after the outage")
    # At least once: each transition arrived, in order per alert (raised before cleared).
    order = [(body(e)["alert_id"], body(e)["event"]) for e in eventhub_peer.events()]
    for alert_id in {a for a, _ in expected}:
        mine = [kind for a, kind in order if a == alert_id]
        assert mine.index("raised") < mine.index("cleared")


async def test_without_a_connection_string_delivery_is_off_with_one_log_line(
    tmp_path: Path, alerts_db: DatabaseSettings, superuser_conninfo: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    registry = CollectorRegistry()
    async with plant_server(tmp_path / "server-cert") as plant:
        settings = worker_settings(tmp_path, alerts_db, plant.url, None)
        async with running(settings, registry) as http:
            await hot_then_cool(plant, superuser_conninfo, 1)
            health = (await http.get("/health")).json()
    off = [r for r in caplog.records if "Event Hubs" in r.getMessage()]
    assert [r.getMessage() for r in off] == [
        "Event Hubs delivery is off: ALERTS_EVENTHUB_CONNECTION_STRING is not set "
        "(alerts are still evaluated, stored and served)"
    ]
    assert off[0].levelno == logging.WARNING
    assert health["eventhub"] == "off" and health["events_pending"] == 0
    assert registry.get_sample_value("plantmon_alerts_outbox_depth") == 0  # nothing queued for a hub
    assert registry.get_sample_value("plantmon_alerts_events_delivered_total") == 0


async def test_a_rejected_batch_is_sent_again_until_accepted(
    tmp_path: Path, alerts_db: DatabaseSettings, superuser_conninfo: str, eventhub_peer: EventHubPeer
) -> None:
    eventhub_peer.reject_next(3)
    registry = CollectorRegistry()
    async with plant_server(tmp_path / "server-cert") as plant:
        settings = worker_settings(tmp_path, alerts_db, plant.url, eventhub_peer.connection_string)
        async with running(settings, registry):
            await plant.write(plant.upper, 120.0)
            [row] = await wait_rows(superuser_conninfo, 1, "the alert row", rule="temperature_high")
            await wait_events(eventhub_peer, "the raised event after rejections", alert_id=str(row["id"]))
    assert eventhub_peer.rejections == 0
    assert (registry.get_sample_value("plantmon_alerts_delivery_failures_total") or 0) >= 1


async def test_the_peer_answers_management_reads_and_the_relay_is_what_makes_the_sdk_work(
    eventhub_peer: EventHubPeer,
) -> None:
    client = EventHubProducerClient.from_connection_string(eventhub_peer.connection_string, retry_total=0)
    async with client:
        assert await asyncio.wait_for(client.get_partition_ids(), timeout=30) == ["0", "1"]
    assert any(kind == "management" and props.get("operation") == "READ" for kind, props in eventhub_peer.requests)
    # Straight to proton (no relay): 5.15.1 fails on the compact performative lists.
    direct = eventhub_peer.connection_string.replace(str(eventhub_peer.port), str(eventhub_peer.backend_port))
    client = EventHubProducerClient.from_connection_string(direct, retry_total=0)
    with pytest.raises(EventHubError, match="list index out of range") as failed:
        async with client:
            await asyncio.wait_for(client.get_partition_ids(), timeout=30)
    assert isinstance(failed.value.__context__, IndexError)  # uamqp's decoder, wrapped by the SDK


def test_websockets_and_the_http_proxy_are_handed_to_the_sdk() -> None:
    plain = producer_kwargs(EventHubOptions("Endpoint=sb://x/;SharedAccessKeyName=k;SharedAccessKey=v"))
    assert plain["transport_type"] is TransportType.Amqp
    assert (plain["retry_total"], plain["retry_backoff_factor"], plain["retry_backoff_max"]) == (1, 0.2, 2.0)
    ws = producer_kwargs(EventHubOptions("cs", transport="websockets"))
    assert ws["transport_type"] is TransportType.AmqpOverWebsocket and "http_proxy" not in ws
    proxied = producer_kwargs(EventHubOptions("cs", http_proxy="http://user:secret@proxy.plant:3128"))
    assert proxied["transport_type"] is TransportType.AmqpOverWebsocket
    assert proxied["http_proxy"] == {
        "proxy_hostname": "http://proxy.plant",  # the async transport hands it to aiohttp as a URL
        "proxy_port": 3128,
        "username": "user",
        "password": "secret",
    }
    # The SDK accepts them as they are (its configuration forces WebSockets with a proxy).
    client = EventHubProducerClient.from_connection_string(
        "Endpoint=sb://127.0.0.1:1;SharedAccessKeyName=k;SharedAccessKey=v;EntityPath=alerts", **proxied
    )
    assert client._config.transport_type is TransportType.AmqpOverWebsocket
    assert client._config.http_proxy == proxied["http_proxy"]


NO_DB = DatabaseSettings(user="plantmon_alerts")  # settings only: nothing connects


def test_a_bad_proxy_setting_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="http:// URL"):
        worker_settings(tmp_path, NO_DB, "opc.tcp://127.0.0.1:1/", None, eventhub_http_proxy="socks5://proxy:1080")
    with pytest.raises(ValueError, match="host and a port"):
        worker_settings(tmp_path, NO_DB, "opc.tcp://127.0.0.1:1/", None, eventhub_http_proxy="http://proxy")


def test_the_connection_string_is_checked_at_start_and_empty_means_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValueError, match="EntityPath"):
        worker_settings(
            tmp_path, NO_DB, "opc.tcp://h:1/", "Endpoint=sb://ns.example/;SharedAccessKeyName=k;SharedAccessKey=v"
        )
    with pytest.raises(ValueError, match="SharedAccessKey"):
        worker_settings(tmp_path, NO_DB, "opc.tcp://h:1/", "Endpoint=sb://ns.example/;EntityPath=alerts")
    # The SDK's own parser decides, so what passes here is what the producer client connects with.
    with pytest.raises(ValueError, match="CONNECTION_STRING: Connection string is either blank or malformed"):
        worker_settings(tmp_path, NO_DB, "opc.tcp://h:1/", "SharedAccessKeyName=k;SharedAccessKey=v;EntityPath=a")
    with pytest.raises(ValueError, match="Only one of the SharedAccessKey or SharedAccessSignature") as refused:
        worker_settings(
            tmp_path,
            NO_DB,
            "opc.tcp://h:1/",
            "Endpoint=sb://ns.example/;SharedAccessKeyName=k;SharedAccessKey=hunter2;SharedAccessSignature=s;EntityPath=a",
        )
    assert "hunter2" not in str(refused.value)  # the reason, never the key
    # As the worker starts: from the environment, where pydantic would quote the inputs around the error.
    monkeypatch.setenv("PGUSER", "plantmon_alerts")
    monkeypatch.setenv("ALERTS_API_TOKEN", "SECRET-api-token-0123456789abcdef")
    monkeypatch.setenv(
        "ALERTS_EVENTHUB_CONNECTION_STRING",
        "Endpoint=sb://ns.example/;SharedAccessKeyName=k;SharedAccessKey=0123456789abcdef-key-SECRET;"
        "SharedAccessSignature=s;EntityPath=a",
    )
    with pytest.raises(ValueError, match="Only one of the SharedAccessKey") as from_env:
        AlertSettings()
    assert "SECRET" not in str(from_env.value)
    monkeypatch.delenv("ALERTS_API_TOKEN")
    named = worker_settings(
        tmp_path,
        NO_DB,
        "opc.tcp://h:1/",
        "Endpoint=sb://ns.example/;SharedAccessSignature=sig",
        eventhub_name="alerts",
    )
    assert named.eventhub_connection_string is not None
    monkeypatch.setenv("PGUSER", "plantmon_alerts")
    monkeypatch.setenv("ALERTS_EVENTHUB_CONNECTION_STRING", "")
    settings = AlertSettings()
    assert settings.eventhub_connection_string is None  # the template's empty value: delivery off
    assert (settings.eventhub_min_severity, settings.eventhub_transport) == (3, "amqp")


async def test_amqp_over_websockets_through_an_authenticating_http_proxy_delivers(eventhub_peer: EventHubPeer) -> None:
    """The outbound-443 path: WebSockets (subprotocol AMQPWSB10) through a forward proxy with Basic auth.

    The relay answers the WebSocket upgrade itself; ``custom_endpoint`` (the SDK's
    ``custom_endpoint_address``) points the SDK at it instead of port 443.
    """
    proxy = HttpProxy("plant", "proxy-secret")
    await proxy.start()
    journal = StateJournal(None)
    options = EventHubOptions(
        eventhub_peer.connection_string,
        transport="websockets",
        http_proxy=f"http://plant:proxy-secret@127.0.0.1:{proxy.port}",
        custom_endpoint=f"sb://127.0.0.1:{eventhub_peer.port}",
        retry_total=0,
    )
    publisher = EventHubPublisher(options, journal, DeliveryMetrics(CollectorRegistry()))
    alert_id = str(uuid.uuid4())
    event = {"event": "raised", "alert_id": alert_id, "severity": 5, "tag": UPPER, "site": "s", "rule": "r"}
    journal.add_event(NewEvent(transition_id(alert_id, "raised"), alert_id, "temperature", event))
    try:
        assert await asyncio.wait_for(publisher.send_pending(), timeout=60) == 1
    finally:
        await publisher.close()
        await proxy.stop()
    [received] = eventhub_peer.events()
    assert (body(received), received.properties["alert_id"]) == (event, alert_id)
    assert journal.event_depth == 0
    [(request_line, auth)] = proxy.requests
    assert request_line.startswith(f"GET ws://127.0.0.1:{eventhub_peer.port}/")
    assert auth == "Basic " + base64.b64encode(b"plant:proxy-secret").decode()
    [upgrade] = eventhub_peer.relay.websocket_requests
    assert (upgrade["upgrade"], upgrade["sec-websocket-protocol"]) == ("websocket", "AMQPWSB10")
