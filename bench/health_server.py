"""``/health`` + ``/metrics``: plantmon's asyncio server against prometheus-client's WSGI server.

The OPC UA server and the scraper serve two read-only routes. ``plantmon_common.health_http``
does it on asyncio's streams in the service's own loop; the stock alternative is
prometheus-client's exposition (``make_wsgi_app`` on its ``ThreadingWSGIServer``, the server
``start_wsgi_server`` runs) in a thread, with a small WSGI dispatcher for ``/health``. Each
variant runs in a process of its own with the service's metrics registry, answers the same
requests (``/metrics`` plain and gzip'd, ``/health``), and then reports its RSS (now and peak).
The floor, measured in the same run, is the same process serving nothing.

It also sends each variant the bad requests the services must answer with a reason (a POST, a
malformed request line, an oversized header, a request that never ends) and prints what came
back, since "equal memory" only decides between servers that behave the same.

``python -m bench.health_server [--smoke]``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

REQUESTS = 600
SMOKE_REQUESTS = 60

CHILD = r"""
import asyncio, gzip, json, sys, threading
from wsgiref.simple_server import WSGIRequestHandler, make_server

from plantmon_common.metrics import new_registry
from prometheus_client import Counter, Gauge, Histogram

variant = sys.argv[1]
registry = new_registry("benchsvc")
for i in range(40):  # about the scraper's number of series
    Counter(f"plantmon_benchsvc_things_{i}", "Things", registry=registry).inc(i)
Histogram("plantmon_benchsvc_latency_seconds", "Latency", registry=registry).observe(0.1)
Gauge("plantmon_benchsvc_depth", "Depth", registry=registry).set(3)


def health():
    return True, {"queue_depth": 0}


async def main():
    stop = asyncio.Event()
    if variant == "asyncio":
        from plantmon_common.health_http import serve_health

        async with serve_health("bench", registry, health, "127.0.0.1", 0) as server:
            print("ready", server.port, flush=True)
            await stop.wait()
    elif variant == "wsgi":
        from prometheus_client import make_wsgi_app
        from prometheus_client.exposition import ThreadingWSGIServer

        metrics_app = make_wsgi_app(registry)

        def app(environ, start_response):
            path = environ.get("PATH_INFO", "")
            if path == "/health":
                ok, details = health()
                body = json.dumps({"status": "ok" if ok else "degraded", **details}).encode()
                start_response("200 OK" if ok else "503 Service Unavailable", [("Content-Type", "application/json")])
                return [body]
            if path in ("/metrics", "/metrics/"):
                return metrics_app(environ, start_response)
            start_response("404 Not Found", [("Content-Type", "application/json")])
            return [b'{"detail": "no route"}']

        class Quiet(WSGIRequestHandler):
            def log_message(self, format, *args):
                pass

        httpd = make_server("127.0.0.1", 0, app, ThreadingWSGIServer, handler_class=Quiet)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        print("ready", httpd.server_port, flush=True)
        await stop.wait()
    else:
        print("ready 0", flush=True)
        await stop.wait()


asyncio.run(main())
"""


def rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of ``pid`` in KiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0])
    return fields["VmRSS"], fields["VmHWM"]


@contextlib.contextmanager
def child(variant: str) -> Iterator[tuple[subprocess.Popen[str], int]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, variant], stdout=subprocess.PIPE, text=True, env={**os.environ}
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().split()
        if not line or line[0] != "ready":
            raise RuntimeError(f"the {variant} child did not start")
        yield proc, int(line[1])
    finally:
        proc.kill()
        proc.wait(timeout=30)


def raw(port: int, request: bytes, *, end: bool = True, timeout: float = 15.0) -> str:
    """Send ``request``; the status line and content type of the answer (or what happened instead)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        if end:
            sock.shutdown(socket.SHUT_WR)
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except TimeoutError:
            return f"no answer within {timeout:.0f} s" if not data else "answer cut off"
        except ConnectionResetError:
            return "connection reset" if not data else "reset after a partial answer"
    if not data:
        return "closed without an answer"
    if not data.startswith(b"HTTP/"):
        return "a bare HTML page, no status line"
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    ctype = next((h.split(":", 1)[1].strip() for h in head[1:] if h.lower().startswith("content-type:")), "-")
    return f"{head[0].split(' ', 1)[1]} ({ctype.split(';')[0]})"


