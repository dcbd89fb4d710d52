"""Scraper throughput against its ceilings, all in one run.

``python -m bench.scraper_throughput [--smoke] [--steps 1000,2000]``

1. OPC UA ceiling: a bare asyncua client (subscribe every tag, count and discard through the
   stock handler API) against a load server publishing N tags x 10 Hz, N stepped 1,000 / 2,000 /
   3,000; server and client each in their own process. A second, "batched" bare client counts
   whole publish responses through the hook the scraper uses (pure decoding, no task per value).
2. The scraper end to end (``python -m plantmon_scraper`` against the same server and a real
   PostgreSQL with the real migrations) at each step: rows stored per second (counted in the
   database by source time), p50/p99 from SourceTimestamp to commit, CPU and RSS, queue depth
   at the start and the end of the window, and the writer in the window from the scraper's
   metrics: rows committed/s, rows per COPY, COPYs larger than one batch (a backlog drained).
3. Database ceiling: raw binary COPY of the same rows into ``samples``.
4. The scraper's writer alone: replay of a spool of the same rows (``write_batch``: COPY straight
   into samples; a record holding stored rows through staging and ``INSERT ... ON CONFLICT DO
   NOTHING``), rows/s and the ratio to raw COPY.

The scraper takes one OPC UA endpoint, so each step has one load server; it is made fast enough
by writing into asyncua's address space below ``write_attribute_value`` with a lean monitored
item path (see :func:`plantmon_common.opcua.asyncua_private.install_lean_datachange_callback`),
in its own process. CPU of every process (clients, load server, PostgreSQL) and of the whole
machine is read from ``/proc`` over each window; on this 2-core machine they share the cores, so
a step where the machine is busy is reported as such. The OPC UA leg uses SecurityPolicy None
for both clients (the load is the same for both; the production endpoint encrypts). The
source-to-commit latency is observed by polling a few tags every 50 ms, so it is pessimistic by
up to 50 ms. The scraper's backfill is off (the load server keeps no history).
``BENCH_PYSPY=<file>`` records a py-spy profile of the scraper.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg
from psycopg.conninfo import make_conninfo

logger = logging.getLogger(__name__)

HZ = 10.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


# -- the load server (its own process) ---------------------------------------------------------


def _double_value(value: float, stamp: datetime, good: object) -> object:
    """``ua.DataValue(ua.Variant(value, Double), StatusCode=good, Source/ServerTimestamp=stamp)``
    without the dataclass ``__init__``/``__post_init__`` work (the same fields, the same bytes)."""
    from asyncua import ua

    variant = object.__new__(ua.Variant)
    variant.Value = value
    variant.VariantType = ua.VariantType.Double
    variant.Dimensions = None
    variant.is_array = False
    dv = object.__new__(ua.DataValue)
    dv.Value = variant
    dv.StatusCode = good  # type: ignore[assignment]
    dv.SourceTimestamp = stamp
    dv.ServerTimestamp = stamp
    dv.SourcePicoseconds = None
    dv.ServerPicoseconds = None
    return dv


async def serve(port: int, tags: int, hz: float) -> None:
    """Objects/Plant/Load/Tag_i, every tag written ``hz`` times a second with a new SourceTimestamp.

    Values go straight into the address space's attribute and its data-change callbacks (what
    ``write_attribute_value`` ends in), through the lean monitored-item path above.
    """
    from asyncua import Server, ua
    from asyncua.ua.ua_binary import struct_to_binary
    from plantmon_common.opcua.asyncua_private import install_lean_datachange_callback

    install_lean_datachange_callback()
    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/freeopcua/server/")
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    ns = await server.register_namespace("urn:plantmon:bench")
    plant = await server.nodes.objects.add_folder(ua.NodeId("Plant", ns), ua.QualifiedName("Plant", ns))
    load = await plant.add_folder(ua.NodeId("Plant/Load", ns), ua.QualifiedName("Load", ns))
    nodes = []
    for i in range(tags):
        path = f"Plant/Load/Tag_{i}"
        var = await load.add_variable(ua.NodeId(path, ns), ua.QualifiedName(f"Tag_{i}", ns), 0.0)
        nodes.append(var.nodeid)
    aspace = server.iserver.aspace
    attributes = [aspace[node].attributes[ua.AttributeIds.Value] for node in nodes]
    good = ua.StatusCode()
    probe_time = datetime.now(UTC)
    stock_value = ua.DataValue(
        ua.Variant(1.5, ua.VariantType.Double), StatusCode=good, SourceTimestamp=probe_time, ServerTimestamp=probe_time
    )
    if struct_to_binary(_double_value(1.5, probe_time, good)) != struct_to_binary(stock_value):
        raise RuntimeError("the lean DataValue does not encode like asyncua's own")
    await server.start()
    print("READY", flush=True)
    period = 1.0 / hz
    tick = time.monotonic()
    k = 0
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    while not stop.is_set():
        now = datetime.now(UTC)
        k += 1
        for i, attribute in enumerate(attributes):
            dv = _double_value(float(k + i), now, good)
            attribute.value = dv
            for handle, callback in list(attribute.datachange_callbacks.items()):
                await callback(handle, dv)
        tick += period
        delay = tick - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            tick = time.monotonic()  # saturated: publish as fast as it can
            await asyncio.sleep(0)
    await server.stop()


# -- the bare client (its own process) ---------------------------------------------------------


async def bare(url: str, warmup: float, window: float, batched: bool) -> None:
    """Subscribe every variable below Plant/Load, count notifications, discard them.

    Prints ``SUBSCRIBED``, then ``MARK`` after ``warmup`` and a JSON line with the notifications
    counted in the ``window`` after the mark. ``batched`` counts whole publish responses through
    the same hook the scraper uses (no asyncio task per notification): pure decoding.
    """
    from asyncua import Client, ua

    count = 0

    class Handler:
        def datachange_notification(self, node: object, val: object, data: object) -> None:
            nonlocal count
            count += 1

        def datachange_batch(self, datachange: ua.DataChangeNotification) -> tuple[()]:
            nonlocal count
            count += len(datachange.MonitoredItems)
            return ()

    extra: list[asyncio.Task[None]] = []
    async with Client(url, timeout=30) as client:
        plant = None
        for ref in await client.nodes.objects.get_children_descriptions():
            if ref.BrowseName.Name == "Plant":
                plant = client.get_node(ref.NodeId)
        assert plant is not None
        load = (await plant.get_children())[0]
        nodes = await load.get_children()
        params = ua.CreateSubscriptionParameters()
        params.RequestedPublishingInterval = 250.0
        params.RequestedLifetimeCount = 10000
        params.RequestedMaxKeepAliveCount = 10
        params.MaxNotificationsPerPublish = 0
        params.PublishingEnabled = True
        handler = Handler()
        sub = await client.create_subscription(params, handler)
        if batched:
            from plantmon_common.opcua.asyncua_private import batch_datachanges
            from plantmon_common.opcua.publish import publish_loop

            batch_datachanges(sub, handler.datachange_batch)
            # The same session as the scraper's: as many Publish requests in flight.
            from plantmon_scraper.settings import ScraperOpcUaSettings

            for _ in range(ScraperOpcUaSettings().publish_requests - 1):
                extra.append(asyncio.create_task(publish_loop(client, sub)))
        for start in range(0, len(nodes), 500):
            await sub.subscribe_data_change(nodes[start : start + 500], queuesize=100, sampling_interval=0)
        print("SUBSCRIBED", flush=True)
        await asyncio.sleep(warmup)
        mark, t0 = count, time.monotonic()
        print("MARK", flush=True)
        await asyncio.sleep(window)
        print(json.dumps({"notifications": count - mark, "seconds": time.monotonic() - t0}), flush=True)
        for task in extra:
            task.cancel()


# -- measuring a process from the outside -----------------------------------------------------


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def cpu_group(pids: list[int]) -> float:
    """CPU seconds of several processes (those that vanished count as zero)."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            total += cpu_seconds(pid)
    return total


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all cores."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields) - idle) / CLK_TCK, sum(fields) / CLK_TCK


