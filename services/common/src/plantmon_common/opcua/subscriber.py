"""The browse-and-subscribe loop over ``Objects/Plant`` used by the scraper and the alert worker.

:class:`PlantSubscriber` connects (:func:`~plantmon_common.opcua.connect.connect`), browses
(:func:`~plantmon_common.opcua.browse.browse_plant`), subscribes every tag with the
StatusValueTimestamp trigger, hands each notification on as a :class:`Sample`, reconnects with
backoff and picks up new tags. Its private asyncua uses go through
:mod:`plantmon_common.opcua.asyncua_private`, checked when a subscriber is made.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from asyncua import Client, Node, ua

from plantmon_common.backoff import ExponentialBackoff
from plantmon_common.opcua import asyncua_private
from plantmon_common.opcua.browse import DiscoveredTag, browse_plant
from plantmon_common.opcua.connect import OpcUaError, connect
from plantmon_common.opcua.publish import DecodeCounts, install_fast_decoder, publish_loop, running
from plantmon_common.opcua.settings import OpcUaClientSettings
from plantmon_common.sample import Sample

__all__ = ["BatchSink", "ConnectedHook", "PlantSubscriber", "SampleSink", "datavalue_to_sample"]

logger = logging.getLogger(__name__)


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

        Installed in place of the subscription's per-item explosion (see ``_session``,
        :func:`~plantmon_common.opcua.asyncua_private.batch_datachanges`): asyncua
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
        # Before anything connects: refuse an asyncua whose internals we use have changed.
        asyncua_private.check_asyncua(asyncua_private.SUBSCRIBER)
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
        self.decoding = DecodeCounts()

    @property
    def fast_decoded(self) -> int:
        """Publish responses read by the fast decoder."""
        return self.decoding.fast

    @property
    def asyncua_decoded(self) -> int:
        """Publish responses the fast decoder left to asyncua."""
        return self.decoding.asyncua

    def _set_state(self, connected: bool) -> None:
        self.connected = connected
        if self.on_state:
            self.on_state(connected)

    async def run(self, stop: asyncio.Event) -> None:
        """Connect and subscribe until ``stop`` is set; every loss is followed by a reconnect."""
        backoff = ExponentialBackoff(self.settings.reconnect_initial_s, self.settings.reconnect_max_s)
        first = True
        while not stop.is_set():
            lost_at = time.monotonic()
            try:
                await self._session(stop)
                backoff.reset()
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
                await asyncio.wait_for(stop.wait(), timeout=backoff.next())
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
                asyncua_private.batch_datachanges(sub, handler.datachange_batch)
                install_fast_decoder(client, sub, handler.paths, self.batch_sink, self.decoding)
            with contextlib.ExitStack() as publishers:
                for number in range(2, s.publish_requests + 1):
                    publishers.enter_context(running(publish_loop(client, sub), f"opcua-publish-{number}"))
                await self._subscribed_session(stop, client, sub, handler, tags, lost)

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
            request = asyncua_private.make_monitored_item_request(
                sub, node, mfilter, s.queue_size, s.sampling_interval_ms
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
