"""The scraper against a real secure asyncua server and a real PostgreSQL with the real migrations."""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg
import pytest
from asyncua import ua
from plantmon_common.metrics import new_registry
from plantmon_common.opcua import asyncua_private
from plantmon_db.migrate import migrate
from plantmon_dev.postgres import PostgresCluster, ephemeral_cluster
from plantmon_dev.procs import free_port
from plantmon_dev.waiting import eventually
from plantmon_scraper.service import Scraper
from plantmon_scraper.settings import ScraperSettings

from services.opc_scraper.tests.support import (
    TAG_PATHS,
    PlantServer,
    fetch_rows,
    metric,
    scraper_settings,
    stamps,
)
from tests.plugins.database import role_conninfo

BAD = ua.StatusCodes.BadSensorFailure


def now_ms() -> datetime:
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


async def publish_range(server: PlantServer, start: int, stop: int, base: datetime) -> None:
    """Publish start..stop-1 on every tag, each value with its own source timestamp."""
    ts = stamps(base)
    for i in range(start, stop):
        for path in server.paths:
            await server.publish(path, float(i), ts(i))
        await asyncio.sleep(0.01)  # the publishing pace of the scenario, not a wait


async def healthy(port: int) -> bool:
    async with httpx.AsyncClient() as client:
        return (await client.get(f"http://127.0.0.1:{port}/health")).status_code == 200


def values_by_path(rows: list[tuple[str, datetime, float | None, int]]) -> dict[str, list[float | None]]:
    out: dict[str, list[float | None]] = collections.defaultdict(list)
    for path, _, value, _ in rows:
        out[path].append(value)
    return out


async def test_scraper_stores_every_notification_once_with_its_status(
    migrated_db: dict[str, str], plant_server: PlantServer, tmp_path: Path
) -> None:
    settings = scraper_settings(plant_server.url, migrated_db, migrated_db["writer_password"], tmp_path / "client")
    reader = role_conninfo(migrated_db, "plantmon_reader", migrated_db["reader_password"])
    base = now_ms()
    ts = stamps(base)
    async with Scraper(settings, new_registry("scraper", with_process=False)) as scraper:
        await eventually(lambda: healthy(scraper.http_port), what="scraper subscribed and healthy")
        await publish_range(plant_server, 0, 50, base)
        # A bad-quality value and three equal values in a row, each with its own source timestamp.
        await plant_server.publish("Plant/Temperature/Upper", 999.0, ts(50), status=BAD)
        for i in (51, 52, 53):
            await plant_server.publish("Plant/Temperature/Lower", 7.0, ts(i))
            await asyncio.sleep(0.02)  # one notification each: the scenario, not a wait
        expected = 50 * len(TAG_PATHS) + 1 + 3

        async def all_stored() -> bool:
            return len(await fetch_rows(reader, base)) >= expected

        await eventually(all_stored, what="every sample stored")
        # A marker published after everything else: once it is stored, whatever came before it
        # (an extra row, a duplicate notification) has been delivered and handled too.
        marker = ts(99)
        await plant_server.publish("Plant/RPM/MainShaft", -1.0, marker)

        async def marker_stored() -> bool:
            return any(time == marker for _, time, _, _ in await fetch_rows(reader, base))

        await eventually(marker_stored, what="the marker stored")
        assert await metric(scraper.http_port, "plantmon_scraper_rows_written_total") >= expected + 1
        assert await metric(scraper.http_port, "plantmon_scraper_db_up") == 1
        assert await metric(scraper.http_port, "plantmon_scraper_dropped_total") == 0
        # Numbers with a status and timestamps, good or bad: every response read by the fast decoder.
        assert scraper.subscriber.fast_decoded > 0
        assert scraper.subscriber.asyncua_decoded == 0
        fast = await metric(scraper.http_port, 'plantmon_scraper_publish_responses_total{decoder="fast"}')
        assert fast > 0
        assert await metric(scraper.http_port, 'plantmon_scraper_publish_responses_total{decoder="asyncua"}') == 0

    rows = [row for row in await fetch_rows(reader, base) if row[1] != marker]
    assert len(rows) == expected
    values = values_by_path(rows)
    assert values["Plant/RPM/MainShaft"] == [float(i) for i in range(50)]
    # OPC UA carries no value with a Bad status: the row keeps the status and a NULL value.
    assert values["Plant/Temperature/Upper"] == [*(float(i) for i in range(50)), None]
    assert values["Plant/Temperature/Lower"] == [*(float(i) for i in range(50)), 7.0, 7.0, 7.0]
    statuses = {(path, time): status for path, time, _, status in rows}
    assert statuses[("Plant/Temperature/Upper", ts(50))] == BAD
    assert statuses[("Plant/Temperature/Upper", ts(49))] == 0
    assert {time for path, time, _, _ in rows if path == "Plant/RPM/MainShaft"} == {ts(i) for i in range(50)}

    with psycopg.connect(reader) as conn:
        tags = conn.execute("SELECT path, sensor, tag FROM tags ORDER BY path").fetchall()
    assert tags == [
        ("Plant/RPM/MainShaft", "rpm", "main_shaft"),
        ("Plant/Temperature/Lower", "temperature", "lower"),
        ("Plant/Temperature/Upper", "temperature", "upper"),
    ]


