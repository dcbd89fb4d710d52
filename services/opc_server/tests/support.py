"""Test support: a controllable sensor API peer over real HTTP and a secure PlantServer in front of it."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from asyncua import Client, ua
from fastapi import FastAPI, Response
from fastapi.encoders import jsonable_encoder
from plantmon_common.opcua import OpcUaClientSettings, PlantSubscriber, Sample, datavalue_to_sample
from plantmon_common.service import serve_http
from plantmon_dev.procs import free_port
from plantmon_dev.waiting import eventually
from plantmon_opc_server.server import PlantServer, running_server
from plantmon_opc_server.settings import OpcServerSettings
from pydantic import SecretStr

SERVICE_PASSWORD = "svc-secret-123"
OPERATOR_PASSWORD = "op-secret-456"

BASE_TAGS = [
    ("Plant/Temperature/Upper", "°C", -200.0, 1350.0, 65.0),
    ("Plant/Temperature/Lower", "°C", -200.0, 1350.0, 55.0),
    ("Plant/RPM/MainShaft", "1/min", 0.0, 6000.0, 1500.0),
    ("Plant/Voltage/MainSupply", "V", 0.0, 60.0, 24.0),
]


@dataclass
class FakeSensorApi:
    """A real HTTP peer serving /api/v1/readings whose content each test controls."""

    tags: dict[str, dict[str, Any]] = field(default_factory=dict)
    up: bool = True
    frozen: bool = False
    port: int = 0

    def __post_init__(self) -> None:
        for path, unit, low, high, value in BASE_TAGS:
            self.add(path, unit, low, high, value)

    def add(self, path: str, unit: str, low: float, high: float, value: float) -> None:
        self.tags[path] = {
            "path": path,
            "unit": unit,
            "eu_low": low,
            "eu_high": high,
            "description": f"test {path}",
            "sensor_id": path.split("/")[1].lower(),
            "value": value,
            "quality": "good",
            "reason": None,
        }

    def set(self, path: str, **values: Any) -> None:
        self.tags[path].update(values)

    def app(self) -> FastAPI:
        app = FastAPI()
        meta_fields = ("path", "unit", "eu_low", "eu_high", "description", "sensor_id")

        @app.get("/api/v1/tags")
        def tags() -> Response:
            if not self.up:
                return Response(status_code=503)
            rows = [{k: tag[k] for k in meta_fields} for tag in self.tags.values()]
            return Response(content=json.dumps(rows), media_type="application/json")

        @app.get("/api/v1/readings")
        def readings() -> Response:
            if not self.up:
                return Response(status_code=503)
            now = datetime.now(UTC)
            rows = []
            for tag in self.tags.values():
                row = dict(tag)
                row["observed_at"] = (tag.get("frozen_at") if self.frozen else None) or now
                tag["frozen_at"] = row["observed_at"]
                rows.append(row)
            return Response(content=json.dumps(jsonable_encoder({"readings": rows})), media_type="application/json")

        return app


@pytest.fixture
async def sensor_api() -> AsyncIterator[FakeSensorApi]:
    api = FakeSensorApi()
    async with serve_http(api.app(), "127.0.0.1", 0) as http:
        api.port = http.port
        yield api


def server_settings(tmp_path: Path, sensors_url: str, **overrides: Any) -> OpcServerSettings:
    values: dict[str, Any] = {
        "sensors_url": sensors_url,
        "endpoint": f"opc.tcp://127.0.0.1:{free_port()}/freeopcua/server/",
        "public_hostname": "localhost",
        "cert_dir": tmp_path / "pki-server",
        "poll_interval_s": 0.2,
        "poll_timeout_s": 1.0,
        "http_host": "127.0.0.1",
        "http_port": 0,
        "service_password": SecretStr(SERVICE_PASSWORD),
        "operator_password": SecretStr(OPERATOR_PASSWORD),
        "log_format": "text",
    }
    values.update(overrides)
    return OpcServerSettings(**values)


def client_settings(server: OpcServerSettings, tmp_path: Path, **overrides: Any) -> OpcUaClientSettings:
    values: dict[str, Any] = {
        "url": server.endpoint,
        "username": "plantmon",
        "password": SecretStr(SERVICE_PASSWORD),
        "cert_dir": tmp_path / "pki-client",
        "hostname": "localhost",
        "application_uri": "urn:plantmon:test-client",
        "timeout_s": 5.0,
    }
    values.update(overrides)
    return OpcUaClientSettings(**values)


@contextlib.asynccontextmanager
async def plant_server(settings: OpcServerSettings) -> AsyncIterator[PlantServer]:
    stop = asyncio.Event()
    async with running_server(settings, stop) as plant:
        await asyncio.wait_for(plant.first_good.wait(), timeout=20)
        yield plant


@contextlib.asynccontextmanager
async def subscribed(client_cfg: OpcUaClientSettings, sink: list[Sample]) -> AsyncIterator[PlantSubscriber]:
    """A running :class:`PlantSubscriber` (every tag, StatusValueTimestamp) appending to ``sink``."""
    stop = asyncio.Event()
    subscriber = PlantSubscriber(client_cfg, sink.append)
    task = asyncio.create_task(subscriber.run(stop), name="test-subscriber")
    try:
        await eventually(lambda: subscriber.connected, timeout=20, what="the subscriber connected")
        yield subscriber
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=20)


def history_reader_settings(server: OpcServerSettings, tmp_path: Path) -> OpcUaClientSettings:
    return client_settings(server, tmp_path, username="operator", password=SecretStr(OPERATOR_PASSWORD))


async def read_history(
    client: Client, path: str, start: datetime | None, end: datetime | None, num_values: int = 0
) -> tuple[list[Sample], list[ua.StatusCode]]:
    """ReadRaw of one tag, following continuation points; the samples and each answer's status."""
    ns = await client.get_namespace_index("urn:plantmon:plant")
    node = client.get_node(ua.NodeId(path, ns))
    details = ua.ReadRawModifiedDetails(
        IsReadModified=False,
        StartTime=start or ua.get_win_epoch(),
        EndTime=end or ua.get_win_epoch(),
        NumValuesPerNode=num_values,
        ReturnBounds=False,
    )
    samples: list[Sample] = []
    statuses: list[ua.StatusCode] = []
    continuation: bytes | None = None
    for _ in range(10_000):
        result = await node.history_read(details, continuation)
        statuses.append(result.StatusCode)
        if not result.StatusCode.is_good():
            break
        samples += [datavalue_to_sample(path, dv) for dv in result.HistoryData.DataValues]
        continuation = result.ContinuationPoint
        if not continuation:
            break
    return samples, statuses
