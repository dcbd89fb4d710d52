"""The scraper's lifecycle: database pool, OPC UA subscriber, writer task and ``/health`` + ``/metrics``.

``async with Scraper(settings) as scraper`` opens the spool (a spool left by an earlier run is
replayed first) and the pool (without waiting for the database, so samples are collected during
an outage at start-up too), serves HTTP and starts the subscriber, the writer and, on plain
PostgreSQL, the maintenance task; leaving the block stops the subscriber, writes the queue to the
database or the spool, and closes the pool. Every (re)connect to the OPC UA server is followed
by a backfill from the server's history; the time without a subscription is recorded as a gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from types import TracebackType
from typing import Any

from plantmon_common.health_http import HealthServer, serve_health
from plantmon_common.metrics import new_registry
from plantmon_common.opcua import PlantSubscriber
from prometheus_client import CollectorRegistry
from psycopg_pool import AsyncConnectionPool

from plantmon_scraper.metrics import PublishDecoding, ScraperMetrics
from plantmon_scraper.settings import ScraperSettings
from plantmon_scraper.store import SampleStore, prepare_connection

logger = logging.getLogger(__name__)


class Scraper:
    """One running scraper; use as an async context manager."""

    def __init__(self, settings: ScraperSettings, registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        self.registry = registry if registry is not None else new_registry("scraper")
        self.metrics = ScraperMetrics(self.registry)
        self.pool = AsyncConnectionPool(
            settings.database.conninfo(),
            min_size=1,
            max_size=settings.pool_max_size,
            open=False,
            name="scraper",
            configure=prepare_connection,
            check=AsyncConnectionPool.check_connection,
            # Give up background reconnects quickly: the writer's own retries ask for a connection
            # again, so recovery follows the writer's backoff rather than the pool's (minutes long).
            reconnect_timeout=settings.retry_max_s,
        )
        self.store = SampleStore(self.pool, settings, self.metrics)
        self.subscriber = PlantSubscriber(
            settings.opcua,
            self.store.put,
            on_connected=self.store.on_connected,
            on_tags_added=self.store.on_tags_added,
            on_state=self._on_opcua_state,
            on_subscribed=self.store.on_subscribed,
            batch_sink=self.store.put_many,
        )
        self.registry.register(PublishDecoding(lambda: (self.subscriber.fast_decoded, self.subscriber.asyncua_decoded)))
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._http: contextlib.AbstractAsyncContextManager[HealthServer] | None = None
        self._server: HealthServer | None = None
        self._was_connected = False
        self._lost_at: float | None = None

    def _on_opcua_state(self, connected: bool) -> None:
        self.metrics.opcua_connected.set(1 if connected else 0)
        if not connected:
            self.store.release_held()
            if self._was_connected and self._lost_at is None and not self._stop.is_set():
                self._lost_at = time.monotonic()
                self.metrics.opcua_gaps.inc()
                logger.warning("OPC UA subscription lost: nothing is sampled until it is back (a gap)")
        if connected and self._was_connected:
            self.metrics.reconnects.inc()
            if self._lost_at is not None:
                gap = time.monotonic() - self._lost_at
                self._lost_at = None
                self.metrics.opcua_gap_seconds.inc(gap)
                logger.warning(
                    "OPC UA subscription back after a gap; backfilling what the server's history holds",
                    extra={"gap_s": round(gap, 1)},
                )
        self._was_connected = self._was_connected or connected

    def health(self) -> tuple[bool, dict[str, Any]]:
        """Healthy while subscribed and the database takes writes (unknown counts as up at start)."""
        details = {
            "opcua_connected": self.subscriber.connected,
            "db_up": self.store.db_up,
            "queue_depth": self.store.queue.qsize(),
            "dropped": self.store.dropped,
            "spool_bytes": self.store.spool.bytes,
            "tags": len(self.store.tag_ids),
        }
        return self.subscriber.connected and self.store.db_up is not False, details

    @property
    def http_port(self) -> int:
        """The bound ``/health`` + ``/metrics`` port (useful with ``http_port=0``)."""
        if self._server is None:
            raise RuntimeError("the scraper is not running")
        return self._server.port

    async def __aenter__(self) -> Scraper:
        s = self.settings
        await asyncio.to_thread(self.store.open_spool)
        await self.pool.open(wait=False)
        try:
            self._http = serve_health("plantmon scraper", self.registry, self.health, s.http_host, s.http_port)
            self._server = await self._http.__aenter__()
        except BaseException:
            await self.pool.close()
            raise
        self._tasks = [
            asyncio.create_task(self.store.run(self._stop), name="scraper-writer"),
            asyncio.create_task(self.subscriber.run(self._stop), name="scraper-subscriber"),
            asyncio.create_task(self.store.maintain(self._stop), name="scraper-maintenance"),
        ]
        logger.info(
            "scraper started",
            extra={
                "opcua_url": s.opcua.url,
                "database": s.database.database,
                "user": s.database.user,
                "spool_dir": str(s.spool_dir),
            },
        )
        return self

    async def wait(self, stop: asyncio.Event) -> None:
        """Until ``stop`` is set; a task that ends on its own ends the wait (and raises its error)."""
        stopper = asyncio.create_task(stop.wait())
        try:
            # The maintenance task ends by itself on TimescaleDB; only the writer and the subscriber must not.
            essential = [t for t in self._tasks if t.get_name() != "scraper-maintenance"]
            done, _ = await asyncio.wait([stopper, *essential], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
        for task in done:
            if task is not stopper and task.exception() is not None:
                logger.error("scraper task failed", extra={"task": task.get_name()}, exc_info=task.exception())
                raise RuntimeError(f"{task.get_name()} failed") from task.exception()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        try:
            # The subscriber stops first; the writer then flushes what is queued.
            results = await asyncio.gather(*self._tasks, return_exceptions=True)
            for task, result in zip(self._tasks, results, strict=True):
                if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                    logger.error("scraper task ended with an error", extra={"task": task.get_name()}, exc_info=result)
        finally:
            if self._http is not None:
                await self._http.__aexit__(None, None, None)
            await self.pool.close()
            logger.info("scraper stopped", extra={"dropped": self.store.dropped})


async def run(settings: ScraperSettings, stop: asyncio.Event, registry: CollectorRegistry | None = None) -> None:
    """Run the scraper until ``stop`` is set."""
    async with Scraper(settings, registry) as scraper:
        await scraper.wait(stop)
