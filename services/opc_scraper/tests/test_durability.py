"""Nothing lost, nothing twice: the spool (queue full, database down, at its cap), the backfill
after ``kill -9`` of a real scraper process, clock sanity, against a real asyncua server that
publishes consecutive integers per tag and a real PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from plantmon_common.metrics import new_registry
from plantmon_common.opcua import Sample, browse_plant, connect
from plantmon_db.migrate import migrate
from plantmon_dev.postgres import PostgresCluster, ephemeral_cluster
from plantmon_dev.procs import free_port
from plantmon_dev.waiting import eventually
from plantmon_scraper.metrics import ScraperMetrics
from plantmon_scraper.service import Scraper
from plantmon_scraper.settings import ScraperSettings
from plantmon_scraper.spool import Spool
from plantmon_scraper.store import SampleStore, prepare_connection
from psycopg_pool import AsyncConnectionPool

from services.opc_scraper.tests.support import TAG_PATHS, PlantServer, fetch_rows, metric, scraper_settings
from services.opc_scraper.tests.test_scraper import healthy, now_ms, scraper_env, values_by_path
from tests.plugins.database import role_conninfo


class Counter:
    """Publishes 0, 1, 2, ... on every tag, one step every ``period`` s, each with its own source time."""

    def __init__(self, server: PlantServer, base: datetime, period: float = 0.05) -> None:
        self.server = server
        self.base = base
        self.period = period
        self.next = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            i = self.next
            for path in self.server.paths:
                await self.server.publish(path, float(i), self.base + timedelta(milliseconds=10 * i))
            self.next = i + 1
            await asyncio.sleep(self.period)  # the plant's pace, not a wait

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> int:
        """Stop publishing; return how many values each tag got."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        return self.next


def assert_exactly_once(rows: list[tuple[str, datetime, float | None, int]], produced: int) -> None:
    values = values_by_path(rows)
    for path in TAG_PATHS:
        assert values[path] == [float(i) for i in range(produced)], path


async def test_full_queue_spills_to_the_spool_and_everything_is_stored_once(
    migrated_db: dict[str, str], plant_server: PlantServer, tmp_path: Path
) -> None:
    settings = scraper_settings(plant_server.url, migrated_db, migrated_db["writer_password"], tmp_path / "client")
    # The counter writes as fast as the loop turns: the server's queue per monitored item must
    # hold everything one publishing interval can bring (asyncua's server drops the oldest of a
    # full queue), so only the scraper's own queue is too small here.
    opcua = settings.opcua.model_copy(update={"queue_size": 10_000})
    settings = settings.model_copy(update={"queue_max": 4, "batch_size": 4, "opcua": opcua})
    reader = role_conninfo(migrated_db, "plantmon_reader", migrated_db["reader_password"])
    base = now_ms()
    counter = Counter(plant_server, base, period=0.0)
    async with Scraper(settings, new_registry("scraper", with_process=False)) as scraper:
        await eventually(lambda: healthy(scraper.http_port), what="scraper subscribed")
        counter.start()
        await eventually(lambda: counter.next >= 200, what="200 values published")
        produced = await counter.stop()

        async def all_stored() -> bool:
            return len(await fetch_rows(reader, base)) >= produced * len(TAG_PATHS)

        await eventually(all_stored, timeout=60, what="every value stored")
        await eventually(lambda: scraper.store.spool.empty, what="the spool replayed")
        assert await metric(scraper.http_port, "plantmon_scraper_spilled_total") > 0
        assert await metric(scraper.http_port, "plantmon_scraper_dropped_total") == 0
    assert_exactly_once(await fetch_rows(reader, base), produced)


