"""``--profile fullstack`` with the simulator override, as containers: one command brings it up,
every hop is real (sensors -> nginx DMZ -> OPC UA server -> scraper -> PostgreSQL, OPC UA ->
alert worker -> alerts table and an Event Hubs AMQP peer), the DMZ is enforced by the networks,
and restart policies and named volumes carry the stack through faults."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from plantmon_dev.docker_engine import DockerEngine
from plantmon_dev.waiting import eventually, eventually_sync

from services.alert_worker.tests.amqp_peer import EventHubPeer
from tests.containers.compose_support import PROFILE_SERVICES, Compose
from tests.containers.conftest import read_env, stack_env_file
from tests.containers.opcua_witness import Witness
from tests.deploy.deploy_files import JOBS

# func_only: the session's image build (cold: several minutes) and the stack's start are bounded
# by their own waits, not by the first test's timeout.
pytestmark = [pytest.mark.containers, pytest.mark.timeout(900, func_only=True)]
UPPER = "Plant/Temperature/Upper"
FULLSTACK = sorted(PROFILE_SERVICES["fullstack"])
SEED_QUERY = """
SELECT
  time_bucket('5s', timestamp) AS time,
  avg(value) AS temperature
FROM sensor_data
WHERE
  sensorname = 'temperature' AND
  tagname = 'upper' AND
  timestamp > now() - interval '1 hour'
GROUP BY time
ORDER BY time;
"""


class Stack:
    """The running fullstack project and what the tests need to talk to it."""

    def __init__(self, compose: Compose, up_at: float) -> None:
        self.compose = compose
        self.secrets = read_env(compose.env_file)
        self.up_at = up_at

    def reader(self) -> Any:
        return self.compose.database("plantmon_reader", self.secrets["DB_READER_PASSWORD"])

    def http(self, service: str, url: str, *, method: str = "GET", body: Any = None, token: str = "") -> Any:
        """An HTTP request made by ``python`` inside the service's container; ``(status, json body)``."""
        code = (
            "import json, sys, urllib.request, urllib.error\n"
            "url, method, body, token = sys.argv[1:5]\n"
            "headers = {'Content-Type': 'application/json'}\n"
            "if token: headers['Authorization'] = 'Bearer ' + token\n"
            "req = urllib.request.Request(url, data=body.encode() or None, method=method, headers=headers)\n"
            "try:\n"
            "    with urllib.request.urlopen(req, timeout=5) as r: print(r.status); print(r.read().decode())\n"
            "except urllib.error.HTTPError as e: print(e.code); print(e.read().decode())\n"
        )
        cid = self.compose.container(service)["Id"]
        payload = json.dumps(body) if body is not None else ""
        result = self.compose.engine.docker("exec", cid, "python", "-c", code, url, method, payload, token, check=False)
        assert result.returncode == 0, result.stderr
        status, _, text = result.stdout.partition("\n")
        return int(status), json.loads(text) if text.strip() else None

    def reaches(self, service: str, host: str, port: int) -> bool:
        """Whether a TCP connection from inside the service's container to ``host:port`` opens."""
        code = (
            "import socket, sys\n"
            "try:\n"
            "    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3).close(); print('open')\n"
            "except OSError as e: print('refused', e)\n"
        )
        result = self.compose.exec(service, "python", "-c", code, host, str(port))
        assert result.returncode == 0, result.stderr
        return result.stdout.startswith("open")

    def set_fault(self, fault: str, active: bool) -> None:
        """Switch a simulator fault through the sensor API's /admin (inside its container)."""
        status, body = self.http(
            "sensors",
            f"http://127.0.0.1:8080/admin/faults/{fault}",
            method="PUT",
            body={"active": active},
            token=self.secrets["SENSORS_ADMIN_TOKEN"],
        )
        assert status == 200, body

    def tags(self) -> set[str]:
        status, body = self.http("sensors", "http://127.0.0.1:8080/api/v1/tags")
        assert status == 200
        return {tag["path"] for tag in body}

    def tags_with_rows(self) -> set[str]:
        with self.reader() as conn:
            rows = conn.execute(
                "SELECT t.path FROM tags t WHERE EXISTS (SELECT 1 FROM samples s WHERE s.tag_id = t.id)"
            ).fetchall()
        return {row[0] for row in rows}


