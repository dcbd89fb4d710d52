"""Process plumbing every service shares: the ``/health`` + ``/metrics`` HTTP app, an embedded
uvicorn server that does not steal the process's signal handlers, and graceful stop on SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, make_asgi_app

from plantmon_common.health_http import HealthCheck
from plantmon_common.lifecycle import run_service, wait_or_stop

__all__ = ["EmbeddedServer", "HealthCheck", "health_app", "run_service", "serve_http", "wait_or_stop"]

logger = logging.getLogger(__name__)


def health_app(title: str, registry: CollectorRegistry, health: HealthCheck) -> FastAPI:
    """A FastAPI app with ``/health`` (200 when healthy, 503 otherwise) and ``/metrics``."""
    app = FastAPI(title=title, docs_url=None, redoc_url=None)

    @app.get("/health", summary="Liveness and readiness of this service")
    def get_health() -> JSONResponse:
        ok, details = health()
        return JSONResponse({"status": "ok" if ok else "degraded", **details}, status_code=200 if ok else 503)

    app.mount("/metrics", make_asgi_app(registry))
    return app


class EmbeddedServer(uvicorn.Server):
    """uvicorn inside our own event loop; signals stay with :func:`run_service`."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    @property
    def port(self) -> int:
        """The bound port (useful when configured with port 0)."""
        for server in self.servers:
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        raise RuntimeError("server is not listening")


@contextlib.asynccontextmanager
async def serve_http(app: Any, host: str, port: int) -> AsyncIterator[EmbeddedServer]:
    """Serve ``app`` on ``host:port`` for the duration of the ``async with`` block."""
    config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False, lifespan="on")
    server = EmbeddedServer(config)
    task = asyncio.create_task(server.serve(), name=f"http:{port}")
    while not server.started:
        if task.done():
            task.result()  # raises the bind error
            raise RuntimeError("HTTP server stopped during start-up")
        await asyncio.sleep(0.01)
    logger.info("HTTP listening", extra={"host": host, "port": server.port})
    try:
        yield server
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task
