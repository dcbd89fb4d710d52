"""The client trust list, and what /metrics and /health tell Prometheus, over real HTTP and OPC UA."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import httpx
import pytest
from plantmon_common.opcua import OpcUaError, connect, ensure_certificate
from plantmon_dev.waiting import eventually
from prometheus_client.parser import text_string_to_metric_families

from services.opc_server.tests.support import (
    FakeSensorApi,
    client_settings,
    plant_server,
    server_settings,
    subscribed,
)


async def test_only_clients_in_the_trust_list_get_a_session(sensor_api: FakeSensorApi, tmp_path: Path) -> None:
    trusted_dir = tmp_path / "trusted-clients"
    settings = server_settings(tmp_path, f"http://127.0.0.1:{sensor_api.port}", trusted_client_certs_dir=trusted_dir)
    known = client_settings(settings, tmp_path, cert_dir=tmp_path / "pki-known", application_uri="urn:plantmon:known")
    stranger = client_settings(
        settings, tmp_path, cert_dir=tmp_path / "pki-stranger", application_uri="urn:plantmon:stranger"
    )
    known_cert, _ = await ensure_certificate(known.cert_dir, known.application_uri, known.hostname)
    async with plant_server(settings):
        with pytest.raises(OpcUaError):
            async with connect(known):
                pass
        # trusting a client is copying its certificate into the folder; no restart
        shutil.copy(known_cert, trusted_dir / "known.der")
        async with connect(known) as client:
            assert await client.nodes.server_state.read_value() == 0
        with pytest.raises(OpcUaError):
            async with connect(stranger):
                pass


async def scrape(url: str) -> dict[str, float]:
    """``/metrics`` over HTTP (the server runs in this event loop: never a blocking client here)."""
    async with httpx.AsyncClient(timeout=10, follow_redirects=True) as http:
        text = (await http.get(url)).text
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name] = sample.value
    return samples


async def test_metrics_count_polls_failures_sessions_subscriptions_and_monitored_items(
    sensor_api: FakeSensorApi, tmp_path: Path
) -> None:
    settings = server_settings(tmp_path, f"http://127.0.0.1:{sensor_api.port}")
    async with plant_server(settings) as plant:
        url = f"http://127.0.0.1:{plant.http_port}"  # type: ignore[attr-defined]
        received: list[object] = []
        async with (
            connect(client_settings(settings, tmp_path)),
            subscribed(client_settings(settings, tmp_path, cert_dir=tmp_path / "pki-sub"), received),  # type: ignore[arg-type]
        ):

            async def sessions_and_items() -> bool:
                m = await scrape(f"{url}/metrics")
                return (
                    m.get("plantmon_opc_server_sessions") == 2
                    and m.get("plantmon_opc_server_subscriptions") == 1
                    and m.get("plantmon_opc_server_monitored_items") == len(sensor_api.tags)
                )

            await eventually(
                sessions_and_items, timeout=15, interval=0.2, what="the sessions and monitored items counted"
            )

        async def no_sessions() -> bool:
            return (await scrape(f"{url}/metrics")).get("plantmon_opc_server_sessions") == 0

        await eventually(no_sessions, timeout=15, what="no session left")
        metrics = await scrape(f"{url}/metrics")
        assert metrics["plantmon_opc_server_subscriptions"] == 0
        assert metrics["plantmon_opc_server_monitored_items"] == 0
        assert metrics["plantmon_opc_server_poll_latency_seconds_count"] >= 1
        assert metrics["plantmon_opc_server_poll_latency_seconds_sum"] > 0
        assert metrics["plantmon_opc_server_poll_failures_total"] == 0
        assert metrics["plantmon_opc_server_tags"] == len(sensor_api.tags)
        assert metrics["plantmon_opc_server_sensors_reachable"] == 1

        sensor_api.up = False

        async def failures_counted() -> bool:
            return (await scrape(f"{url}/metrics"))["plantmon_opc_server_poll_failures_total"] >= 2

        await eventually(failures_counted, what="two poll failures in /metrics")
        assert (await scrape(f"{url}/metrics"))["plantmon_opc_server_sensors_reachable"] == 0
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            health = (await http.get("/health")).json()
            assert health["sensors_reachable"] is False and health["consecutive_failures"] >= 2
            assert "503" in health["last_error"]
            sensor_api.up = True

            async def healthy_again() -> bool:
                return bool((await http.get("/health")).json()["sensors_reachable"])

            await eventually(healthy_again, what="/health says the sensors are reachable again")


async def test_metrics_report_how_long_the_event_loop_was_held(sensor_api: FakeSensorApi, tmp_path: Path) -> None:
    settings = server_settings(tmp_path, f"http://127.0.0.1:{sensor_api.port}")
    async with plant_server(settings) as plant:
        url = f"http://127.0.0.1:{plant.http_port}/metrics"  # type: ignore[attr-defined]

        async def probed() -> bool:
            return (await scrape(url)).get("plantmon_opc_server_event_loop_lag_seconds_count", 0) >= 1

        await eventually(probed, what="a first event-loop lag probe in /metrics")
        # Hold the loop the server runs in, as a long synchronous step would: the probe's 0.1 s
        # timer, armed before, fires at least 0.3 s after it was armed, so 0.2 s late or more.
        time.sleep(0.3)  # the scenario (a blocked loop), not a wait

        async def stall_seen() -> bool:
            return (await scrape(url)).get("plantmon_opc_server_event_loop_lag_max_seconds", 0) >= 0.2

        await eventually(stall_seen, what="a loop lag of 0.2 s or more in /metrics")