async def test_scraper_resubscribes_after_opc_server_restart(
    migrated_db: dict[str, str], plant_server: PlantServer, tmp_path: Path
) -> None:
    settings = scraper_settings(plant_server.url, migrated_db, migrated_db["writer_password"], tmp_path / "client")
    reader = role_conninfo(migrated_db, "plantmon_reader", migrated_db["reader_password"])
    base = now_ms()
    async with Scraper(settings, new_registry("scraper", with_process=False)) as scraper:
        await eventually(lambda: healthy(scraper.http_port), what="scraper subscribed")
        await publish_range(plant_server, 0, 20, base)

        async def stored(n: int) -> bool:
            return len(await fetch_rows(reader, base)) >= n * len(TAG_PATHS)

        await eventually(lambda: stored(20), what="first values stored")
        await plant_server.stop()
        await eventually(lambda: not scraper.subscriber.connected, what="the scraper to notice the loss")
        restarted = PlantServer(plant_server.port, plant_server.cert_dir, TAG_PATHS)
        await restarted.start()
        try:
            await eventually(lambda: healthy(scraper.http_port), what="scraper subscribed again")
            await publish_range(restarted, 20, 40, base)
            await eventually(lambda: stored(40), what="values after the restart stored")
            assert await metric(scraper.http_port, "plantmon_scraper_opcua_reconnects_total") >= 1
            # The outage of the server itself is a recorded gap.
            assert await metric(scraper.http_port, "plantmon_scraper_opcua_gaps_total") >= 1
            assert await metric(scraper.http_port, "plantmon_scraper_opcua_gap_seconds_total") > 0
            # The old session's extra publish loops ended with it: only the new session's run.
            publishers = [t for t in asyncio.all_tasks() if t.get_name().startswith("opcua-publish-")]
            assert len(publishers) == settings.opcua.publish_requests - 1
        finally:
            await restarted.stop()

    values = values_by_path(await fetch_rows(reader, base))
    for path in TAG_PATHS:
        assert values[path] == [float(i) for i in range(40)], path


@pytest.fixture
def own_cluster() -> Iterator[PostgresCluster]:
    """A cluster of this test's own: it is stopped and started again, which the shared one must not be."""
    with ephemeral_cluster() as cluster:
        yield cluster


