"""The scripts in examples/, run as a user runs them (a subprocess, options and environment variables)
against the local stack that ``task up`` starts."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import psycopg
import pytest
from plantmon_dev.procs import free_port
from plantmon_dev.stack import REPO_ROOT, Stack
from plantmon_dev.waiting import eventually_sync

pytestmark = pytest.mark.e2e
EXAMPLES = REPO_ROOT / "examples"
UPPER = "Plant/Temperature/Upper"


def run_example(script: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def operator(stack: Stack, tmp_path: Path) -> dict[str, str]:
    """The read-only OPC UA operator of the stack, as the examples' docstrings tell a user to set it."""
    return {
        "PLANTMON_OPCUA_URL": stack.opcua_url,
        "PLANTMON_OPCUA_PASSWORD": stack.secrets["OPC_SERVER_OPERATOR_PASSWORD"],
        "PLANTMON_CERT_DIR": str(tmp_path / "pki"),
    }


def test_subscribe_prints_value_changes_of_the_plant(stack: Stack, tmp_path: Path) -> None:
    done = run_example("subscribe_plant.py", "--seconds", "3", env=operator(stack, tmp_path))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    summary = re.fullmatch(r"(\d+) value changes of (\d+) of (\d+) tags in 3 s", lines[-1])
    assert summary, lines[-1]
    changes, changed_tags, tags = map(int, summary.groups())
    assert tags >= 49 and changed_tags >= 1 and changes == len(lines) - 1
    stamp, path, _value, status = lines[0].split(" ")
    assert datetime.fromisoformat(stamp).tzinfo is not None and path.startswith("Plant/") and status
    assert any(line.split(" ")[1] == UPPER and line.endswith(" Good") for line in lines[:-1]), lines[:5]


def test_subscribe_with_a_wrong_password_says_it_was_refused(stack: Stack, tmp_path: Path) -> None:
    env = {**operator(stack, tmp_path), "PLANTMON_OPCUA_PASSWORD": "not-the-password"}
    done = run_example("subscribe_plant.py", "--seconds", "1", env=env)
    assert done.returncode == 1
    assert "refused the session" in done.stderr and "Traceback" not in done.stderr
    assert done.stdout == ""


def test_read_history_prints_the_rows_of_a_tag(stack: Stack, tmp_path: Path) -> None:
    env = operator(stack, tmp_path)

    def rows_came_back() -> subprocess.CompletedProcess[str] | None:
        done = run_example("read_history.py", "--tag", UPPER, "--minutes", "5", env=env)
        assert done.returncode in (0, 1), done.stderr  # 1: no rows yet, while the stack warms up
        return done if done.returncode == 0 else None

    done = eventually_sync(rows_came_back, timeout=60, interval=1, what=f"history rows of {UPPER}")
    *rows, summary = done.stdout.splitlines()
    assert summary.startswith(f"{len(rows)} rows of {UPPER} from "), summary
    stamps = [datetime.fromisoformat(row.split(" ")[0]) for row in rows]
    assert stamps == sorted(stamps) and len(rows) >= 1
    good = [float(row.split(" ")[1]) for row in rows if row.endswith(" Good")]
    assert good and all(-200 <= value <= 1350 for value in good)


def test_read_history_of_an_unknown_tag_names_it(stack: Stack, tmp_path: Path) -> None:
    done = run_example("read_history.py", "--tag", "Plant/Temperature/Nowhere", env=operator(stack, tmp_path))
    assert done.returncode == 1
    assert "no tag Plant/Temperature/Nowhere below Objects/Plant" in done.stderr and done.stdout == ""
    bad = run_example("read_history.py", "--tag", "not a path", env=operator(stack, tmp_path))
    assert bad.returncode == 2 and "Traceback" not in bad.stderr  # argparse's usage error, with the reason