def postgres_pids(datadir: Path) -> list[int]:
    """The postmaster of ``datadir`` and its children (backends, writer, WAL writer...)."""
    postmaster = int((datadir / "postmaster.pid").read_text().split()[0])
    pids = [postmaster]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == postmaster:
                pids.append(int(stat.parent.name))
    return pids


class Window:
    """CPU of named process groups and of the machine between :meth:`start` and :meth:`stop`."""

    def __init__(self, groups: dict[str, Callable[[], list[int]]]) -> None:
        self.groups = groups
        self.cpu: dict[str, float] = {}
        self.machine = 0.0
        self.seconds = 0.0

    def start(self) -> None:
        self._pids = {name: pids() for name, pids in self.groups.items()}
        self._c0 = {name: cpu_group(p) for name, p in self._pids.items()}
        self._m0, self._t0 = machine_busy(), time.monotonic()

    def stop(self) -> None:
        elapsed = time.monotonic() - self._t0
        m1 = machine_busy()
        self.seconds = elapsed
        self.cpu = {name: (cpu_group(p) - self._c0[name]) / elapsed for name, p in self._pids.items()}
        self.machine = (m1[0] - self._m0[0]) / (m1[1] - self._m0[1]) * (os.cpu_count() or 1)


def rss_mib(pid: int) -> float:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE / 2**20


