"""Helpers shared by the sensor service's tests."""

from __future__ import annotations

import contextlib
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

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
