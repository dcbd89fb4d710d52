"""The sensor service's settings (env prefix ``SENSORS_``; nested groups with ``__``).

Which driver reads each sensor: ``SENSORS_MODE`` gives the default (``sim``: the simulator for
every sensor; ``hardware``: each kind's real driver) and ``SENSORS_DRIVERS`` overrides it per
sensor, e.g. ``SENSORS_DRIVERS=audio=sim`` on a Pi without a microphone. The hardware groups
(``SENSORS_THERMOCOUPLE__*``, ``SENSORS_HALL__*``, ``SENSORS_ADC__*``, ``SENSORS_AUDIO__*``) say
where each device is wired and how it is read.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from plantmon_common.settings import ServiceSettings, require_secret
from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from plantmon_sensors.catalog import SENSOR_BY_ID
from plantmon_sensors.simulator.faults import parse_fault_spec, parse_schedule_spec

DriverName = Literal["sim", "hardware"]


def _default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "plantmon" / "sensors"


def _split(value: Any) -> Any:
    """A comma list or a JSON list/object from one environment variable."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith(("[", "{")):
            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


class ThermocoupleSettings(BaseModel):
    """MAX31855 amplifiers on SPI (``SENSORS_THERMOCOUPLE__*``)."""

    spi_bus: int = Field(default=0, ge=0, description="SPI bus (/dev/spidev<bus>.<cs>)")
    chip_select: dict[str, int] = Field(
        default_factory=lambda: {"temperature_upper": 0, "temperature_lower": 1},
        description="Chip select per sensor id: CE0 (GPIO 8) upper, CE1 (GPIO 7) lower",
    )
    max_speed_hz: int = Field(default=1_000_000, gt=0, le=5_000_000, description="SPI clock (the chip allows 5 MHz)")


class HallSettings(BaseModel):
    """The hall-effect RPM pick-up (``SENSORS_HALL__*``)."""

    gpio: int = Field(default=23, ge=0, le=27, description="BCM GPIO number (internal pull-up)")
    pulses_per_revolution: int = Field(default=1, ge=1, description="Magnets on the shaft")
    window_s: float = Field(default=1.0, gt=0, le=60, description="Counting window")
    stop_timeout_s: float = Field(default=2.0, gt=0, le=600, description="No pulse this long reads 0 (stopped)")
    min_window_pulses: int = Field(
        default=10, ge=1, description="Fewer pulses in the window: speed from the time between pulses"
    )
    pin_factory: str = Field(
        default="lgpio", description="gpiozero pin factory (GPIOZERO_PIN_FACTORY wins when set); lgpio on a Pi 5"
    )


class AdcSettings(BaseModel):
    """The ADS1115 measuring the supply through a divider (``SENSORS_ADC__*``)."""

    i2c_bus: int = Field(default=1, ge=0, description="/dev/i2c-<bus>")
    address: int = Field(default=0x48, ge=0x08, le=0x77, description="I2C address (0x48: ADDR to GND)")
    channel: int = Field(default=0, ge=0, le=3, description="Single-ended input A0..A3")
    divider_ratio: float = Field(default=9.333, gt=0, description="(R_top + R_bottom) / R_bottom, e.g. 100k/12k")
    samples: int = Field(default=8, ge=1, le=860, description="Conversions averaged per reading (860 SPS)")

    @field_validator("address", mode="before")
    @classmethod
    def _hex(cls, value: Any) -> Any:
        return int(value, 0) if isinstance(value, str) else value


class AudioSettings(BaseModel):
    """The microphone and the feature analysis (``SENSORS_AUDIO__*``); the simulator uses the analysis too."""

    device: str | None = Field(default=None, description="sounddevice input name or index; unset: the default input")
    sample_rate: int = Field(default=16_000, ge=4_000, le=192_000, description="Samples per second")
    window_s: float = Field(default=0.5, gt=0, le=10, description="Seconds of audio per feature reading")
    n_fft: int = Field(default=1024, ge=64, le=65536, description="FFT size of one analysis frame")
    hop_length: int = Field(default=512, ge=1, description="Samples between frames")
    n_mels: int = Field(default=40, ge=13, le=256, description="Mel filters feeding the 13 MFCC")
    band_layout: Literal["mel", "linear", "log"] = Field(default="mel", description="Spacing of the 32 bands")
    fmin_hz: float = Field(default=0.0, ge=0, description="Lower edge of the bands")
    fmax_hz: float | None = Field(default=None, gt=0, description="Upper edge of the bands (default Nyquist)")

    @model_validator(mode="after")
    def _consistent(self) -> AudioSettings:
        if self.fmax_hz is not None and self.fmax_hz > self.sample_rate / 2:
            raise ValueError("fmax_hz must not exceed half the sample rate")
        if self.n_fft > self.sample_rate * self.window_s:
            raise ValueError("the window must hold at least one FFT frame (n_fft <= sample_rate * window_s)")
        return self


class FailureSettings(BaseModel):
    """The simulator's random failure (``SENSORS_FAILURE__*``): Weibull time to failure."""

    enabled: bool = Field(default=True, description="Draw a time to failure at start")
    fault: str = Field(default="bearing_wear", description="The fault that starts at that time")
    shape: float = Field(default=2.0, gt=0, description="Weibull shape k (k > 1: wear-out)")
    scale_s: float = Field(default=8 * 3600.0, gt=0, description="Weibull scale (characteristic life) in seconds")

    @field_validator("fault")
    @classmethod
    def _known(cls, value: str) -> str:
        parse_fault_spec(value)
        return value


class SensorSettings(ServiceSettings):
    """Everything the sensor service reads from the environment."""

    model_config = SettingsConfigDict(env_prefix="SENSORS_", extra="ignore", env_nested_delimiter="__")

    http_port: int = Field(default=8080, ge=0, le=65535, description="Port of the sensor API (with /health, /metrics)")
    mode: Literal["sim", "hardware"] = Field(
        default="sim", description="Default driver of every sensor: sim (the plant simulator) or hardware"
    )
    drivers: Annotated[dict[str, DriverName], NoDecode] = Field(
        default_factory=dict, description="Per-sensor driver overrides: 'audio=sim,rpm=hardware' or a JSON object"
    )
    seed: int = Field(default=42, description="Seed of the simulator's random generators")
    temperature_interval_s: float = Field(default=0.5, gt=0, le=3600, description="Thermocouple sample interval")
    rpm_interval_s: float = Field(default=0.5, gt=0, le=3600, description="Shaft speed sample interval")
    voltage_interval_s: float = Field(default=0.5, gt=0, le=3600, description="Supply voltage sample interval")
    audio_interval_s: float = Field(default=1.0, gt=0, le=3600, description="Audio feature sample interval")
    faults: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Faults active at start (sim): comma separated or a JSON list, e.g. "
        "'overheating,sensor_stopped:rpm'",
    )
    fault_schedule: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Scheduled faults (sim): 'FAULT@START+DURATION' in seconds after start, e.g. "
        "'overheating@60+120,sensor_stopped:rpm@30+10' (no +DURATION: stays on)",
    )
    failure: FailureSettings = Field(default_factory=FailureSettings)
    admin_token: SecretStr | None = Field(
        default=None, description="Bearer token of /admin (fault injection); unset disables /admin"
    )
    state_dir: Path = Field(default_factory=_default_state_dir, description="Persistent state of the service")
    numba_cache_dir: Path | None = Field(
        default=None,
        description="Audio feature cache: numba's compile cache for the child that runs librosa, and the filter "
        "banks it builds, in audio-tables/ (default: NUMBA_CACHE_DIR, else <state_dir>/numba)",
    )
    retry_min_s: float = Field(default=1.0, gt=0, description="First wait before reopening a missing device")
    retry_max_s: float = Field(default=60.0, gt=0, description="Longest wait between attempts to reopen a device")
    thermocouple: ThermocoupleSettings = Field(default_factory=ThermocoupleSettings)
    hall: HallSettings = Field(default_factory=HallSettings)
    adc: AdcSettings = Field(default_factory=AdcSettings)
    audio: AudioSettings = Field(default_factory=AudioSettings)

    @field_validator("faults", "fault_schedule", mode="before")
    @classmethod
    def _split_lists(cls, value: Any) -> Any:
        return _split(value)

    @field_validator("drivers", mode="before")
    @classmethod
    def _split_drivers(cls, value: Any) -> Any:
        value = _split(value)
        if isinstance(value, list):
            pairs = [item.partition("=") for item in value]
            bad = [item for item, (_k, eq, _v) in zip(value, pairs, strict=True) if not eq]
            if bad:
                raise ValueError(f"SENSORS_DRIVERS entries are sensor=driver, got {bad}")
            return {k.strip(): v.strip() for k, _eq, v in pairs}
        return value

    @field_validator("drivers")
    @classmethod
    def _known_sensors(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - set(SENSOR_BY_ID))
        if unknown:
            raise ValueError(
                f"unknown sensor(s) {unknown} in SENSORS_DRIVERS; known sensors: {', '.join(SENSOR_BY_ID)}"
            )
        return value

    @field_validator("faults")
    @classmethod
    def _known_faults(cls, value: list[str]) -> list[str]:
        for spec in value:
            parse_fault_spec(spec)
        return value

    @field_validator("fault_schedule")
    @classmethod
    def _known_schedule(cls, value: list[str]) -> list[str]:
        for spec in value:
            parse_schedule_spec(spec)
        return value

    @field_validator("admin_token")
    @classmethod
    def _no_placeholder(cls, value: SecretStr | None) -> SecretStr | None:
        return require_secret("SENSORS_ADMIN_TOKEN", value)

    def interval_for(self, kind: str) -> float:
        """The sample interval of a sensor kind (``temperature``, ``rpm``, ``voltage``, ``audio``)."""
        value: float = getattr(self, f"{kind}_interval_s")
        return value

    def driver_for(self, sensor_id: str) -> DriverName:
        """``sim`` or ``hardware`` for one sensor: its override, else ``SENSORS_MODE``."""
        return self.drivers.get(sensor_id, self.mode)

    def resolved_numba_cache_dir(self) -> Path:
        if self.numba_cache_dir is not None:
            return self.numba_cache_dir
        from_env = os.environ.get("NUMBA_CACHE_DIR")
        return Path(from_env) if from_env else self.state_dir / "numba"
