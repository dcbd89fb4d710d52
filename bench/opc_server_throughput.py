"""OPC UA server throughput: server CPU and the notifications/s a subscribed client receives.

For each load (tags x poll rate) three processes run: a synthetic sensor API (HTTP, every tag with
a new value and observation time at each request), the server under test and, as the ceiling,
a bare asyncua server that writes the same number of plain variables at the same rate with no
HTTP, parsing, status logic or history. A secure client (Basic256Sha256 SignAndEncrypt, the
service user) in this process subscribes to every tag with the StatusValueTimestamp trigger (the
monitored items created 500 per request, a watchdog probe every 5 s with a 30 s request timeout,
as a SCADA client would) and counts notifications; the server's CPU comes from
``/proc/<pid>/stat``, the longest stall of its event loop from its ``/metrics`` (a timer probe).

``python -m bench.opc_server_throughput [--smoke]``; the helper processes are
``python -m bench.opc_server_throughput peer|bare ...``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from asyncua import Client, Node, ua
from plantmon_common.opcua import OpcUaClientSettings, OpcUaError, connect
from plantmon_common.opcua.asyncua_private import make_monitored_item_request
from plantmon_dev.procs import free_port, stop_process, wait_for_port
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

logger = logging.getLogger(__name__)

NAMESPACE = "urn:plantmon:plant"
# Shared with the helper processes through the environment they inherit.
PASSWORD = os.environ.setdefault("PLANTMON_BENCH_OPC_PASSWORD", "bench-" + secrets.token_urlsafe(12))
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
SUBSCRIBE_CHUNK = 500  # monitored items per CreateMonitoredItems request


def tag_path(i: int) -> str:
    return f"Plant/Bench/Tag_{i:05d}"


# --- the synthetic sensor API -------------------------------------------------------------------


async def run_peer(tags: int, port: int) -> None:
    """``/api/v1/tags`` and ``/api/v1/readings`` for ``tags`` synthetic tags, new values at every call."""
    from fastapi import FastAPI, Response
    from plantmon_common.service import serve_http

    meta = [
        {
            "path": tag_path(i),
            "unit": "°C",
            "eu_low": -200.0,
            "eu_high": 1350.0,
            "description": f"synthetic tag {i}",
            "sensor_id": "bench",
        }
        for i in range(tags)
    ]
    # The JSON of every row is prepared once; a request only fills in value and time.
    prefixes = [json.dumps(m)[:-1] for m in meta]
    app = FastAPI()
    counter = [0]

    @app.get("/api/v1/tags")
    def get_tags() -> Response:
        return Response(json.dumps(meta), media_type="application/json")

    @app.get("/api/v1/readings")
    def get_readings() -> Response:
        counter[0] += 1
        now = datetime.now(UTC).isoformat()
        base = counter[0] % 1000
        rows = ",".join(
            f'{p},"value":{base + i * 0.001:.3f},"quality":"good","reason":null,"observed_at":"{now}"}}'
            for i, p in enumerate(prefixes)
        )
        return Response('{"readings":[' + rows + "]}", media_type="application/json")

    async with serve_http(app, "127.0.0.1", port):
        await asyncio.Event().wait()


# --- the ceiling: a bare asyncua server ---------------------------------------------------------


async def run_bare(tags: int, rate: float, endpoint: str, cert_dir: Path) -> None:
    """Plain variables written at ``rate`` Hz, same security and users as the server under test."""
    from asyncua import Server
    from plantmon_common.opcua import ensure_certificate
    from plantmon_opc_server.server import PasswordUserManager

    server = Server(user_manager=PasswordUserManager({"plantmon": PASSWORD}, allow_anonymous=False))
    await server.init()
    server.set_endpoint(endpoint)
    server.set_security_policy([ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt])
    server.set_identity_tokens([ua.UserNameIdentityToken])
    cert, key = await ensure_certificate(cert_dir, "urn:localhost:bench:bare", "localhost", server=True)
    await server.load_certificate(str(cert))
    await server.load_private_key(str(key))
    ns = await server.register_namespace(NAMESPACE)
    folder = await server.nodes.objects.add_folder(ua.NodeId("Plant", ns), "Plant")
    nodeids = []
    for i in range(tags):
        var = await folder.add_variable(ua.NodeId(tag_path(i), ns), f"Tag_{i:05d}", 0.0, ua.VariantType.Double)
        nodeids.append(var.nodeid)
    async with server:
        interval = 1.0 / rate
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        n = 0
        while True:
            n += 1
            now = datetime.now(UTC)
            for i, nodeid in enumerate(nodeids):
                dv = ua.DataValue(
                    ua.Variant(n % 1000 + i * 0.001, ua.VariantType.Double), SourceTimestamp=now, ServerTimestamp=now
                )
                await server.write_attribute_value(nodeid, dv)
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - loop.time()))


# --- processes ----------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


@contextlib.contextmanager
def process(args: list[str], env: dict[str, str], log: Path, port: int, timeout: float = 90) -> Iterator[int]:
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, *args], env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        wait_for_port(port, timeout=timeout, proc=proc)
        yield proc.pid
    finally:
        stop_process(proc, timeout=15)


@contextlib.contextmanager
def peer(tags: int, workdir: Path) -> Iterator[str]:
    port = free_port()
    with process(["-m", "bench.opc_server_throughput", "peer", str(tags), str(port)], {}, workdir / "peer.log", port):
        yield f"http://127.0.0.1:{port}"


def server_env(sensors_url: str, endpoint: str, rate: float, workdir: Path, http_port: int) -> dict[str, str]:
    return {
        "OPC_SERVER_SENSORS_URL": sensors_url,
        "OPC_SERVER_ENDPOINT": endpoint,
        "OPC_SERVER_PUBLIC_HOSTNAME": "localhost",
        "OPC_SERVER_POLL_INTERVAL_S": str(1.0 / rate),
        "OPC_SERVER_POLL_TIMEOUT_S": "5",
        "OPC_SERVER_CERT_DIR": str(workdir / "pki-server"),
        "OPC_SERVER_SERVICE_PASSWORD": PASSWORD,
        "OPC_SERVER_HTTP_HOST": "127.0.0.1",
        "OPC_SERVER_HTTP_PORT": str(http_port),
        "OPC_SERVER_LOG_LEVEL": "WARNING",
        # The bench runs for seconds: a short ring keeps memory flat at 5,000 tags.
        "OPC_SERVER_HISTORY_WINDOW_S": "60",
    }


def client_settings(endpoint: str, workdir: Path) -> OpcUaClientSettings:
    return OpcUaClientSettings(
        url=endpoint,
        username="plantmon",
        password=SecretStr(PASSWORD),
        cert_dir=workdir / "pki-client",
        hostname="localhost",
        application_uri="urn:plantmon:bench-client",
        timeout_s=30,
        watchdog_interval_s=5,
    )


@contextlib.asynccontextmanager
async def plant_under_test(sensors_url: str, rate: float, workdir: Path) -> AsyncIterator[tuple[int, str, str]]:
    port, http_port = free_port(), free_port()
    endpoint = f"opc.tcp://127.0.0.1:{port}/freeopcua/server/"
    env = server_env(sensors_url, endpoint, rate, workdir, http_port)
    with process(["-m", "plantmon_opc_server"], env, workdir / "opc_server.log", port) as pid:
        yield pid, endpoint, f"http://127.0.0.1:{http_port}/metrics"


@contextlib.asynccontextmanager
async def bare_server(tags: int, rate: float, workdir: Path) -> AsyncIterator[tuple[int, str]]:
    port = free_port()
    endpoint = f"opc.tcp://127.0.0.1:{port}/freeopcua/server/"
    args = ["-m", "bench.opc_server_throughput", "bare", str(tags), str(rate), endpoint, str(workdir / "pki-bare")]
    with process(args, {}, workdir / "bare.log", port) as pid:
        yield pid, endpoint


# --- the measurement ----------------------------------------------------------------------------


class Counter:
    def __init__(self) -> None:
        self.count = 0
        self.good = 0

    def datachange_notification(self, node: Node, val: Any, data: Any) -> None:
        self.count += 1

    def status_change_notification(self, status: Any) -> None:
        logger.warning("subscription status %s", status)


async def subscribe_all(client: Client, tags: int, counter: Counter, publishing_ms: float) -> None:
    ns = await client.get_namespace_index(NAMESPACE)
    params = ua.CreateSubscriptionParameters(
        RequestedPublishingInterval=publishing_ms,
        RequestedLifetimeCount=10000,
        RequestedMaxKeepAliveCount=10,
        MaxNotificationsPerPublish=0,
        PublishingEnabled=True,
        Priority=0,
    )
    sub = await client.create_subscription(params, counter)
    mfilter = ua.DataChangeFilter(Trigger=ua.DataChangeTrigger.StatusValueTimestamp)
    requests = [
        make_monitored_item_request(sub, Node(client.uaclient, ua.NodeId(tag_path(i), ns)), mfilter, 100, 0)
        for i in range(tags)
    ]
    for start in range(0, len(requests), SUBSCRIBE_CHUNK):
        for result in await sub.create_monitored_items(requests[start : start + SUBSCRIBE_CHUNK]):
            if isinstance(result, ua.StatusCode):
                raise RuntimeError(f"cannot monitor a tag: {result}")


async def wait_until_all_tags_exist(client: Client, tags: int, timeout: float) -> None:
    ns = await client.get_namespace_index(NAMESPACE)
    last = client.get_node(ua.NodeId(tag_path(tags - 1), ns))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ua.UaError):
            if (await last.read_data_value(raise_on_bad_status=False)).StatusCode.is_good():
                return
        await asyncio.sleep(0.2)
    raise TimeoutError(f"{tag_path(tags - 1)} has no Good value after {timeout} s")


@dataclass
class Result:
    name: str
    tags: int
    rate: float
    notifications_per_s: float
    cpu_percent: float
    idle_cpu_percent: float  # all tags written at the rate, no client subscribed
    ready_s: float = math.nan  # from the endpoint accepting connections to the last tag's first Good value
    creation_stall_s: float = math.nan  # longest event-loop stall up to then (node creation, first polls)
    window_stall_s: float = math.nan  # longest stall while subscribed (upper bound of its histogram bucket)
    polls_per_s: float = math.nan  # polls the server completed while subscribed
    client_cpu_percent: float = math.nan  # this process (the subscribed client) while subscribed

    @property
    def offered(self) -> float:
        return self.tags * self.rate

    @property
    def delivered(self) -> float:
        return self.notifications_per_s / self.offered

    @property
    def cpu_per_1k(self) -> float:
        return self.cpu_percent / (self.notifications_per_s / 1000) if self.notifications_per_s else float("inf")


@contextlib.asynccontextmanager
async def patient_connect(endpoint: str, workdir: Path, timeout: float = 180) -> AsyncIterator[Client]:
    """Connect, retrying while a server busy creating thousands of nodes does not answer yet."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            async with connect(client_settings(endpoint, workdir)) as client:
                yield client
                return
        except OpcUaError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(1)