def start(args: list[str], env: dict[str, str] | None = None, log: Path | None = None) -> subprocess.Popen[str]:
    stderr = log.open("ab") if log is not None else subprocess.DEVNULL
    return subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, stderr=stderr, text=True, env=env)


def wait_line(proc: subprocess.Popen[str], prefix: str, timeout: float) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith(prefix):
            return line
        if not line and proc.poll() is not None:
            break
    raise RuntimeError(f"no {prefix!r} from {proc.args!r}")


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


def free_port() -> int:
    from plantmon_dev.procs import free_port as _free

    return int(_free())


# -- the steps ---------------------------------------------------------------------------------


@dataclass
class StepResult:
    tags: int
    offered: float
    bare_rate: float = 0.0
    bare_cpu: float = 0.0
    bare_server_cpu: float = 0.0
    bare_machine: float = 0.0
    batched_rate: float = 0.0
    batched_cpu: float = 0.0
    rows_rate: float = 0.0
    notif_rate: float = 0.0
    p50: float = float("nan")
    p99: float = float("nan")
    cpu: float = 0.0
    rss: float = 0.0
    server_cpu: float = 0.0
    postgres_cpu: float = 0.0
    machine: float = 0.0
    queue_start: float = 0.0
    queue_end: float = 0.0
    spool_rows: float = 0.0
    written_rate: float = 0.0
    batch_mean: float = 0.0
    backlog_batches: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)


def measure_bare(url: str, server: int, warmup: float, window: float, batched: bool) -> tuple[float, Window]:
    """Notifications/s the bare client counted in the window, and the CPU of it, the server, the machine."""
    proc = start(["-m", "bench.scraper_throughput", "bare", url, str(warmup), str(window), str(int(batched))])
    try:
        wait_line(proc, "SUBSCRIBED", 300)
        wait_line(proc, "MARK", warmup + 60)
        cpu = Window({"client": lambda: [proc.pid], "server": lambda: [server]})
        cpu.start()
        line = wait_line(proc, "{", window + 60)
        cpu.stop()
        counted = json.loads(line)
    finally:
        stop(proc)
    return counted["notifications"] / counted["seconds"], cpu


