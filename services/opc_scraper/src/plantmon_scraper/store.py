"""From notifications to rows: the tag registry, a bounded queue and the batched binary COPY.

The OPC UA side calls :meth:`SampleStore.put` for every notification; it never blocks (a full
queue drops and counts). :meth:`SampleStore.run` takes batches by size or age and writes each
with binary COPY into a per-connection TEMP staging table, then
``INSERT INTO samples ... ON CONFLICT (tag_id, time) DO NOTHING``, so a batch written twice
(a retry after an unclear failure, a value re-sent after a reconnect) is stored once. A failed
write keeps its batch and retries with backoff; the database state is logged once per change.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

import psycopg
from asyncua import Client
from plantmon_common.opcua import DiscoveredTag, Sample
from plantmon_common.tags import split_path
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from plantmon_scraper.metrics import ScraperMetrics
from plantmon_scraper.settings import ScraperSettings

logger = logging.getLogger(__name__)

STAGING_DDL = (
    "CREATE TEMP TABLE IF NOT EXISTS samples_staging "
    "(time timestamptz NOT NULL, tag_id integer NOT NULL, value double precision, status bigint NOT NULL) "
    "ON COMMIT DELETE ROWS"
)
COPY_STAGING = "COPY samples_staging (time, tag_id, value, status) FROM STDIN (FORMAT BINARY)"
STAGING_TYPES = ["timestamptz", "int4", "float8", "int8"]
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

DB_ERRORS: tuple[type[BaseException], ...] = (psycopg.Error, OSError)
"""What a write can fail with while the database is away (PoolTimeout is a psycopg.Error)."""


async def prepare_connection(conn: AsyncConnection[tuple[object, ...]]) -> None:
    """Pool ``configure`` hook: the staging table lives as long as the connection."""
    await conn.execute(STAGING_DDL)
    await conn.commit()


class SampleStore:
    """Owns the path -> id map, the queue of samples and the writer loop."""

    def __init__(self, pool: AsyncConnectionPool, settings: ScraperSettings, metrics: ScraperMetrics) -> None:
        self.pool = pool
        self.settings = settings
        self.metrics = metrics
        self.queue: asyncio.Queue[Sample] = asyncio.Queue(maxsize=settings.queue_max)
        self.tag_ids: dict[str, int] = {}
        self._meta: dict[str, DiscoveredTag] = {}
        self.db_up: bool | None = None  # None until the first write or registration
        self.newest_source: float | None = None
        self.dropped = 0
        metrics.queue_depth.set_function(self.queue.qsize)
        metrics.lag_seconds.set_function(self._lag)
        metrics.tags.set_function(lambda: len(self.tag_ids))

    def _lag(self) -> float:
        return time.time() - self.newest_source if self.newest_source is not None else float("nan")

    # -- the OPC UA side ------------------------------------------------------------------------

    def put(self, sample: Sample) -> None:
        """The subscriber's sink: enqueue without blocking; a full queue drops (and counts) the sample."""
        self.metrics.notifications.inc()
        stamp = sample.source_time.timestamp()
        if self.newest_source is None or stamp > self.newest_source:
            self.newest_source = stamp
        try:
            self.queue.put_nowait(sample)
        except asyncio.QueueFull:
            if self.dropped == 0:
                logger.error("sample queue full, dropping samples", extra={"queue_max": self.settings.queue_max})
            self.dropped += 1
            self.metrics.dropped.inc()

    async def on_connected(self, client: Client, tags: Sequence[DiscoveredTag]) -> None:
        """Subscriber hook (connect and new tags): register every tag; a database outage only defers it."""
        for tag in tags:
            self._meta[tag.path] = tag
        try:
            async with self.pool.connection(timeout=self.settings.retry_max_s) as conn:
                await self._upsert_tags(conn, [t.path for t in tags])
        except DB_ERRORS as exc:
            # The writer registers them before their first samples are written.
            self._set_db_state(False, exc)
            return
        self._set_db_state(True)
        logger.info("tags registered", extra={"tags": len(tags)})

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
            async with conn.transaction():
                cursor = conn.cursor()
                async with cursor.copy(COPY_STAGING) as copy:
                    copy.set_types(STAGING_TYPES)
                    for s in batch:
                        await copy.write_row((s.source_time, self.tag_ids[s.path], s.value, s.status))
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
                logger.info("database recovered", extra={"queued": self.queue.qsize()})
        else:
            logger.warning(
                "database lost, keeping samples and retrying",
                extra={"error": f"{type(exc).__name__}: {exc}", "queued": self.queue.qsize()},
            )
        self.db_up = up
        self.metrics.db_up.set(1 if up else 0)

    async def _write_with_retry(self, batch: list[Sample], stop: asyncio.Event, give_up_at: list[float]) -> None:
        delay = self.settings.retry_initial_s
        loop = asyncio.get_running_loop()
        while True:
            try:
                await self.write_batch(batch)
            except DB_ERRORS as exc:
                self.metrics.write_errors.inc()
                self._set_db_state(False, exc)
                if stop.is_set():
                    if not give_up_at:
                        give_up_at.append(loop.time() + self.settings.shutdown_flush_s)
                    if loop.time() >= give_up_at[0]:
                        logger.error(
                            "stopping with the database unreachable; samples not written",
                            extra={"lost": len(batch) + self.queue.qsize()},
                        )
                        raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.settings.retry_max_s)
                continue
            self._set_db_state(True)
            return

    async def _next_batch(self, stop: asyncio.Event) -> list[Sample]:
        """Up to ``batch_size`` samples, at most ``batch_age_s`` after the first one arrived."""
        batch: list[Sample] = []
        loop = asyncio.get_running_loop()
        while not batch:
            if stop.is_set():
                while len(batch) < self.settings.batch_size and not self.queue.empty():
                    batch.append(self.queue.get_nowait())
                return batch
            try:
                # Queue.get only removes an item when it returns it, so a timeout loses nothing.
                batch.append(await asyncio.wait_for(self.queue.get(), timeout=0.25))
            except TimeoutError:
                continue
        deadline = loop.time() + self.settings.batch_age_s
        while len(batch) < self.settings.batch_size:
            try:
                batch.append(self.queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            remaining = deadline - loop.time()
            if remaining <= 0 or stop.is_set():
                break
            try:
                batch.append(await asyncio.wait_for(self.queue.get(), timeout=remaining))
            except TimeoutError:
                break
        return batch

    async def run(self, stop: asyncio.Event) -> None:
        """Write batches until ``stop`` is set and the queue is empty (or the flush time is up)."""
        give_up_at: list[float] = []
        while True:
            batch = await self._next_batch(stop)
            if not batch:
                return
            try:
                await self._write_with_retry(batch, stop, give_up_at)
            except DB_ERRORS:
                return
