"""Delivery of queued alert events to Azure Event Hubs (azure-eventhub's async producer).

:class:`EventHubPublisher` takes events from the journal's ``event_outbox`` in order, groups the
consecutive ones of one partition key (the asset) into ``EventDataBatch``es, sends them, and
deletes each batch from the outbox once Event Hubs accepted it. A failure keeps everything and
retries with a bounded backoff: an outage loses nothing and a restart resumes from the file.

Facts about azure-eventhub 5.15.1 this relies on: with default retries a send to a dead endpoint
gives up only after 12-24 s and ``timeout=`` does not bound connection setup, so every SDK call is
wrapped in :func:`asyncio.wait_for` (the async client cancels cleanly) and ``retry_total`` /
``retry_backoff_*`` are set small; after a failure the client is closed and made anew. A rejected
batch may be sent twice even with ``retry_total=0``: consumers drop duplicates by
``transition_id``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from plantmon_common.backoff import ExponentialBackoff
from plantmon_common.service import wait_or_stop
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from plantmon_alerts.delivery.journal import PendingEvent, StateJournal

logger = logging.getLogger(__name__)

IDLE_WAIT_S = 5.0


@dataclass(frozen=True)
class EventHubOptions:
    """What the publisher needs from the settings (see :class:`~plantmon_alerts.settings.AlertSettings`)."""

    connection_string: str
    eventhub_name: str | None = None
    transport: str = "amqp"  # or "websockets" (AMQP over WebSockets, port 443)
    http_proxy: str | None = None  # http://[user:password@]host:port (implies WebSockets)
    custom_endpoint: str | None = None  # sb://host:port of a relay/firewall in front of Event Hubs
    retry_total: int = 1
    retry_backoff_s: float = 0.2
    retry_backoff_max_s: float = 2.0
    send_timeout_s: float = 10.0
    batch_events: int = 200
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 10.0


def proxy_settings(url: str) -> dict[str, Any]:
    """An ``http://user:password@host:port`` URL as the SDK's ``http_proxy`` dict.

    The async WebSocket transport of azure-eventhub 5.15.1 hands ``proxy_hostname:proxy_port``
    to aiohttp as the proxy URL, which aiohttp refuses without a scheme (measured: a bare host
    name fails to connect, ``http://host`` works), so the host name keeps its ``http://``.
    """
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme != "http":
        raise ValueError(f"the HTTP proxy must be an http:// URL: {url!r}")
    if not parts.hostname or not parts.port:
        raise ValueError(f"the HTTP proxy needs a host and a port: {url!r}")
    proxy: dict[str, Any] = {"proxy_hostname": f"http://{parts.hostname}", "proxy_port": parts.port}
    if parts.username:
        proxy["username"] = parts.username
    if parts.password:
        proxy["password"] = parts.password
    return proxy


def producer_kwargs(options: EventHubOptions) -> dict[str, Any]:
    """Keyword arguments of ``EventHubProducerClient.from_connection_string``."""
    from azure.eventhub import TransportType

    kwargs: dict[str, Any] = {
        "retry_total": options.retry_total,
        "retry_backoff_factor": options.retry_backoff_s,
        "retry_backoff_max": options.retry_backoff_max_s,
        "transport_type": TransportType.AmqpOverWebsocket
        if options.transport == "websockets" or options.http_proxy
        else TransportType.Amqp,
    }
    if options.eventhub_name:
        kwargs["eventhub_name"] = options.eventhub_name
    if options.http_proxy:
        kwargs["http_proxy"] = proxy_settings(options.http_proxy)
    if options.custom_endpoint:
        kwargs["custom_endpoint_address"] = options.custom_endpoint
    return kwargs


class DeliveryMetrics:
    """Event Hubs delivery metrics (the outbox depth itself is ``plantmon_alerts_outbox_depth``)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.delivered = Counter(
            "plantmon_alerts_events_delivered", "Alert events accepted by Event Hubs", registry=registry
        )
        self.failures = Counter(
            "plantmon_alerts_delivery_failures",
            "Failed attempts to send alert events to Event Hubs (each is retried)",
            registry=registry,
        )
        self.latency = Histogram(
            "plantmon_alerts_delivery_latency_seconds",
            "Time from a transition being recorded to Event Hubs accepting its event",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0),
            registry=registry,
        )
        self.up = Gauge(
            "plantmon_alerts_eventhub_up", "1 while the last send to Event Hubs succeeded", registry=registry
        )


