"""Scraper throughput against its ceilings, all in one run.

``python -m bench.scraper_throughput [--smoke]``

1. OPC UA ceiling: a bare asyncua client (subscribe every tag, count and discard) against a
   load server publishing N tags x 10 Hz, N stepped 1,000 / 2,000 / 3,000; server and client
   each in their own process.
2. The scraper end to end (``python -m plantmon_scraper`` against the same server and a real
   PostgreSQL with the real migrations) at each step: rows/s stored, p50/p99 from
   SourceTimestamp to commit, CPU and RSS, queue depth at the start and the end of the window.
3. Database ceiling: raw binary COPY of the same rows into ``samples``.
4. The scraper's writer alone: replay of a spool of the same rows (COPY into staging and
   ``INSERT ... ON CONFLICT DO NOTHING``), rows/s and the ratio to raw COPY.

CPU and RSS of the bare client and the scraper are read from ``/proc`` in the same way. The
OPC UA leg uses SecurityPolicy None for both clients (the load is the same for both; the
production endpoint encrypts). The source-to-commit latency is observed by polling a few tags
every 50 ms, so it is pessimistic by up to 50 ms. The scraper's backfill is off (the load server
keeps no history).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
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


async def serve(port: int, tags: int, hz: float) -> None:
    """Objects/Plant/Load/Tag_i, every tag written ``hz`` times a second with a new SourceTimestamp."""
    from asyncua import Server, ua

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
        for i, node in enumerate(nodes):
            await server.write_attribute_value(
                node,
                ua.DataValue(ua.Variant(float(k + i), ua.VariantType.Double), SourceTimestamp=now, ServerTimestamp=now),
            )
        tick += period
        delay = tick - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            tick = time.monotonic()  # saturated: publish as fast as it can
            await asyncio.sleep(0)
    await server.stop()


# -- the bare client (its own process) ---------------------------------------------------------


async def bare(url: str, seconds: float) -> None:
    """Subscribe every variable below Plant/Load, count notifications, discard them."""
    from asyncua import Client, ua

    count = 0

    class Handler:
        def datachange_notification(self, node: object, val: object, data: object) -> None:
            nonlocal count
            count += 1

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
        sub = await client.create_subscription(params, Handler())
        for start in range(0, len(nodes), 500):
            await sub.subscribe_data_change(nodes[start : start + 500], queuesize=100, sampling_interval=0)
        print("SUBSCRIBED", flush=True)
        await asyncio.sleep(seconds)
        print(json.dumps({"notifications": count}), flush=True)


# -- measuring a process from the outside -----------------------------------------------------


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


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
    bare_rate: float
    bare_cpu: float
    bare_rss: float
    rows_rate: float = 0.0
    notif_rate: float = 0.0
    p50: float = float("nan")
    p99: float = float("nan")
    cpu: float = 0.0
    rss: float = 0.0
    queue_start: float = 0.0
    queue_end: float = 0.0


def measure_bare(url: str, warmup: float, window: float) -> tuple[float, float, float]:
    proc = start(["-m", "bench.scraper_throughput", "bare", url, str(warmup + window)])
    try:
        wait_line(proc, "SUBSCRIBED", 180)
        time.sleep(warmup)
        cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
        line = wait_line(proc, "{", warmup + window + 60)
        # The process counted from subscribing; rate over its whole life after warmup is close
        # enough, but CPU is measured over the window only.
        total = json.loads(line)["notifications"]
        rss = rss_mib(proc.pid)
        cpu = (cpu_seconds(proc.pid) - cpu0) / (time.monotonic() - t0)
    finally:
        stop(proc)
    return total / (warmup + window), cpu, rss


def scraper_metrics(port: int) -> dict[str, float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10, trust_env=False, follow_redirects=True).text
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def measure_scraper(
    url: str, db_env: dict[str, str], work: Path, tags: int, warmup: float, window: float
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
        # Browsing thousands of tags with their metadata takes minutes on a loaded server.
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
        m0, cpu0, t0 = scraper_metrics(port), cpu_seconds(proc.pid), time.monotonic()
        latencies = poll_latency(db_env, window)
        m1, cpu1, t1 = scraper_metrics(port), cpu_seconds(proc.pid), time.monotonic()
        rss = rss_mib(proc.pid)
    finally:
        stop(proc)
    elapsed = t1 - t0
    return {
        "rows_rate": (m1["plantmon_scraper_rows_written_total"] - m0["plantmon_scraper_rows_written_total"]) / elapsed,
        "notif_rate": (m1["plantmon_scraper_notifications_total"] - m0["plantmon_scraper_notifications_total"])
        / elapsed,
        "cpu": (cpu1 - cpu0) / elapsed,
        "rss": rss,
        "queue_start": m0["plantmon_scraper_queue_depth"],
        "queue_end": m1["plantmon_scraper_queue_depth"],
        "p50": statistics.median(latencies) if latencies else float("nan"),
        "p99": statistics.quantiles(latencies, n=100)[98]
        if len(latencies) >= 100
        else max(latencies, default=float("nan")),
    }


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


def run(smoke: bool) -> int:
    from plantmon_db.migrate import migrate
    from plantmon_dev.postgres import ephemeral_cluster

    steps = [100] if smoke else [1000, 2000, 3000]
    warmup, window = (2.0, 4.0) if smoke else (5.0, 20.0)
    copy_rows, replay_rows = (20_000, 20_000) if smoke else (500_000, 300_000)
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
            try:
                wait_line(server, "READY", 300)
                bare_rate, bare_cpu, bare_rss = measure_bare(url, warmup, window)
                result = StepResult(tags, tags * HZ, bare_rate, bare_cpu, bare_rss)
                m = measure_scraper(url, writer_env, work, tags, warmup, window)
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
        f"scraper writer (spool replay: COPY to staging + INSERT ON CONFLICT): {replay:,.0f} rows/s "
        f"= {replay / copy:.2f} x raw COPY (target >= 0.40)"
    )
    print(
        "\n| tags x 10 Hz | offered/s | bare client/s | bare CPU | scraper stored/s | stored/bare "
        "| scraper CPU | CPU ratio | p50 s | p99 s | RSS MiB | queue start/end |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(
            f"| {r.tags:,} | {r.offered:,.0f} | {r.bare_rate:,.0f} | {r.bare_cpu:.0%} | {r.rows_rate:,.0f} | "
            f"{r.rows_rate / r.bare_rate:.2f} | {r.cpu:.0%} | {r.cpu / r.bare_cpu:.2f} | {r.p50:.2f} | {r.p99:.2f} | "
            f"{r.rss:.0f} | {r.queue_start:,.0f}/{r.queue_end:,.0f} |"
        )
    return 0


def print_step(r: StepResult) -> None:
    print(
        f"{r.tags} tags x {HZ:.0f} Hz: bare {r.bare_rate:,.0f}/s at {r.bare_cpu:.0%} CPU ({r.bare_rss:.0f} MiB); "
        f"scraper stored {r.rows_rate:,.0f}/s (received {r.notif_rate:,.0f}/s) at {r.cpu:.0%} CPU, {r.rss:.0f} MiB, "
        f"p50 {r.p50:.2f} s p99 {r.p99:.2f} s, queue {r.queue_start:.0f} -> {r.queue_end:.0f}",
        flush=True,
    )


def main(argv: list[str]) -> int:
    if argv and argv[0] == "serve":
        asyncio.run(serve(int(argv[1]), int(argv[2]), float(argv[3])))
        return 0
    if argv and argv[0] == "bare":
        asyncio.run(bare(argv[1], float(argv[2])))
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench.scraper_throughput")
    parser.add_argument("--smoke", action="store_true", help="one small step, a few seconds each")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    # SIGTERM unwinds like Ctrl-C, so the child processes and the PostgreSQL cluster are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    return run(args.smoke)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
