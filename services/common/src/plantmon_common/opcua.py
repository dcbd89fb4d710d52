"""The OPC UA side every client service shares: certificates, the secure connection, and the
browse-and-subscribe loop over ``Objects/Plant`` used by the scraper and the alert worker.

Layers: :class:`OpcUaClientSettings` (what to connect to and as whom) -> :func:`connect`
(a secure, authenticated asyncua ``Client``) -> :func:`browse_plant` (the tag list) ->
:class:`PlantSubscriber` (subscribe every tag with the StatusValueTimestamp trigger, hand
each notification on as a :class:`Sample`, reconnect with backoff, pick up new tags).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from asyncua import Client, Node, ua
from asyncua.common.utils import Buffer
from asyncua.crypto import security_policies
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from asyncua.ua.ua_binary import struct_from_binary
from asyncua.ua.uaerrors import UaStructParsingError
from cryptography.x509.oid import ExtendedKeyUsageOID
from pydantic import BaseModel, Field, SecretStr

from plantmon_common.opcua_fast import decode_publish
from plantmon_common.sample import Sample
from plantmon_common.tags import ROOT, TagPathError, validate_path

__all__ = [
    "BatchSink",
    "ConnectedHook",
    "DiscoveredTag",
    "OpcUaClientSettings",
    "OpcUaError",
    "PlantSubscriber",
    "Sample",
    "SampleSink",
    "SecurityMode",
    "browse_plant",
    "connect",
    "datavalue_to_sample",
    "ensure_certificate",
    "find_plant",
    "publish_loop",
]

logger = logging.getLogger(__name__)

SecurityMode = Literal["SignAndEncrypt", "Sign", "None"]


class OpcUaError(Exception):
    """The OPC UA server could not be reached, refused us, or has no Plant."""


class OpcUaClientSettings(BaseModel):
    """How a service connects to the plant's OPC UA server (nested in its own settings)."""

    url: str = Field(default="opc.tcp://127.0.0.1:4840/freeopcua/server/", description="Endpoint URL")
    security: SecurityMode = Field(default="SignAndEncrypt", description="Message security mode")
    username: str | None = Field(default=None, description="OPC UA user (service account)")
    password: SecretStr | None = Field(default=None, description="Password of that user")
    cert_dir: Path = Field(default=Path("certs/client"), description="Where this client's certificate lives")
    application_uri: str = Field(default="urn:plantmon:client", description="ApplicationUri of this client")
    hostname: str = Field(default_factory=socket.gethostname, description="Host name in the certificate")
    timeout_s: float = Field(default=10.0, gt=0, description="Per-request timeout")
    publishing_interval_ms: float = Field(default=250.0, gt=0, description="Subscription publishing interval")
    sampling_interval_ms: float = Field(default=0.0, ge=0, description="0 = as fast as the server changes")
    queue_size: int = Field(default=100, ge=1, description="Server-side queue per monitored item")
    deadband_abs: float | None = Field(default=None, ge=0, description="Optional absolute deadband")
    publish_requests: int = Field(
        default=1,
        ge=1,
        le=10,
        description="Publish requests kept in flight (more than one lets the server send while the client decodes)",
    )
    reconnect_initial_s: float = Field(default=0.5, gt=0)
    reconnect_max_s: float = Field(default=10.0, gt=0)
    rebrowse_interval_s: float = Field(default=10.0, gt=0, description="How often new tags are looked for")
    watchdog_interval_s: float = Field(default=1.0, gt=0, description="How often the connection is probed")


@dataclass(frozen=True, slots=True)
class DiscoveredTag:
    """A variable found below ``Objects/Plant``."""

    path: str
    node_id: ua.NodeId
    unit: str = ""
    eu_low: float | None = None
    eu_high: float | None = None
    description: str = ""


