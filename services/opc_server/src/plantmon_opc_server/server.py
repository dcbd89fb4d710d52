"""The OPC UA server's lifecycle: security, users, the Plant address space and the poll loop."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hmac
import logging
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from asyncua import Server, ua
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.crypto.truststore import TrustStore
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions
from asyncua.server.user_managers import UserManager
from cryptography import x509
from plantmon_common.health_http import LOOP_PROBE_INTERVAL_S, serve_health
from plantmon_common.metrics import new_registry
from plantmon_common.opcua import asyncua_private
from plantmon_common.opcua.certificates import ensure_certificate
from plantmon_common.tags import TagMeta
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from pydantic import ValidationError

from plantmon_opc_server.address_space import PlantAddressSpace, StatusObject
from plantmon_opc_server.history import PlantHistory, SampleArchive, install_history
from plantmon_opc_server.poller import (
    BAD_COMMUNICATION,
    UNCERTAIN_STALE,
    PolledReading,
    PollError,
    PollHealth,
    SensorPoller,
    TagState,
    make_datavalue,
    status_for,
)
from plantmon_opc_server.settings import OpcServerSettings

logger = logging.getLogger(__name__)

# From this many new tags at once, node creation runs with the cyclic garbage collector paused.
BULK_TAGS = 500
# Values written per step of a poll before the event loop is given back (with 5,000 monitored
# items a step of 1,000 subscribed writes held the loop for about 160 ms).
WRITE_BATCH = 250


@contextlib.contextmanager
def collection_paused(bulk: bool) -> Iterator[None]:
    """Pause the cyclic garbage collector while thousands of nodes are created, then freeze the heap.

    Each full collection walks every tracked object: with asyncua's standard address space and
    5,000 tags that is about 1.6 million objects and stalls the event loop for 0.3-0.5 s, several
    times while the nodes are built. The nodes (and the standard address space) live as long as
    the server, so after a bulk addition they are moved to the permanent generation
    (:func:`gc.freeze`) and later collections, during the poll loop too, no longer walk them.
    """
    if not bulk or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()
        logger.info("heap frozen after a bulk addition of tags", extra={"frozen_objects": gc.get_freeze_count()})


class PasswordUserManager(UserManager):
    """Username/password accounts from the environment; anonymous only in dev mode."""

    def __init__(self, accounts: dict[str, str], allow_anonymous: bool) -> None:
        self.accounts = accounts
        self.allow_anonymous = allow_anonymous

    def get_user(
        self, iserver: Any, username: str | None = None, password: str | None = None, certificate: Any = None
    ) -> User | None:
        # Only UserName and (in dev mode) Anonymous tokens are offered, so no user name means
        # anonymous; ``certificate`` is then the client's application certificate.
        if username is None:
            return User(role=UserRole.User) if self.allow_anonymous else None
        expected = self.accounts.get(username or "")
        if expected is not None and password is not None and hmac.compare_digest(expected, password):
            return User(role=UserRole.User, name=username)
        logger.warning("OPC UA login refused", extra={"user": username})
        return None


class TrustListValidator:
    """Refuses sessions of clients whose application certificate is not in the trust folder.

    The folder (``*.der`` or ``*.pem`` files) is re-read when it changes, so
    trusting a new client is copying its certificate there, without a restart.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._stamp: tuple[tuple[str, float], ...] | None = None
        self._validator: CertificateValidator | None = None

    async def _current(self) -> CertificateValidator:
        self.folder.mkdir(parents=True, exist_ok=True)
        stamp = tuple(sorted((p.name, p.stat().st_mtime) for p in self.folder.iterdir() if p.is_file()))
        if self._validator is None or stamp != self._stamp:
            store = TrustStore([self.folder], [])
            await store.load()
            options = CertificateValidatorOptions.TRUSTED_VALIDATION | CertificateValidatorOptions.PEER_CLIENT
            self._validator = CertificateValidator(options, store)
            self._stamp = stamp
            logger.info("client trust list loaded", extra={"folder": str(self.folder), "files": len(stamp)})
        return self._validator

    async def __call__(self, cert: x509.Certificate, app_description: ua.ApplicationDescription) -> None:
        validator = await self._current()
        try:
            await validator.validate(cert, app_description)
        except Exception:
            logger.warning(
                "OPC UA client certificate refused",
                extra={"subject": cert.subject.rfc4514_string(), "application_uri": app_description.ApplicationUri},
            )
            raise


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.poll_latency = Histogram(
            "plantmon_opc_server_poll_latency_seconds",
            "Latency of one poll of the sensor API",
            registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
        )
        self.poll_failures = Counter(
            "plantmon_opc_server_poll_failures", "Failed polls of the sensor API", registry=registry
        )
        self.polls = Counter("plantmon_opc_server_polls", "Polls of the sensor API", registry=registry)
        self.writes = Counter("plantmon_opc_server_value_writes", "DataValues written", ["status"], registry=registry)
        self.tags = Gauge("plantmon_opc_server_tags", "Variables below Objects/Plant", registry=registry)
        self.sessions = Gauge("plantmon_opc_server_sessions", "Open OPC UA sessions", registry=registry)
        self.subscriptions = Gauge("plantmon_opc_server_subscriptions", "OPC UA subscriptions", registry=registry)
        self.monitored_items = Gauge(
            "plantmon_opc_server_monitored_items", "Monitored items over all subscriptions", registry=registry
        )
        self.loop_lag = Histogram(
            "plantmon_opc_server_event_loop_lag_seconds",
            f"How late a {LOOP_PROBE_INTERVAL_S} s timer of the event loop fires (time other work held the loop)",
            registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
        )
        self.loop_lag_max = Gauge(
            "plantmon_opc_server_event_loop_lag_max_seconds",
            "The longest event-loop stall seen since the server started",
            registry=registry,
        )
        self.sensors_reachable = Gauge(
            "plantmon_opc_server_sensors_reachable",
            "1 when the last poll of the sensor API succeeded",
            registry=registry,
        )


