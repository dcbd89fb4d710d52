"""Test support: a secure asyncua plant server the test drives, scraper settings and polling helpers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg
import pytest
from asyncua import Server, ua
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.user_managers import UserManager
from plantmon_common.opcua import ensure_certificate
from plantmon_common.settings import DatabaseSettings
from plantmon_dev.procs import free_port
from plantmon_scraper.settings import ScraperOpcUaSettings, ScraperSettings
from pydantic import SecretStr

OPC_USER = "scraper"
OPC_PASSWORD = "opc-Secret-987"
SERVER_URI = "urn:plantmon:test-plant"
TAG_PATHS = ["Plant/Temperature/Upper", "Plant/Temperature/Lower", "Plant/RPM/MainShaft"]
# Variables start with this value far in the past; tests look only at rows from BASE_TIME on.
INITIAL_VALUE = -1.0


class OneUser(UserManager):
    """Lets exactly one username/password in."""

    def get_user(self, iserver, username=None, password=None, certificate=None):  # type: ignore[no-untyped-def]
        if username == OPC_USER and password == OPC_PASSWORD:
            return User(role=UserRole.User)
        return None


class PlantServer:
    """A real asyncua server with ``Objects/Plant/<Sensor>/<Tag>`` (string NodeIds ``Plant/...``),
    Basic256Sha256 SignAndEncrypt only, one user; the test publishes values with source timestamps."""

    def __init__(self, port: int, cert_dir: Path, paths: list[str], *, history: bool = True) -> None:
        self.history = history
        self.port = port
        self.cert_dir = cert_dir
        self.paths = paths
        self.url = f"opc.tcp://127.0.0.1:{port}/freeopcua/server/"
        self.server: Server | None = None
        self.nodes: dict[str, ua.NodeId] = {}

    async def start(self) -> None:
        server = Server(user_manager=OneUser())
        await server.init()
        server.set_endpoint(self.url)
        server.set_server_name("plantmon test plant")
        await server.set_application_uri(SERVER_URI)
        server.set_security_policy([ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt])
        cert, key = await ensure_certificate(self.cert_dir, SERVER_URI, "localhost", server=True)
        await server.load_certificate(str(cert))
        await server.load_private_key(str(key))
        ns = await server.register_namespace("urn:plantmon:plant")
        folders = {
            "Plant": await server.nodes.objects.add_folder(ua.NodeId("Plant", ns), ua.QualifiedName("Plant", ns))
        }
        for path in self.paths:
            parts = path.split("/")
            for depth in range(2, len(parts)):
                folder_path = "/".join(parts[:depth])
                if folder_path not in folders:
                    parent = folders["/".join(parts[: depth - 1])]
                    folders[folder_path] = await parent.add_folder(
                        ua.NodeId(folder_path, ns), ua.QualifiedName(parts[depth - 1], ns)
                    )
            parent = folders["/".join(parts[:-1])]
            var = await parent.add_variable(
                ua.NodeId(path, ns), ua.QualifiedName(parts[-1], ns), INITIAL_VALUE, varianttype=ua.VariantType.Double
            )
            self.nodes[path] = var.nodeid
        self.server = server
        for path in self.paths:
            await self.publish(path, INITIAL_VALUE, datetime(2020, 1, 1, tzinfo=UTC))
        await server.start()
        if self.history:
            # Like the plant's server: every variable historized (asyncua's in-memory history).
            for path in self.paths:
                await server.historize_node_data_change(server.get_node(self.nodes[path]), period=None, count=100_000)

    async def publish(self, path: str, value: float, source_time: datetime, status: int = ua.StatusCodes.Good) -> None:
        assert self.server is not None
        await self.server.write_attribute_value(
            self.nodes[path],
            ua.DataValue(
                ua.Variant(value, ua.VariantType.Double),
                ua.StatusCode(status),
                SourceTimestamp=source_time,
                ServerTimestamp=datetime.now(UTC),
            ),
        )

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()
            self.server = None


@pytest.fixture
async def plant_server(tmp_path: Path) -> AsyncIterator[PlantServer]:
    server = PlantServer(free_port(), tmp_path / "server-pki", TAG_PATHS)
    await server.start()
    yield server
    await server.stop()


def scraper_settings(opc_url: str, db_env: dict[str, str], writer_password: str, cert_dir: Path) -> ScraperSettings:
    """Settings for a scraper on a free HTTP port, connecting securely as OPC_USER and as plantmon_writer."""
    return ScraperSettings(
        http_host="127.0.0.1",
        http_port=0,
        log_format="text",
        opcua=ScraperOpcUaSettings(
            url=opc_url,
            username=OPC_USER,
            password=SecretStr(OPC_PASSWORD),
            cert_dir=cert_dir,
            hostname="localhost",
            timeout_s=3.0,
            publishing_interval_ms=50,
            reconnect_initial_s=0.2,
            reconnect_max_s=1.0,
            watchdog_interval_s=0.5,
        ),
        database=DatabaseSettings(
            host=db_env["PGHOST"],
            port=int(db_env["PGPORT"]),
            database=db_env["PGDATABASE"],
            user="plantmon_writer",
            password=SecretStr(writer_password),
        ),
        batch_age_s=0.1,
        retry_initial_s=0.1,
        retry_max_s=0.5,
        spool_dir=cert_dir.parent / "spool",
        maintenance_interval_s=1.0,
    )


async def fetch_rows(conninfo: str, since: datetime) -> list[tuple[str, datetime, float | None, int]]:
    """``(path, time, value, status)`` of every sample from ``since`` on, in time order."""
    async with await psycopg.AsyncConnection.connect(conninfo) as conn:
        cursor = await conn.execute(
            "SELECT t.path, s.time, s.value, s.status FROM samples s JOIN tags t ON t.id = s.tag_id "
            "WHERE s.time >= %s ORDER BY t.path, s.time",
            (since,),
        )
        return await cursor.fetchall()  # type: ignore[return-value]


async def metric(port: int, name: str) -> float:
    """The value of one sample line of the scraper's /metrics."""
    async with httpx.AsyncClient(follow_redirects=True) as client:
        text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"metric {name} not found")


def stamps(base: datetime) -> Callable[[int], datetime]:
    """Source timestamp of the i-th published value: distinct and increasing, 1 ms apart."""
    return lambda i: base + timedelta(milliseconds=i)
