"""The alert worker process: OPC UA subscription -> queue -> engine -> outbox -> PostgreSQL.

Tasks inside :func:`run`:

* the :class:`~plantmon_common.opcua.PlantSubscriber`, whose sink only puts each sample in a
  bounded queue (it runs inside asyncua's notification callback and must not block);
* the evaluator, which feeds the engine from the queue and ticks it every second so
  persistence windows end even when no new sample arrives;
* the writer, which writes the outbox to the database and retries with backoff while the
  database is down. On its first contact with the database it restores the open alerts into
  the engine, so a restart continues them instead of raising them again;
* the HTTP server (API, ``/health``, ``/metrics``).

Evaluation never waits for the database: alerting goes on through a database outage.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from asyncua import Client
from plantmon_common.metrics import new_registry
from plantmon_common.opcua import DiscoveredTag, PlantSubscriber, Sample
from plantmon_common.service import serve_http, wait_or_stop
from prometheus_client import CollectorRegistry

from plantmon_alerts.api import create_app
from plantmon_alerts.engine import Engine, Transition
from plantmon_alerts.metrics import AlertMetrics
from plantmon_alerts.rules import load_rules
from plantmon_alerts.settings import AlertSettings
from plantmon_alerts.store import AlertStore, Outbox, StoreError, make_pool

logger = logging.getLogger(__name__)

RETRY_INITIAL_S = 0.5
RETRY_MAX_S = 10.0
IDLE_PING_S = 5.0
FINAL_FLUSH_S = 5.0


class AlertWorker:
    """The parts of one worker and the loops that connect them."""

    def __init__(self, settings: AlertSettings, registry: CollectorRegistry) -> None:
        self.settings = settings
        self.rules = load_rules(settings.rules_file)
        self.engine = Engine(self.rules)
        self.pool = make_pool(settings.database.conninfo(), timeout=settings.db_timeout_s)
        self.store = AlertStore(self.pool, timeout=settings.db_timeout_s)
        self.outbox = Outbox(self.store)
        self.metrics = AlertMetrics(registry, active=self.engine.active, outbox_depth=lambda: self.outbox.depth)
        self.queue: asyncio.Queue[tuple[Sample, float]] = asyncio.Queue(maxsize=settings.queue_size)
        self.subscriber = PlantSubscriber(
            settings.opcua,
            self.sink,
            on_connected=self._learn_units,
            on_tags_added=self._learn_units,
            on_state=self._opcua_state,
        )
        self.db_up: bool | None = None
        self.restored = False
        self._dropping = False
        self.app = create_app(self.store, registry, self.health, settings.api_token)

    # -- input ---------------------------------------------------------------------------------

    def sink(self, sample: Sample) -> None:
        """Called by asyncua for every notification: queue it, never block."""
        try:
            self.queue.put_nowait((sample, time.perf_counter()))
        except asyncio.QueueFull:
            self.metrics.dropped.inc()
            if not self._dropping:
                logger.error("evaluation queue full, dropping samples", extra={"queue_size": self.queue.maxsize})
            self._dropping = True
        else:
            self._dropping = False

    async def _learn_units(self, client: Client, tags: Sequence[DiscoveredTag]) -> None:
        for tag in tags:
            self.engine.units[tag.path] = tag.unit

    def _opcua_state(self, connected: bool) -> None:
        self.metrics.opcua_connected.set(1 if connected else 0)

    def _emit(self, transitions: list[Transition]) -> None:
        if not transitions:
            return
        self.metrics.count(transitions)
        for t in transitions:
            logger.info(
                f"alert {type(t).__name__.lower()}",
                extra={"alert_id": str(t.alert_id), "rule": t.rule, "tag": t.tag_path, "severity": t.severity},
            )
        self.outbox.put(transitions)

    async def evaluate(self, stop: asyncio.Event) -> None:
        """Feed the engine from the queue; tick it while the subscription is up."""
        interval = self.settings.tick_interval_s
        next_tick = time.monotonic() + interval
        while not stop.is_set():
            try:
                timeout = max(0.0, next_tick - time.monotonic())
                sample, arrived = await asyncio.wait_for(self.queue.get(), timeout=timeout)
            except TimeoutError:
                pass
            else:
                self._emit(self.engine.feed(sample))
                self.metrics.samples.inc()
                self.metrics.evaluation.observe(time.perf_counter() - arrived)
            if time.monotonic() >= next_tick:
                next_tick = time.monotonic() + interval
                # A tick on a lost subscription would raise on stale values.
                if self.subscriber.connected:
                    self._emit(self.engine.tick(datetime.now(UTC)))

    # -- database ------------------------------------------------------------------------------

    def _set_db(self, up: bool, error: str | None = None) -> None:
        if up and self.db_up is not True:
            logger.info("database reachable", extra={"outbox_depth": self.outbox.depth})
        elif not up and self.db_up is not False:
            logger.warning(
                "database unreachable, keeping alert transitions in memory",
                extra={"error": error, "outbox_depth": self.outbox.depth},
            )
        self.db_up = up
        self.metrics.db_up.set(1 if up else 0)

    async def restore(self) -> None:
        """Write what is pending, then continue the alerts the table holds open."""
        await self.outbox.flush()
        open_alerts = await self.store.open_alerts()
        # No await from here on: the engine and the outbox cannot change under us.
        known = [a for a in open_alerts if not self.outbox.holds(a.rule, a.tag_path)]
        self._emit(self.engine.restore(known, datetime.now(UTC)))
        self.restored = True
        logger.info("open alerts restored from the database", extra={"open_alerts": len(open_alerts)})

    async def sync_once(self) -> None:
        """One round of the writer: restore once, flush, or ping when idle."""
        if not self.restored:
            await self.restore()
        if self.outbox.depth:
            await self.outbox.flush()
        else:
            await self.store.ping()

    async def write(self, stop: asyncio.Event) -> None:
        """Keep the database in step with the engine until ``stop``; retry with backoff."""
        delay = RETRY_INITIAL_S
        while not stop.is_set():
            try:
                await self.sync_once()
            except StoreError as exc:
                self.metrics.db_errors.inc()
                self._set_db(False, str(exc))
                if await wait_or_stop(stop, delay):
                    break
                delay = min(delay * 2, RETRY_MAX_S)
                continue
            self._set_db(True)
            delay = RETRY_INITIAL_S
            waiters = [asyncio.ensure_future(self.outbox.wakeup.wait()), asyncio.ensure_future(stop.wait())]
            try:
                await asyncio.wait(waiters, timeout=IDLE_PING_S, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()

    # -- health --------------------------------------------------------------------------------

    def health(self) -> tuple[bool, dict[str, Any]]:
        details = {
            "site": self.settings.site,
            "opcua": "connected" if self.subscriber.connected else "disconnected",
            "database": {True: "up", False: "down", None: "unknown"}[self.db_up],
            "rules": len(self.rules),
            "active_alerts": len(self.engine.active()),
            "outbox_depth": self.outbox.depth,
            "queue_depth": self.queue.qsize(),
        }
        return bool(self.subscriber.connected and self.db_up), details

    # -- lifecycle -----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        await self.pool.open(wait=False)
        try:
            try:
                await asyncio.wait_for(self.sync_once(), timeout=self.settings.db_timeout_s * 2)
                self._set_db(True)
            except (StoreError, TimeoutError) as exc:
                # Alerting starts anyway; the writer restores the open alerts once it can.
                self._set_db(False, str(exc) or type(exc).__name__)
            s = self.settings
            async with serve_http(self.app, s.http_host, s.http_port):
                tasks = [
                    asyncio.create_task(self.subscriber.run(stop), name="opcua"),
                    asyncio.create_task(self.evaluate(stop), name="evaluate"),
                    asyncio.create_task(self.write(stop), name="write"),
                ]
                logger.info(
                    "alert worker running",
                    extra={"rules": [r.name for r in self.rules], "opcua": s.opcua.url, "site": s.site},
                )
                stopping = asyncio.create_task(stop.wait(), name="stop")
                try:
                    await asyncio.wait([stopping, *tasks], return_when=asyncio.FIRST_COMPLETED)
                finally:
                    stop.set()
                    results = await asyncio.gather(stopping, *tasks, return_exceptions=True)
                crashed = [r for r in results if isinstance(r, BaseException)]
                await self._drain()
                if crashed:
                    logger.error("a worker task failed", exc_info=crashed[0])
                    raise crashed[0]
        finally:
            await self.pool.close()

    async def _drain(self) -> None:
        """After stop: evaluate what is queued, then try once more to write the outbox."""
        while not self.queue.empty():
            sample, _ = self.queue.get_nowait()
            self._emit(self.engine.feed(sample))
        try:
            await asyncio.wait_for(self.outbox.flush(), timeout=FINAL_FLUSH_S)
        except (StoreError, TimeoutError) as exc:
            logger.error(
                "stopping with alert transitions not written",
                extra={"outbox_depth": self.outbox.depth, "error": str(exc) or type(exc).__name__},
            )
        logger.info("alert worker stopped")


async def run(settings: AlertSettings, stop: asyncio.Event, registry: CollectorRegistry | None = None) -> None:
    """Run the alert worker until ``stop`` is set (rules are validated first: RulesError)."""
    worker = AlertWorker(settings, registry if registry is not None else new_registry("alert_worker"))
    await worker.run(stop)
