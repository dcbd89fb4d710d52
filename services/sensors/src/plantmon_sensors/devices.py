"""Devices: a driver behind each catalog sensor, adapted to "read -> channel mapping".

:func:`build_devices` picks each sensor's driver from the settings (``SENSORS_MODE`` as the
default, ``SENSORS_DRIVERS`` per sensor): the simulator's, or the real one of the sensor's kind
from :data:`HARDWARE_FACTORIES` (one factory per kind; adding a kind is adding a factory).
Building a real driver opens nothing: each opens its device on the first read and reports a
missing one as a bad tag, so the service starts whatever is plugged in.

Audio buffers, from the microphone or the simulator alike, go through one
:class:`~plantmon_sensors.features.FeatureExtractor`, in a thread of the service; until its
warm-up (loading librosa's filter bank, or having a child process build it the first time) has
finished, the audio tags read "warming up" (uncertain).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from plantmon_sensors.catalog import SENSORS, SensorKind, SensorSpec
from plantmon_sensors.domain import Channels
from plantmon_sensors.drivers import (
    AudioDriver,
    ChannelFault,
    RpmDriver,
    SensorError,
    TemperatureDriver,
    VoltageDriver,
    WarmingUpError,
)
from plantmon_sensors.drivers.device import Backoff
from plantmon_sensors.features import FeatureConfig, FeatureExtractor
from plantmon_sensors.settings import SensorSettings
from plantmon_sensors.simulator import Simulation, WeibullFailure

logger = logging.getLogger(__name__)

Driver = TemperatureDriver | RpmDriver | VoltageDriver | AudioDriver
ReadChannels = Callable[[], Awaitable[Channels]]
FeatureTimer = Callable[[float], None]


@dataclass(frozen=True, slots=True)
class Device:
    """One sensor with its driver; ``read`` returns the channel mapping its tags pick from."""

    spec: SensorSpec
    driver: Driver
    read: ReadChannels


@dataclass(slots=True)
class DeviceSet:
    """Every sensor's device, the simulation behind the simulated ones, the audio feature extractor."""

    devices: dict[str, Device]
    simulation: Simulation | None
    extractor: FeatureExtractor | None = None
    drivers: dict[str, str] = field(default_factory=dict)

    def start(self) -> None:
        """Start what runs in the background (the audio feature warm-up)."""
        if self.extractor is not None:
            self.extractor.start_warm_up()

    def close(self) -> None:
        """Release every real device (SPI file, GPIO line, I2C bus, audio stream) and a table build still running."""
        if self.extractor is not None:
            self.extractor.close()
        for device in self.devices.values():
            close = getattr(device.driver, "close", None)
            if callable(close):
                try:
                    close()
                except Exception:
                    logger.exception("closing a driver failed", extra={"sensor": device.spec.sensor_id})


def adapt(
    spec: SensorSpec,
    driver: Driver,
    on_feature_time: FeatureTimer | None = None,
    extractor: FeatureExtractor | None = None,
) -> Device:
    """Wrap a driver of ``spec.kind`` into a :class:`Device`."""
    if spec.kind is SensorKind.TEMPERATURE and isinstance(driver, TemperatureDriver):
        temperature = driver

        async def read_temperature() -> Channels:
            reading = await temperature.read_thermocouple()
            hot: float | ChannelFault = (
                reading.celsius if reading.celsius is not None else ChannelFault(reading.fault or "thermocouple fault")
            )
            return {"celsius": hot, "cold_junction_celsius": reading.cold_junction_celsius}

        return Device(spec, driver, read_temperature)
    if spec.kind is SensorKind.RPM and isinstance(driver, RpmDriver):
        rpm = driver

        async def read_rpm() -> Channels:
            return {"rpm": await rpm.read_rpm()}

        return Device(spec, driver, read_rpm)
    if spec.kind is SensorKind.VOLTAGE and isinstance(driver, VoltageDriver):
        voltage = driver

        async def read_voltage() -> Channels:
            return {"volts": await voltage.read_volts()}

        return Device(spec, driver, read_voltage)
    if spec.kind is SensorKind.AUDIO and isinstance(driver, AudioDriver):
        audio = driver
        features = extractor or FeatureExtractor(FeatureConfig(sample_rate=audio.sample_rate))

        async def read_audio() -> Channels:
            if not features.ready:
                if features.warm_up_error:
                    features.retry_if_due()  # recovers by itself (with a backoff) once the cause is gone
                    raise SensorError(features.warm_up_error)
                raise WarmingUpError("warming up (audio feature tables loading)")
            buffer = await audio.read_buffer()
            started = time.perf_counter()
            # About half a millisecond of numpy per 0.5 s window, off the event loop.
            result = await asyncio.to_thread(features.extract, buffer)
            if on_feature_time is not None:
                on_feature_time(time.perf_counter() - started)
            return dict(result.channels())

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


