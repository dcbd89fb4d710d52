"""The alert worker process: OPC UA subscription -> queue -> engine -> outbox -> PostgreSQL.

Tasks inside :func:`run`:

* the :class:`~plantmon_common.opcua.PlantSubscriber`, whose sink only puts each sample in a
  bounded queue (it runs inside asyncua's notification callback and must not block);
* the evaluator, which feeds the engine from the queue and ticks it every second so
  persistence windows end even when no new sample arrives;
* the writer, which writes the outbox to the database and retries with backoff while the
  database is down. On its first contact with the database it restores the open alerts into
  the engine, so a restart continues them instead of raising them again; it also deletes
  alerts cleared longer ago than the retention (every ``maintenance_interval_s``);
* the publisher (when ``ALERTS_EVENTHUB_CONNECTION_STRING`` is set), which sends the event
  outbox to Azure Event Hubs;
* the HTTP server (API, operator page, ``/health``, ``/metrics``).

Every transition is first committed to the local state file in ``ALERTS_STATE_DIR``
(:mod:`plantmon_alerts.delivery.journal`): the database outbox, the Event Hubs outbox and the
open alerts. At start the open alerts come back from that file, so state survives a restart
even while the database is down. Evaluation never waits for the database or Event Hubs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from asyncua import Client
from plantmon_common.backoff import ExponentialBackoff
from plantmon_common.metrics import new_registry
from plantmon_common.opcua import DiscoveredTag, PlantSubscriber, Sample
from plantmon_common.service import serve_http, wait_or_stop
from prometheus_client import CollectorRegistry

from plantmon_alerts.anomaly import AnomalyRunner, TrainingSet, read_healthy_window
from plantmon_alerts.api import create_app
from plantmon_alerts.delivery import (
    DeliveryMetrics,
    EventHubOptions,
    EventHubPublisher,
    StateJournal,
    acknowledged_event,
    event_factory,
)
from plantmon_alerts.delivery.journal import EventFactory
from plantmon_alerts.engine import Engine, Transition
from plantmon_alerts.metrics import AlertMetrics
from plantmon_alerts.rules import AnomalyRule, RuleBase, RulesWatcher, load_rules
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
        # Rules and anomaly detection (issue 6): reload on SIGHUP / file change; models in state_dir.
        self.rules_watcher = RulesWatcher(settings.rules_file, self._apply_rules, initial=self.rules)
        self.anomaly = AnomalyRunner(self.rules, settings.state_dir, registry, self._read_training_window)
        self.pool = make_pool(settings.database.conninfo(), timeout=settings.db_timeout_s)
        self.store = AlertStore(self.pool, timeout=settings.db_timeout_s)
        self.journal = StateJournal.in_dir(settings.state_dir)
        self.outbox = Outbox(self.store, journal=self.journal)
        self.metrics = AlertMetrics(
            registry,
            active=self.engine.active,
            outbox_depth=lambda: self.journal.write_depth + self.journal.event_depth,
        )
        self.delivery_metrics = DeliveryMetrics(registry)
        self.publisher: EventHubPublisher | None = None
        self._make_event: EventFactory | None = None
        if settings.eventhub_connection_string is not None:
            self.publisher = EventHubPublisher(self._eventhub_options(), self.journal, self.delivery_metrics)
            self._make_event = event_factory(settings.site, settings.eventhub_min_severity)
            logger.info(
                "Event Hubs delivery on",
                extra={
                    "min_severity": settings.eventhub_min_severity,
                    "transport": "websockets" if settings.eventhub_http_proxy else settings.eventhub_transport,
                    "proxy": bool(settings.eventhub_http_proxy),
                    "pending_events": self.journal.event_depth,
                },
            )
        else:
            logger.warning(
                "Event Hubs delivery is off: ALERTS_EVENTHUB_CONNECTION_STRING is not set "
                "(alerts are still evaluated, stored and served)",
                extra={"pending_events": self.journal.event_depth},
            )
        self.last_maintenance: float | None = None
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
        self.app = create_app(
            self.store,
            registry,
            self.health,
            settings.api_token,
            on_ack=self._acknowledged,
            session_max_age_s=settings.session_max_age_s,
        )
        # Continue the alerts that were open when the worker stopped (no database needed).
        self._emit(self.engine.restore(self.journal.open_alerts(), datetime.now(UTC)))
        if self.engine.active():
            logger.info("open alerts restored from the local state", extra={"open_alerts": len(self.engine.active())})

    def _eventhub_options(self) -> EventHubOptions:
        s = self.settings
        assert s.eventhub_connection_string is not None
        return EventHubOptions(
            connection_string=s.eventhub_connection_string.get_secret_value(),
            eventhub_name=s.eventhub_name,
            transport=s.eventhub_transport,
            http_proxy=s.eventhub_http_proxy,
            custom_endpoint=s.eventhub_custom_endpoint,
            retry_total=s.eventhub_retry_total,
            retry_backoff_s=s.eventhub_retry_backoff_s,
            retry_backoff_max_s=s.eventhub_retry_backoff_max_s,
            send_timeout_s=s.eventhub_send_timeout_s,
            backoff_max_s=s.eventhub_backoff_max_s,
        )

    def _acknowledged(self, row: dict[str, Any]) -> None:
        """The API acknowledged an alert: queue its event (the database has the row already)."""
        if self.publisher is None:
            return
        event = acknowledged_event(row, self.settings.site, self.settings.eventhub_min_severity)
        if event is not None:
            self.journal.add_event(event)
            self.publisher.wakeup.set()

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

    def _apply_rules(self, rules: list[RuleBase]) -> None:
        """A reloaded, valid rules file: unchanged rules keep their open alerts (Engine.replace_rules)."""
        self.rules = rules
        self._emit(self.engine.replace_rules(rules, datetime.now(UTC)))
        self.anomaly.set_rules(rules)

    async def _read_training_window(self, rule: AnomalyRule, end: datetime) -> TrainingSet:
        return await read_healthy_window(self.pool, rule, end)

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
        if self.outbox.put(transitions, self._make_event) and self.publisher is not None:
            self.publisher.wakeup.set()

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
                self.anomaly.observe(sample)
                self.metrics.samples.inc()
                self.metrics.evaluation.observe(time.perf_counter() - arrived)
            if time.monotonic() >= next_tick:
                next_tick = time.monotonic() + interval
                # A tick on a lost subscription would raise on stale values.
                if self.subscriber.connected:
                    now = datetime.now(UTC)
                    self._emit(self.engine.tick(now))
                    for score in self.anomaly.tick(now):
                        self._emit(self.engine.feed(score))

    # -- database ------------------------------------------------------------------------------

    def _set_db(self, up: bool, error: str | None = None) -> None:
        if up and self.db_up is not True:
            logger.info("database reachable", extra={"outbox_depth": self.outbox.depth})
        elif not up and self.db_up is not False:
            logger.warning(
                "database unreachable, keeping alert transitions in the local state file",
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
        """One round of the writer: restore once, flush, or ping when idle; retention when due."""
        if not self.restored:
            await self.restore()
        if self.outbox.depth:
            await self.outbox.flush()
        else:
            await self.store.ping()
        now = time.monotonic()
        if self.last_maintenance is None or now - self.last_maintenance >= self.settings.maintenance_interval_s:
            await self.maintain()
            self.last_maintenance = now

    async def maintain(self) -> int:
        """Retention: delete alerts cleared more than ``retention_days`` ago."""
        deleted = await self.store.delete_expired(self.settings.retention_days)
        if deleted:
            logger.info(
                "old cleared alerts deleted",
                extra={"deleted": deleted, "retention_days": self.settings.retention_days},
            )
        return deleted

    async def write(self, stop: asyncio.Event) -> None:
        """Keep the database in step with the engine until ``stop``; retry with backoff."""
        backoff = ExponentialBackoff(RETRY_INITIAL_S, RETRY_MAX_S)
        while not stop.is_set():
            try:
                await self.sync_once()
            except StoreError as exc:
                self.metrics.db_errors.inc()
                self._set_db(False, str(exc))
                if await wait_or_stop(stop, backoff.next()):
                    break
                continue
            self._set_db(True)
            backoff.reset()
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
            "events_pending": self.journal.event_depth,
            "eventhub": "off"
            if self.publisher is None
            else {True: "up", False: "down", None: "unknown"}[self.publisher.up],
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
                if self.publisher is not None:
                    tasks.append(asyncio.create_task(self.publisher.run(stop), name="eventhub"))
                tasks.append(asyncio.create_task(self.rules_watcher.run(stop), name="rules"))
                tasks.append(asyncio.create_task(self.anomaly.run(stop), name="anomaly"))
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
            self.journal.close()

    async def _drain(self) -> None:
        """After stop: evaluate what is queued, then try once more to write the outbox."""
        while not self.queue.empty():
            sample, _ = self.queue.get_nowait()
            self._emit(self.engine.feed(sample))
        try:
            await asyncio.wait_for(self.outbox.flush(), timeout=FINAL_FLUSH_S)
        except (StoreError, TimeoutError) as exc:
            logger.error(
                "stopping with alert transitions not yet written (kept in the local state file)",
                extra={"outbox_depth": self.outbox.depth, "error": str(exc) or type(exc).__name__},
            )
        logger.info("alert worker stopped")


async def run(settings: AlertSettings, stop: asyncio.Event, registry: CollectorRegistry | None = None) -> None:
    """Run the alert worker until ``stop`` is set (rules are validated first: RulesError)."""
    worker = AlertWorker(settings, registry if registry is not None else new_registry("alert_worker"))
    await worker.run(stop)
