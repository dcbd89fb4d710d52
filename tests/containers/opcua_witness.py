"""An independent OPC UA subscriber: what the server really served, recorded on the host.

Plain asyncua (none of plantmon's client code), the way a SCADA connects: the published port,
Basic256Sha256 SignAndEncrypt, the operator account, every variable below ``Objects/Plant``
subscribed, and a reconnect loop when the server goes away. Each notification is kept by
``(tag path, source time)``; the container faults test compares that with ``samples``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from asyncua import Client, Node, ua
from asyncua.crypto import security_policies
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from cryptography.x509.oid import ExtendedKeyUsageOID

logger = logging.getLogger(__name__)

Key = tuple[str, datetime]


@dataclass
class Witness:
    url: str
    username: str
    password: str
    cert_dir: Path
    received: dict[Key, tuple[float | None, int]] = field(default_factory=dict)
    duplicates: int = 0
    sessions: int = 0
    _paths: dict[str, str] = field(default_factory=dict)

    def datachange_notification(self, node: Node, val: Any, data: Any) -> None:
        dv: ua.DataValue = data.monitored_item.Value
        path = self._paths.get(node.nodeid.to_string())
        if path is None or dv.SourceTimestamp is None:
            return
        stamp = dv.SourceTimestamp if dv.SourceTimestamp.tzinfo else dv.SourceTimestamp.replace(tzinfo=UTC)
        raw = dv.Value.Value if dv.Value is not None else None
        try:  # as the scraper stores it: a value that is not a number is NULL
            value = float(raw) if raw is not None else None
        except (TypeError, ValueError):
            value = None
        status = dv.StatusCode.value if dv.StatusCode is not None else 0
        key = (path, stamp)
        if key in self.received and self.received[key] != (value, status):
            self.duplicates += 1
        self.received[key] = (value, status)

    async def _variables(self, client: Client) -> list[Node]:
        plant = None
        for ref in await client.nodes.objects.get_children_descriptions():
            if ref.BrowseName.Name == "Plant":
                plant = client.get_node(ref.NodeId)
        assert plant is not None, "the server has no Objects/Plant"
        found: list[Node] = []

        async def walk(node: Node, path: str) -> None:
            for ref in await node.get_children_descriptions(refs=ua.ObjectIds.HierarchicalReferences):
                child = client.get_node(ref.NodeId)
                child_path = f"{path}/{ref.BrowseName.Name}"
                if ref.NodeClass == ua.NodeClass.Variable:
                    if ref.BrowseName.Name not in {"EURange", "EngineeringUnits"}:
                        self._paths[ref.NodeId.to_string()] = child_path
                        found.append(child)
                elif ref.NodeClass == ua.NodeClass.Object:
                    await walk(child, child_path)

        await walk(plant, "Plant")
        return found

    async def _session(self, stop: asyncio.Event) -> None:
        cert, key = self.cert_dir / "cert.der", self.cert_dir / "key.pem"
        self.cert_dir.mkdir(parents=True, exist_ok=True)
        await setup_self_signed_certificate(
            key, cert, "urn:plantmon:tests:witness", "localhost", [ExtendedKeyUsageOID.CLIENT_AUTH], {}
        )
        client = Client(self.url, timeout=5, watchdog_intervall=1.0)
        client.application_uri = "urn:plantmon:tests:witness"
        await client.set_security(
            security_policies.SecurityPolicyBasic256Sha256,
            str(cert),
            str(key),
            mode=ua.MessageSecurityMode.SignAndEncrypt,
        )
        client.set_user(self.username)
        client.set_password(self.password)
        async with client:
            self.sessions += 1
            nodes = await self._variables(client)
            sub = await client.create_subscription(250, self)
            await sub.subscribe_data_change(nodes, queuesize=100)
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1)
                await client.check_connection()

    async def run(self, stop: asyncio.Event) -> None:
        """Subscribe until ``stop``; reconnect (every second) whenever the server is gone."""
        while not stop.is_set():
            try:
                await self._session(stop)
            except Exception as exc:  # the server went away in any of asyncua's ways: reconnect
                logger.info("witness session ended", extra={"error": repr(exc)})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1)