async def test_values_delivered_live_during_the_backfill_are_not_read_again_from_history(
    migrated_db: dict[str, str], plant_server: PlantServer, tmp_path: Path
) -> None:
    """A new subscription delivers values while the backfill reads the same ones from history:
    each reaches the queue once, history first (nothing for the key to absorb)."""
    settings = scraper_settings(plant_server.url, migrated_db, migrated_db["writer_password"], tmp_path / "client")
    base = now_ms()
    for i in range(10):
        for path in TAG_PATHS:
            await plant_server.publish(path, float(i), base + timedelta(milliseconds=i))
    registry = new_registry("scraper", with_process=False)
    pool = AsyncConnectionPool(settings.database.conninfo(), min_size=1, max_size=1, open=False)
    async with pool, connect(settings.opcua) as client:
        tags = await browse_plant(client)
        store = SampleStore(pool, settings, ScraperMetrics(registry))
        await store.on_connected(client, tags)
        # What the subscription delivered while the backfill ran: the newest five of each tag.
        store.put_many(
            [Sample(p, float(i), 0, base + timedelta(milliseconds=i)) for p in TAG_PATHS for i in range(5, 10)]
        )
        await store.on_subscribed(client, tags)
        queued = store.queue.take(store.queue.qsize())
    assert registry.get_sample_value("plantmon_scraper_backfilled_total") == 5 * len(TAG_PATHS)
    for path in TAG_PATHS:
        assert [s.value for s in queued if s.path == path] == [float(i) for i in range(10)], path


def samples(start: int, n: int) -> list[Sample]:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    return [Sample("Plant/RPM/MainShaft", float(i), 0, t0 + timedelta(seconds=i)) for i in range(start, start + n)]


