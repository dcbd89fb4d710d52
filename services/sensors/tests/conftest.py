"""Fixtures for the sensor service: fast settings and a real uvicorn server on a free port.

librosa's numba kernels are compiled once per test session into a persistent cache under
``.data/test-cache/numba`` (about 30 s the first time on this machine, a few seconds later) by the
``warm_librosa`` fixture, so every service the tests start has its audio features ready at once.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from plantmon_common.metrics import new_registry
from plantmon_common.service import serve_http
from plantmon_sensors.api import create_app
from plantmon_sensors.settings import SensorSettings

from services.sensors.tests.sensors_support import ADMIN_TOKEN, RunningService

NUMBA_CACHE = Path(__file__).resolve().parents[3] / ".data" / "test-cache" / "numba"
os.environ.setdefault("NUMBA_CACHE_DIR", str(NUMBA_CACHE))


@pytest.fixture(scope="session")
def warm_librosa() -> None:
    """librosa loaded once for the session (blocking), so services start with audio ready."""
    from plantmon_sensors.features import configure_numba_cache, warm_up_librosa

    configure_numba_cache(Path(os.environ["NUMBA_CACHE_DIR"]))
    warm_up_librosa()


FAST = {
    "temperature_interval_s": 0.05,
    "rpm_interval_s": 0.05,
    "voltage_interval_s": 0.05,
    "audio_interval_s": 0.1,
}


@pytest.fixture
def make_settings(monkeypatch: pytest.MonkeyPatch) -> Callable[..., SensorSettings]:
    """Settings with fast sample rates, isolated from the developer's SENSORS_* variables."""
    import os

    for key in list(os.environ):
        if key.startswith("SENSORS_"):
            monkeypatch.delenv(key)

    def make(**overrides: Any) -> SensorSettings:
        # Features in a thread: librosa is warm in this process already (warm_librosa), so every
        # service starts with audio ready; the worker process has its own tests.
        defaults = {"http_host": "127.0.0.1", "http_port": 0, "numba_cache_dir": NUMBA_CACHE, **FAST}
        defaults["audio"] = {"features_in": "thread"}
        return SensorSettings(**{**defaults, **overrides})

    return make


@pytest.fixture
def start_service(make_settings: Callable[..., SensorSettings], warm_librosa: None) -> Callable[..., Any]:
    """``async with start_service(**settings) as svc``: uvicorn on 127.0.0.1 and a free port."""
    import contextlib

    @contextlib.asynccontextmanager
    async def start(**overrides: Any) -> AsyncIterator[RunningService]:
        app = create_app(make_settings(**overrides), new_registry("sensors", with_process=False))
        async with (
            serve_http(app, "127.0.0.1", 0) as server,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=5.0) as client,
        ):
            yield RunningService(app, client)

    return start


@pytest.fixture
async def service(start_service: Callable[..., Any]) -> AsyncIterator[RunningService]:
    """A running service with an admin token."""
    async with start_service(admin_token=ADMIN_TOKEN) as svc:
        yield svc
