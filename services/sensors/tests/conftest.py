"""Fixtures for the sensor service: fast settings and a real uvicorn server on a free port.

The audio feature tables (librosa's mel filter bank, scipy's DCT) of the default configuration are
built once per test session by the ``audio_tables`` fixture, by the same child process the service
uses, into the services' cache folder ``.data/test-cache/numba/audio-tables`` (numba's cache for
that child beside them): a few seconds the first time, nothing once the tables are there, so every
service the tests start has its audio features ready at once.
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

from services.sensors.tests.sensors_support import ADMIN_TOKEN, AUDIO_TABLES, NUMBA_CACHE, RunningService

os.environ.setdefault("NUMBA_CACHE_DIR", str(NUMBA_CACHE))


@pytest.fixture(scope="session")
def audio_tables() -> Path:
    """The default configuration's tables in the services' cache folder (built once, blocking)."""
    from plantmon_sensors.features import FeatureExtractor

    extractor = FeatureExtractor(tables_dir=AUDIO_TABLES, numba_cache_dir=NUMBA_CACHE)
    assert extractor.wait_ready(timeout=900), extractor.warm_up_error
    return AUDIO_TABLES


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
        # The cache folder holds the default configuration's tables (audio_tables): audio is ready at once.
        defaults = {"http_host": "127.0.0.1", "http_port": 0, "numba_cache_dir": NUMBA_CACHE, **FAST}
        return SensorSettings(**{**defaults, **overrides})

    return make


@pytest.fixture
def start_service(make_settings: Callable[..., SensorSettings], audio_tables: Path) -> Callable[..., Any]:
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
