"""OPC UA server throughput: server CPU and the notifications/s a subscribed client receives.

For each load (tags x poll rate) three processes run: a synthetic sensor API (HTTP, every tag with
a new value and observation time at each request), the server under test and, as the ceiling,
a bare asyncua server that writes the same number of plain variables at the same rate with no
HTTP, parsing, status logic or history. A secure client (Basic256Sha256 SignAndEncrypt, the
service user) in this process subscribes to every tag with the StatusValueTimestamp trigger and
counts notifications; the server's CPU comes from ``/proc/<pid>/stat``.

``python -m bench.opc_server_throughput [--smoke]``; the helper processes are
``python -m bench.opc_server_throughput peer|bare ...``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
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

from asyncua import Client, Node, ua
from plantmon_common.opcua import OpcUaClientSettings, OpcUaError, connect
from plantmon_dev.procs import free_port, stop_process, wait_for_port
from pydantic import SecretStr

logger = logging.getLogger(__name__)

NAMESPACE = "urn:plantmon:plant"
# Shared with the helper processes through the environment they inherit.
PASSWORD = os.environ.setdefault("PLANTMON_BENCH_OPC_PASSWORD", "bench-" + secrets.token_urlsafe(12))
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


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
    )


@contextlib.asynccontextmanager
async def plant_under_test(sensors_url: str, rate: float, workdir: Path) -> AsyncIterator[tuple[int, str]]:
    port, http_port = free_port(), free_port()
    endpoint = f"opc.tcp://127.0.0.1:{port}/freeopcua/server/"
    env = server_env(sensors_url, endpoint, rate, workdir, http_port)
    with process(["-m", "plantmon_opc_server"], env, workdir / "opc_server.log", port) as pid:
        yield pid, endpoint


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
        sub._make_monitored_item_request(
            Node(client.uaclient, ua.NodeId(tag_path(i), ns)),
            ua.AttributeIds.Value,
            mfilter,
            100,
            ua.MonitoringMode.Reporting,
            0,
        )
        for i in range(tags)
    ]
    for start in range(0, len(requests), 1000):
        for result in await sub.create_monitored_items(requests[start : start + 1000]):
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

    @property
    def offered(self) -> float:
        return self.tags * self.rate

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


async def measure(name: str, pid: int, endpoint: str, tags: int, rate: float, seconds: float, workdir: Path) -> Result:
    async with patient_connect(endpoint, workdir) as client:
        await wait_until_all_tags_exist(client, tags, timeout=120)
        await asyncio.sleep(2)
        cpu0, t0 = cpu_seconds(pid), time.monotonic()
        await asyncio.sleep(seconds / 2)
        idle = 100 * (cpu_seconds(pid) - cpu0) / (time.monotonic() - t0)
        counter = Counter()
        await subscribe_all(client, tags, counter, publishing_ms=max(100.0, 1000.0 / rate))
        await asyncio.sleep(3)  # warm-up: initial values and the first publishes
        count0, cpu0, t0 = counter.count, cpu_seconds(pid), time.monotonic()
        await asyncio.sleep(seconds)
        count1, cpu1, t1 = counter.count, cpu_seconds(pid), time.monotonic()
    elapsed = t1 - t0
    return Result(name, tags, rate, (count1 - count0) / elapsed, 100 * (cpu1 - cpu0) / elapsed, idle)


async def run_load(tags: int, rate: float, seconds: float) -> tuple[Result, Result]:
    workdir = Path(tempfile.mkdtemp(prefix="plantmon-bench-opc-"))
    with peer(tags, workdir) as url:
        async with plant_under_test(url, rate, workdir) as (pid, endpoint):
            plant = await measure("plantmon", pid, endpoint, tags, rate, seconds, workdir)
    async with bare_server(tags, rate, workdir) as (pid, endpoint):
        bare = await measure("bare asyncua", pid, endpoint, tags, rate, seconds, workdir)
    return plant, bare


def report(rows: list[tuple[Result, Result]]) -> str:
    lines = [
        "| tags x rate | offered updates/s | plantmon: CPU % unsubscribed | CPU %/1k upd/s unsubscribed "
        "| notifications/s subscribed | CPU % subscribed | bare asyncua: CPU % unsubscribed | CPU %/1k upd/s "
        "| notifications/s | CPU % subscribed | ratio plantmon/bare, unsubscribed CPU |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for plant, bare in rows:
        per_1k = 1000 / plant.offered
        lines.append(
            f"| {plant.tags} x {plant.rate:g} Hz | {plant.offered:,.0f} | {plant.idle_cpu_percent:.0f} "
            f"| {plant.idle_cpu_percent * per_1k:.1f} | {plant.notifications_per_s:,.0f} | {plant.cpu_percent:.0f} "
            f"| {bare.idle_cpu_percent:.0f} | {bare.idle_cpu_percent * per_1k:.1f} | {bare.notifications_per_s:,.0f} "
            f"| {bare.cpu_percent:.0f} | {plant.idle_cpu_percent / max(bare.idle_cpu_percent, 0.1):.2f} |"
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
            f" ({bare.idle_cpu_percent:.0f} % unsubscribed)",
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