@pytest.fixture(scope="module")
def stack(
    engine: DockerEngine,
    images: dict[str, float],
    eventhub_peer: EventHubPeer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    env_file = stack_env_file(
        tmp_path_factory.mktemp("fullstack"), ALERTS_EVENTHUB_CONNECTION_STRING=eventhub_peer.connection_string
    )
    compose = Compose(engine, "plantmon-fullstack", env_file)
    compose.down(volumes=True)  # what an interrupted earlier run left
    up_at = time.monotonic()
    try:
        compose.up("fullstack")
        compose.wait_healthy(FULLSTACK, timeout=300)
        yield Stack(compose, up_at)
    finally:
        compose.down(volumes=True)


def test_one_command_brings_every_service_up_healthy(stack: Stack) -> None:
    containers = stack.compose.containers()
    assert set(containers) == set(FULLSTACK)
    for name, item in containers.items():
        state = item["State"]
        if name in JOBS:
            assert (state["Status"], state["ExitCode"]) == ("exited", 0), stack.compose.logs(name)
        else:
            assert state["Running"], name
            if "Health" in state:
                assert state["Health"]["Status"] == "healthy", name
    # Every service with a healthcheck has one (the project's images and the stand-ins).
    assert all("Health" in item["State"] for name, item in containers.items() if name not in JOBS)


def test_every_tag_has_rows_within_90_s_of_up(stack: Stack) -> None:
    advertised = stack.tags()
    assert len(advertised) >= 49
    remaining = max(1.0, 90 - (time.monotonic() - stack.up_at))
    missing: set[str] = set()

    def all_stored() -> bool:
        nonlocal missing
        missing = advertised - stack.tags_with_rows()
        return not missing

    eventually_sync(
        all_stored,
        timeout=remaining,
        interval=1,
        what=lambda: f"rows for every tag 90 s after up; none for {sorted(missing)}",
    )


def test_the_seed_dashboard_query_through_sensor_data_returns_rows(stack: Stack) -> None:
    with stack.reader() as conn:
        eventually_sync(
            lambda: bool(conn.execute(SEED_QUERY).fetchall()), timeout=60, what="the seed query returns rows"
        )
        rows = conn.execute(SEED_QUERY).fetchall()
    assert all(-200 <= temperature <= 1350 for _, temperature in rows)


def test_forced_overheating_becomes_an_alert_row_and_an_event_at_the_hub(
    stack: Stack, eventhub_peer: EventHubPeer
) -> None:
    before = len(eventhub_peer.events())
    stack.set_fault("overheating", True)
    try:
        alert_raised_and_delivered(stack, eventhub_peer, before)
    finally:  # the later tests expect a healthy plant
        stack.set_fault("overheating", False)


def alert_raised_and_delivered(stack: Stack, eventhub_peer: EventHubPeer, events_before: int) -> None:
    found: list[tuple[Any, ...]] = []

    def alert_row() -> bool:
        with stack.reader() as conn:
            found[:] = conn.execute(
                "SELECT id, severity, value_at_raise FROM alerts WHERE tag_path = %s ORDER BY raised_at DESC",
                (UPPER,),
            ).fetchall()
        return bool(found)

    eventually_sync(alert_row, timeout=120, interval=1, what="an alert row for the overheating upper temperature")
    _alert_id, severity, value = found[0]
    assert value is not None and value > 100 and severity >= 3

    def delivered() -> bool:
        return any(UPPER.encode() in event.body for event in eventhub_peer.events()[events_before:])

    eventually_sync(delivered, timeout=120, interval=1, what="the alert delivered to the Event Hubs peer")


def test_the_dmz_is_enforced_by_the_networks(stack: Stack) -> None:
    compose = stack.compose
    sensors_ip = compose.ip("sensors", "sensors_net")
    db_ip = compose.ip("db", "backend")
    # The OPC UA server: not the sensor service, by name or by address; the DMZ proxy, yes.
    assert not stack.reaches("opc_server", "sensors", 8080)
    assert not stack.reaches("opc_server", sensors_ip, 8080)
    status, body = stack.http("opc_server", "http://nginx:8081/api/v1/tags")
    assert status == 200 and len(body) >= 49
    # ... and only its allow-listed paths: /admin is not proxied, and the refusal changed nothing.
    token = stack.secrets["SENSORS_ADMIN_TOKEN"]
    url = "http://nginx:8081/admin/faults/voltage_sag"
    status, _ = stack.http("opc_server", url, method="PUT", body={"active": True}, token=token)
    assert status in {403, 404, 405}
    status, faults = stack.http("sensors", "http://127.0.0.1:8080/admin/faults", token=token)
    assert status == 200
    assert {f["fault"]: f["active"] for f in faults["faults"]}["voltage_sag"] is False
    # The sensor service: not the database, by name or by address.
    assert not stack.reaches("sensors", "db", 5432)
    assert not stack.reaches("sensors", db_ip, 5432)
    assert stack.reaches("opc_scraper", "db", 5432)  # the check itself can see an open port


def test_only_the_entry_points_publish_ports(stack: Stack) -> None:
    assert stack.compose.published_ports() == {
        "opc_server": {("0.0.0.0", 4840)},
        "alert_worker": {("0.0.0.0", 9103)},
        "prometheus": {("127.0.0.1", 9090)},
    }


def test_containerized_stack_memory_is_measured_and_under_1_gb(stack: Stack) -> None:
    """docker stats of every running container (what cAdvisor reports), once the sensor service's
    audio features are ready: the sum must stay under 10^9 bytes (Grafana and cAdvisor not run)."""

    def audio_ready() -> bool:
        status, body = stack.http("sensors", "http://127.0.0.1:8080/api/v1/readings/Plant/Audio/Level")
        return bool(status == 200 and body["quality"] == "good")

    eventually_sync(audio_ready, timeout=600, interval=1, what="audio features ready")
    usage = stack.compose.memory()
    running = set(FULLSTACK) - JOBS
    assert set(usage) == running
    total = sum(usage.values())
    print("container memory:", {name: f"{size / 2**20:.0f} MiB" for name, size in sorted(usage.items())})
    print(f"containerized stack memory: {total / 2**20:.0f} MiB")
    assert total < 10**9, f"the containerized stack takes {total / 2**20:.0f} MiB"


def restarts(compose: Compose, service: str) -> int:
    return int(compose.container(service)["RestartCount"])


def crash_and_wait_restarted(compose: Compose, service: str) -> None:
    """SIGKILL to the container's main process from the host, as the OOM killer or a crash ends it.

    (``docker kill`` would not do: the engine counts it as a stop by the operator and, by design,
    applies no restart policy afterwards, ``unless-stopped`` included.)"""
    before = restarts(compose, service)
    pid = int(compose.container(service)["State"]["Pid"])
    assert pid > 0, f"{service} is not running"
    os.kill(pid, signal.SIGKILL)
    eventually_sync(
        lambda: restarts(compose, service) > before, timeout=60, interval=1, what=f"{service} restarted by its policy"
    )
    compose.wait_healthy([service], timeout=180)


def stored(stack: Stack, keys: set[tuple[str, Any]]) -> dict[tuple[str, Any], list[tuple[float | None, int]]]:
    """Rows of ``samples`` at the witness's keys, as lists (more than one would be a duplicate)."""
    lo = min(stamp for _, stamp in keys)
    found: dict[tuple[str, Any], list[tuple[float | None, int]]] = {}
    with stack.reader() as conn:
        rows = conn.execute(
            "SELECT t.path, s.time, s.value, s.status FROM samples s JOIN tags t ON t.id = s.tag_id WHERE s.time >= %s",
            (lo,),
        ).fetchall()
    for path, stamp, value, status in rows:
        if (path, stamp) in keys:
            found.setdefault((path, stamp), []).append((value, status))
    return found


def test_faults_restart_policies_and_every_served_value_stored_once(stack: Stack, tmp_path: Path) -> None:
    compose = stack.compose
    witness = Witness(
        "opc.tcp://127.0.0.1:4840/freeopcua/server/",
        stack.secrets["OPC_SERVER_OPERATOR_USER"],
        stack.secrets["OPC_SERVER_OPERATOR_PASSWORD"],
        tmp_path / "witness",
    )

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(witness.run(stop))
        try:
            await eventually(lambda: len(witness.received) > 100, timeout=60, what="the witness receives")
            await asyncio.to_thread(crash_and_wait_restarted, compose, "opc_scraper")
            await asyncio.to_thread(crash_and_wait_restarted, compose, "opc_server")
            await eventually(lambda: witness.sessions >= 2, timeout=60, what="the witness reconnected")
            cid = (await asyncio.to_thread(compose.container, "db"))["Id"]
            await asyncio.to_thread(compose.engine.docker, "stop", cid, timeout=120)
            stopped = time.monotonic()
            await asyncio.sleep(max(0.0, 60 - (time.monotonic() - stopped)))  # the scenario: a 60 s outage
            await asyncio.to_thread(compose.engine.docker, "start", cid)
            await asyncio.to_thread(compose.wait_healthy, FULLSTACK, 300)
            mark = len(witness.received)
            await eventually(
                lambda: len(witness.received) > mark + 100, timeout=60, what="values flow after the outage"
            )
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)

    asyncio.run(scenario())
    received = dict(witness.received)
    assert witness.duplicates == 0, "the server sent one key with two different values"
    keys = set(received)
    found: dict[tuple[str, Any], list[tuple[float | None, int]]] = {}

    def all_stored() -> bool:
        found.clear()
        found.update(stored(stack, keys))
        return len(found) == len(keys)

    def missing() -> str:
        absent = sorted(keys - set(found))
        return f"every value the witness received in samples; {len(absent)} of {len(keys)} missing, e.g. {absent[:5]}"

    eventually_sync(all_stored, timeout=240, interval=2, what=missing)
    duplicated = {key: rows for key, rows in found.items() if len(rows) > 1}
    assert not duplicated
    changed = {key: (received[key], rows[0]) for key, rows in found.items() if rows[0] != received[key]}
    assert not changed, f"stored values differ from served ones: {list(changed.items())[:5]}"
    print(f"faults: {len(keys)} served values, each stored once; witness sessions {witness.sessions}")


