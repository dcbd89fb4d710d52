"""From notifications to rows: the tag registry, a bounded queue, the spool and the batched binary COPY.

The OPC UA side calls :meth:`SampleStore.put` for every notification; it never blocks. A full
queue spills: the samples wait in an overflow list that the writer moves to the on-disk spool
(behind whatever the queue held, so the order is kept). :meth:`SampleStore.run` takes batches by
size or age and writes each with binary COPY straight into ``samples``; a batch that holds a row
already stored (a spool record replayed again after a crash, a value re-read by a backfill)
fails that COPY as a whole and goes through a per-connection TEMP staging table and
``INSERT INTO samples ... ON CONFLICT (tag_id, time) DO NOTHING`` instead, so it is stored once.

A failed write sends its batch to the spool, and every later batch follows it there until the
spool is empty again: the spool is replayed oldest first whenever the database takes writes,
with backoff between attempts while it does not. The database state is logged once per change.

Hand-written where ``bench.scraper_throughput`` measured the library path as too slow
(docs/benchmarks.md, *Scraper and storage*, run E): :func:`encode_copy` instead of psycopg's
``write_row`` and :class:`SampleQueue` instead of ``asyncio.Queue``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from collections import deque
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import psycopg
from asyncua import Client
from plantmon_common.backoff import ExponentialBackoff
from plantmon_common.opcua import DiscoveredTag, Sample, datavalue_to_sample
from plantmon_common.tags import split_path
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from plantmon_scraper.metrics import ScraperMetrics
from plantmon_scraper.settings import ScraperSettings
from plantmon_scraper.spool import Spool, SpoolError

logger = logging.getLogger(__name__)

STAGING_DDL = (
    "CREATE TEMP TABLE IF NOT EXISTS samples_staging "
    "(time timestamptz NOT NULL, tag_id integer NOT NULL, value double precision, status bigint NOT NULL) "
    "ON COMMIT DELETE ROWS"
)
COPY_STAGING = "COPY samples_staging (time, tag_id, value, status) FROM STDIN (FORMAT BINARY)"
COPY_SAMPLES = "COPY samples (time, tag_id, value, status) FROM STDIN (FORMAT BINARY)"
MERGE_STAGING = (
    "INSERT INTO samples (time, tag_id, value, status) "
    "SELECT time, tag_id, value, status FROM samples_staging "
    "ON CONFLICT (tag_id, time) DO NOTHING"
)
UPSERT_TAGS = """
INSERT INTO tags (path, sensor, tag, unit, eu_low, eu_high, description, last_seen)
SELECT path, sensor, tag, unit, eu_low, eu_high, description, now()
FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::float8[], %s::float8[], %s::text[])
    AS t(path, sensor, tag, unit, eu_low, eu_high, description)
ON CONFLICT (path) DO UPDATE SET
    unit = EXCLUDED.unit, eu_low = EXCLUDED.eu_low, eu_high = EXCLUDED.eu_high,
    description = EXCLUDED.description, last_seen = now()
