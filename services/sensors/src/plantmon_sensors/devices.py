"""Devices: a driver behind each catalog sensor, adapted to "read -> channel mapping".

:func:`build_devices` picks the drivers for the configured mode. The simulator's drivers are
wired here; real drivers implement the same protocols and slot in next to them (one factory per
sensor kind) without touching the sampler or the API.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from plantmon_sensors.catalog import SENSORS, SensorKind, SensorSpec
from plantmon_sensors.drivers import AudioDriver, RpmDriver, TemperatureDriver, VoltageDriver
from plantmon_sensors.features import extract_features
from plantmon_sensors.settings import SensorSettings
from plantmon_sensors.simulator import Simulation

logger = logging.getLogger(__name__)

Driver = TemperatureDriver | RpmDriver | VoltageDriver | AudioDriver
ReadChannels = Callable[[], Awaitable[dict[str, float]]]
FeatureTimer = Callable[[float], None]


class HardwareNotSupportedError(RuntimeError):
    """``SENSORS_MODE=hardware`` was asked for; the drivers come in a later step."""


@dataclass(frozen=True, slots=True)
class Device:
    """One sensor with its driver; ``read`` returns the channel mapping its tags pick from."""

    spec: SensorSpec
    driver: Driver
    read: ReadChannels


@dataclass(frozen=True, slots=True)
class DeviceSet:
    """Every sensor's device, and the simulation behind them in sim mode."""

    devices: dict[str, Device]
    simulation: Simulation | None


def adapt(spec: SensorSpec, driver: Driver, on_feature_time: FeatureTimer | None = None) -> Device:
    """Wrap a driver of ``spec.kind`` into a :class:`Device`."""
    if spec.kind is SensorKind.TEMPERATURE and isinstance(driver, TemperatureDriver):
        temperature = driver

        async def read_temperature() -> dict[str, float]:
            return {"celsius": await temperature.read_celsius()}

        return Device(spec, driver, read_temperature)
    if spec.kind is SensorKind.RPM and isinstance(driver, RpmDriver):
        rpm = driver

        async def read_rpm() -> dict[str, float]:
            return {"rpm": await rpm.read_rpm()}

        return Device(spec, driver, read_rpm)
    if spec.kind is SensorKind.VOLTAGE and isinstance(driver, VoltageDriver):
        voltage = driver

        async def read_voltage() -> dict[str, float]:
            return {"volts": await voltage.read_volts()}

        return Device(spec, driver, read_voltage)
    if spec.kind is SensorKind.AUDIO and isinstance(driver, AudioDriver):
        audio = driver

        async def read_audio() -> dict[str, float]:
            buffer = await audio.read_buffer()
            started = time.perf_counter()
            # numpy releases the GIL in the FFTs; the event loop keeps serving requests meanwhile.
            features = await asyncio.to_thread(extract_features, buffer, audio.sample_rate)
            if on_feature_time is not None:
                on_feature_time(time.perf_counter() - started)
            return features.channels()

        return Device(spec, driver, read_audio)
    raise TypeError(f"driver {type(driver).__name__} does not implement the {spec.kind.value} protocol")


def _sim_driver(sim: Simulation, spec: SensorSpec) -> Driver:
    if spec.kind is SensorKind.TEMPERATURE:
        return sim.temperature(spec.sensor_id, spec.sensor_id.removeprefix("temperature_"))
    if spec.kind is SensorKind.RPM:
        return sim.rpm(spec.sensor_id)
    if spec.kind is SensorKind.VOLTAGE:
        return sim.voltage(spec.sensor_id)
    return sim.audio(spec.sensor_id)


def build_devices(settings: SensorSettings, on_feature_time: FeatureTimer | None = None) -> DeviceSet:
    """The devices of every catalog sensor for ``settings.mode``."""
    if settings.mode != "sim":
        raise HardwareNotSupportedError(
            "SENSORS_MODE=hardware is not yet supported; run with SENSORS_MODE=sim (the simulator)"
        )
    sim = Simulation(settings.seed, settings.faults)
    devices = {spec.sensor_id: adapt(spec, _sim_driver(sim, spec), on_feature_time) for spec in SENSORS}
    logger.info("simulated devices ready", extra={"seed": settings.seed, "faults": settings.faults})
    return DeviceSet(devices, sim)