async def test_scraper_loses_nothing_across_a_database_outage(
    own_cluster: PostgresCluster, plant_server: PlantServer, tmp_path: Path
) -> None:
    writer_password = "writer-Secret-outage"
    await asyncio.to_thread(migrate, own_cluster.conninfo(), {"plantmon_writer": writer_password})
    env = own_cluster.env()
    settings = scraper_settings(plant_server.url, env, writer_password, tmp_path / "client")
    superuser = own_cluster.conninfo()
    base = now_ms()
    async with Scraper(settings, new_registry("scraper", with_process=False)) as scraper:
        await eventually(lambda: healthy(scraper.http_port), what="scraper subscribed")
        await publish_range(plant_server, 0, 20, base)

        async def stored(n: int) -> bool:
            return len(await fetch_rows(superuser, base)) >= n * len(TAG_PATHS)

        await eventually(lambda: stored(20), what="values before the outage stored")
        await asyncio.to_thread(own_cluster.stop, "fast")
        # 30 s without the database while the values keep changing (about 10 a second per tag).
        outage = asyncio.get_running_loop().time()
        produced = 20
        while asyncio.get_running_loop().time() - outage < 30:
            await publish_range(plant_server, produced, produced + 10, base)
            produced += 10
            await asyncio.sleep(0.5)  # the outage's publishing pace: the scenario, not a wait
        assert scraper.store.db_up is False
        assert not await healthy(scraper.http_port)
        assert await metric(scraper.http_port, "plantmon_scraper_spool_bytes") > 0
        await asyncio.to_thread(own_cluster.start)
        await eventually(lambda: stored(produced), timeout=90, what="values from the outage stored")
        await eventually(lambda: scraper.store.spool.empty, what="the spool replayed")
        assert await metric(scraper.http_port, "plantmon_scraper_db_up") == 1
        assert await metric(scraper.http_port, "plantmon_scraper_write_errors_total") >= 1
        assert await metric(scraper.http_port, "plantmon_scraper_replayed_total") > 0
        assert await metric(scraper.http_port, "plantmon_scraper_spool_rows") == 0

    rows = await fetch_rows(superuser, base)
    values = values_by_path(rows)
    for path in TAG_PATHS:
        assert values[path] == [float(i) for i in range(produced)], path


def scraper_env(settings: ScraperSettings, http_port: int, db: dict[str, str], writer_password: str) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PG", "SCRAPER_"))},
        "PGHOST": db["PGHOST"],
        "PGPORT": db["PGPORT"],
        "PGDATABASE": db["PGDATABASE"],
        "PGUSER": "plantmon_writer",
        "PGPASSWORD": writer_password,
        "SCRAPER_HTTP_HOST": "127.0.0.1",
        "SCRAPER_HTTP_PORT": str(http_port),
        "SCRAPER_OPCUA__URL": settings.opcua.url,
        "SCRAPER_OPCUA__USERNAME": settings.opcua.username or "",
        "SCRAPER_OPCUA__PASSWORD": settings.opcua.password.get_secret_value() if settings.opcua.password else "",
        "SCRAPER_OPCUA__CERT_DIR": str(settings.opcua.cert_dir),
        "SCRAPER_OPCUA__HOSTNAME": "localhost",
        "SCRAPER_SPOOL_DIR": str(settings.spool_dir),
    }