async def ensure_certificate(
    cert_dir: Path, application_uri: str, hostname: str, *, server: bool = False
) -> tuple[Path, Path]:
    """Create (once) and return ``(cert.der, key.pem)`` in ``cert_dir``; reused afterwards."""
    cert_dir.mkdir(parents=True, exist_ok=True)
    cert, key = cert_dir / "cert.der", cert_dir / "key.pem"
    uses = (
        [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
        if server
        else [ExtendedKeyUsageOID.CLIENT_AUTH]
    )
    await setup_self_signed_certificate(key, cert, application_uri, hostname, uses, {"organizationName": "plantmon"})
    key.chmod(0o600)
    return cert, key


def datavalue_to_sample(path: str, dv: ua.DataValue) -> Sample:
    """Turn a DataValue into a :class:`Sample`; a missing SourceTimestamp falls back honestly."""
    status = dv.StatusCode.value if dv.StatusCode is not None else 0
    raw = dv.Value.Value if dv.Value is not None else None
    value: float | None
    try:
        value = float(raw) if raw is not None else None
    except (TypeError, ValueError):
        value = None
    stamp = dv.SourceTimestamp or dv.ServerTimestamp or datetime.now(UTC)
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return Sample(path, value, status, stamp)


@contextlib.asynccontextmanager
async def connect(settings: OpcUaClientSettings) -> AsyncIterator[Client]:
    """A connected, authenticated client (SignAndEncrypt by default), disconnected on exit."""
    client = Client(settings.url, timeout=settings.timeout_s, watchdog_intervall=settings.watchdog_interval_s)
    client.application_uri = settings.application_uri
    client.name = client.description = settings.application_uri
    if settings.security != "None":
        cert, key = await ensure_certificate(settings.cert_dir, settings.application_uri, settings.hostname)
        mode = getattr(ua.MessageSecurityMode, settings.security)
        try:
            await client.set_security(security_policies.SecurityPolicyBasic256Sha256, str(cert), str(key), mode=mode)
        except (OSError, TimeoutError) as exc:
            raise OpcUaError(f"cannot reach {settings.url}: {exc}") from exc
        except ua.UaError as exc:
            raise OpcUaError(f"{settings.url} offers no Basic256Sha256 {settings.security} endpoint: {exc}") from exc
    if settings.username:
        client.set_user(settings.username)
    if settings.password:
        client.set_password(settings.password.get_secret_value())
    try:
        await client.connect()
    except (OSError, TimeoutError) as exc:
        raise OpcUaError(f"cannot reach {settings.url}: {exc}") from exc
    except ua.UaStatusCodeError as exc:
        raise OpcUaError(f"{settings.url} refused the session: {exc}") from exc
    except ua.UaError as exc:
        raise OpcUaError(f"{settings.url}: {exc}") from exc
    try:
        yield client
    finally:
        with contextlib.suppress(Exception):
            await client.disconnect()


async def find_plant(client: Client) -> Node:
    """The ``Objects/Plant`` node, whatever its namespace index."""
    for ref in await client.nodes.objects.get_children_descriptions():
        if ref.BrowseName.Name == ROOT:
            return client.get_node(ref.NodeId)
    raise OpcUaError("the server has no Objects/Plant")


async def _read_metadata(node: Node) -> tuple[str, float | None, float | None, str]:
    unit, low, high, description = "", None, None, ""
    with contextlib.suppress(ua.UaError):
        desc = await node.read_description()
        description = desc.Text or ""
    for prop in await node.get_properties():
        name = (await prop.read_browse_name()).Name
        with contextlib.suppress(ua.UaError):
            if name == "EngineeringUnits":
                eu = await prop.read_value()
                unit = eu.DisplayName.Text or ""
            elif name == "EURange":
                rng = await prop.read_value()
                low, high = float(rng.Low), float(rng.High)
    return unit, low, high, description


async def browse_plant(client: Client, *, with_metadata: bool = True) -> list[DiscoveredTag]:
    """Every variable below ``Objects/Plant``, its path built from the browse names."""
    plant = await find_plant(client)
    found: list[DiscoveredTag] = []
    stack: list[tuple[Node, str]] = [(plant, ROOT)]
    while stack:
        node, prefix = stack.pop()
        for ref in await node.get_children_descriptions(refs=ua.ObjectIds.HierarchicalReferences):
            if ref.ReferenceTypeId == ua.NodeId(ua.ObjectIds.HasProperty):
                continue
            path = f"{prefix}/{ref.BrowseName.Name}"
            child = client.get_node(ref.NodeId)
            if ref.NodeClass == ua.NodeClass.Object:
                stack.append((child, path))
            elif ref.NodeClass == ua.NodeClass.Variable:
                try:
                    validate_path(path)
                except TagPathError:
                    logger.warning("skipping a variable with an invalid path", extra={"path": path})
                    continue
                unit, low, high, description = await _read_metadata(child) if with_metadata else ("", None, None, "")
                found.append(DiscoveredTag(path, ref.NodeId, unit, low, high, description))
    found.sort(key=lambda t: t.path)
    return found


@contextlib.contextmanager
def _running(coro: Coroutine[Any, Any, None], name: str) -> Iterator[asyncio.Task[None]]:
    """A task for the duration of the block, cancelled when it is left; an end other than the
    cancellation is logged (the block goes on without it)."""
    task = asyncio.create_task(coro, name=name)

    def ended(done: asyncio.Task[None]) -> None:
        if done.cancelled():
            return
        if (exc := done.exception()) is not None:
            logger.error("background task failed", extra={"task": name}, exc_info=exc)
        else:
            logger.info("background task ended", extra={"task": name})

    task.add_done_callback(ended)
    try:
        yield task
    finally:
        task.cancel()


async def publish_loop(client: Client, sub: Any) -> None:
    """Keep one more Publish request of ``sub``'s session in flight, like asyncua's own loop.

    asyncua's client sends the next Publish only after the previous response was decoded and
    handled, so the server, holding the notifications until a request arrives, and the client
    take turns. With more requests queued at the server (OPC UA Part 4, 5.13.5: a client sends
    several to cover its own processing and the network time) the server answers each
    publishing interval while the client still decodes the previous answer, so responses stay
    small and notifications wait less. The responses go through the subscription's own
    callback, and each one's sequence number is acknowledged in this loop's next request.
    Runs until cancelled (the session's end) or the server has no subscription left; like
    asyncua's loop, any other failure is logged and retried, and a response is acknowledged even
    when handling it failed.
    """
    acks: list[ua.SubscriptionAcknowledgement] = []
    while True:
        try:
            response = await client.uaclient.publish(acks)
        except ua.uaerrors.BadTimeout:
            acks = []
            continue
        except ua.uaerrors.BadNoSubscription:
            logger.info("the server has no subscription for this session; extra publish requests stop")
            return
        except (ua.UaError, ConnectionError, OSError) as exc:
            # The connection is going; the session's watchdog notices and reconnects.
            logger.debug("extra publish request failed", extra={"error": f"{type(exc).__name__}: {exc}"})
            acks = []
            await asyncio.sleep(1.0)
            continue
        except Exception:
            logger.exception("extra publish request failed; retrying in 1 s")
            acks = []
            await asyncio.sleep(1.0)
            continue
        acks = []
        result = response.Parameters
        if not result.SubscriptionId:
            return
        if result.SubscriptionId == sub.subscription_id:
            try:
                await sub.publish_callback(result)
            except Exception:
                logger.exception("handling a publish response failed")
        if result.NotificationMessage.NotificationData:
            acks.append(
                ua.SubscriptionAcknowledgement(
                    SubscriptionId=result.SubscriptionId, SequenceNumber=result.NotificationMessage.SequenceNumber
                )
            )


SampleSink = Callable[[Sample], None]
BatchSink = Callable[[list[Sample]], None]
ConnectedHook = Callable[[Client, Sequence[DiscoveredTag]], Awaitable[None]]


class _Handler:
    """asyncua calls this for every notification; it must never block."""

    def __init__(self, sink: SampleSink, batch_sink: BatchSink | None = None) -> None:
        self.sink = sink
        self.batch_sink = batch_sink
        self.paths: dict[int, str] = {}

    def datachange_batch(self, datachange: ua.DataChangeNotification) -> tuple[()]:
        """Every data change of one publish response in one call to ``batch_sink``.

        Installed in place of the subscription's per-item explosion (see ``_session``): asyncua
        otherwise creates an asyncio task per notification, which cost more CPU than decoding it.
        Returns no events, so asyncua delivers nothing else for these items.
        """
        assert self.batch_sink is not None
        paths = self.paths
        samples = [
            datavalue_to_sample(path, item.Value)
            for item in datachange.MonitoredItems
            if (path := paths.get(item.ClientHandle)) is not None
        ]
        if samples:
            self.batch_sink(samples)
        return ()

    def datachange_notification(self, node: Node, val: Any, data: Any) -> None:
        path = self.paths.get(data.subscription_data.client_handle)
        if path is None:
            return
        self.sink(datavalue_to_sample(path, data.monitored_item.Value))

    def status_change_notification(self, status: Any) -> None:
        logger.warning("subscription status changed", extra={"status": str(status)})


class PlantSubscriber:
    """Browse ``Objects/Plant``, subscribe every variable, stay connected.

    ``sink`` receives every notification (it must not block); ``on_connected`` runs after each
    (re)connect, before the subscription, with the tag list (the scraper upserts tags there);
    ``on_subscribed`` runs once every tag is subscribed (the scraper backfills there). New tags
    found by the periodic re-browse are subscribed too. With ``batch_sink``, the data changes of
    each publish response go to it in one list (in arrival order) instead of one ``sink`` call per
    notification from a task each: the scraper's path at tens of thousands of values a second.
    """

    def __init__(
        self,
        settings: OpcUaClientSettings,
        sink: SampleSink,
        *,
        on_connected: ConnectedHook | None = None,
        on_tags_added: ConnectedHook | None = None,
        on_state: Callable[[bool], None] | None = None,
        on_subscribed: ConnectedHook | None = None,
        batch_sink: BatchSink | None = None,
    ) -> None:
        self.settings = settings
        self.sink = sink
        self.batch_sink = batch_sink
        self.on_connected = on_connected
        self.on_tags_added = on_tags_added
        self.on_state = on_state
        self.on_subscribed = on_subscribed
        self.connected = False
        self.subscribed: set[str] = set()
        self.reconnects = 0
        self.last_error: str | None = None
        self.fast_decoded = 0  # publish responses read by the fast decoder
        self.asyncua_decoded = 0  # and those it left to asyncua

    def _set_state(self, connected: bool) -> None:
        self.connected = connected
        if self.on_state:
            self.on_state(connected)

    async def run(self, stop: asyncio.Event) -> None:
        """Connect and subscribe until ``stop`` is set; every loss is followed by a reconnect."""
        delay = self.settings.reconnect_initial_s
        first = True
        while not stop.is_set():
            lost_at = time.monotonic()
            try:
                await self._session(stop)
                delay = self.settings.reconnect_initial_s
            except (OpcUaError, OSError, TimeoutError, ua.UaError, ConnectionError) as exc:
                message = f"{type(exc).__name__}: {exc}"
                if message != self.last_error:
                    logger.warning("OPC UA connection lost or refused, retrying", extra={"error": message})
                self.last_error = message
            finally:
                if self.connected:
                    self._set_state(False)
            if stop.is_set():
                break
            if not first:
                self.reconnects += 1
            first = False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)
            delay = min(delay * 2, self.settings.reconnect_max_s)
            logger.debug("reconnecting", extra={"down_s": round(time.monotonic() - lost_at, 1)})

    async def _session(self, stop: asyncio.Event) -> None:
        s = self.settings
        async with connect(s) as client:
            lost = asyncio.Event()

            async def on_lost(exc: Exception) -> None:
                lost.set()

            client.connection_lost_callback = on_lost
            tags = await browse_plant(client)
            if self.on_connected:
                await self.on_connected(client, tags)
            handler = _Handler(self.sink, self.batch_sink)
            params = ua.CreateSubscriptionParameters()
            params.RequestedPublishingInterval = s.publishing_interval_ms
            params.RequestedLifetimeCount = 10000
            params.RequestedMaxKeepAliveCount = 10
            params.MaxNotificationsPerPublish = 0
            params.PublishingEnabled = True
            params.Priority = 0
            sub = await client.create_subscription(params, handler)
            if self.batch_sink is not None:
                # asyncua 2.x turns each MonitoredItemNotification into an event and an asyncio task;
                # its publish callback asks this method for the events of a DataChangeNotification.
                sub._explode_datachange = handler.datachange_batch
                self._decode_fast(client, sub, handler, self.batch_sink)
            with contextlib.ExitStack() as publishers:
                for number in range(2, s.publish_requests + 1):
                    publishers.enter_context(_running(publish_loop(client, sub), f"opcua-publish-{number}"))
                await self._subscribed_session(stop, client, sub, handler, tags, lost)

    def _decode_fast(self, client: Client, sub: Any, handler: _Handler, batch_sink: BatchSink) -> None:
        """Every Publish of this session (asyncua's loop and :func:`publish_loop`) decoded by
        :func:`~plantmon_common.opcua_fast.decode_publish`, asyncua's decoder for anything else.

        Installed on the session object, so the stock publish loop, its acknowledgements and the
        subscription callback are unchanged: numeric data changes go to ``batch_sink`` here,
        and the loop gets a response with the same subscription, sequence number and (empty)
        notification data to acknowledge.
        """
        session = client.uaclient.session
        paths = handler.paths

        async def publish(acks: list[ua.SubscriptionAcknowledgement]) -> ua.PublishResponse:
            request = ua.PublishRequest()
            request.Parameters.SubscriptionAcknowledgements = acks if acks else []
            data = await session._send_request(request, timeout=0)
            raw = bytes(data)
            decoded = decode_publish(raw, paths)
            if decoded is None:
                self.asyncua_decoded += 1
                try:
                    return struct_from_binary(ua.PublishResponse, Buffer(raw))
                except Exception as exc:
                    logger.exception("cannot decode a publish response")
                    raise UaStructParsingError from exc
            self.fast_decoded += 1
            subscription_id, sequence_number, has_data, samples = decoded
            if samples and subscription_id == sub.subscription_id:
                batch_sink(samples)
            response = ua.PublishResponse()
            response.Parameters.SubscriptionId = subscription_id
            response.Parameters.NotificationMessage.SequenceNumber = sequence_number
            if has_data:
                response.Parameters.NotificationMessage.NotificationData = [ua.DataChangeNotification()]
            return response

        session.publish = publish

    async def _subscribed_session(
        self,
        stop: asyncio.Event,
        client: Client,
        sub: Any,
        handler: _Handler,
        tags: list[DiscoveredTag],
        lost: asyncio.Event,
    ) -> None:
        """Subscribe ``tags``, then watch the connection and look for new tags until stop or loss."""
        s = self.settings
        self.subscribed = set()
        await self._subscribe(sub, handler, tags)
        self._set_state(True)
        if self.on_subscribed:
            await self.on_subscribed(client, tags)
        if self.last_error is not None:
            logger.info("OPC UA connection recovered", extra={"url": s.url, "tags": len(tags)})
        else:
            logger.info("OPC UA connected and subscribed", extra={"url": s.url, "tags": len(tags)})
        self.last_error = None
        next_browse = time.monotonic() + s.rebrowse_interval_s
        while not stop.is_set() and not lost.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=s.watchdog_interval_s)
            if stop.is_set() or lost.is_set():
                break
            # A dead-but-open connection shows up here as a timeout.
            await asyncio.wait_for(client.nodes.server_state.read_value(), timeout=s.timeout_s)
            if time.monotonic() >= next_browse:
                next_browse = time.monotonic() + s.rebrowse_interval_s
                current = await browse_plant(client)
                new = [t for t in current if t.path not in self.subscribed]
                if new:
                    logger.info("new tags found", extra={"tags": [t.path for t in new]})
                    if self.on_tags_added:
                        await self.on_tags_added(client, new)
                    await self._subscribe(sub, handler, new)
        if lost.is_set() and not stop.is_set():
            raise ConnectionError("connection to the OPC UA server lost")

    async def _subscribe(self, sub: Any, handler: _Handler, tags: Sequence[DiscoveredTag]) -> None:
        s = self.settings
        mfilter = ua.DataChangeFilter()
        mfilter.Trigger = ua.DataChangeTrigger.StatusValueTimestamp
        if s.deadband_abs is not None:
            mfilter.DeadbandType = ua.DeadbandType.Absolute
            mfilter.DeadbandValue = s.deadband_abs
        requests = []
        for tag in tags:
            node = Node(sub.server, tag.node_id)
            # asyncua's own request builder keeps its client-handle bookkeeping consistent.
            request = sub._make_monitored_item_request(
                node,
                ua.AttributeIds.Value,
                mfilter,
                s.queue_size,
                ua.MonitoringMode.Reporting,
                s.sampling_interval_ms,
            )
            handler.paths[request.RequestedParameters.ClientHandle] = tag.path
            requests.append(request)
        for start in range(0, len(requests), 500):
            results = await sub.create_monitored_items(requests[start : start + 500])
            for request, result in zip(requests[start : start + 500], results, strict=True):
                path = handler.paths[request.RequestedParameters.ClientHandle]
                if isinstance(result, ua.StatusCode):
                    logger.error("cannot monitor tag", extra={"path": path, "status": result.name})
                else:
                    self.subscribed.add(path)
