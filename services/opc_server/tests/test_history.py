"""HistoryRead (ReadRaw) through real secure sessions: the recent ring, the database, and outages of both."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from asyncua import ua
from plantmon_common.opcua import Sample, connect
from plantmon_db.migrate import migrate
from plantmon_dev.postgres import ephemeral_cluster
from plantmon_dev.waiting import eventually
from plantmon_opc_server.settings import HistoryDatabase
from pydantic import SecretStr

from services.opc_server.tests.support import (
    FakeSensorApi,
    client_settings,
    history_reader_settings,
    plant_server,
    read_history,
    server_settings,
    subscribed,
)

UPPER = "Plant/Temperature/Upper"
LOWER = "Plant/Temperature/Lower"
BAD_COMM = ua.StatusCodes.BadCommunicationError
BAD_SENSOR = ua.StatusCodes.BadSensorFailure


def key(sample: Sample) -> tuple[datetime, float | None, int]:
    return sample.source_time, sample.value, sample.status


def insert_old_samples(env: dict[str, str], path: str, rows: list[tuple[datetime, float | None, int]]) -> None:
    """As the superuser: the tag and its samples, the way the scraper would have stored them."""
    conninfo = psycopg.conninfo.make_conninfo(
        host=env["PGHOST"], port=env["PGPORT"], dbname=env["PGDATABASE"], user=env["PGUSER"], password=env["PGPASSWORD"]
    )
    sensor, _, tag = path.removeprefix("Plant/").partition("/")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        tag_id = conn.execute(
            "INSERT INTO tags (path, sensor, tag, unit) VALUES (%s, %s, %s, '°C') "
            "ON CONFLICT (path) DO UPDATE SET last_seen = now() RETURNING id",
            (path, sensor.lower(), tag.lower()),
        ).fetchone()[0]  # type: ignore[index]
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO samples (time, tag_id, value, status) VALUES (%s, %s, %s, %s)",
                [(t, tag_id, v, s) for t, v, s in rows],
            )


def reader_db(env: dict[str, str]) -> HistoryDatabase:
    return HistoryDatabase(
        host=env["PGHOST"],
        port=int(env["PGPORT"]),
        database=env["PGDATABASE"],
        user="plantmon_reader",
        password=SecretStr(env["reader_password"]),
        timeout_s=3.0,
    )


def old_rows(hours_ago: float, count: int) -> list[tuple[datetime, float | None, int]]:
    start = datetime.now(UTC).replace(microsecond=123456) - timedelta(hours=hours_ago)
    rows: list[tuple[datetime, float | None, int]] = []
    for i in range(count):
        stamp = start + timedelta(seconds=i, microseconds=i * 7)
        if i == 3:
            rows.append((stamp, None, BAD_SENSOR))
        elif i == 4:
            rows.append((stamp, None, BAD_COMM))
        else:
            rows.append((stamp, 60.0 + i / 8, 0))
    return rows


async def test_recent_range_returns_exactly_what_the_server_published_bad_values_included(
    sensor_api: FakeSensorApi, tmp_path: Path
) -> None:
    # A small answer size, so the read crosses several continuation points.
    settings = server_settings(tmp_path, f"http://127.0.0.1:{sensor_api.port}", history_max_values_per_read=4)
    published: list[Sample] = []
    async with plant_server(settings) as plant, subscribed(client_settings(settings, tmp_path), published):
        await eventually(
            lambda: len([s for s in published if s.path == UPPER]) >= 5, what="five values of the upper temperature"
        )
        sensor_api.set(UPPER, value=None, quality="bad", reason="open thermocouple")
        await eventually(
            lambda: any(s.path == UPPER and s.status == BAD_SENSOR for s in published),
            what="a BadSensorFailure of the upper temperature",
        )
        sensor_api.up = False
        await eventually(
            lambda: sum(s.path == UPPER and s.status == BAD_COMM for s in published) >= 2,
            what="two BadCommunicationError values of the upper temperature",
        )
        sensor_api.up = True
        sensor_api.set(UPPER, value=66.5, quality="good", reason=None)
        polls = plant.health.polls
        await eventually(lambda: plant.health.polls >= polls + 4, what="four more polls")
        await eventually(
            lambda: any(s.path == UPPER and s.status == 0 and s.value == 66.5 for s in published),
            what="the recovered Good 66.5 at the subscriber",
        )
        upper = [s for s in published if s.path == UPPER]
        first, last = upper[0].source_time, upper[-1].source_time
        async with connect(client_settings(settings, tmp_path)) as client:
            history, statuses = await read_history(client, UPPER, first, last)
            backwards, _ = await read_history(client, UPPER, last, first)

    assert len(statuses) > 2 and all(s.is_good() for s in statuses)
    assert [key(s) for s in history] == [key(s) for s in upper]
    assert [key(s) for s in backwards] == [key(s) for s in reversed(upper)]
    assert {s.status for s in history} >= {0, BAD_SENSOR, BAD_COMM}
    assert any(s.value == 66.5 and s.status == 0 for s in history)


async def test_older_range_returns_exactly_the_rows_in_the_database(
    sensor_api: FakeSensorApi, migrated_db: dict[str, str], tmp_path: Path
) -> None:
    rows = old_rows(hours_ago=2, count=9)
    insert_old_samples(migrated_db, UPPER, rows)
    insert_old_samples(migrated_db, LOWER, old_rows(hours_ago=2, count=5))
    settings = server_settings(
        tmp_path, f"http://127.0.0.1:{sensor_api.port}", db=reader_db(migrated_db), history_max_values_per_read=4
    )
    async with plant_server(settings), connect(history_reader_settings(settings, tmp_path)) as client:
        window_start = rows[0][0] - timedelta(minutes=5)
        window_end = rows[-1][0] + timedelta(minutes=5)
        older, statuses = await read_history(client, UPPER, window_start, window_end)
        inner, _ = await read_history(client, UPPER, rows[2][0], rows[6][0])
        newest_first, _ = await read_history(client, UPPER, window_end, window_start)
        everything, _ = await read_history(client, UPPER, window_start, datetime.now(UTC) + timedelta(seconds=5))

    assert [key(s) for s in older] == rows
    assert len(statuses) == 3  # 9 rows in answers of 4: two continuation points
    assert [key(s) for s in inner] == rows[2:7]
    assert [key(s) for s in newest_first] == rows[::-1]
    # database rows, then what the server itself published since it started
    assert [key(s) for s in everything[: len(rows)]] == rows
    recent = everything[len(rows) :]
    assert recent and all(s.source_time > rows[-1][0] for s in recent)
    assert any(s.status == 0 and s.value == 65.0 for s in recent)


async def test_database_down_fails_older_ranges_clearly_while_recent_history_and_live_values_continue(
    sensor_api: FakeSensorApi, tmp_path: Path
) -> None:
    with ephemeral_cluster() as cluster:
        reader_password = "reader-pw-123456"
        migrate(cluster.conninfo(), {"plantmon_reader": reader_password})
        env = {**cluster.env(), "reader_password": reader_password}
        rows = old_rows(hours_ago=30, count=6)
        insert_old_samples(env, UPPER, rows)
        settings = server_settings(tmp_path, f"http://127.0.0.1:{sensor_api.port}", db=reader_db(env))
        async with plant_server(settings), connect(history_reader_settings(settings, tmp_path)) as client:
            old_range = (rows[0][0] - timedelta(seconds=1), rows[-1][0] + timedelta(seconds=1))
            before, _ = await read_history(client, UPPER, *old_range)
            assert [key(s) for s in before] == rows

            ns = await client.get_namespace_index("urn:plantmon:plant")
            node = client.get_node(ua.NodeId(UPPER, ns))
            published = (await node.read_data_value()).SourceTimestamp  # within the ring for sure
            assert published is not None
            cluster.stop("fast")
            failed, statuses = await read_history(client, UPPER, *old_range)
            assert failed == [] and [s.value for s in statuses] == [ua.StatusCodes.BadDataUnavailable]
            spanning, statuses = await read_history(client, UPPER, old_range[0], datetime.now(UTC))
            assert spanning == [] and [s.value for s in statuses] == [ua.StatusCodes.BadDataUnavailable]

            sensor_api.set(UPPER, value=77.75)

            async def live_value_is_new() -> bool:
                return bool((await node.read_value()) == 77.75)

            await eventually(live_value_is_new, what="the live value newer than the history")
            recent, statuses = await read_history(client, UPPER, published, datetime.now(UTC) + timedelta(seconds=1))
            assert all(s.is_good() for s in statuses)
            assert any(s.value == 77.75 and s.status == 0 for s in recent)

            cluster.start()
            again, _ = await read_history(client, UPPER, *old_range)
            assert [key(s) for s in again] == rows


async def test_unknown_nodes_and_event_history_are_refused_per_node(sensor_api: FakeSensorApi, tmp_path: Path) -> None:
    settings = server_settings(tmp_path, f"http://127.0.0.1:{sensor_api.port}")
    async with plant_server(settings) as plant, connect(client_settings(settings, tmp_path)) as client:
        await eventually(lambda: plant.health.polls >= 5, what="five polls")
        now = datetime.now(UTC)
        _, statuses = await read_history(client, "Plant/Nope/Missing", now - timedelta(minutes=1), now)
        assert [s.value for s in statuses] == [ua.StatusCodes.BadHistoryOperationUnsupported]
        _, statuses = await read_history(client, UPPER, None, None)
        assert [s.value for s in statuses] == [ua.StatusCodes.BadHistoryOperationInvalid]
        # only an end time: newest first, NumValuesPerNode per answer
        newest_first, statuses = await read_history(client, UPPER, None, now + timedelta(seconds=1), num_values=3)
        assert all(s.is_good() for s in statuses) and len(newest_first) >= 3
        stamps = [s.source_time for s in newest_first]
        assert stamps == sorted(stamps, reverse=True) and len(set(stamps)) == len(stamps)
