"""``/health`` and ``/metrics`` on asyncio's own streams, for services that serve nothing else.

Hand-written, measured by ``bench.health_server`` (docs/benchmarks.md, *The health server*):
the OPC UA server and the scraper need two read-only routes, not a web framework: FastAPI,
Starlette and uvicorn cost about 11 MiB of RSS per process to import, a tenth of the scraper's
budget. prometheus-client's own WSGI server in a thread costs about 0.5 MiB more than this one
and answers a POST or a 20 KiB header with 200, a malformed request line with an HTML page and a
stalled request with nothing, so matching this behaviour would take as much code as this.

This server speaks the HTTP/1.1 subset those two routes need and answers everything else with
a clear status: ``GET``/``HEAD`` only (405 with ``Allow`` otherwise), 404 for other
paths, 400 for a malformed request line or header, 431 for headers over 16 KiB, 408 when the
request does not arrive within 10 s (nor is an answer left unread for longer). Every response
closes its connection (Prometheus and the compose health checks open one per scrape); after an
error the server waits up to 2 s for the client to close first, so an unread request body does
not turn the answer into a connection reset. ``/metrics`` honours the scraper's ``Accept``
header (Prometheus text or OpenMetrics) and ``Accept-Encoding: gzip`` like prometheus-client's
own exposition; ``/health`` is JSON, 200 when healthy and 503 otherwise, like
:func:`plantmon_common.service.health_app`, and says how late the event loop runs
(``loop_lag_s``: the last probe, ``loop_lag_max_s``: the worst of the last minute), since every
request of the service waits that long.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from http import HTTPStatus
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

logger = logging.getLogger(__name__)

HealthCheck = Callable[[], tuple[bool, dict[str, Any]]]
"""``() -> (healthy, details)``: the details are the JSON body of ``/health``."""

MAX_HEADER_BYTES = 16 * 1024
MAX_HEADERS = 100
REQUEST_TIMEOUT_S = 10.0
LINGER_S = 2.0


LOOP_PROBE_INTERVAL_S = 0.1
LOOP_LAG_WINDOW_S = 60.0


class LoopLag:
    """How late a short timer of the running event loop fires: the time other work held the loop."""

    def __init__(self, interval_s: float = LOOP_PROBE_INTERVAL_S, on_lag: Callable[[float], None] | None = None):
        self.interval_s = interval_s
        self.on_lag = on_lag
        self.last = 0.0
        self._recent: deque[tuple[float, float]] = deque()  # (loop time, lag), a falling maximum

    @property
    def recent_max(self) -> float:
        """The longest lag of the last :data:`LOOP_LAG_WINDOW_S` seconds."""
        return self._recent[0][1] if self._recent else 0.0

    def record(self, now: float, lag: float) -> None:
        self.last = lag
        recent = self._recent
        while recent and recent[-1][1] <= lag:
            recent.pop()
        recent.append((now, lag))
        while recent[0][0] < now - LOOP_LAG_WINDOW_S:
            recent.popleft()
        if self.on_lag is not None:
            self.on_lag(lag)

    async def watch(self) -> None:
        """Probe until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await asyncio.sleep(self.interval_s)
            now = loop.time()
            self.record(now, max(0.0, now - started - self.interval_s))


