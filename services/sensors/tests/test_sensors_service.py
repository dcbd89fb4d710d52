"""Settings, modes, driver failures, and the process: start, serve, stop on SIGTERM."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import socket
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import httpx
import numpy as np
import pytest
from plantmon_common.tags import Quality, TagReading
from plantmon_dev.waiting import eventually, eventually_sync
from plantmon_sensors.catalog import SENSOR_BY_ID, SENSORS, SensorKind
from plantmon_sensors.devices import DeviceSet, adapt
from plantmon_sensors.domain import SnapshotStore, good_readings, utc_now
from plantmon_sensors.drivers import NoResponseError
from plantmon_sensors.sampler import Sampler
from plantmon_sensors.settings import SensorSettings
from plantmon_sensors.simulator import Simulation
from pydantic import ValidationError

from services.sensors.tests.sensors_support import service_process


def test_faults_come_from_a_comma_list_or_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENSORS_FAULTS", "overheating, sensor_stopped:audio")
    assert SensorSettings().faults == ["overheating", "sensor_stopped:audio"]
    monkeypatch.setenv("SENSORS_FAULTS", '["bearing_wear"]')
    assert SensorSettings().faults == ["bearing_wear"]
    monkeypatch.setenv("SENSORS_FAULTS", "meltdown")
    with pytest.raises(ValidationError, match="unknown fault"):
        SensorSettings()


def test_defaults_and_placeholder_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("SENSORS_"):
            monkeypatch.delenv(key)
    settings = SensorSettings()
    assert (settings.http_port, settings.mode, settings.seed, settings.admin_token) == (8080, "sim", 42, None)
    assert (settings.temperature_interval_s, settings.audio_interval_s) == (0.5, 1.0)
    monkeypatch.setenv("SENSORS_ADMIN_TOKEN", "changeme")
    with pytest.raises(ValidationError, match="placeholder"):
        SensorSettings()


async def test_hardware_mode_without_devices_serves_bad_tags_and_logs_each_missing_device_once(
    start_service: Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real libraries on a machine with no SPI, GPIO chip, I2C bus or audio input."""
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "unset")  # so that the variable is restored after the test
    monkeypatch.delenv("GPIOZERO_PIN_FACTORY")
    assert not os.path.exists("/dev/spidev0.0") and not os.path.exists("/dev/i2c-1")
    caplog.set_level("INFO", logger="plantmon_sensors")
    async with start_service(mode="hardware", retry_min_s=0.05, retry_max_s=0.2) as svc:

        async def every_tag_missing() -> bool:
            readings = (await svc.client.get("/api/v1/readings")).json()["readings"]
            return all(r["quality"] == "bad" and r["reason"].startswith("device missing") for r in readings)

        await eventually(every_tag_missing, timeout=10, what="every tag bad with a missing device")
        # Retries go on (every 0.2 s at most) while the log must keep one line per missing device.
        handles = {sid: cast(Any, d.driver).handle for sid, d in svc.app.state.service.devices.devices.items()}
        await eventually(
            lambda: all(handle.attempts >= 3 for handle in handles.values()),
            timeout=10,
            what=lambda: f"three attempts to open each device: { ({s: h.attempts for s, h in handles.items()}) }",
        )
        rows = {r["path"]: r for r in (await svc.client.get("/api/v1/readings")).json()["readings"]}
        assert all(r["quality"] == "bad" and r["reason"].startswith("device missing") for r in rows.values()), rows
        assert "/dev/spidev0.0" in rows["Plant/Temperature/Upper"]["reason"]
        assert "/dev/spidev0.1" in rows["Plant/Temperature/Lower"]["reason"]
        assert "GPIO 23" in rows["Plant/RPM/MainShaft"]["reason"]
        assert "i2c-1" in rows["Plant/Voltage/MainSupply"]["reason"]
        assert "audio input" in rows["Plant/Audio/Level"]["reason"]
        health = (await svc.client.get("/health")).json()
        assert health["status"] == "degraded" and set(health["drivers"].values()) == {"hardware"}
        assert os.environ["GPIOZERO_PIN_FACTORY"] == "lgpio"  # the Pi 5's factory is the default
    missing = [r for r in caplog.records if r.getMessage().startswith("device missing")]
    assert sorted(r.device for r in missing) == sorted(  # type: ignore[attr-defined]
        ["/dev/spidev0.0", "/dev/spidev0.1", "GPIO 23", "ADS1115 at 0x48 on /dev/i2c-1", "default audio input"]
    )