BAD_REQUESTS: list[tuple[str, bytes, bool]] = [
    ("POST /health", b"POST /health HTTP/1.1\r\nContent-Length: 0\r\n\r\n", True),
    ("malformed request line", b"GARBAGE\r\n\r\n", True),
    ("20 KiB header", b"GET /health HTTP/1.1\r\nX-Pad: " + b"a" * 20_000 + b"\r\n\r\n", True),
    ("unknown path", b"GET /nothing HTTP/1.1\r\n\r\n", True),
]


@dataclass
class Result:
    idle: tuple[int, int]  # (RSS, peak RSS) in KiB before the requests
    busy: tuple[int, int]  # and after them
    elapsed: float
    behaviour: dict[str, str]


def measure(variant: str, requests: int, timeout: float) -> Result:
    with child(variant) as (proc, port):
        time.sleep(0.5)  # let the child settle before its first reading (not a synchronisation)
        idle = rss_kib(proc.pid)
        elapsed = 0.0
        behaviour: dict[str, str] = {}
        if port:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
                started = time.perf_counter()
                for i in range(requests):
                    headers = {"Accept-Encoding": "gzip"} if i % 3 == 1 else {}
                    path = "/health" if i % 3 == 2 else "/metrics"
                    response = client.get(path, headers=headers)
                    if response.status_code != 200:
                        raise RuntimeError(f"{variant}: {path} answered {response.status_code}")
                elapsed = time.perf_counter() - started
            for name, request, end in BAD_REQUESTS:
                behaviour[name] = raw(port, request, end=end)
            behaviour["request never ends"] = raw(port, b"GET /health HTTP/1.1\r\n", end=False, timeout=timeout)
        busy = rss_kib(proc.pid)
    return Result(idle, busy, elapsed, behaviour)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--smoke", action="store_true", help="a short run (CI)")
    args = parser.parse_args(argv)
    requests = SMOKE_REQUESTS if args.smoke else REQUESTS
    # asyncio's server answers a stalled request with 408 after 10 s; wait a little longer.
    timeout = 12.0
    results = {variant: measure(variant, requests, timeout) for variant in ("floor", "asyncio", "wsgi")}
    floor_rss = results["floor"].busy[0]
    print(f"{requests} requests each (/metrics, gzip'd /metrics, /health), RSS in MiB")
    print(f"{'variant':10} {'idle RSS':>9} {'after':>7} {'peak':>7} {'over floor':>11} {'ms/request':>11}")
    for variant, r in results.items():
        per = 1000 * r.elapsed / requests if r.elapsed else float("nan")
        print(
            f"{variant:10} {r.idle[0] / 1024:9.1f} {r.busy[0] / 1024:7.1f} {r.busy[1] / 1024:7.1f}"
            f" {(r.busy[0] - floor_rss) / 1024:+11.1f} {per:11.2f}"
        )
    print("answers to bad requests:")
    for name in [n for n, _, _ in BAD_REQUESTS] + ["request never ends"]:
        a, w = results["asyncio"].behaviour[name], results["wsgi"].behaviour[name]
        print(f"  {name:24} asyncio: {a:50} wsgi: {w}")
    extra = (results["wsgi"].busy[0] - results["asyncio"].busy[0]) / 1024
    print(f"prometheus-client's WSGI server in a thread: {extra:+.1f} MiB RSS against plantmon's asyncio server")
    return 0


if __name__ == "__main__":
    sys.exit(main())