class PlantServer:
    """An asyncua server whose ``Objects/Plant`` mirrors the sensor API, polled through the DMZ."""

    def __init__(self, settings: OpcServerSettings, registry: CollectorRegistry | None = None) -> None:
        # Before anything serves: refuse an asyncua whose internals we use have changed.
        asyncua_private.check_asyncua(asyncua_private.SERVER)
        asyncua_private.install_deadband_filters()  # Absolute and Percent deadbands as Part 4 says
        self.settings = settings
        self.registry = registry or new_registry("opc_server")
        self.metrics = Metrics(self.registry)
        self.health = PollHealth()
        self.server = Server(user_manager=PasswordUserManager(settings.users(), settings.dev_mode))
        self.space: PlantAddressSpace | None = None
        self.status: StatusObject | None = None
        self.poller = SensorPoller(settings.sensors_url, settings.poll_timeout_s, settings.sensors_ca_file)
        self.first_good = asyncio.Event()
        self.history: PlantHistory | None = None
        self._longest_lag = 0.0

    async def start(self) -> None:
        s = self.settings
        await self.server.init()
        self.server.set_endpoint(s.endpoint)
        self.server.set_server_name("plantmon OPC UA server")
        await self.server.set_application_uri(s.application_uri)
        self.server.product_uri = "urn:plantmon"
        policies = [
            ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
            ua.SecurityPolicyType.Basic256Sha256_Sign,
        ]
        tokens: list[type] = [ua.UserNameIdentityToken]
        if s.dev_mode:
            policies.append(ua.SecurityPolicyType.NoSecurity)
            tokens.append(ua.AnonymousIdentityToken)
            logger.warning("dev mode: SecurityPolicy None and anonymous access are enabled")
        self.server.set_security_policy(policies)
        self.server.set_identity_tokens(tokens)
        cert, key = await ensure_certificate(s.cert_dir, s.application_uri, s.public_hostname, server=True)
        await self.server.load_certificate(str(cert))
        await self.server.load_private_key(str(key))
        if s.trusted_client_certs_dir is not None:
            self.server.set_certificate_validator(TrustListValidator(s.trusted_client_certs_dir))  # type: ignore[arg-type]
            logger.info("only clients in the trust list may connect", extra={"folder": str(s.trusted_client_certs_dir)})
        ns = await self.server.register_namespace(s.namespace_uri)
        archive = SampleArchive(s.db.conninfo(), s.db.timeout_s) if s.db is not None else None
        self.history = PlantHistory(ns, timedelta(seconds=s.history_window_s), archive, s.history_max_values_per_read)
        await self.history.init()
        install_history(self.server, self.history)
        self.space = PlantAddressSpace(self.server, ns, s.poll_interval_s * 1000, self.history)
        await self.space.root()
        self.status = StatusObject(self.server, ns)
        await self.status.create()
        await self.server.start()
        logger.info(
            "OPC UA server listening",
            extra={"endpoint": s.endpoint, "application_uri": s.application_uri, "dev_mode": s.dev_mode},
        )

    async def stop(self) -> None:
        await self.poller.aclose()
        await self.server.stop()

    async def poll_once(self) -> None:
        """One poll: write every tag's DataValue, or Bad_CommunicationError for all on failure."""
        assert self.space is not None and self.status is not None
        self.metrics.polls.inc()
        self.health.polls += 1
        try:
            readings, latency = await self.poller.fetch()
        except PollError as exc:
            await self._poll_failed(str(exc))
            return
        self.metrics.poll_latency.observe(latency)
        if any(r.path not in self.space.variables for r in readings):
            await self.refresh_tags()
        unknown = [r for r in readings if r.path not in self.space.variables]
        if unknown:
            await self._add_from_readings(unknown)
        now = datetime.now(UTC)
        batch: list[tuple[str, ua.DataValue, TagState]] = []
        judge = self._judge_reading
        for reading in readings:
            judge(reading, now, batch)
        await self._write_batch(batch, now)
        if self.health.consecutive_failures or not self.health.sensors_reachable:
            logger.info("sensor API reachable", extra={"url": self.settings.sensors_url, "tags": len(readings)})
        self.health.last_success = now
        self.health.consecutive_failures = 0
        self.health.failing_since_poll = None
        self.health.last_error = None
        self.health.sensors_reachable = True
        self.metrics.sensors_reachable.set(1)
        self.metrics.tags.set(len(self.space.variables))
        await self.status.update(LastSuccessfulPoll=now, ConsecutiveFailures=0, SensorsReachable=True, LastError="")

    async def refresh_tags(self) -> None:
        """Create the nodes of tags the sensor service advertises and we do not have yet."""
        assert self.space is not None
        try:
            tags = await self.poller.fetch_tags()
        except PollError as exc:
            logger.warning("cannot fetch the tag list", extra={"error": str(exc)})
            return
        await self._add_tags([t for t in tags if t.path not in self.space.variables])

    async def _add_tags(self, tags: list[TagMeta]) -> None:
        """Add ``tags`` to the address space in batches, the event loop served between batches."""
        assert self.space is not None
        if not tags:
            return
        with collection_paused(len(tags) >= BULK_TAGS):
            added = await self.space.ensure_many(tags)
        if added:
            logger.info("tags added to the address space", extra={"count": len(added), "tags": added[:10]})

    async def _add_from_readings(self, readings: list[PolledReading]) -> None:
        """Tags in the readings but not (yet) in the tag list: their metadata comes along."""
        assert self.space is not None
        metas: list[TagMeta] = []
        for reading in readings:
            try:
                metas.append(TagMeta.model_validate(reading.model_dump()))
            except ValidationError as exc:
                logger.warning("ignoring a reading of an invalid tag", extra={"path": reading.path, "error": str(exc)})
        await self._add_tags(metas)

    def _judge_reading(
        self, reading: PolledReading, now: datetime, batch: list[tuple[str, ua.DataValue, TagState]]
    ) -> None:
        """Decide the DataValue (if any) ``reading`` publishes and queue it in ``batch``."""
        assert self.space is not None
        if reading.path not in self.space.variables:
            return  # an invalid tag, refused above
        state = self.health.tag_states.get(reading.path)
        if state is None:
            state = self.health.tag_states[reading.path] = TagState()
        observed = reading.observed_at
        if state.last_observed is None or observed > state.last_observed:
            state.last_observed = observed
            state.polls_without_news = 0
            if state.last_written is not None and observed <= state.last_written:
                return  # older than what we already published (e.g. a failure stamp)
            status = status_for(reading)
            if reading.reason != state.reason and not status.is_good():
                logger.warning("sensor reports a bad tag", extra={"path": reading.path, "reason": reading.reason})
            state.reason = reading.reason if not status.is_good() else None
            batch.append((reading.path, make_datavalue(reading.value, status, observed, now), state))
            return
        state.polls_without_news += 1
        if state.polls_without_news >= self.settings.stale_after_polls:
            # No new observation: the value is at best a last usable one, stamped now.
            # A stale reading without a value keeps its Bad status, re-stamped.
            status = UNCERTAIN_STALE if reading.value is not None else status_for(reading)
            batch.append((reading.path, make_datavalue(reading.value, status, now, now), state))

    async def _write_batch(self, batch: list[tuple[str, ua.DataValue, TagState]], now: datetime) -> None:
        """Publish one poll's DataValues through the address space and record them in the history ring.

        ``Server.write_attribute_value`` adds two coroutine layers per value and drops the
        result; the address space's own call (which also runs the subscriptions' data-change
        callbacks) returns a StatusCode, checked here. Metrics are counted once per poll.
        """
        assert self.space is not None and self.history is not None
        write = self.server.iserver.aspace.write_attribute_value
        variables = self.space.variables
        record = self.history.record
        cutoff = now - self.history.window
        value_attr = ua.AttributeIds.Value
        counts: dict[str, int] = {}
        for n, (path, dv, state) in enumerate(batch, 1):
            if n % WRITE_BATCH == 0:
                await asyncio.sleep(0)  # thousands of tags: let sessions be served meanwhile
            result = await write(variables[path], value_attr, dv)
            if not result.is_good():
                logger.error(
                    "value write refused",
                    extra={
                        "path": path,
                        "status": result.name,
                        "value_status": dv.StatusCode.name if dv.StatusCode else None,
                    },
                )
                continue
            record(path, dv, cutoff)
            state.last_written = dv.SourceTimestamp
            name = dv.StatusCode.name if dv.StatusCode is not None else "Good"
            counts[name] = counts.get(name, 0) + 1
        if "Good" in counts:
            self.first_good.set()
        for name, count in counts.items():
            self.metrics.writes.labels(name).inc(count)

    async def _poll_failed(self, error: str) -> None:
        assert self.space is not None and self.status is not None
        h = self.health
        if h.consecutive_failures == 0:
            logger.warning("sensor API unreachable", extra={"url": self.settings.sensors_url, "error": error})
            h.failing_since_poll = h.polls
        h.consecutive_failures += 1
        h.last_error = error
        h.sensors_reachable = False
        self.metrics.poll_failures.inc()
        self.metrics.sensors_reachable.set(0)
        now = datetime.now(UTC)
        batch = []
        for path in self.space.variables:
            state = self.health.tag_states.get(path)
            if state is None:
                state = self.health.tag_states[path] = TagState()
            batch.append((path, make_datavalue(None, BAD_COMMUNICATION, now, now), state))
        await self._write_batch(batch, now)
        await self.status.update(
            ConsecutiveFailures=h.consecutive_failures, SensorsReachable=False, LastError=error[:500]
        )

    def session_count(self) -> int:
        """Activated client sessions (a connection without an activated session is not one)."""
        clients = getattr(self.server.bserver, "clients", None) or []
        return sum(
            1
            for protocol in clients
            if protocol.processor is not None
            and protocol.processor.session is not None
            and protocol.processor.session.is_activated()
        )

    def update_session_metrics(self) -> None:
        # Only clients' subscriptions exist: history is recorded by the poll loop, not through
        # asyncua's internal history subscription.
        subs = self.server.iserver.subscription_service.subscriptions
        self.metrics.subscriptions.set(len(subs))
        self.metrics.monitored_items.set(
            sum(len(asyncua_private.monitored_items(sub.monitored_item_srv)) for sub in subs.values())
        )
        self.metrics.sessions.set(self.session_count())

    async def poll_forever(self, stop: asyncio.Event) -> None:
        interval = self.settings.poll_interval_s
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while not stop.is_set():
            try:
                await self.poll_once()
                self.update_session_metrics()
            except Exception:
                logger.exception("poll failed unexpectedly")
            next_at += interval
            delay = next_at - loop.time()
            if delay < 0:
                next_at = loop.time()
                delay = 0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)

    def record_loop_lag(self, lag: float) -> None:
        """Every probe of the HTTP side's loop-lag watch: how long other work held the event loop
        (sessions wait that long)."""
        self.metrics.loop_lag.observe(lag)
        if lag > self._longest_lag:
            self._longest_lag = lag
            self.metrics.loop_lag_max.set(lag)

    def health_report(self) -> tuple[bool, dict[str, Any]]:
        h = self.health
        bad = {p: s.reason for p, s in h.tag_states.items() if s.reason}
        return True, {
            "sensors_reachable": h.sensors_reachable,
            "last_successful_poll": h.last_success.isoformat() if h.last_success else None,
            "consecutive_failures": h.consecutive_failures,
            "last_error": h.last_error,
            "tags": len(self.space.variables) if self.space else 0,
            "bad_tags": bad,
        }


@contextlib.asynccontextmanager
async def running_server(
    settings: OpcServerSettings, stop: asyncio.Event, registry: CollectorRegistry | None = None
) -> AsyncIterator[PlantServer]:
    """Start the server, its poll loop and its HTTP side; stop all of it on exit."""
    plant = PlantServer(settings, registry)
    await plant.start()
    poll_task = asyncio.create_task(plant.poll_forever(stop), name="poll")
    try:
        async with serve_health(
            "plantmon OPC UA server",
            plant.registry,
            plant.health_report,
            settings.http_host,
            settings.http_port,
            on_loop_lag=plant.record_loop_lag,
        ) as http:
            plant.http_port = http.port  # type: ignore[attr-defined]
            yield plant
    finally:
        stop.set()
        await poll_task
        await plant.stop()


async def run(settings: OpcServerSettings, stop: asyncio.Event, registry: CollectorRegistry | None = None) -> None:
    async with running_server(settings, stop, registry):
        # This process is the server: asyncua's standard address space (about half a million
        # objects) lives as long as it does, so full collections need not walk it each time.
        gc.freeze()
        await stop.wait()
    logger.info("OPC UA server stopped")