RETURNING path, id
"""

LAST_STORED = "SELECT t.path, (SELECT max(s.time) FROM samples s WHERE s.tag_id = t.id) FROM tags t"

LIVE_KEYS_MAX = 200_000
"""Live samples remembered during a backfill (beyond it, an overlap is only a duplicate the key absorbs)."""
PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
COPY_TRAILER = b"\xff\xff"
# One binary COPY tuple of (time, tag_id, value, status) as PostgreSQL lays it out: a field count,
# then length + big-endian data per field. A NULL value (bad quality) has length -1 and no data.
ROW_WITH_VALUE = struct.Struct(">hiqiiidiq")
ROW_NULL_VALUE = struct.Struct(">hiqiiiiq")


def encode_copy(batch: Sequence[Sample], tag_ids: dict[str, int]) -> bytearray:
    """The whole binary COPY stream (signature, tuples, trailer) for ``batch`` in one buffer.

    One precompiled ``struct.pack_into`` per row into a buffer sized once, instead of psycopg's
    per-field adaptation in ``write_row`` (numpy would be a little faster still, but importing it
    costs 15 MiB of RSS). Packing in place instead of joining one ``bytes`` per row cut the peak
    memory of a 20,000-row batch from 4.2 MB to 0.9 MB (tracemalloc) and its time by a fifth.
    """
    with_value = ROW_WITH_VALUE.pack_into
    null_value = ROW_NULL_VALUE.pack_into
    with_size = ROW_WITH_VALUE.size
    null_size = ROW_NULL_VALUE.size
    epoch = PG_EPOCH
    offset = len(COPY_SIGNATURE)
    buf = bytearray(offset + with_size * len(batch) + len(COPY_TRAILER))
    buf[:offset] = COPY_SIGNATURE
    for s in batch:
        delta = s.source_time - epoch
        micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
        if s.value is not None:
            with_value(buf, offset, 4, 8, micros, 4, tag_ids[s.path], 8, s.value, 8, s.status)
            offset += with_size
        else:
            null_value(buf, offset, 4, 8, micros, 4, tag_ids[s.path], -1, 8, s.status)
            offset += null_size
    buf[offset : offset + len(COPY_TRAILER)] = COPY_TRAILER
    del buf[offset + len(COPY_TRAILER) :]  # NULL values made the rows shorter than reserved
    return buf


class SampleQueue:
    """A bounded FIFO of samples for one event loop: whole lists in and out, one wake-up per put.

    ``asyncio.Queue`` costs a few microseconds per item on each side; at tens of thousands of
    notifications a second that was a visible share of the scraper's CPU.
    """

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._items: deque[Sample] = deque()
        self._ready = asyncio.Event()

    def qsize(self) -> int:
        return len(self._items)

    def empty(self) -> bool:
        return not self._items

    def put_many(self, samples: Sequence[Sample]) -> int:
        """Append what fits (in order); return how many were taken."""
        room = self.maxsize - len(self._items)
        taken = samples if len(samples) <= room else samples[: max(room, 0)]
        if taken:
            self._items.extend(taken)
            self._ready.set()
        return len(taken)

    def take(self, limit: int) -> list[Sample]:
        """Up to ``limit`` samples, oldest first (none if empty)."""
        items = self._items
        if len(items) <= limit:
            out = list(items)
            items.clear()
        else:
            out = [items.popleft() for _ in range(limit)]
        if not items:
            self._ready.clear()
        return out

    async def wait(self, seconds: float) -> bool:
        """Until something is queued or ``seconds`` passed; True when something is queued."""
        if self._items:
            return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), timeout=seconds)
        return bool(self._items)


DB_ERRORS: tuple[type[BaseException], ...] = (psycopg.Error, OSError)
"""What a write can fail with while the database is away (PoolTimeout is a psycopg.Error)."""


async def prepare_connection(conn: AsyncConnection[tuple[object, ...]]) -> None:
    """Pool ``configure`` hook: the staging table lives as long as the connection."""
    await conn.execute(STAGING_DDL)
    await conn.commit()


class SampleStore:
    """Owns the path -> id map, the queue, the spool, the backfill and the writer loop."""

    def __init__(
        self, pool: AsyncConnectionPool, settings: ScraperSettings, metrics: ScraperMetrics, spool: Spool | None = None
    ) -> None:
        self.pool = pool
        self.settings = settings
        self.metrics = metrics
        self.queue = SampleQueue(settings.queue_max)
        self.spool = spool or Spool(settings.spool_dir, settings.spool_max_bytes, settings.spool_segment_bytes)
        self.tag_ids: dict[str, int] = {}
        self._meta: dict[str, DiscoveredTag] = {}
        self.db_up: bool | None = None  # None until the first write or registration
        self.newest_source: float | None = None
        self.newest_by_tag: dict[str, datetime] = {}
        self.dropped = 0
        self._overflow: list[Sample] = []
        self._holding = False
        self._held: list[Sample] = []
        # (path, source time) of the live samples that arrived while the backfill ran; the
        # history it reads leaves those out, so a value is not delivered both ways.
        self._live_keys: set[tuple[str, datetime]] | None = None
        self._known_before: dict[str, datetime] = {}
        self._retry_at = 0.0
        self._retry = ExponentialBackoff(settings.retry_initial_s, settings.retry_max_s)
        self._clock_logged: set[str] = set()
        self._spool_rows = 0
        self._spool_bytes = 0
        self._spool_dropped_counted = 0
        metrics.queue_depth.set_function(lambda: self.queue.qsize() + len(self._overflow) + len(self._held))
        metrics.lag_seconds.set_function(self._lag)
        metrics.tags.set_function(lambda: len(self.tag_ids))
        metrics.spool_bytes.set_function(lambda: self._spool_bytes)
        metrics.spool_rows.set_function(lambda: self._spool_rows)
        metrics.spool_max_bytes.set(self.spool.max_bytes)

    def _lag(self) -> float:
        return time.time() - self.newest_source if self.newest_source is not None else float("nan")

    def open_spool(self) -> None:
        """Open (or create) the spool folder; a spool left by an earlier run is replayed first."""
        self.spool.open()
        self._sync_spool_metrics()

    def _sync_spool_metrics(self) -> None:
        self._spool_bytes = self.spool.bytes
        self._spool_rows = self.spool.pending_rows
        dropped = self.spool.dropped_rows - self._spool_dropped_counted
        if dropped > 0:
            self.metrics.spool_dropped.inc(dropped)
            self._spool_dropped_counted = self.spool.dropped_rows

    # -- the OPC UA side ------------------------------------------------------------------------

    def put(self, sample: Sample) -> None:
        """The subscriber's sink: never blocks; a full queue spills to the spool (via the writer)."""
        self.put_many([sample])

    def put_many(self, samples: list[Sample]) -> None:
        """The subscriber's batch sink (one publish response): like :meth:`put` for each, in order."""
        self.metrics.notifications.inc(len(samples))
        self._note_many(samples)
        live = self._live_keys
        if live is not None and len(live) < LIVE_KEYS_MAX:
            live.update((s.path, s.source_time) for s in samples)
        if self._holding:
            self._held.extend(samples)
            if len(self._held) > self.settings.queue_max:
                logger.warning("backfill takes long; releasing live samples before it ends")
                self._release_held()
            return
        self._enqueue_many(samples)

    def _note_many(self, samples: list[Sample]) -> None:
        """Newest time per tag (for the backfill) and overall (lag); clock sanity per sample."""
        newest_by_tag = self.newest_by_tag
        newest = oldest = samples[0].source_time
        for s in samples:
            stamp = s.source_time
            known = newest_by_tag.get(s.path)
            if known is None or stamp > known:
                newest_by_tag[s.path] = stamp
            if stamp > newest:
                newest = stamp
            elif stamp < oldest:
                oldest = stamp
        top = newest.timestamp()
        if self.newest_source is None or top > self.newest_source:
            self.newest_source = top
        now = time.time()
        # Only a batch whose extremes are out of bounds needs the per-sample check.
        if top > now + self.settings.clock_future_s or oldest.timestamp() < now - self.settings.clock_max_age_s:
            for s in samples:
                self._check_clock(s, now)

    def _check_clock(self, sample: Sample, now: float) -> None:
        stamp = sample.source_time.timestamp()
        if stamp > now + self.settings.clock_future_s:
            self.metrics.clock_future.inc()
            self._clock_warning("future", sample, now)
        elif stamp < now - self.settings.clock_max_age_s:
            self.metrics.clock_old.inc()
            self._clock_warning("old", sample, now)

    def _clock_warning(self, kind: str, sample: Sample, now: float) -> None:
        if kind in self._clock_logged:
            return
        self._clock_logged.add(kind)
        logger.warning(
            "source timestamp in the future; stored anyway (is the sensor host's clock set?)"
            if kind == "future"
            else "source timestamp implausibly old; stored anyway (is the sensor host's clock set?)",
            extra={
                "path": sample.path,
                "source_time": sample.source_time.isoformat(),
                "offset_s": round(sample.source_time.timestamp() - now, 1),
            },
        )

    def _enqueue(self, sample: Sample) -> None:
        self._enqueue_many([sample])

    def _enqueue_many(self, samples: Sequence[Sample]) -> None:
        # Keep the order: once spilling, everything goes behind the spilled samples.
        taken = 0 if self._overflow else self.queue.put_many(samples)
        if taken < len(samples):
            if not self._overflow:
                logger.warning("sample queue full, spilling to the spool", extra={"queue_max": self.settings.queue_max})
            self._overflow.extend(samples[taken:])
            self.metrics.spilled.inc(len(samples) - taken)

    def release_held(self) -> None:
        """Queue the live samples held for a backfill (also when the connection is lost meanwhile)."""
        self._release_held()

    def _release_held(self) -> None:
        held, self._held, self._holding = self._held, [], False
        if held:
            self._enqueue_many(held)

    async def on_connected(self, client: Client, tags: Sequence[DiscoveredTag]) -> None:
        """Subscriber hook before subscribing: register every tag; hold live samples for the backfill."""
        if self.settings.backfill:
            # What this process received before this connection is queued, spooled or stored;
            # what the new subscription delivers is held until the history before it is queued.
            self._known_before = dict(self.newest_by_tag)
            self._holding = True
            self._live_keys = set()
        await self.register(tags)

    async def on_tags_added(self, client: Client, tags: Sequence[DiscoveredTag]) -> None:
        """Subscriber hook for tags found by a re-browse."""
        await self.register(tags)

    async def register(self, tags: Sequence[DiscoveredTag]) -> None:
        """Upsert the tags; a database outage only defers it (the writer registers them later)."""
        for tag in tags:
            self._meta[tag.path] = tag
        try:
            async with self.pool.connection(timeout=self.settings.retry_max_s) as conn:
                await self._upsert_tags(conn, [t.path for t in tags])
        except DB_ERRORS as exc:
            self._set_db_state(False, exc)
            return
        self._set_db_state(True)
        logger.info("tags registered", extra={"tags": len(tags)})

    async def on_subscribed(self, client: Client, tags: Sequence[DiscoveredTag]) -> None:
        """Subscriber hook after subscribing: backfill every tag from its last stored sample.

        Live notifications of the new subscription are held meanwhile and queued after the
        history, so each tag's samples reach the database in time order.
        """
        if not self.settings.backfill:
            return
        try:
            await self.backfill(client, tags)
        finally:
            self._live_keys = None
            self._release_held()

    async def _backfill_starts(self, tags: Sequence[DiscoveredTag]) -> dict[str, datetime]:
        now = datetime.now(UTC)
        floor = now - timedelta(seconds=self.settings.backfill_max_s)
        stored: dict[str, datetime] = {}
        try:
            async with self.pool.connection(timeout=self.settings.retry_max_s) as conn:
                cursor = await conn.execute(LAST_STORED)
                for path, last in await cursor.fetchall():
                    if last is not None:
                        stored[str(path)] = last  # type: ignore[assignment]
        except DB_ERRORS as exc:
            # Unknown: read the whole window; the key makes the repeats no-ops.
            self._set_db_state(False, exc)
            logger.warning("database unreachable for the backfill start; reading the whole history window")
        starts = {}
        for tag in tags:
            known = [t for t in (stored.get(tag.path), self._known_before.get(tag.path)) if t is not None]
            starts[tag.path] = max([floor, *known])
        return starts

    async def backfill(self, client: Client, tags: Sequence[DiscoveredTag]) -> int:
        """HistoryRead (ReadRaw) of every tag from its newest known sample to now; queue what is new."""
        starts = await self._backfill_starts(tags)
        end = datetime.now(UTC) + timedelta(seconds=1)
        limit = asyncio.Semaphore(self.settings.backfill_concurrency)
        results: dict[str, list[Sample]] = {}
        failures: dict[str, str] = {}

        async def read(tag: DiscoveredTag) -> None:
            start = starts[tag.path]
            async with limit:
                try:
                    values = await client.get_node(tag.node_id).read_raw_history(start, end, return_bounds=False)
                except Exception as exc:  # any failure of one tag is logged, the others go on
                    failures[tag.path] = f"{type(exc).__name__}: {exc}"
                    return
            samples = [datavalue_to_sample(tag.path, dv) for dv in values]
            results[tag.path] = sorted((s for s in samples if s.source_time > start), key=lambda s: s.source_time)

        started = time.monotonic()
        await asyncio.gather(*(read(tag) for tag in tags))
        total = 0
        live = self._live_keys or set()
        overlap = 0
        for tag in tags:
            history = results.get(tag.path, [])
            if live:
                kept = [s for s in history if (s.path, s.source_time) not in live]
                overlap += len(history) - len(kept)
                history = kept
            if history:
                self._note_many(history)
                self._enqueue_many(history)
                total += len(history)
        self.metrics.backfilled.inc(total)
        if failures:
            self.metrics.backfill_errors.inc(len(failures))
            logger.warning(
                "history read failed for some tags; their gap stays open",
                extra={"tags": len(failures), "example": next(iter(failures.items()))},
            )
        logger.info(
            "backfill done",
            extra={
                "tags": len(tags),
                "samples": total,
                "live_meanwhile": overlap,
                "seconds": round(time.monotonic() - started, 2),
            },
        )
        return total

    # -- the database side ----------------------------------------------------------------------

    async def _upsert_tags(self, conn: AsyncConnection[tuple[object, ...]], paths: Sequence[str]) -> None:
        columns: list[list[object]] = [[] for _ in range(7)]
        for path in paths:
            sensor, tag = split_path(path)
            meta = self._meta.get(path)
            # A tag seen only through a sample (its browse was not registered yet) gets its metadata later.
            details = (meta.unit, meta.eu_low, meta.eu_high, meta.description) if meta else ("", None, None, "")
            for column, value in zip(columns, (path, sensor, tag, *details), strict=True):
                column.append(value)
        async with conn.transaction():
            cursor = await conn.execute(UPSERT_TAGS, columns)
            for row_path, tag_id in await cursor.fetchall():
                self.tag_ids[str(row_path)] = int(tag_id)  # type: ignore[call-overload]

    async def write_batch(self, batch: Sequence[Sample]) -> int:
        """Write one batch (registering unknown tags first); return the rows that were new."""
        started = time.perf_counter()
        async with self.pool.connection(timeout=self.settings.retry_max_s) as conn:
            unknown = sorted({s.path for s in batch if s.path not in self.tag_ids})
            if unknown:
                await self._upsert_tags(conn, unknown)
            ids = self.tag_ids
            data = encode_copy(batch, ids)
            inserted = -1
            try:
                # Nearly every batch is new: COPY it straight into samples (half the database's
                # work of staging + merge). One stored row already there fails the whole COPY,
                # which rolls back, and the batch is merged by key instead.
                async with conn.transaction(), conn.cursor().copy(COPY_SAMPLES) as copy:
                    await copy.write(data)
                inserted = len(batch)
            except psycopg.errors.UniqueViolation:
                pass
            if inserted < 0:
                async with conn.transaction():
                    cursor = conn.cursor()
                    async with cursor.copy(COPY_STAGING) as copy:
                        await copy.write(data)
                    await cursor.execute(MERGE_STAGING)
                    inserted = max(cursor.rowcount, 0)
        self.metrics.batch_seconds.observe(time.perf_counter() - started)
        self.metrics.batch_rows.observe(len(batch))
        self.metrics.rows_written.inc(inserted)
        self.metrics.duplicates.inc(len(batch) - inserted)
        return inserted

    def _set_db_state(self, up: bool, exc: BaseException | None = None) -> None:
        if up == self.db_up:
            return
        if up:
            if self.db_up is False:
                logger.info("database recovered", extra={"spool_rows": self._spool_rows})
        else:
            logger.warning(
                "database lost, spooling samples to disk and retrying",
                extra={"error": f"{type(exc).__name__}: {exc}", "queued": self.queue.qsize()},
            )
        self.db_up = up
        self.metrics.db_up.set(1 if up else 0)

    def _write_failed(self, exc: BaseException) -> None:
        self.metrics.write_errors.inc()
        self._set_db_state(False, exc)
        self._retry_at = time.monotonic() + self._retry.next()

    def _write_ok(self) -> None:
        self._set_db_state(True)
        self._retry.reset()

    async def _to_spool(self, samples: Sequence[Sample]) -> None:
        for start in range(0, len(samples), self.settings.batch_size):
            chunk = samples[start : start + self.settings.batch_size]
            try:
                await asyncio.to_thread(self.spool.append, chunk)
            except SpoolError as exc:
                self.dropped += len(chunk)
                self.metrics.dropped.inc(len(chunk))
                logger.error("cannot write the spool; samples lost", extra={"lost": len(chunk), "error": str(exc)})
                continue
            self.metrics.spooled.inc(len(chunk))
        self._sync_spool_metrics()

    async def _spill_overflow(self) -> None:
        """Queue first, then the overflow, into the spool: nothing overtakes an older sample."""
        if not self._overflow:
            return
        spilled = self.queue.take(self.queue.qsize())
        spilled.extend(self._overflow)
        self._overflow = []
        logger.info("spilled samples to the spool", extra={"samples": len(spilled)})
        await self._to_spool(spilled)

    async def _replay(self, budget_s: float) -> None:
        """Replay spool records oldest first for up to ``budget_s``; stop at the first failure."""
        deadline = time.monotonic() + budget_s
        replayed = 0
        while time.monotonic() < deadline:
            record = await asyncio.to_thread(self.spool.peek)
            if record is None:
                break
            position, samples = record
            try:
                await self.write_batch(samples)
            except DB_ERRORS as exc:
                self._write_failed(exc)
                break
            self._write_ok()
            await asyncio.to_thread(self.spool.advance, position)
            self.metrics.replayed.inc(len(samples))
            replayed += len(samples)
            self._sync_spool_metrics()
        if replayed:
            if self.spool.empty:
                logger.info("spool replayed completely", extra={"samples": replayed})
            else:
                logger.info("replaying the spool", extra={"samples": replayed, "left": self._spool_rows})

    def backlog_limit(self) -> int:
        """Rows the next COPY may take: one batch, or with a backlog up to ``batch_max_factor`` batches.

        A queue deeper than one batch means the writer is behind; one larger COPY pays the round
        trips, the transaction and the commit's WAL flush once for several batches, so the writer
        catches up instead of the backlog growing. The cap bounds the encoded buffer and the
        rows a failed write sends to the spool at once.
        """
        size = self.settings.batch_size
        depth = self.queue.qsize()
        if depth <= size:
            return size
        return min(depth, size * self.settings.batch_max_factor)

    async def _next_batch(self, stop: asyncio.Event) -> list[Sample]:
        """Up to ``batch_size`` samples, at most ``batch_age_s`` after the first one arrived; with a
        backlog, up to ``batch_max_factor`` batches at once (see :meth:`backlog_limit`).

        Returns an empty list after a quiet quarter second, so the loop can replay and spill.
        """
        size = self.settings.batch_size
        if stop.is_set() or not await self.queue.wait(0.25):
            return self.queue.take(self.backlog_limit())
        if self.queue.qsize() > size:
            batch = self.queue.take(self.backlog_limit())
            if len(batch) > size:
                self.metrics.backlog_batches.inc()
            return batch
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.batch_age_s
        batch = self.queue.take(size)
        while len(batch) < size:
            remaining = deadline - loop.time()
            if remaining <= 0 or stop.is_set() or self._overflow:
                break
            if not await self.queue.wait(remaining):
                break
            batch.extend(self.queue.take(size - len(batch)))
        return batch

    async def _store(self, batch: list[Sample]) -> None:
        """Write directly while nothing waits in the spool and the database is up; else spool."""
        if self.spool.empty and self.db_up is not False:
            try:
                await self.write_batch(batch)
            except DB_ERRORS as exc:
                self._write_failed(exc)
            else:
                self._write_ok()
                return
        await self._to_spool(batch)

    async def run(self, stop: asyncio.Event) -> None:
        """Write batches until ``stop`` is set; then flush the queue (to the database or the spool)."""
        while True:
            await self._spill_overflow()
            batch = await self._next_batch(stop)
            await self._spill_overflow()
            if batch:
                await self._store(batch)
            if not self.spool.empty and time.monotonic() >= self._retry_at:
                await self._replay(budget_s=1.0 if not stop.is_set() else self.settings.shutdown_flush_s)
            if stop.is_set() and self.queue.empty() and not self._overflow and not batch:
                break
        with contextlib.suppress(SpoolError):
            self._sync_spool_metrics()
        if not self.spool.empty:
            logger.warning(
                "stopping with samples in the spool; they are replayed at the next start",
                extra={"spool_rows": self._spool_rows},
            )

    # -- plain PostgreSQL maintenance -----------------------------------------------------------

    async def maintain(self, stop: asyncio.Event) -> None:
        """On the plain-PostgreSQL path, call ``plantmon_maintain()`` every few seconds (rollups,
        retention); on TimescaleDB its policies do that and this task ends after saying so."""
        checked = False
        while not stop.is_set():
            try:
                async with self.pool.connection(timeout=self.settings.retry_max_s) as conn:
                    if not checked:
                        cursor = await conn.execute("SELECT to_regprocedure('plantmon_maintain()') IS NOT NULL")
                        row = await cursor.fetchone()
                        checked = True
                        if not (row and row[0]):
                            logger.info("storage path: TimescaleDB (rollups and retention are its policies)")
                            return
                        logger.info(
                            "storage path: plain PostgreSQL (this scraper refreshes rollups and applies retention)",
                            extra={"interval_s": self.settings.maintenance_interval_s},
                        )
                    cursor = await conn.execute("SELECT ranges_refreshed, rows_expired FROM plantmon_maintain()")
                    row = await cursor.fetchone()
                    await conn.commit()
                    self.metrics.maintenance_runs.inc()
                    if row and row[1]:
                        logger.info("retention applied", extra={"rows_deleted": row[1]})
            except DB_ERRORS as exc:
                logger.debug("maintenance skipped", extra={"error": str(exc)})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.settings.maintenance_interval_s)