def _runs(events: list[PendingEvent]) -> Iterator[list[PendingEvent]]:
    """Consecutive events of one partition key (order within a key is kept)."""
    run: list[PendingEvent] = []
    for event in events:
        if run and run[-1].partition_key != event.partition_key:
            yield run
            run = []
        run.append(event)
    if run:
        yield run


class EventHubPublisher:
    """Sends the event outbox to Event Hubs until stopped (see the module docstring)."""

    def __init__(self, options: EventHubOptions, journal: StateJournal, metrics: DeliveryMetrics) -> None:
        self.options = options
        self.journal = journal
        self.metrics = metrics
        self.wakeup = asyncio.Event()
        self.up: bool | None = None
        self._client: Any = None

    def _new_client(self) -> Any:
        from azure.eventhub.aio import EventHubProducerClient

        return EventHubProducerClient.from_connection_string(
            self.options.connection_string, **producer_kwargs(self.options)
        )

    async def _close_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.close(), timeout=self.options.send_timeout_s)

    async def close(self) -> None:
        """Close the SDK client (a new one is made at the next send)."""
        await self._close_client()

    def _set_up(self, up: bool, error: str | None = None) -> None:
        if up and self.up is not True:
            logger.info("Event Hubs reachable, delivering", extra={"pending_events": self.journal.event_depth})
        elif not up and self.up is not False:
            logger.warning(
                "Event Hubs unreachable, keeping alert events in the outbox",
                extra={"error": error, "pending_events": self.journal.event_depth},
            )
        self.up = up
        self.metrics.up.set(1 if up else 0)

    async def send_pending(self) -> int:
        """Send what the outbox holds now (one round); returns the events delivered."""
        from azure.eventhub import EventData

        pending = self.journal.pending_events(self.options.batch_events)
        if not pending:
            return 0
        if self._client is None:
            self._client = self._new_client()
        client = self._client
        sent = 0
        for run in _runs(pending):
            while run:
                batch = await client.create_batch(partition_key=run[0].partition_key)
                taken: list[PendingEvent] = []
                for event in run:
                    data = EventData(json.dumps(event.event, separators=(",", ":")))
                    data.content_type = "application/json"
                    data.message_id = event.transition_id
                    data.properties = {
                        "alert_id": event.alert_id,
                        "transition_id": event.transition_id,
                        "event": event.event.get("event", ""),
                        "severity": int(event.event.get("severity", 0)),
                        "tag": event.event.get("tag", ""),
                        "site": event.event.get("site", ""),
                        "rule": event.event.get("rule", ""),
                    }
                    try:
                        batch.add(data)
                    except ValueError:
                        if not taken:
                            raise
                        break
                    taken.append(event)
                await client.send_batch(batch)
                now = time.time()
                self.journal.delivered(e.seq for e in taken)
                for event in taken:
                    self.metrics.latency.observe(max(0.0, now - event.created_at))
                self.metrics.delivered.inc(len(taken))
                sent += len(taken)
                run = run[len(taken) :]
        return sent

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop``; retry with a bounded backoff while Event Hubs fails."""
        backoff = ExponentialBackoff(self.options.backoff_initial_s, self.options.backoff_max_s)
        try:
            while not stop.is_set():
                self.wakeup.clear()
                if not self.journal.event_depth:
                    await self._idle(stop)
                    continue
                try:
                    # Bounded: the SDK does not bound connection setup by itself.
                    await asyncio.wait_for(self.send_pending(), timeout=self.options.send_timeout_s)
                except Exception as exc:  # every SDK or network error means: retry later
                    self.metrics.failures.inc()
                    pending = self.journal.pending_events(self.options.batch_events)
                    self.journal.attempted(e.seq for e in pending)
                    self._set_up(False, f"{type(exc).__name__}: {exc}")
                    await self._close_client()
                    if await wait_or_stop(stop, backoff.next()):
                        break
                    continue
                self._set_up(True)
                backoff.reset()
        finally:
            await self._close_client()

    async def _idle(self, stop: asyncio.Event) -> None:
        waiters = [asyncio.ensure_future(self.wakeup.wait()), asyncio.ensure_future(stop.wait())]
        try:
            await asyncio.wait(waiters, timeout=IDLE_WAIT_S, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