def test_named_volumes_keep_data_spool_outbox_certificates_and_models_across_down_and_up(stack: Stack) -> None:
    compose = stack.compose

    def fingerprint() -> dict[str, str]:
        files = {
            "opc_server": "/var/lib/plantmon/pki/server",
            "opc_scraper": "/var/lib/plantmon/pki/scraper",
            "alert_worker": "/var/lib/plantmon/pki/alerts",
        }
        prints: dict[str, str] = {}
        for service, folder in files.items():
            code = (
                "import hashlib, pathlib, sys\n"
                "print(hashlib.sha256(pathlib.Path(sys.argv[1], 'cert.der').read_bytes()).hexdigest())"
            )
            result = compose.exec(service, "python", "-c", code, folder)
            assert result.returncode == 0, result.stderr
            prints[service] = result.stdout.strip()
        for service, folder in {
            "opc_scraper": "/var/lib/plantmon/spool",
            "alert_worker": "/var/lib/plantmon/alerts",
        }.items():
            result = compose.exec(
                service, "python", "-c", "import os, sys; print(sorted(os.listdir(sys.argv[1])))", folder
            )
            assert result.returncode == 0, result.stderr
            prints[f"{service}:{folder}"] = result.stdout.strip()
        return prints

    with stack.reader() as conn:
        first = conn.execute("SELECT min(time), count(*) FROM samples").fetchone()
        alerts = {row[0] for row in conn.execute("SELECT id FROM alerts").fetchall()}
    before = fingerprint()
    assert first is not None and first[1] > 0
    compose.down(volumes=False)
    assert compose.containers() == {}
    compose.up("fullstack")
    compose.wait_healthy(FULLSTACK, timeout=300)
    with stack.reader() as conn:
        again = conn.execute("SELECT min(time), count(*) FROM samples WHERE time <= %s", (first[0],)).fetchone()
        total = conn.execute("SELECT count(*) FROM samples").fetchone()
        alerts_again = {row[0] for row in conn.execute("SELECT id FROM alerts").fetchall()}
    assert again is not None and again[0] == first[0]
    assert total is not None and total[0] >= first[1]
    assert alerts and alerts <= alerts_again, "alerts raised before down are gone"
    after = fingerprint()
    for name in ("opc_server", "opc_scraper", "alert_worker"):
        assert after[name] == before[name], f"{name}'s certificate was made anew"
    for name in before:
        if ":" in name:
            assert set(json.loads(after[name].replace("'", '"'))) >= set(json.loads(before[name].replace("'", '"')))