async def test_console_script_scrapes_and_stops_on_sigterm(
    migrated_db: dict[str, str], plant_server: PlantServer, tmp_path: Path
) -> None:
    settings = scraper_settings(plant_server.url, migrated_db, migrated_db["writer_password"], tmp_path / "client")
    port = free_port()
    env = scraper_env(settings, port, migrated_db, migrated_db["writer_password"])
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "plantmon_scraper", env=env, stderr=asyncio.subprocess.PIPE
    )
    try:
        await eventually(lambda: healthy(port), retry_on=(httpx.HTTPError,), what="the scraper process to be healthy")
        base = now_ms()
        await publish_range(plant_server, 0, 10, base)
        reader = role_conninfo(migrated_db, "plantmon_reader", migrated_db["reader_password"])

        async def stored() -> bool:
            return len(await fetch_rows(reader, base)) >= 10 * len(TAG_PATHS)

        await eventually(stored, what="samples from the scraper process")
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), timeout=30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def test_console_script_refuses_a_placeholder_opcua_password(migrated_db: dict[str, str], tmp_path: Path) -> None:
    settings = scraper_settings("opc.tcp://127.0.0.1:1/", migrated_db, "x", tmp_path / "client")
    env = {**scraper_env(settings, free_port(), migrated_db, "writer-pw-1"), "SCRAPER_OPCUA__PASSWORD": "changeme"}
    proc = subprocess.run(
        [sys.executable, "-m", "plantmon_scraper"], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert "SCRAPER_OPCUA__PASSWORD" in proc.stderr


async def test_subscription_parameters_reach_the_server(
    migrated_db: dict[str, str], plant_server: PlantServer, tmp_path: Path
) -> None:
    settings = scraper_settings(plant_server.url, migrated_db, migrated_db["writer_password"], tmp_path / "client")
    opcua = settings.opcua.model_copy(update={"publishing_interval_ms": 120.0, "queue_size": 7, "deadband_abs": 0.5})
    settings = settings.model_copy(update={"opcua": opcua})
    async with Scraper(settings, new_registry("scraper", with_process=False)) as scraper:
        await eventually(lambda: healthy(scraper.http_port), what="scraper subscribed")
        assert plant_server.server is not None
        ours = [
            sub
            for sub in plant_server.server.iserver.subscription_service.subscriptions.values()
            if any(m.queue_size == 7 for m in asyncua_private.monitored_items(sub.monitored_item_srv))
        ]
        assert len(ours) == 1
        assert ours[0].data.RevisedPublishingInterval == 120.0
        items = asyncua_private.monitored_items(ours[0].monitored_item_srv)
        assert len(items) == len(TAG_PATHS)
        for item in items:
            assert item.queue_size == 7
            assert item.filter.Trigger == ua.DataChangeTrigger.StatusValueTimestamp
            assert item.filter.DeadbandType == ua.DeadbandType.Absolute
            assert item.filter.DeadbandValue == 0.5


def queued_publish_requests(server: PlantServer) -> list[int]:
    """Publish requests each client connection of ``server`` has waiting at the server."""
    assert server.server is not None
    return [
        asyncua_private.queued_publish_requests(c.processor)
        for c in server.server.bserver.clients
        if c.processor is not None
    ]


@pytest.mark.parametrize("in_flight", [3, 1])
async def test_publish_requests_kept_in_flight_at_the_server(
    migrated_db: dict[str, str], plant_server: PlantServer, tmp_path: Path, in_flight: int
) -> None:
    """Several Publish requests wait at the server (it answers one while the client decodes the
    last), every value still stored exactly once; with 1 the session is asyncua's stock one."""
    settings = scraper_settings(plant_server.url, migrated_db, migrated_db["writer_password"], tmp_path / "client")
    assert settings.opcua.publish_requests == 3  # the scraper's default
    opcua = settings.opcua.model_copy(update={"publish_requests": in_flight, "publishing_interval_ms": 100.0})
    settings = settings.model_copy(update={"opcua": opcua})
    async with Scraper(settings, new_registry("scraper", with_process=False)) as scraper:
        await eventually(lambda: healthy(scraper.http_port), what="scraper subscribed")
        seen: set[int] = set()

        def all_waiting() -> bool:
            seen.update(queued_publish_requests(plant_server))
            return in_flight in seen

        await eventually(all_waiting, what=f"{in_flight} publish requests waiting at the server")
        base = now_ms()
        await publish_range(plant_server, 0, 40, base)
        for _ in range(20):  # a quiet while: keep-alives consume requests, each is replaced
            seen.update(queued_publish_requests(plant_server))
            await asyncio.sleep(0.05)
        assert max(seen) == in_flight
        writer = role_conninfo(migrated_db, "plantmon_writer", migrated_db["writer_password"])

        async def complete() -> bool:
            rows = await fetch_rows(writer, base)
            return values_by_path(rows) == {path: [float(i) for i in range(40)] for path in TAG_PATHS}

        await eventually(complete, what="every value once")
        # Delivered once each: nothing reached the writer twice (the key would hide it in the rows).
        assert await metric(scraper.http_port, "plantmon_scraper_duplicates_total") == 0
        received = await metric(scraper.http_port, "plantmon_scraper_notifications_total")
        assert received == 40 * len(TAG_PATHS) + len(TAG_PATHS)  # and each tag's initial value
