"""Helpers shared by the sensor service's tests."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

ADMIN_TOKEN = "test-admin-token-1"
# The services' cache folder in the tests (SENSORS_NUMBA_CACHE_DIR): numba's cache for the child that
# runs librosa, and the audio feature tables it builds, kept between sessions.
NUMBA_CACHE = Path(__file__).resolve().parents[3] / ".data" / "test-cache" / "numba"
AUDIO_TABLES = NUMBA_CACHE / "audio-tables"


class RunningService:
    """A started sensor service and an HTTP client for it."""

    def __init__(self, app: FastAPI, client: httpx.AsyncClient) -> None:
        self.app = app
        self.client = client


async def until(probe: Callable[[], Awaitable[Any]], deadline_s: float = 10.0) -> Any:
    """Poll ``probe`` until it returns something truthy; fail after ``deadline_s``."""
    end = time.monotonic() + deadline_s
    while True:
        result = await probe()
        if result:
            return result
        assert time.monotonic() < end, "condition not reached in time"
        await asyncio.sleep(0.05)


@contextlib.contextmanager
def service_process(command: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """The service as a child process logging to ``log``; at the end it must stop on SIGTERM with
    status 0 (it is killed if the body failed or it does not stop within 20 s)."""
    with log.open("w") as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