class BadRequest(Exception):
    """A request this server refuses, with the status and the reason sent back."""

    def __init__(self, status: HTTPStatus, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class HealthServer:
    """The listening server; :attr:`port` is the bound port (useful with port 0)."""

    def __init__(
        self, title: str, registry: CollectorRegistry, health: HealthCheck, request_timeout_s: float = REQUEST_TIMEOUT_S
    ) -> None:
        self.title = title
        self.request_timeout_s = request_timeout_s
        self.registry = registry
        self.health = health
        self.loop_lag = LoopLag()
        self.server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        if self.server is None or not self.server.sockets:
            raise RuntimeError("server is not listening")
        return int(self.server.sockets[0].getsockname()[1])

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One request, one response, then the connection is closed."""
        head_only = False
        try:
            try:
                method, path, headers = await asyncio.wait_for(read_request(reader), self.request_timeout_s)
                head_only = method == "HEAD"
                status, content_type, body, extra = self.respond(method, path, headers)
            except TimeoutError:
                status, content_type, body, extra = error(HTTPStatus.REQUEST_TIMEOUT, "request not received in time")
            except BadRequest as exc:
                status, content_type, body, extra = error(exc.status, exc.reason)
            except Exception:
                logger.exception("health/metrics request failed")
                status, content_type, body, extra = error(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error")
            lines = [
                f"HTTP/1.1 {status.value} {status.phrase}",
                f"Content-Type: {content_type}",
                f"Content-Length: {len(body)}",
                "Connection: close",
                *(f"{name}: {value}" for name, value in extra.items()),
            ]
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            if not head_only:
                writer.write(body)
            # A client that never reads its answer is not waited for longer than for its request.
            await asyncio.wait_for(writer.drain(), self.request_timeout_s)
            if status.value >= 400 and writer.can_write_eof():
                # Lingering close: the request may have bytes we did not read (a body, the rest of
                # an oversized header); closing at once could reset the connection before the
                # client has read the error. Say we are done and let it close first.
                writer.write_eof()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(drain_input(reader), LINGER_S)
        except TimeoutError:
            writer.transport.abort()
        except (ConnectionError, OSError):
            pass  # the client went away; nothing to answer
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), LINGER_S)

    def respond(self, method: str, path: str, headers: dict[str, str]) -> tuple[HTTPStatus, str, bytes, dict[str, str]]:
        route = path.split("?", 1)[0]
        if route not in ("/health", "/metrics", "/metrics/"):
            return error(HTTPStatus.NOT_FOUND, f"no route {route!r}; this service serves /health and /metrics")
        if method not in ("GET", "HEAD"):
            status, content_type, body, extra = error(HTTPStatus.METHOD_NOT_ALLOWED, f"{method} is not allowed")
            return status, content_type, body, {**extra, "Allow": "GET, HEAD"}
        if route == "/health":
            ok, details = self.health()
            lag = {"loop_lag_s": round(self.loop_lag.last, 4), "loop_lag_max_s": round(self.loop_lag.recent_max, 4)}
            body = json.dumps({"status": "ok" if ok else "degraded", **details, **lag}, default=str).encode()
            return (HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE), "application/json", body, {}
        encoder, content_type = choose_encoder(headers.get("accept", ""))
        body = encoder(self.registry)
        if "gzip" in headers.get("accept-encoding", ""):
            return HTTPStatus.OK, content_type, gzip.compress(body), {"Content-Encoding": "gzip"}
        return HTTPStatus.OK, content_type, body, {}


async def drain_input(reader: asyncio.StreamReader) -> None:
    """Read and discard until the client closes (bounded by the caller's timeout)."""
    while await reader.read(65536):
        pass


def error(status: HTTPStatus, reason: str) -> tuple[HTTPStatus, str, bytes, dict[str, str]]:
    """A JSON error body: ``{"detail": reason}`` as FastAPI writes it."""
    return status, "application/json", json.dumps({"detail": reason}).encode(), {}


async def read_request(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str]]:
    """Method, target and lower-cased headers of one request (its body, if any, is not read)."""
    total = 0
    lines: list[bytes] = []
    while True:
        try:
            line = await reader.readuntil(b"\n")
        except asyncio.IncompleteReadError as exc:
            raise BadRequest(HTTPStatus.BAD_REQUEST, "connection closed before the request ended") from exc
        except asyncio.LimitOverrunError as exc:
            raise BadRequest(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "header line too long") from exc
        total += len(line)
        if total > MAX_HEADER_BYTES or len(lines) > MAX_HEADERS:
            raise BadRequest(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "request headers too large")
        line = line.rstrip(b"\r\n")
        if not line:
            if lines:
                break
            continue  # RFC 9112 2.2: ignore empty lines before the request line
        lines.append(line)
    try:
        request_line = lines[0].decode("ascii")
        method, target, version = request_line.split(" ")
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest(HTTPStatus.BAD_REQUEST, "malformed request line") from exc
    if not version.startswith("HTTP/1.") or not target.startswith("/") or not method.isalpha():
        raise BadRequest(HTTPStatus.BAD_REQUEST, "malformed request line")
    headers: dict[str, str] = {}
    for raw in lines[1:]:
        name, sep, value = raw.decode("latin-1").partition(":")
        if not sep or not name or name != name.strip():
            raise BadRequest(HTTPStatus.BAD_REQUEST, "malformed header line")
        headers[name.lower()] = value.strip()
    return method, target, headers


@contextlib.asynccontextmanager
async def serve_health(
    title: str,
    registry: CollectorRegistry,
    health: HealthCheck,
    host: str,
    port: int,
    *,
    request_timeout_s: float = REQUEST_TIMEOUT_S,
    on_loop_lag: Callable[[float], None] | None = None,
) -> AsyncIterator[HealthServer]:
    """Serve ``/health`` and ``/metrics`` on ``host:port`` for the duration of the block, and probe
    the event loop's lag meanwhile (``on_loop_lag`` gets every probe, e.g. for a histogram)."""
    server = HealthServer(title, registry, health, request_timeout_s)
    server.loop_lag.on_lag = on_loop_lag
    server.server = await asyncio.start_server(server.handle, host, port, limit=MAX_HEADER_BYTES)
    logger.info("HTTP listening", extra={"service": title, "host": host, "port": server.port})
    probe = asyncio.create_task(server.loop_lag.watch(), name="loop-lag")
    try:
        yield server
    finally:
        probe.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await probe
        server.server.close()
        await server.server.wait_closed()
