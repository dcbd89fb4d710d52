"""Helpers of the alert worker tests: a secure asyncua plant server, a cuttable TCP proxy, polling."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from asyncua import Node, Server, ua
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.user_managers import UserManager
from plantmon_common.opcua import ensure_certificate
from plantmon_dev.procs import free_port

from services.alert_worker.tests.loopback_support import LoopbackServer, splice

T = TypeVar("T")

OPC_USER = "alerts"
OPC_PASSWORD = "opc-password-for-tests"

# The severity-4 threshold rule on the temperatures that the worker and delivery tests raise.
TEMPERATURE_HIGH_RULE = """\
  - name: temperature_high
    kind: threshold
    tags: Plant/Temperature/*
    high: 100
    hysteresis: 5
    for: 0
    severity: 4
    message: "{tag} is {value:.0f}, above {threshold:.0f}"
"""


class _Users(UserManager):
    """One service account; everybody else (anonymous included) is refused."""

    def get_user(
        self, iserver: Any, username: str | None = None, password: str | None = None, certificate: Any = None
    ) -> User | None:
        if username == OPC_USER and password == OPC_PASSWORD:
            return User(role=UserRole.User)
        return None


@dataclass
class PlantServer:
    server: Server
    url: str
    upper: Node

    async def write(self, node: Node, value: float, status: int = ua.StatusCodes.Good) -> None:
        await node.write_value(
            ua.DataValue(
                ua.Variant(value, ua.VariantType.Double),
                StatusCode=ua.StatusCode(status),
                SourceTimestamp=datetime.now(UTC),
            )
        )


@contextlib.asynccontextmanager
async def plant_server(cert_dir: Path) -> AsyncIterator[PlantServer]:
    """Objects/Plant/Temperature/Upper on a free port, Basic256Sha256 SignAndEncrypt + username only."""
    port = free_port()
    url = f"opc.tcp://127.0.0.1:{port}/freeopcua/server/"
    uri = "urn:plantmon:test:opc-server"
    server = Server(user_manager=_Users())
    await server.init()
    server.set_endpoint(url)
    await server.set_application_uri(uri)
    server.set_security_policy([ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt])
    server.set_identity_tokens([ua.UserNameIdentityToken])
    cert, key = await ensure_certificate(cert_dir, uri, "localhost", server=True)
    await server.load_certificate(str(cert))
    await server.load_private_key(str(key))
    idx = await server.register_namespace("urn:plantmon:plant")
    plant = await server.nodes.objects.add_object(ua.NodeId("Plant", idx), ua.QualifiedName("Plant", idx))
    temperature = await plant.add_object(ua.NodeId("Plant/Temperature", idx), ua.QualifiedName("Temperature", idx))
    upper = await temperature.add_variable(
        ua.NodeId("Plant/Temperature/Upper", idx), ua.QualifiedName("Upper", idx), 20.0, ua.VariantType.Double
    )
    async with server:
        yield PlantServer(server, url, upper)


class CuttableProxy(LoopbackServer):
    """A TCP proxy in front of PostgreSQL whose link the test cuts and restores (a database outage)."""

    def __init__(self, upstream_port: int) -> None:
        super().__init__(free_port())
        self.upstream_port = upstream_port

    async def cut(self) -> None:
        """Refuse new connections and break every open one."""
        await self.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        await splice((reader, writer), (up_reader, up_writer))
        self._writers -= {writer, up_writer}