async def loop_lag(metrics_url: str | None) -> tuple[float, dict[float, float]]:
    """The server's longest event-loop stall so far and its lag histogram (cumulative buckets).

    The histogram also carries the count of polls under the key ``-1``.
    """
    if metrics_url is None:
        return math.nan, {}
    async with httpx.AsyncClient(timeout=10, follow_redirects=True) as http:
        text = (await http.get(metrics_url)).text
    longest, buckets = math.nan, {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "plantmon_opc_server_event_loop_lag_max_seconds":
                longest = sample.value
            elif sample.name == "plantmon_opc_server_event_loop_lag_seconds_bucket":
                buckets[float(sample.labels["le"])] = sample.value
            elif sample.name == "plantmon_opc_server_polls_total":
                buckets[-1.0] = sample.value
    return longest, buckets


def longest_in_window(before: dict[float, float], after: dict[float, float]) -> float:
    """Upper bound of the longest stall between two histogram readings (the highest bucket that grew)."""
    bounds = sorted(b for b in after if b >= 0)
    grew = [b for b in bounds if after[b] - before.get(b, 0) > 0]
    if not grew:
        return math.nan
    # cumulative buckets: the count above bound b grew iff the +Inf count grew more than b's
    total = after[math.inf] - before.get(math.inf, 0)
    below = [b for b in bounds if after[b] - before.get(b, 0) >= total]
    return below[0] if below else math.inf


async def measure(
    name: str,
    pid: int,
    endpoint: str,
    tags: int,
    rate: float,
    seconds: float,
    workdir: Path,
    metrics_url: str | None = None,
) -> Result:
    started = time.monotonic()
    async with patient_connect(endpoint, workdir) as client:
        await wait_until_all_tags_exist(client, tags, timeout=120)
        ready = time.monotonic() - started
        creation_stall, _ = await loop_lag(metrics_url)
        await asyncio.sleep(2)
        cpu0, t0 = cpu_seconds(pid), time.monotonic()
        await asyncio.sleep(seconds / 2)
        idle = 100 * (cpu_seconds(pid) - cpu0) / (time.monotonic() - t0)
        counter = Counter()
        await subscribe_all(client, tags, counter, publishing_ms=max(100.0, 1000.0 / rate))
        await asyncio.sleep(3)  # warm-up: initial values and the first publishes
        _, lag0 = await loop_lag(metrics_url)
        count0, cpu0, t0, own0 = counter.count, cpu_seconds(pid), time.monotonic(), cpu_seconds(os.getpid())
        await asyncio.sleep(seconds)
        count1, cpu1, t1, own1 = counter.count, cpu_seconds(pid), time.monotonic(), cpu_seconds(os.getpid())
        _, lag1 = await loop_lag(metrics_url)
    elapsed = t1 - t0
    return Result(
        name,
        tags,
        rate,
        (count1 - count0) / elapsed,
        100 * (cpu1 - cpu0) / elapsed,
        idle,
        ready,
        creation_stall,
        longest_in_window(lag0, lag1) if metrics_url else math.nan,
        (lag1.get(-1.0, math.nan) - lag0.get(-1.0, math.nan)) / elapsed,
        100 * (own1 - own0) / elapsed,
    )


async def run_load(tags: int, rate: float, seconds: float) -> tuple[Result, Result]:
    workdir = Path(tempfile.mkdtemp(prefix="plantmon-bench-opc-"))
    with peer(tags, workdir) as url:
        async with plant_under_test(url, rate, workdir) as (pid, endpoint, metrics_url):
            plant = await measure("plantmon", pid, endpoint, tags, rate, seconds, workdir, metrics_url)
    async with bare_server(tags, rate, workdir) as (pid, endpoint):
        bare = await measure("bare asyncua", pid, endpoint, tags, rate, seconds, workdir)
    return plant, bare


def report(rows: list[tuple[Result, Result]]) -> str:
    lines = [
        "| tags x rate | offered updates/s | plantmon: CPU % unsubscribed | CPU %/1k upd/s unsubscribed "
        "| notifications/s subscribed (of offered) | CPU % subscribed | CPU %/1k notif/s "
        "| bare asyncua: CPU % unsubscribed | CPU %/1k upd/s | notifications/s (of offered) | CPU % subscribed "
        "| ratio plantmon/bare, unsubscribed CPU | plantmon: all tags Good after | longest loop stall to then "
        "| longest loop stall subscribed | polls/s subscribed | client CPU % |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| ---: | ---: |",
    ]
    for plant, bare in rows:
        per_1k = 1000 / plant.offered
        lines.append(
            f"| {plant.tags:,} x {plant.rate:g} Hz | {plant.offered:,.0f} | {plant.idle_cpu_percent:.0f} "
            f"| {plant.idle_cpu_percent * per_1k:.1f} | {plant.notifications_per_s:,.0f} ({plant.delivered:.0%}) "
            f"| {plant.cpu_percent:.0f} | {plant.cpu_per_1k:.1f} "
            f"| {bare.idle_cpu_percent:.0f} | {bare.idle_cpu_percent * per_1k:.1f} "
            f"| {bare.notifications_per_s:,.0f} ({bare.delivered:.0%}) | {bare.cpu_percent:.0f} "
            f"| {plant.idle_cpu_percent / max(bare.idle_cpu_percent, 0.1):.2f} | {plant.ready_s:.1f} s "
            f"| {plant.creation_stall_s * 1000:.0f} ms | ≤ {plant.window_stall_s * 1000:.0f} ms "
            f"| {plant.polls_per_s:.2f} of {plant.rate:g} | {plant.client_cpu_percent:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if argv and argv[0] == "peer":
        asyncio.run(run_peer(int(argv[1]), int(argv[2])))
        return 0
    if argv and argv[0] == "bare":
        logging.basicConfig(level=logging.WARNING)
        asyncio.run(run_bare(int(argv[1]), float(argv[2]), argv[3], Path(argv[4])))
        return 0
    parser = argparse.ArgumentParser(prog="bench.opc_server_throughput")
    parser.add_argument("--smoke", action="store_true", help="small loads, a few seconds each")
    parser.add_argument("--seconds", type=float, default=None, help="measurement window per load")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    loads = [(100, 5.0)] if args.smoke else [(50, 1.0), (1000, 10.0), (5000, 1.0)]
    seconds = args.seconds or (3.0 if args.smoke else 20.0)
    rows = []
    for tags, rate in loads:
        plant, bare = asyncio.run(run_load(tags, rate, seconds))
        print(
            f"{tags} tags x {rate:g} Hz: plantmon {plant.notifications_per_s:,.0f} notif/s"
            f" at {plant.cpu_percent:.0f} % CPU ({plant.idle_cpu_percent:.0f} % unsubscribed)"
            f"; bare asyncua {bare.notifications_per_s:,.0f} notif/s at {bare.cpu_percent:.0f} % CPU"
            f" ({bare.idle_cpu_percent:.0f} % unsubscribed); plantmon all tags Good after {plant.ready_s:.1f} s,"
            f" longest loop stall {plant.creation_stall_s * 1000:.0f} ms to then,"
            f" ≤ {plant.window_stall_s * 1000:.0f} ms while subscribed, {plant.polls_per_s:.2f} polls/s,"
            f" client {plant.client_cpu_percent:.0f} % CPU",
            flush=True,
        )
        rows.append((plant, bare))
    print(report(rows))
    failed = [p for p, _ in rows if p.notifications_per_s < 0.5 * p.offered]
    for p in failed:
        print(f"FAIL: {p.tags} x {p.rate:g} Hz delivered {p.notifications_per_s:,.0f} of {p.offered:,.0f} updates/s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
