"""The framework-free ``/health`` + ``/metrics`` server, over real loopback sockets."""

from __future__ import annotations

import asyncio
import gzip
import json
import subprocess
import sys
import time
from typing import Any

import httpx
import pytest
from plantmon_common.health_http import MAX_HEADER_BYTES, LoopLag, serve_health
from plantmon_common.metrics import new_registry
from plantmon_dev.waiting import eventually
from prometheus_client import Counter

State = dict[str, Any]


def make_registry() -> Any:
    registry = new_registry("testsvc")
    Counter("plantmon_testsvc_things", "Things counted", registry=registry).inc(3)
    return registry


async def raw(port: int, request: bytes, *, eof: bool = True) -> tuple[int, dict[str, str], bytes]:
    """Send ``request`` as is (then end the sending side, unless not ``eof``); return the answer's
    status, headers and body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    if eof:
        writer.write_eof()
    answer = await asyncio.wait_for(reader.read(), timeout=20)
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    return int(status_line.split(" ")[1]), headers, body


async def test_health_follows_the_check_and_metrics_expose_the_registry() -> None:
    state: State = {"ok": True, "queue_depth": 7}
    registry = make_registry()
    async with (
        serve_health(
            "test", registry, lambda: (state["ok"], {"queue_depth": state["queue_depth"]}), "127.0.0.1", 0
        ) as server,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client,
    ):
        response = await client.get("/health")
        assert response.status_code == 200
        body = response.json()
        assert {k: v for k, v in body.items() if not k.startswith("loop_lag")} == {"status": "ok", "queue_depth": 7}
        assert 0 <= body["loop_lag_s"] <= body["loop_lag_max_s"] or body["loop_lag_s"] == body["loop_lag_max_s"] == 0
        state["ok"] = False
        response = await client.get("/health")
        assert response.status_code == 503
        assert response.json()["status"] == "degraded"

        metrics = await client.get("/metrics")
        assert metrics.status_code == 200
        assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
        assert "plantmon_testsvc_things_total 3.0" in metrics.text

        # Prometheus asks for OpenMetrics and gzip; both are honoured.
        openmetrics = await client.get(
            "/metrics/",
            headers={
                "Accept": "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
                "Accept-Encoding": "gzip",
            },
        )
        assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
        assert openmetrics.headers["content-encoding"] == "gzip"
        assert openmetrics.text.rstrip().endswith("# EOF")  # httpx decoded the gzip body


async def test_health_reports_how_long_the_event_loop_was_held() -> None:
    """A stall of the loop shows in ``/health`` as the last minute's worst lag, and goes to the hook."""
    seen: list[float] = []
    async with (
        serve_health("test", make_registry(), lambda: (True, {}), "127.0.0.1", 0, on_loop_lag=seen.append) as server,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client,
    ):
        await eventually(lambda: len(seen) >= 1, what="a first loop probe")
        time.sleep(0.3)  # the stall under test: hold the event loop
        await eventually(lambda: max(seen) >= 0.25, what="the probe that saw the stall")
        body = (await client.get("/health")).json()
    assert body["loop_lag_max_s"] >= 0.25
    assert body["loop_lag_s"] <= body["loop_lag_max_s"]


def test_loop_lag_keeps_the_worst_of_the_last_minute_only() -> None:
    lag = LoopLag()
    lag.record(0.0, 0.5)
    lag.record(30.0, 0.1)
    assert (lag.last, lag.recent_max) == (0.1, 0.5)
    lag.record(61.0, 0.05)
    assert lag.recent_max == 0.1
    lag.record(62.0, 0.2)
    assert lag.recent_max == 0.2
    lag.record(200.0, 0.0)
    assert (lag.last, lag.recent_max) == (0.0, 0.0)


async def test_bad_requests_get_a_status_and_a_reason() -> None:
    async with serve_health("test", make_registry(), lambda: (True, {}), "127.0.0.1", 0) as server:
        port = server.port
        status, headers, body = await raw(port, b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == 404
        assert "/health and /metrics" in json.loads(body)["detail"]

        status, headers, body = await raw(port, b"POST /health HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
        assert status == 405
        assert headers["allow"] == "GET, HEAD"

        status, _, body = await raw(port, b"GARBAGE\r\n\r\n")
        assert status == 400
        assert json.loads(body)["detail"] == "malformed request line"

        status, _, body = await raw(port, b"GET /health HTTP/1.1\r\nno colon here\r\n\r\n")
        assert status == 400
        assert json.loads(body)["detail"] == "malformed header line"

        status, _, _ = await raw(port, b"GET /health HTTP/1.1\r\n" + b"X-Pad: " + b"a" * MAX_HEADER_BYTES + b"\r\n\r\n")
        assert status == 431

        status, _, _ = await raw(port, b"GET /health HTTP/1.1\r\nHost: x\r\n")  # ends before the blank line
        assert status == 400

        status, headers, body = await raw(port, b"HEAD /health HTTP/1.1\r\n\r\n")
        assert status == 200
        assert body == b""
        assert int(headers["content-length"]) > 0

        # The server still answers after all of that.
        status, headers, body = await raw(port, b"GET /metrics HTTP/1.0\r\nAccept-Encoding: gzip\r\n\r\n")
        assert status == 200
        assert b"plantmon_testsvc_things_total" in gzip.decompress(body)


async def test_an_error_answer_survives_an_unread_request_body() -> None:
    """A POST with a large body gets its 405, not a connection reset (the server lingers)."""
    async with serve_health("test", make_registry(), lambda: (True, {}), "127.0.0.1", 0) as server:
        body = b"x" * (4 * 1024 * 1024)
        request = b"POST /metrics HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        for _ in range(3):
            status, _, answer = await raw(server.port, request)
            assert status == 405
            assert json.loads(answer)["detail"] == "POST is not allowed"


async def test_a_request_that_never_ends_gets_408() -> None:
    async with serve_health(
        "test", make_registry(), lambda: (True, {}), "127.0.0.1", 0, request_timeout_s=0.5
    ) as server:
        status, _, body = await raw(server.port, b"GET /health HTTP/1.1\r\nHost: x\r\n", eof=False)
        assert status == 408
        assert json.loads(body)["detail"] == "request not received in time"


async def test_a_failing_health_check_is_a_500_not_a_dead_server() -> None:
    calls = 0

    def check() -> tuple[bool, dict[str, Any]]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("broken check")
        return True, {}

    async with serve_health("test", make_registry(), check, "127.0.0.1", 0) as server:
        status, _, body = await raw(server.port, b"GET /health HTTP/1.1\r\n\r\n")
        assert status == 500
        assert json.loads(body)["detail"] == "internal error"
        status, _, _ = await raw(server.port, b"GET /health HTTP/1.1\r\n\r\n")
        assert status == 200


async def test_a_bound_port_is_refused_with_the_os_error() -> None:
    async with serve_health("test", make_registry(), lambda: (True, {}), "127.0.0.1", 0) as server:
        with pytest.raises(OSError):
            async with serve_health("second", make_registry(), lambda: (True, {}), "127.0.0.1", server.port):
                pass


def test_services_without_an_api_do_not_import_the_web_framework() -> None:
    """The OPC UA server and the scraper serve /health and /metrics without FastAPI or uvicorn."""
    probe = (
        "import sys, plantmon_scraper.__main__, plantmon_scraper.service, plantmon_opc_server.__main__, "
        "plantmon_opc_server.server; "
        "print(sorted(m for m in ('fastapi', 'starlette', 'uvicorn') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"