def test_spool_at_its_cap_drops_the_oldest_and_counts_them(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    spool = Spool(tmp_path / "spool", max_bytes=20_000, segment_bytes=4096)
    spool.open()
    for k in range(100):
        spool.append(samples(50 * k, 50))
    assert spool.bytes <= 20_000
    assert spool.dropped_rows > 0
    assert spool.dropped_rows + spool.pending_rows == 5000
    assert "spool nearly full" in caplog.text
    assert "spool full: dropped its oldest samples" in caplog.text
    # What is left is the newest data, in order, and it survives a reopen.
    again = Spool(tmp_path / "spool", max_bytes=20_000, segment_bytes=4096)
    again.open()
    replayed: list[float | None] = []
    while (record := again.peek()) is not None:
        position, batch = record
        replayed.extend(s.value for s in batch)
        again.advance(position)
    assert replayed == [float(i) for i in range(5000 - len(replayed), 5000)]
    assert again.empty


async def test_store_counts_spool_drops_in_its_metrics(tmp_path: Path) -> None:
    settings = ScraperSettings(
        database={"user": "plantmon_writer"},  # type: ignore[arg-type]
        spool_dir=tmp_path / "spool",
        spool_max_bytes=64 * 1024,
        spool_segment_bytes=4096,
    )
    registry = new_registry("scraper", with_process=False)
    store = SampleStore(AsyncConnectionPool("", open=False), settings, ScraperMetrics(registry))
    store.open_spool()
    for k in range(200):
        await store._to_spool(samples(50 * k, 50))
    assert registry.get_sample_value("plantmon_scraper_spool_dropped_total") == store.spool.dropped_rows > 0
    assert registry.get_sample_value("plantmon_scraper_spool_bytes") == store.spool.bytes <= 64 * 1024
    assert registry.get_sample_value("plantmon_scraper_spool_max_bytes") == 64 * 1024


def test_spool_cuts_off_a_torn_record_and_keeps_the_rest(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", max_bytes=1_000_000)
    spool.open()
    spool.append(samples(0, 10))
    spool.append(samples(10, 10))
    segment = next((tmp_path / "spool").glob("*.seg"))
    with segment.open("ab") as f:
        f.write(b"PMS1\x00\x10\x00\x00garbage")  # a crash in the middle of an append
    again = Spool(tmp_path / "spool", max_bytes=1_000_000)
    again.open()
    assert again.pending_rows == 20
    again.append(samples(20, 5))
    values: list[float | None] = []
    while (record := again.peek()) is not None:
        values.extend(s.value for s in record[1])
        again.advance(record[0])
    assert values == [float(i) for i in range(25)]


def test_clock_sanity_counts_future_and_old_timestamps_and_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    settings = ScraperSettings(database={"user": "plantmon_writer"})  # type: ignore[arg-type]
    registry = new_registry("scraper", with_process=False)
    store = SampleStore(AsyncConnectionPool("", open=False), settings, ScraperMetrics(registry))
    now = datetime.now(UTC)
    for k in range(3):
        store.put(Sample("Plant/RPM/MainShaft", 1.0, 0, now + timedelta(hours=1, seconds=k)))
        store.put(Sample("Plant/RPM/MainShaft", 1.0, 0, datetime(1970, 1, 1, 0, 0, k, tzinfo=UTC)))
        store.put(Sample("Plant/RPM/MainShaft", 1.0, 0, now - timedelta(seconds=k)))
    assert registry.get_sample_value("plantmon_scraper_clock_future_total") == 3
    assert registry.get_sample_value("plantmon_scraper_clock_old_total") == 3
    assert store.queue.qsize() == 9  # stored anyway
    assert caplog.text.count("in the future") == 1
    assert caplog.text.count("implausibly old") == 1


@contextlib.asynccontextmanager
async def scraper_process(env: dict[str, str], port: int, log: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    with log.open("ab") as sink:
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "plantmon_scraper", env=env, stderr=sink)
    try:
        await eventually(
            lambda: healthy(port), retry_on=(httpx.HTTPError,), timeout=60, what="the scraper process to be healthy"
        )
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def kill9(proc: asyncio.subprocess.Process) -> None:
    os.kill(proc.pid, signal.SIGKILL)


@pytest.fixture
def own_cluster() -> Iterator[PostgresCluster]:
    with ephemeral_cluster() as cluster:
        yield cluster


@pytest.mark.parametrize("with_db_outage", [False, True], ids=["db-up", "db-down"])
async def test_kill_9_of_the_scraper_loses_nothing_and_duplicates_nothing(
    own_cluster: PostgresCluster, plant_server: PlantServer, tmp_path: Path, with_db_outage: bool
) -> None:
    writer_password = "writer-Secret-kill9"
    await asyncio.to_thread(migrate, own_cluster.conninfo(), {"plantmon_writer": writer_password})
    db = own_cluster.env()
    settings = scraper_settings(plant_server.url, db, writer_password, tmp_path / "client")
    port = free_port()
    env = {**scraper_env(settings, port, db, writer_password), "SCRAPER_LOG_FORMAT": "text"}
    superuser = own_cluster.conninfo()
    base = now_ms()
    counter = Counter(plant_server, base)

    async def stored_at_least(n: int) -> bool:
        return len(await fetch_rows(superuser, base)) >= n

    counter.start()
    try:
        async with scraper_process(env, port, tmp_path / "scraper-1.log") as first:
            await eventually(lambda: stored_at_least(30), what="values stored by the first process")
            if with_db_outage:
                await asyncio.to_thread(own_cluster.stop, "fast")
                await eventually(lambda: metric(port, "plantmon_scraper_spool_bytes"), what="samples in the spool")
                await asyncio.sleep(1.0)  # the scenario, not a wait: a second more of outage into the spool
            kill9(first)
            await first.wait()
        spooled = sorted((tmp_path / "spool").glob("*.seg"))
        if with_db_outage:
            assert spooled, "the killed process left its spool"
        await asyncio.sleep(3.0)  # the scenario, not a wait: values keep changing while no scraper runs
        if with_db_outage:
            await asyncio.to_thread(own_cluster.start)
        async with scraper_process(env, port, tmp_path / "scraper-2.log"):
            # The scenario, not a wait: live values reach the new subscription while the backfill runs.
            await asyncio.sleep(2.0)
            produced = await counter.stop()
            try:
                await eventually(
                    lambda: stored_at_least(produced * len(TAG_PATHS)), timeout=60, what="every value stored"
                )
            except AssertionError:
                assert_exactly_once(await fetch_rows(superuser, base), produced)  # says which ones are missing
                raise
            assert await metric(port, "plantmon_scraper_backfilled_total") > 0
            if with_db_outage:
                await eventually(lambda: metric(port, "plantmon_scraper_replayed_total"), what="the spool replayed")
    finally:
        await counter.stop()
    assert_exactly_once(await fetch_rows(superuser, base), produced)


async def test_write_batch_stores_exact_rows_once_when_a_batch_is_written_again(
    migrated_db: dict[str, str], tmp_path: Path
) -> None:
    """The binary COPY stream (NULL values, large status codes, microseconds, dates before 2000)
    lands exactly; a batch written again, or one that overlaps stored rows, adds only what is new."""
    settings = scraper_settings("opc.tcp://127.0.0.1:1", migrated_db, migrated_db["writer_password"], tmp_path / "c")
    reader = role_conninfo(migrated_db, "plantmon_reader", migrated_db["reader_password"])
    base = datetime(1999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)
    bad = 0x80340000  # BadNodeIdUnknown: above 2**31, stored as bigint
    first = [
        Sample("Plant/RPM/MainShaft", 1.25, 0, base),
        Sample("Plant/RPM/MainShaft", None, bad, base + timedelta(microseconds=1)),
        Sample("Plant/Temperature/Upper", -3.5e300, 0x00A80000, base + timedelta(days=9000, microseconds=7)),
    ]
    overlapping = [*first[1:], Sample("Plant/RPM/MainShaft", 2.0, 0, base + timedelta(seconds=1))]
    registry = new_registry("scraper", with_process=False)
    pool = AsyncConnectionPool(
        settings.database.conninfo(), min_size=1, max_size=1, open=False, configure=prepare_connection
    )
    async with pool:
        store = SampleStore(pool, settings, ScraperMetrics(registry))
        assert await store.write_batch(first) == 3
        assert await store.write_batch(first) == 0
        assert await store.write_batch(overlapping) == 1
    assert registry.get_sample_value("plantmon_scraper_rows_written_total") == 4
    assert registry.get_sample_value("plantmon_scraper_duplicates_total") == 5
    rows = await fetch_rows(reader, base - timedelta(days=1))
    assert sorted(rows, key=lambda r: r[1]) == [
        ("Plant/RPM/MainShaft", base, 1.25, 0),
        ("Plant/RPM/MainShaft", base + timedelta(microseconds=1), None, bad),
        ("Plant/RPM/MainShaft", base + timedelta(seconds=1), 2.0, 0),
        ("Plant/Temperature/Upper", base + timedelta(days=9000, microseconds=7), -3.5e300, 0x00A80000),
    ]


async def test_a_deep_queue_is_written_in_bounded_larger_batches_exactly_once(
    migrated_db: dict[str, str], tmp_path: Path
) -> None:
    """With a backlog the writer takes up to ``batch_max_factor`` batches per COPY (so it catches
    up), in order, every row once: also when the first large batch overlaps rows already stored."""
    settings = scraper_settings(
        "opc.tcp://127.0.0.1:1", migrated_db, migrated_db["writer_password"], tmp_path / "c"
    ).model_copy(update={"batch_size": 100, "batch_max_factor": 3, "batch_age_s": 5.0})
    reader = role_conninfo(migrated_db, "plantmon_reader", migrated_db["reader_password"])
    base = datetime(2026, 1, 2, tzinfo=UTC)
    paths = ["Plant/RPM/MainShaft", "Plant/Temperature/Upper"]
    samples = [Sample(paths[i % 2], float(i // 2), 0, base + timedelta(milliseconds=i // 2)) for i in range(1050)]
    registry = new_registry("scraper", with_process=False)
    pool = AsyncConnectionPool(
        settings.database.conninfo(), min_size=1, max_size=2, open=False, configure=prepare_connection
    )
    async with pool:
        store = SampleStore(pool, settings, ScraperMetrics(registry))
        await asyncio.to_thread(store.open_spool)
        assert await store.write_batch(samples[:40]) == 40  # stored before: the first deep COPY must merge
        store.put_many(samples)
        assert store.backlog_limit() == 300
        stop = asyncio.Event()
        writer = asyncio.create_task(store.run(stop))
        try:
            await eventually(lambda: store.queue.empty(), timeout=60, what="the backlog written")
        finally:
            stop.set()
            await asyncio.wait_for(writer, timeout=60)
        assert store.spool.empty
    # 1,050 queued with batches of 100 and a factor of 3: 300 + 300 + 300 + 150, not 11 batches.
    assert registry.get_sample_value("plantmon_scraper_batch_rows_count") == 1 + 4
    assert registry.get_sample_value("plantmon_scraper_batch_rows_sum") == 40 + 1050
    assert registry.get_sample_value("plantmon_scraper_backlog_batches_total") == 4
    assert registry.get_sample_value("plantmon_scraper_rows_written_total") == 1050
    assert registry.get_sample_value("plantmon_scraper_duplicates_total") == 40
    rows = await fetch_rows(reader, base)
    assert [(r[0], r[1], r[2]) for r in rows] == sorted((s.path, s.source_time, s.value) for s in samples)