# -- the real drivers, one factory per kind --------------------------------------------------
def _max31855(settings: SensorSettings, spec: SensorSpec) -> Driver:
    from plantmon_sensors.drivers.max31855 import Max31855Driver

    cfg = settings.thermocouple
    if spec.sensor_id not in cfg.chip_select:
        raise ValueError(f"no chip select for {spec.sensor_id}: set SENSORS_THERMOCOUPLE__CHIP_SELECT")
    return Max31855Driver(cfg.spi_bus, cfg.chip_select[spec.sensor_id], cfg.max_speed_hz, backoff=_backoff(settings))


def _hall(settings: SensorSettings, spec: SensorSpec) -> Driver:
    from plantmon_sensors.drivers.hall import HallRpmDriver

    cfg = settings.hall
    # gpiozero reads its pin factory from the environment; an explicit GPIOZERO_PIN_FACTORY wins.
    os.environ.setdefault("GPIOZERO_PIN_FACTORY", cfg.pin_factory)
    return HallRpmDriver(
        cfg.gpio,
        cfg.pulses_per_revolution,
        cfg.window_s,
        cfg.stop_timeout_s,
        cfg.min_window_pulses,
        backoff=_backoff(settings),
    )


def _ads1115(settings: SensorSettings, spec: SensorSpec) -> Driver:
    from plantmon_sensors.drivers.ads1115 import Ads1115Driver

    cfg = settings.adc
    return Ads1115Driver(
        cfg.i2c_bus, cfg.address, cfg.channel, cfg.divider_ratio, cfg.samples, backoff=_backoff(settings)
    )


def _microphone(settings: SensorSettings, spec: SensorSpec) -> Driver:
    from plantmon_sensors.drivers.microphone import Microphone

    cfg = settings.audio
    device: str | int | None = int(cfg.device) if cfg.device and cfg.device.isdigit() else cfg.device
    return Microphone(cfg.sample_rate, cfg.window_s, device, backoff=_backoff(settings))


HARDWARE_FACTORIES: dict[SensorKind, Callable[[SensorSettings, SensorSpec], Driver]] = {
    SensorKind.TEMPERATURE: _max31855,
    SensorKind.RPM: _hall,
    SensorKind.VOLTAGE: _ads1115,
    SensorKind.AUDIO: _microphone,
}


def _backoff(settings: SensorSettings) -> Backoff:
    return Backoff(settings.retry_min_s, settings.retry_max_s)


def feature_config(settings: SensorSettings) -> FeatureConfig:
    a = settings.audio
    return FeatureConfig(
        sample_rate=a.sample_rate,
        n_fft=a.n_fft,
        hop_length=a.hop_length,
        n_mels=a.n_mels,
        band_layout=a.band_layout,
        fmin_hz=a.fmin_hz,
        fmax_hz=a.fmax_hz,
    )


def build_devices(settings: SensorSettings, on_feature_time: FeatureTimer | None = None) -> DeviceSet:
    """The devices of every catalog sensor, each with the driver its settings name."""
    cache = settings.resolved_numba_cache_dir()
    extractor = FeatureExtractor(feature_config(settings), tables_dir=cache / "audio-tables", numba_cache_dir=cache)
    choice: dict[str, str] = {spec.sensor_id: settings.driver_for(spec.sensor_id) for spec in SENSORS}
    sim: Simulation | None = None
    if "sim" in choice.values():
        failure = settings.failure
        sim = Simulation(
            settings.seed,
            settings.faults,
            schedule=settings.fault_schedule,
            failure=WeibullFailure(failure.fault, failure.shape, failure.scale_s) if failure.enabled else None,
            audio_sample_rate=settings.audio.sample_rate,
            audio_window_s=settings.audio.window_s,
        )
    devices = {}
    for spec in SENSORS:
        if choice[spec.sensor_id] == "sim":
            assert sim is not None
            driver = _sim_driver(sim, spec)
        else:
            driver = HARDWARE_FACTORIES[spec.kind](settings, spec)
        devices[spec.sensor_id] = adapt(spec, driver, on_feature_time, extractor)
    logger.info(
        "devices ready",
        extra={
            "drivers": {k: f"{v}:{type(devices[k].driver).__name__}" for k, v in choice.items()},
            "seed": settings.seed,
        },
    )
    return DeviceSet(devices, sim, extractor, choice)
