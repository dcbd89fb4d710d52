"""The table of sensors and tags the service serves.

A *sensor* is one device (a thermocouple amplifier, the hall RPM pick-up, the supply ADC, the
microphone); it belongs to a *kind*, which decides its driver protocol and sample interval. A
*tag* is one value a sensor produces, named by its path below ``Plant`` (ARCHITECTURE.md). A
sensor's read yields a mapping ``channel -> value``; each tag picks its channel from it.
Adding a sensor is adding a row to :data:`SENSORS` and rows to :data:`TAGS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from plantmon_common.tags import TagMeta, validate_path

N_MFCC = 13
N_BANDS = 32


class SensorKind(StrEnum):
    """The kinds of sensor; one driver protocol and one sample interval each."""

    TEMPERATURE = "temperature"
    RPM = "rpm"
    VOLTAGE = "voltage"
    AUDIO = "audio"


@dataclass(frozen=True, slots=True)
class SensorSpec:
    """One physical sensor."""

    sensor_id: str
    kind: SensorKind
    description: str


@dataclass(frozen=True, slots=True)
class TagSpec:
    """One tag: its path, engineering unit and range, and the channel of its sensor's read."""

    path: str
    unit: str
    eu_low: float
    eu_high: float
    sensor_id: str
    channel: str
    description: str

    def meta(self) -> TagMeta:
        """The API model of this tag."""
        return TagMeta(
            path=self.path,
            unit=self.unit,
            eu_low=self.eu_low,
            eu_high=self.eu_high,
            description=self.description,
            sensor_id=self.sensor_id,
        )


SENSORS: tuple[SensorSpec, ...] = (
    SensorSpec("temperature_upper", SensorKind.TEMPERATURE, "Type K thermocouple, upper bearing (MAX31855)"),
    SensorSpec("temperature_lower", SensorKind.TEMPERATURE, "Type K thermocouple, lower bearing (MAX31855)"),
    SensorSpec("rpm", SensorKind.RPM, "Hall-effect pick-up on the main shaft"),
    SensorSpec("voltage", SensorKind.VOLTAGE, "Main DC supply through a divider (ADS1115)"),
    SensorSpec("audio", SensorKind.AUDIO, "USB microphone near the bearings"),
)

_TEMPERATURE_RANGE = (-200.0, 1350.0)  # the MAX31855's type K range
_COLD_JUNCTION_RANGE = (-40.0, 125.0)  # the MAX31855's operating range
_MFCC_RANGE_C0 = (-1500.0, 500.0)  # c0 sums the log-mel energies, so it spans more
_MFCC_RANGE = (-400.0, 400.0)
_BAND_RANGE = (-120.0, 20.0)

TAGS: tuple[TagSpec, ...] = (
    TagSpec(
        "Plant/Temperature/Upper",
        "°C",
        *_TEMPERATURE_RANGE,
        "temperature_upper",
        "celsius",
        "Upper bearing temperature",
    ),
    TagSpec(
        "Plant/Temperature/Lower",
        "°C",
        *_TEMPERATURE_RANGE,
        "temperature_lower",
        "celsius",
        "Lower bearing temperature",
    ),
    TagSpec(
        "Plant/Temperature/UpperColdJunction",
        "°C",
        *_COLD_JUNCTION_RANGE,
        "temperature_upper",
        "cold_junction_celsius",
        "Cold-junction (board) temperature of the upper thermocouple amplifier",
    ),
    TagSpec(
        "Plant/Temperature/LowerColdJunction",
        "°C",
        *_COLD_JUNCTION_RANGE,
        "temperature_lower",
        "cold_junction_celsius",
        "Cold-junction (board) temperature of the lower thermocouple amplifier",
    ),
    TagSpec("Plant/RPM/MainShaft", "1/min", 0.0, 6000.0, "rpm", "rpm", "Main shaft speed"),
    TagSpec("Plant/Voltage/MainSupply", "V", 0.0, 60.0, "voltage", "volts", "Main DC supply voltage"),
    *(
        TagSpec(
            f"Plant/Audio/MFCC/Coefficient_{i}",
            "",
            *(_MFCC_RANGE_C0 if i == 0 else _MFCC_RANGE),
            "audio",
            f"mfcc_{i}",
            f"Mel-frequency cepstral coefficient {i} of the machine sound",
        )
        for i in range(N_MFCC)
    ),
    *(
        TagSpec(
            f"Plant/Audio/Spectrum/Band_{i}",
            "dB",
            *_BAND_RANGE,
            "audio",
            f"band_{i}",
            f"Level of spectrum band {i} of the machine sound (mel-spaced, dB re full scale)",
        )
        for i in range(N_BANDS)
    ),
    TagSpec("Plant/Audio/Level", "dBFS", -120.0, 0.0, "audio", "level_dbfs", "RMS level of the machine sound"),
)

SENSOR_BY_ID: dict[str, SensorSpec] = {s.sensor_id: s for s in SENSORS}
TAG_BY_PATH: dict[str, TagSpec] = {t.path: t for t in TAGS}


def tags_of(sensor_id: str) -> tuple[TagSpec, ...]:
    """The tags a sensor produces, in table order."""
    return tuple(t for t in TAGS if t.sensor_id == sensor_id)


def sensors_of(kind: SensorKind) -> tuple[SensorSpec, ...]:
    """The sensors of one kind, in table order."""
    return tuple(s for s in SENSORS if s.kind is kind)


def _check_table() -> None:
    for tag in TAGS:
        validate_path(tag.path)
        if tag.sensor_id not in SENSOR_BY_ID:
            raise ValueError(f"tag {tag.path} names an unknown sensor {tag.sensor_id!r}")
    if len(TAG_BY_PATH) != len(TAGS):
        raise ValueError("duplicate tag paths in the catalog")


_check_table()
