"""End to end: the pipeline started the way `task up` starts it, every hop real.

sensors (simulator) -> nginx DMZ -> OPC UA server (secure) -> scraper -> PostgreSQL, and
OPC UA -> alert worker -> alerts table. Breaking a hop (the DMZ denying the readings path)
must make the value check fail.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from plantmon_dev.nginx import default_template
from plantmon_dev.stack import Stack
from plantmon_dev.waiting import eventually_sync

from tests.e2e.support import new_stack

pytestmark = pytest.mark.e2e
UPPER = "Plant/Temperature/Upper"


def reader(stack: Stack) -> psycopg.Connection[tuple[Any, ...]]:
    env = stack.pg_env("plantmon_reader", stack.secrets["DB_READER_PASSWORD"])
    return psycopg.connect(
        host=env["PGHOST"], port=env["PGPORT"], dbname=env["PGDATABASE"], user=env["PGUSER"],
        password=env["PGPASSWORD"], autocommit=True,
    )  # fmt: skip


def served_upper_values(stack: Stack, seconds: float) -> dict[datetime, float]:
    """What the sensor service itself served for Upper, keyed by observation time."""
    served: dict[datetime, float] = {}
    deadline = time.monotonic() + seconds
    with httpx.Client(base_url=f"http://127.0.0.1:{stack.ports.sensors}", timeout=5) as client:
        while time.monotonic() < deadline:
            body = client.get("/temperature/upper").json()
            if body["quality"] == "good":
                served[datetime.fromisoformat(body["observed_at"])] = body["value"]
            time.sleep(0.1)  # the sampling rate of this record, not a wait
    return served


def wait_for_upper_value_that_crossed_every_hop(stack: Stack, timeout: float) -> tuple[datetime, float]:
    """A Good Upper row in the database equal to what the sensor served at that source time."""
    with reader(stack) as conn:

        def crossed() -> tuple[datetime, float] | None:
            served = served_upper_values(stack, 3)
            rows = conn.execute(
                "SELECT s.time, s.value FROM samples s JOIN tags t ON t.id = s.tag_id "
                "WHERE t.path = %s AND s.status = 0 AND s.time = ANY(%s)",
                (UPPER, list(served)),
            ).fetchall()
            for stamp, value in rows:
                assert value == served[stamp], f"database has {value} at {stamp}, the sensor served {served[stamp]}"
            return (rows[0][0], rows[0][1]) if rows else None  # type: ignore[return-value]

        return eventually_sync(crossed, timeout=timeout, interval=0, what=f"a value of {UPPER} across the pipeline")


def test_upper_temperature_crosses_dmz_opcua_and_scraper_unchanged(stack: Stack) -> None:
    _stamp, value = wait_for_upper_value_that_crossed_every_hop(stack, timeout=60)
    assert -200 <= value <= 1350


def test_every_advertised_tag_has_rows_within_a_minute(stack: Stack) -> None:
    advertised = {t["path"] for t in httpx.get(f"http://127.0.0.1:{stack.ports.dmz}/api/v1/tags", timeout=5).json()}
    assert len(advertised) >= 49
    missing = advertised
    with reader(stack) as conn:

        def every_tag_stored() -> bool:
            nonlocal missing
            stored = {
                row[0]
                for row in conn.execute(
                    "SELECT t.path FROM tags t WHERE EXISTS (SELECT 1 FROM samples s WHERE s.tag_id = t.id)"
                ).fetchall()
            }
            missing = advertised - stored
            return not missing

        eventually_sync(
            every_tag_stored, timeout=60, interval=1, what=lambda: f"rows for every tag; none for {sorted(missing)}"
        )


def test_forced_overheating_raises_an_alert_row(stack: Stack) -> None:
    token = stack.secrets["SENSORS_ADMIN_TOKEN"]
    response = httpx.put(
        f"http://127.0.0.1:{stack.ports.sensors}/admin/faults/overheating",
        json={"active": True},
        headers={"Authorization": f"Bearer {token}"},
        timeout=5,
    )
    assert response.status_code == 200, response.text
    with reader(stack) as conn:
        severity, value, _state = eventually_sync(
            lambda: conn.execute(
                "SELECT severity, value_at_raise, state FROM alerts WHERE tag_path = %s ORDER BY raised_at DESC",
                (UPPER,),
            ).fetchone(),
            timeout=120,
            interval=1,
            what="an alert row for the overheating upper temperature",
        )
    assert value is not None and value > 100 and severity >= 3


def test_every_service_is_up_in_prometheus(stack: Stack) -> None:
    assert stack.prometheus is not None
    for job in ("sensors", "opc_server", "opc_scraper", "alert_worker"):
        stack.prometheus.wait_until_up(job, timeout=60)
    # The stack dashboard's service metrics are really exported and scraped.
    for metric in (
        "plantmon_scraper_rows_written_total",
        "plantmon_scraper_lag_seconds",
        "plantmon_alerts_outbox_depth",
    ):
        assert stack.prometheus.query(metric), f"Prometheus has no {metric}"


def test_whole_stack_memory_is_measured_and_under_1_gb(stack: Stack) -> None:
    """Memory of every process of every part (PostgreSQL with its backends, nginx with its workers,
    Prometheus, the four services), in the working state (every service up, the sensor service's
    audio features ready). The RSS sum, which counts shared pages once per process, must stay
    under 10^9 bytes, and so must the PSS sum (shared pages shared out: what the machine really
    spends). Both are printed and recorded in docs/benchmarks.md."""
    assert stack.prometheus is not None
    for job in ("sensors", "opc_server", "opc_scraper", "alert_worker"):
        stack.prometheus.wait_until_up(job, timeout=60)
    with httpx.Client(base_url=f"http://127.0.0.1:{stack.ports.sensors}", timeout=5) as client:
        # A cold cache: a child builds the audio tables first.
        eventually_sync(
            lambda: client.get("/api/v1/readings/Plant/Audio/Level").json()["quality"] == "good",
            timeout=600,
            interval=0.5,
            what="the audio features ready",
        )
    parts = {part.name: part for part in stack.measure_memory()}
    expected = {"postgresql", "nginx", "prometheus", "sensors", "opc_server", "opc_scraper", "alert_worker"}
    assert expected <= set(parts), f"not measured: {expected - set(parts)}"
    assert len(parts["postgresql"].pids) > 2, "the postmaster and its backends and workers"
    assert len(parts["nginx"].pids) >= 2, "nginx's master and a worker"
    assert all(part.rss_bytes > 0 for part in parts.values())
    rss = sum(part.rss_bytes for part in parts.values())
    pss = sum(part.pss_bytes for part in parts.values())
    print(f"stack memory: RSS {rss / 2**20:.0f} MiB (shared pages counted per process), PSS {pss / 2**20:.0f} MiB")
    assert rss < 10**9, (
        f"the stack takes {rss / 2**20:.0f} MiB RSS: {[(p, m.rss_bytes >> 20) for p, m in parts.items()]}"
    )
    assert pss < 10**9, f"the stack takes {pss / 2**20:.0f} MiB PSS"


def test_a_dmz_that_denies_the_readings_path_breaks_the_pipeline(tmp_path: Path) -> None:
    template = tmp_path / "dmz.conf.template"
    text = default_template().read_text()
    assert "location = /api/v1/readings" in text
    template.write_text(text.replace("location = /api/v1/readings", "location = /api/v1/readings-denied"))
    with (
        new_stack(dmz_template=template, with_prometheus=False) as broken,
        pytest.raises(AssertionError, match="not within 20 s: a value of"),
    ):
        wait_for_upper_value_that_crossed_every_hop(broken, timeout=20)