async def test_per_sensor_driver_overrides_mix_simulated_and_real(start_service: Any) -> None:
    async with start_service(mode="hardware", drivers="audio=sim,temperature_upper=sim") as svc:
        rows = {r["path"]: r for r in (await svc.client.get("/api/v1/readings")).json()["readings"]}
        assert rows["Plant/Temperature/Upper"]["quality"] == "good"
        assert rows["Plant/Temperature/UpperColdJunction"]["quality"] == "good"
        assert rows["Plant/Audio/Level"]["quality"] == "good"
        assert rows["Plant/Temperature/Lower"]["quality"] == "bad"
        drivers = (await svc.client.get("/health")).json()["drivers"]
        assert drivers["audio"] == "sim" and drivers["rpm"] == "hardware"


def test_driver_overrides_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENSORS_DRIVERS", '{"rpm": "hardware"}')
    assert SensorSettings().driver_for("rpm") == "hardware" and SensorSettings().driver_for("audio") == "sim"
    monkeypatch.setenv("SENSORS_DRIVERS", "thermometer=sim")
    with pytest.raises(ValidationError, match="unknown sensor"):
        SensorSettings()
    monkeypatch.setenv("SENSORS_DRIVERS", "rpm=magic")
    with pytest.raises(ValidationError):
        SensorSettings()


class _BrokenRpm:
    """A hardware stand-in whose library raises something unexpected."""

    async def read_rpm(self) -> float:
        raise RuntimeError("SPI bus exploded")


class _HangingVoltage:
    """A hardware stand-in that never answers."""

    async def read_volts(self) -> float:
        await asyncio.sleep(3600)
        return 0.0


async def test_a_failing_or_hanging_driver_degrades_only_its_own_tags() -> None:
    sim = Simulation(1)
    devices = {
        "temperature_upper": adapt(SENSOR_BY_ID["temperature_upper"], sim.temperature("temperature_upper", "upper")),
        "rpm": adapt(SENSOR_BY_ID["rpm"], _BrokenRpm()),
        "voltage": adapt(SENSOR_BY_ID["voltage"], _HangingVoltage()),
    }
    intervals = dict.fromkeys(SensorKind, 0.05)
    store = SnapshotStore({})
    sampler = Sampler(DeviceSet(devices, sim), intervals, store)
    await sampler.start()  # the hanging read is bounded by the read timeout
    await sampler.stop()
    assert store.get("Plant/Temperature/Upper").quality is Quality.GOOD
    rpm, voltage = store.get("Plant/RPM/MainShaft"), store.get("Plant/Voltage/MainSupply")
    assert rpm.quality is Quality.BAD and rpm.reason == "driver error: RuntimeError"
    assert voltage.quality is Quality.BAD and voltage.reason == "no response"
    health = {h.sensor_id: h for h in sampler.health()}
    assert health["temperature_upper"].status == "ok" and health["rpm"].status == "degraded"


def test_adapt_refuses_a_driver_of_the_wrong_kind() -> None:
    with pytest.raises(TypeError, match="does not implement the rpm protocol"):
        adapt(SENSOR_BY_ID["rpm"], _HangingVoltage())  # type: ignore[arg-type]


def test_catalog_has_one_spec_per_sensor_and_a_driver_error_family() -> None:
    assert len({s.sensor_id for s in SENSORS}) == len(SENSORS)
    assert NoResponseError().reason == "no response"
    assert np.isfinite(Simulation(0).advance().upper_c)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_console_script_serves_and_stops_on_sigterm(tmp_path: Any) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENSORS_")}
    env.update({"SENSORS_HTTP_HOST": "127.0.0.1", "SENSORS_HTTP_PORT": str(port), "SENSORS_LOG_FORMAT": "json"})
    with service_process([sys.executable, "-m", "plantmon_sensors"], env, tmp_path / "sensors.log") as proc:

        def up() -> bool:
            assert proc.poll() is None, (tmp_path / "sensors.log").read_text()
            try:
                return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        eventually_sync(up, timeout=20, what="the service answering /health")
        assert httpx.get(f"http://127.0.0.1:{port}/rpm").json()["quality"] == "good"
    output = (tmp_path / "sensors.log").read_text()
    assert '"message": "sampling stopped"' in output