def alert_state(stack: Stack, alert_id: uuid.UUID) -> tuple[str, str | None]:
    env = stack.pg_env("plantmon_reader", stack.secrets["DB_READER_PASSWORD"])
    with psycopg.connect(
        host=env["PGHOST"], port=env["PGPORT"], dbname=env["PGDATABASE"], user=env["PGUSER"],
        password=env["PGPASSWORD"], autocommit=True,
    ) as conn:  # fmt: skip
        row = conn.execute("SELECT state, acknowledged_by FROM alerts WHERE id = %s", (alert_id,)).fetchone()
    assert row is not None
    return row[0], row[1]


def listed_active(stack: Stack) -> list[dict[str, str]]:
    """The upper temperature's active alerts, newest first (the API's order)."""
    url = f"http://127.0.0.1:{stack.ports.alerts_http}/api/v1/alerts"
    listed: list[dict[str, str]] = httpx.get(url, params={"state": "active", "tag": UPPER}, timeout=5).json()["alerts"]
    return listed


def active_alerts(stack: Stack) -> set[uuid.UUID]:
    return {uuid.UUID(alert["id"]) for alert in listed_active(stack)}


@pytest.fixture
def overheating(stack: Stack) -> Iterator[set[uuid.UUID]]:
    """The simulator's overheating fault, turned off after; yields the upper temperature's active alerts."""
    admin = httpx.Client(
        base_url=f"http://127.0.0.1:{stack.ports.sensors}",
        headers={"Authorization": f"Bearer {stack.secrets['SENSORS_ADMIN_TOKEN']}"},
        timeout=5,
    )
    with admin:
        assert admin.put("/admin/faults/overheating", json={"active": True}).status_code == 200
        try:
            yield eventually_sync(
                lambda: active_alerts(stack), timeout=120, interval=1, what=f"an active alert on {UPPER}"
            )
        finally:
            assert admin.put("/admin/faults/overheating", json={"active": False}).status_code == 200


def test_acknowledge_acknowledges_the_newest_active_alert_once(stack: Stack, overheating: set[uuid.UUID]) -> None:
    env = {
        "PLANTMON_ALERTS_URL": f"http://127.0.0.1:{stack.ports.alerts_http}",
        "PLANTMON_ALERTS_TOKEN": stack.secrets["ALERTS_API_TOKEN"],
    }
    wrong = run_example(
        "acknowledge_alert.py", "--tag", UPPER, "--by", "nobody", env={**env, "PLANTMON_ALERTS_TOKEN": "wrong"}
    )
    assert wrong.returncode == 1 and "acknowledge refused: 401" in wrong.stderr, wrong.stderr
    unreachable = {**env, "PLANTMON_ALERTS_URL": f"http://127.0.0.1:{free_port()}"}
    nobody_there = run_example("acknowledge_alert.py", "--tag", UPPER, "--by", "nobody", env=unreachable)
    assert nobody_there.returncode == 1 and "cannot reach the alert worker" in nobody_there.stderr
    assert "Traceback" not in nobody_there.stderr
    assert all(alert_state(stack, alert) == ("active", None) for alert in overheating)  # the refusal changed nothing

    newest_before = uuid.UUID(listed_active(stack)[0]["id"])
    done = run_example("acknowledge_alert.py", "--tag", UPPER, "--by", "shift-a", env=env)
    assert done.returncode == 0, done.stderr
    acknowledged = re.match(r"acknowledged ([0-9a-f-]{36}): .* on Plant/Temperature/Upper .*by shift-a$", done.stdout)
    assert acknowledged, done.stdout
    alert = uuid.UUID(acknowledged.group(1))
    # The newest active one: the one listed first just before, unless a newer one was raised meanwhile.
    assert alert == newest_before or alert not in overheating | {newest_before}
    assert alert_state(stack, alert) == ("acknowledged", "shift-a")
    assert alert not in active_alerts(stack)

    again = run_example("acknowledge_alert.py", "--id", str(alert), "--by", "shift-b", env=env)
    assert again.returncode == 1 and "acknowledge refused: 409" in again.stderr, again.stderr
    assert alert_state(stack, alert) == ("acknowledged", "shift-a")  # the first acknowledgement stands