def scraper_metrics(port: int) -> dict[str, float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10, trust_env=False, follow_redirects=True).text
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def measure_scraper(
    url: str, server: int, db_env: dict[str, str], datadir: Path, work: Path, tags: int, warmup: float, window: float
) -> dict[str, float]:
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PG", "SCRAPER_"))},
        **db_env,
        "SCRAPER_HTTP_HOST": "127.0.0.1",
        "SCRAPER_HTTP_PORT": str(port),
        "SCRAPER_OPCUA__URL": url,
        "SCRAPER_OPCUA__SECURITY": "None",
        "SCRAPER_OPCUA__CERT_DIR": str(work / "pki"),
        "SCRAPER_SPOOL_DIR": str(work / f"spool-{tags}"),
        "SCRAPER_BACKFILL": "false",
        "SCRAPER_BATCH_SIZE": "5000",
        "SCRAPER_BATCH_AGE_S": "1.0",
        "SCRAPER_LOG_LEVEL": os.environ.get("BENCH_SCRAPER_LOG_LEVEL", "WARNING"),
    }
    proc = start(["-m", "plantmon_scraper"], env, log=Path(os.environ.get("BENCH_SCRAPER_LOG", os.devnull)))
    try:
        # Browsing thousands of tags with their metadata takes a while on a loaded server.
        deadline = time.monotonic() + 900
        last_error: Exception | None = None
        while True:
            try:
                if scraper_metrics(port).get("plantmon_scraper_opcua_connected", 0) == 1:
                    break
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                last_error = exc
            if time.monotonic() > deadline or proc.poll() is not None:
                print("scraper not subscribed:", repr(last_error), file=sys.stderr)
                raise RuntimeError("the scraper did not subscribe")
            time.sleep(0.5)
        time.sleep(warmup)
        cpu = Window(
            {"scraper": lambda: [proc.pid], "server": lambda: [server], "postgres": lambda: postgres_pids(datadir)}
        )
        m0 = scraper_metrics(port)
        cpu.start()
        w0 = datetime.now(UTC)
        profile = os.environ.get("BENCH_PYSPY")  # a file name: py-spy samples the scraper in the window
        spy = (
            subprocess.Popen(
                ["py-spy", "record", "-p", str(proc.pid), "-d", str(int(window)), "-f", "raw", "-o", profile],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if profile
            else None
        )
        latencies = poll_latency(db_env, window)
        if spy is not None:
            spy.wait(timeout=60)
        w1 = datetime.now(UTC)
        cpu.stop()
        m1 = scraper_metrics(port)
        rss = rss_mib(proc.pid)
        # Stored = rows whose source time lies in the window, counted once their batches had time
        # to commit (no batch-boundary noise; a backlog shows up as missing rows).
        time.sleep(3.0)
        stored = count_stored(db_env, w0, w1)
    finally:
        stop(proc)
    elapsed = cpu.seconds
    return {
        "rows_rate": stored / (w1 - w0).total_seconds(),
        "notif_rate": (m1["plantmon_scraper_notifications_total"] - m0["plantmon_scraper_notifications_total"])
        / elapsed,
        "cpu": cpu.cpu["scraper"],
        "server_cpu": cpu.cpu["server"],
        "postgres_cpu": cpu.cpu["postgres"],
        "machine": cpu.machine,
        "rss": rss,
        "queue_start": m0["plantmon_scraper_queue_depth"],
        "queue_end": m1["plantmon_scraper_queue_depth"],
        "spool_rows": m1["plantmon_scraper_spool_rows"],
        # The writer in the window: rows committed per second, rows per COPY, and how many COPYs
        # took more than one batch because the queue held a backlog.
        "written_rate": (m1["plantmon_scraper_rows_written_total"] - m0["plantmon_scraper_rows_written_total"])
        / elapsed,
        "batch_mean": ratio(
            m1["plantmon_scraper_batch_rows_sum"] - m0["plantmon_scraper_batch_rows_sum"],
            m1["plantmon_scraper_batch_rows_count"] - m0["plantmon_scraper_batch_rows_count"],
        ),
        "backlog_batches": m1["plantmon_scraper_backlog_batches_total"] - m0["plantmon_scraper_backlog_batches_total"],
        "p50": statistics.median(latencies) if latencies else float("nan"),
        "p99": statistics.quantiles(latencies, n=100)[98]
        if len(latencies) >= 100
        else max(latencies, default=float("nan")),
    }


def _conninfo(db_env: dict[str, str]) -> str:
    return make_conninfo(
        host=db_env["PGHOST"],
        port=db_env["PGPORT"],
        dbname=db_env["PGDATABASE"],
        user=db_env["PGUSER"],
        password=db_env["PGPASSWORD"],
    )


def count_stored(db_env: dict[str, str], since: datetime, until: datetime) -> int:
    """Load rows stored with a source time in [since, until)."""
    with psycopg.connect(_conninfo(db_env), autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM samples s JOIN tags t ON t.id = s.tag_id "
            "WHERE t.path LIKE 'Plant/Load/%%' AND s.time >= %s AND s.time < %s",
            (since, until),
        ).fetchone()
    return int(row[0]) if row else 0


def poll_latency(db_env: dict[str, str], window: float) -> list[float]:
    """Every 50 ms, rows of a few tags that became visible since the last poll: now - source time."""
    conninfo = make_conninfo(
        host=db_env["PGHOST"],
        port=db_env["PGPORT"],
        dbname=db_env["PGDATABASE"],
        user=db_env["PGUSER"],
        password=db_env["PGPASSWORD"],
    )
    out: list[float] = []
    with psycopg.connect(conninfo, autocommit=True) as conn:
        ids = [r[0] for r in conn.execute("SELECT id FROM tags WHERE path LIKE 'Plant/Load/%' ORDER BY id LIMIT 5")]
        since = datetime.now(UTC)
        deadline = time.monotonic() + window
        while time.monotonic() < deadline:
            rows = conn.execute(
                "SELECT time FROM samples WHERE tag_id = ANY(%s) AND time > %s", (ids, since)
            ).fetchall()
            now = datetime.now(UTC)
            for (ts,) in rows:
                out.append((now - ts).total_seconds())
                since = max(since, ts)
            time.sleep(0.05)
    return out


def copy_ceiling(conninfo: str, rows: int) -> float:
    """Raw binary COPY of ``rows`` narrow rows straight into samples: rows/s."""
    with psycopg.connect(conninfo) as conn:
        tag_ids = [
            r[0]
            for r in conn.execute(
                "INSERT INTO tags (path, sensor, tag) SELECT 'Plant/Copy/Tag_' || i, 'copy', 'tag_' || i "
                "FROM generate_series(0, 999) i RETURNING id"
            ).fetchall()
        ]
        conn.commit()
        base = datetime(2030, 1, 1, tzinfo=UTC)
        data = [(base + timedelta(milliseconds=k // 1000 * 100), tag_ids[k % 1000], float(k), 0) for k in range(rows)]
        started = time.perf_counter()
        for start_row in range(0, rows, 5000):
            with (
                conn.cursor() as cur,
                cur.copy("COPY samples (time, tag_id, value, status) FROM STDIN (FORMAT BINARY)") as copy,
            ):
                copy.set_types(["timestamptz", "int4", "float8", "int8"])
                for row in data[start_row : start_row + 5000]:
                    copy.write_row(row)
            conn.commit()
        return rows / (time.perf_counter() - started)


async def replay_rate(db_env: dict[str, str], work: Path, rows: int) -> float:
    """The scraper's writer draining a spool of ``rows`` samples: rows/s."""
    from plantmon_common.metrics import new_registry
    from plantmon_common.opcua import Sample
    from plantmon_common.settings import DatabaseSettings
    from plantmon_scraper.metrics import ScraperMetrics
    from plantmon_scraper.settings import ScraperSettings
    from plantmon_scraper.store import SampleStore, prepare_connection
    from psycopg_pool import AsyncConnectionPool
    from pydantic import SecretStr

    settings = ScraperSettings(
        database=DatabaseSettings(
            host=db_env["PGHOST"],
            port=int(db_env["PGPORT"]),
            database=db_env["PGDATABASE"],
            user=db_env["PGUSER"],
            password=SecretStr(db_env["PGPASSWORD"]),
        ),
        spool_dir=work / "replay-spool",
        spool_max_bytes=2**31,
        batch_size=5000,
    )
    pool = AsyncConnectionPool(
        settings.database.conninfo(), min_size=1, max_size=2, open=False, configure=prepare_connection
    )
    await pool.open()
    try:
        store = SampleStore(pool, settings, ScraperMetrics(new_registry("bench", with_process=False)))
        store.open_spool()
        base = datetime(2031, 1, 1, tzinfo=UTC)
        samples = [
            Sample(f"Plant/Replay/Tag_{k % 1000}", float(k), 0, base + timedelta(milliseconds=k // 1000 * 100))
            for k in range(rows)
        ]
        await store._to_spool(samples)
        await store.write_batch(samples[:1000])  # registers the tags; those rows replay as duplicates
        started = time.perf_counter()
        while not store.spool.empty:
            await store._replay(budget_s=3600)
        return rows / (time.perf_counter() - started)
    finally:
        await pool.close()


def run(smoke: bool, steps: list[int] | None = None) -> int:
    from plantmon_db.migrate import migrate
    from plantmon_dev.postgres import ephemeral_cluster

    steps = steps or ([100] if smoke else [1000, 2000, 3000])
    warmup, window = (2.0, 4.0) if smoke else (5.0, 20.0)
    copy_rows, replay_rows = (20_000, 20_000) if smoke else (500_000, 300_000)
    print(f"1-minute load average at start: {os.getloadavg()[0]:.2f} ({os.cpu_count()} cores)", flush=True)
    results: list[StepResult] = []
    with tempfile.TemporaryDirectory(prefix="bench-scraper-") as tmp, ephemeral_cluster() as cluster:
        work = Path(tmp)
        writer_password = "bench-Writer-1"  # noqa: S105 - a throwaway cluster of this run
        migrate(cluster.conninfo(), {"plantmon_writer": writer_password})
        env = cluster.env()
        writer_env = {
            **{k: v for k, v in env.items() if k.startswith("PG")},
            "PGUSER": "plantmon_writer",
            "PGPASSWORD": writer_password,
        }
        for tags in steps:
            port = free_port()
            url = f"opc.tcp://127.0.0.1:{port}/freeopcua/server/"
            server = start(["-m", "bench.scraper_throughput", "serve", str(port), str(tags), str(HZ)])
            result = StepResult(tags, tags * HZ)
            try:
                wait_line(server, "READY", 300)
                result.bare_rate, bare = measure_bare(url, server.pid, warmup, window, batched=False)
                result.bare_cpu, result.bare_server_cpu = bare.cpu["client"], bare.cpu["server"]
                result.bare_machine = bare.machine
                result.batched_rate, batched = measure_bare(url, server.pid, warmup, window, batched=True)
                result.batched_cpu = batched.cpu["client"]
                m = measure_scraper(url, server.pid, writer_env, cluster.datadir, work, tags, warmup, window)
                for key, value in m.items():
                    setattr(result, key, value)
            finally:
                stop(server)
            results.append(result)
            print_step(result)
        copy = copy_ceiling(cluster.conninfo(), copy_rows)
        replay = asyncio.run(replay_rate(writer_env, work, replay_rows))
    print(f"\nraw binary COPY ceiling: {copy:,.0f} rows/s ({copy_rows:,} narrow rows)")
    print(
        f"scraper writer (spool replay through write_batch): {replay:,.0f} rows/s "
        f"= {replay / copy:.2f} x raw COPY (target >= 0.40)"
    )
    print(
        "\n| tags x 10 Hz | offered/s | bare client/s | bare CPU | scraper stored/s | stored/bare | scraper CPU "
        "| CPU ratio | CPU per value ratio | p50 s | p99 s | RSS MiB | queue start/end |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(
            f"| {r.tags:,} | {r.offered:,.0f} | {r.bare_rate:,.0f} | {r.bare_cpu:.0%} | {r.rows_rate:,.0f} | "
            f"{ratio(r.rows_rate, r.bare_rate):.2f} | {r.cpu:.0%} | {ratio(r.cpu, r.bare_cpu):.2f} | "
            f"{per_value(r.cpu, r.notif_rate, r.bare_cpu, r.bare_rate):.2f} | {r.p50:.2f} | {r.p99:.2f} | "
            f"{r.rss:.0f} | {r.queue_start:,.0f}/{r.queue_end:,.0f} |"
        )
    print(
        "\n| tags x 10 Hz | load server CPU (bare / scraper phase) | PostgreSQL CPU | machine busy of 200 % "
        "(bare / scraper phase) | batched bare client/s | its CPU | scraper CPU / batched bare "
        "| per value |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(
            f"| {r.tags:,} | {r.bare_server_cpu:.0%} / {r.server_cpu:.0%} | {r.postgres_cpu:.0%} | "
            f"{r.bare_machine:.0%} / {r.machine:.0%} | {r.batched_rate:,.0f} | {r.batched_cpu:.0%} | "
            f"{ratio(r.cpu, r.batched_cpu):.2f} | {per_value(r.cpu, r.notif_rate, r.batched_cpu, r.batched_rate):.2f} |"
        )
    return 0


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def per_value(cpu: float, rate: float, ref_cpu: float, ref_rate: float) -> float:
    """CPU per received value against the reference's: fair when the two received different rates."""
    return ratio(ratio(cpu, rate), ratio(ref_cpu, ref_rate))


def print_step(r: StepResult) -> None:
    print(
        f"{r.tags} tags x {HZ:.0f} Hz: bare {r.bare_rate:,.0f}/s at {r.bare_cpu:.0%} CPU "
        f"(server {r.bare_server_cpu:.0%}, machine {r.bare_machine:.0%}); "
        f"batched bare {r.batched_rate:,.0f}/s at {r.batched_cpu:.0%}; "
        f"scraper stored {r.rows_rate:,.0f}/s (received {r.notif_rate:,.0f}/s) at {r.cpu:.0%} CPU "
        f"(server {r.server_cpu:.0%}, PostgreSQL {r.postgres_cpu:.0%}, machine {r.machine:.0%}), {r.rss:.0f} MiB, "
        f"p50 {r.p50:.2f} s p99 {r.p99:.2f} s, queue {r.queue_start:.0f} -> {r.queue_end:.0f}, "
        f"spool {r.spool_rows:.0f} rows; writer committed {r.written_rate:,.0f} rows/s, "
        f"{r.batch_mean:,.0f} rows per COPY, {r.backlog_batches:.0f} larger COPYs (backlog)",
        flush=True,
    )


def main(argv: list[str]) -> int:
    if argv and argv[0] == "serve":
        asyncio.run(serve(int(argv[1]), int(argv[2]), float(argv[3])))
        return 0
    if argv and argv[0] == "bare":
        asyncio.run(bare(argv[1], float(argv[2]), float(argv[3]), argv[4] == "1"))
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench.scraper_throughput")
    parser.add_argument("--smoke", action="store_true", help="one small step, a few seconds each")
    parser.add_argument("--steps", help="comma-separated tag counts instead of the default steps")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    # SIGTERM unwinds like Ctrl-C, so the child processes and the PostgreSQL cluster are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    steps = [int(n) for n in args.steps.split(",")] if args.steps else None
    return run(args.smoke, steps)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