def _audio_good(proc: subprocess.Popen[bytes], port: int, log_path: Path, seen: set[tuple[str, str | None]]) -> bool:
    """The service's audio level is good; meanwhile only "warming up" (collected in ``seen``)."""
    assert proc.poll() is None, log_path.read_text()
    try:
        level = httpx.get(f"http://127.0.0.1:{port}/api/v1/readings/Plant/Audio/Level", timeout=2).json()
    except httpx.TransportError:
        return False
    if level["quality"] == "good":
        return True
    seen.add((level["quality"], level["reason"]))
    assert level["quality"] == "uncertain" and level["reason"].startswith("warming up"), level
    return False


def _mapped_libraries(pid: int) -> set[str]:
    return {line.split()[-1] for line in Path(f"/proc/{pid}/maps").read_text().splitlines() if ".so" in line}


def _children(pid: int) -> list[int]:
    return [int(c) for task in Path(f"/proc/{pid}/task").iterdir() for c in (task / "children").read_text().split()]


def test_the_service_never_loads_numba_and_keeps_the_tables_librosa_built(tmp_path: Path, audio_tables: Path) -> None:
    """First start: a short-lived child builds the tables with librosa (audio "warming up" meanwhile,
    never bad); the service process itself never maps numba's or LLVM's libraries and keeps no
    child. A restart loads the kept tables: no child at all."""
    from plantmon_sensors.features import FeatureConfig, tables_file

    config = FeatureConfig(n_mels=48)  # a configuration of this test's own: built here
    tables_file(config, audio_tables).unlink(missing_ok=True)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENSORS_")}
    env.update(
        {
            "SENSORS_HTTP_HOST": "127.0.0.1",
            "SENSORS_HTTP_PORT": str(port),
            "SENSORS_LOG_FORMAT": "json",
            "SENSORS_AUDIO_INTERVAL_S": "0.2",
            "SENSORS_AUDIO__N_MELS": "48",
            "SENSORS_NUMBA_CACHE_DIR": str(audio_tables.parent),
        }
    )
    for run in ("first", "second"):
        log_path = tmp_path / f"{run}.log"
        with service_process([sys.executable, "-m", "plantmon_sensors"], env, log_path) as proc:
            seen: set[tuple[str, str | None]] = set()
            try:  # generous: the child loads librosa on a shared 2-core machine
                eventually_sync(
                    functools.partial(_audio_good, proc, port, log_path, seen), timeout=600, what="the audio level good"
                )
            except AssertionError as exc:
                raise AssertionError(f"{exc}; meanwhile: {sorted(seen)}") from exc
            libraries = _mapped_libraries(proc.pid)
            assert not [lib for lib in libraries if "numba" in lib or "llvmlite" in lib], libraries
            assert _children(proc.pid) == [], "the table builder is gone"
        lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
        building = [line for line in lines if line["message"].startswith("building the audio feature tables")]
        ready = [line for line in lines if line["message"] == "audio features ready"]
        assert len(ready) == 1, log_path.read_text()
        if run == "first":
            assert building and ready[0]["tables"].startswith("built: "), ready
            assert tables_file(config, audio_tables).is_file()
        else:
            assert not building and ready[0]["tables"] == str(tables_file(config, audio_tables)), ready


def test_the_store_serves_the_rows_it_holds_as_json_and_judges_staleness_per_request() -> None:
    store = SnapshotStore({"rpm": 2.0, "voltage": 2.0})
    fresh = utc_now()
    store.update(good_readings("rpm", {"rpm": 1500.0}, fresh))
    store.update(good_readings("voltage", {"volts": 23.5}, fresh - timedelta(seconds=5)))  # older than 2 s
    paths = ["Plant/RPM/MainShaft", "Plant/Voltage/MainSupply", "Plant/Temperature/Upper"]
    body = json.loads(store.readings_json(paths))
    assert list(body) == ["readings"]
    served = [TagReading.model_validate(r) for r in body["readings"]]
    assert served == store.rows(paths)  # the bytes say exactly what the models say
    rpm, voltage, upper = served
    assert (rpm.quality, rpm.value, rpm.observed_at) == (Quality.GOOD, 1500.0, fresh)
    assert (voltage.quality, voltage.reason, voltage.value) == (Quality.UNCERTAIN, "stale", 23.5)
    assert (upper.quality, upper.reason) == (Quality.UNCERTAIN, "not sampled yet")
    assert json.loads(store.row_json("Plant/Voltage/MainSupply"))["reason"] == "stale"
    store.update(good_readings("voltage", {"volts": 22.0}, utc_now()))  # a new read replaces the bytes
    assert json.loads(store.row_json("Plant/Voltage/MainSupply"))["value"] == 22.0
    assert json.loads(store.row_json("Plant/Voltage/MainSupply"))["quality"] == "good"
