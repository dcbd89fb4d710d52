"""The server in front of the real nginx DMZ and the real sensor service (simulator), in secure mode.

sensors (plantmon_sensors.api, simulator) --HTTP--> nginx (the project's template) --HTTP-->
PlantServer --OPC UA SignAndEncrypt--> a real asyncua client.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from asyncua import Client, ua
from plantmon_common.opcua import Sample, browse_plant, connect
from plantmon_common.service import serve_http
from plantmon_dev.procs import free_port
from plantmon_dev.waiting import eventually
from plantmon_sensors.api import create_app
from plantmon_sensors.settings import SensorSettings

from services.opc_server.tests.support import client_settings, plant_server, server_settings, subscribed
from tests.plugins.nginx import DmzFactory

UPPER = "Plant/Temperature/Upper"


class RealSensors:
    """The sensor service's own app in simulation mode, on a fixed port, stoppable and restartable."""

    def __init__(self, state_dir: Path) -> None:
        self.port = free_port()
        self.settings = SensorSettings(mode="sim", state_dir=state_dir, http_host="127.0.0.1", http_port=self.port)
        self._stack: contextlib.AsyncExitStack | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        stack = contextlib.AsyncExitStack()
        await stack.enter_async_context(serve_http(create_app(self.settings), "127.0.0.1", self.port))
        self._stack = stack

    async def stop(self) -> None:
        if self._stack is not None:
            stack, self._stack = self._stack, None
            await stack.aclose()


@pytest.fixture
async def sensors(tmp_path: Path) -> AsyncIterator[RealSensors]:
    real = RealSensors(tmp_path / "sensors-state")
    await real.start()
    try:
        yield real
    finally:
        await real.stop()


async def status_of(client: Client, path: str) -> int:
    ns = await client.get_namespace_index("urn:plantmon:plant")
    dv = await client.get_node(ua.NodeId(path, ns)).read_data_value(raise_on_bad_status=False)
    return int(dv.StatusCode.value)


async def test_values_through_the_dmz_equal_the_sensor_api(
    sensors: RealSensors, dmz_factory: DmzFactory, tmp_path: Path
) -> None:
    dmz = dmz_factory(sensors.port)
    settings = server_settings(tmp_path, dmz.url, poll_interval_s=0.25)
    received: list[Sample] = []
    served: dict[datetime, float] = {}
    async with (
        plant_server(settings),
        connect(client_settings(settings, tmp_path)) as client,
        subscribed(client_settings(settings, tmp_path, cert_dir=tmp_path / "pki-sub"), received),
        httpx.AsyncClient(base_url=sensors.url, timeout=5) as direct,
    ):
        advertised = (await direct.get("/api/v1/tags")).json()
        browsed = [t.path for t in await browse_plant(client, with_metadata=False)]
        assert browsed == sorted(t["path"] for t in advertised)

        async def seen_in_both() -> bool:
            body = (await direct.get("/temperature/upper")).json()
            if body["quality"] == "good":
                served[datetime.fromisoformat(body["observed_at"])] = body["value"]
            return len({s.source_time for s in received if s.path == UPPER} & served.keys()) >= 3

        await eventually(seen_in_both, timeout=30, interval=0.1, what="the value seen by both subscribers")
    common = [s for s in received if s.path == UPPER and s.source_time in served]
    assert all(s.status == 0 and s.value == served[s.source_time] for s in common)


async def outage_is_bad_communication_error_within_two_polls_then_good(
    dmz_url: str,
    tmp_path: Path,
    path: str,
    cut: Callable[[], Awaitable[None]],
    restore: Callable[[], Awaitable[None]],
) -> None:
    """Cut the link behind the server (``cut``): ``path`` and every other tag turn BadCommunicationError
    within two polls; ``restore`` it: Good again."""
    settings = server_settings(tmp_path, dmz_url, poll_interval_s=0.5)
    async with plant_server(settings) as plant, connect(client_settings(settings, tmp_path)) as client:
        polls_at_stop = plant.health.polls
        await cut()

        async def communication_error() -> bool:
            return bool(await status_of(client, path) == ua.StatusCodes.BadCommunicationError)

        await eventually(communication_error, timeout=20, what="BadCommunicationError through the DMZ")
        assert plant.health.failing_since_poll is not None
        assert plant.health.failing_since_poll - polls_at_stop <= 2
        assert plant.health.last_error  # the transport error, e.g. ConnectError
        assert await status_of(client, "Plant/RPM/MainShaft") == ua.StatusCodes.BadCommunicationError

        await restore()

        async def good_again() -> bool:
            return bool(await status_of(client, path) == ua.StatusCodes.Good)

        await eventually(good_again, timeout=30, what="Good values again through the DMZ")
        assert plant.health.sensors_reachable


async def test_sensors_stopped_behind_the_dmz_is_bad_communication_error_within_two_polls_then_good(
    sensors: RealSensors, dmz_factory: DmzFactory, tmp_path: Path
) -> None:
    dmz = dmz_factory(sensors.port)
    await outage_is_bad_communication_error_within_two_polls_then_good(
        dmz.url, tmp_path, UPPER, sensors.stop, sensors.start
    )


async def test_dmz_down_is_bad_communication_error_and_recovers_when_it_returns(
    sensors: RealSensors, dmz_factory: DmzFactory, tmp_path: Path
) -> None:
    dmz = dmz_factory(sensors.port)

    async def stop_dmz() -> None:
        await asyncio.to_thread(dmz.stop)

    async def start_dmz() -> None:
        await asyncio.to_thread(dmz.start)

    await outage_is_bad_communication_error_within_two_polls_then_good(
        dmz.url, tmp_path, "Plant/Voltage/MainSupply", stop_dmz, start_dmz
    )
