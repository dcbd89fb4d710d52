"""The tag model: one name for one thing.

A tag's identity is its path below ``Plant`` (``Plant/Temperature/Upper``). The same path is the
OPC UA browse path, the string NodeId, the database row, the name a rule refers to and the label
a dashboard shows. The seed's SQL names derive from it: ``sensor`` is the first segment in lower
case, ``tag`` the remaining segments in snake_case joined by ``/``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field, field_validator

ROOT = "Plant"
_SEGMENT = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_CAMEL_BOUNDARY_1 = re.compile(r"([A-Z]+)([A-Z][a-z])")
_CAMEL_BOUNDARY_2 = re.compile(r"([a-z0-9])([A-Z])")


class TagPathError(ValueError):
    """A string that is not a valid tag path."""


def snake_case(segment: str) -> str:
    """``MainShaft`` -> ``main_shaft``, ``MFCC`` -> ``mfcc``, ``Band_0`` -> ``band_0``."""
    s = _CAMEL_BOUNDARY_1.sub(r"\1_\2", segment)
    s = _CAMEL_BOUNDARY_2.sub(r"\1_\2", s)
    return re.sub(r"_+", "_", s).lower()


def validate_path(path: str) -> str:
    """Return ``path`` if it is ``Plant/<Sensor>/<Tag>[/...]``, else raise :class:`TagPathError`."""
    parts = path.split("/")
    if len(parts) < 3 or parts[0] != ROOT:
        raise TagPathError(f"tag path {path!r} must look like 'Plant/<Sensor>/<Tag>'")
    for part in parts[1:]:
        if not _SEGMENT.match(part):
            raise TagPathError(f"tag path {path!r} has an invalid segment {part!r}")
    return path


def split_path(path: str) -> tuple[str, str]:
    """The seed's ``(sensorname, tagname)`` for a tag path.

    >>> split_path("Plant/Audio/MFCC/Coefficient_0")
    ('audio', 'mfcc/coefficient_0')
    """
    parts = validate_path(path).split("/")[1:]
    return parts[0].lower(), "/".join(snake_case(p) for p in parts[1:])


class Quality(StrEnum):
    """OPC UA's three severities, as the sensor API reports them."""

    GOOD = "good"
    UNCERTAIN = "uncertain"
    BAD = "bad"


class TagMeta(BaseModel):
    """What the sensor service advertises about one tag; the OPC UA server builds its nodes from it."""

    path: str = Field(description="Identity of the tag below Plant, e.g. Plant/Temperature/Upper")
    unit: str = Field(default="", description="Engineering unit symbol, empty when dimensionless")
    eu_low: float = Field(description="Lowest value the sensor can report (EURange.Low)")
    eu_high: float = Field(description="Highest value the sensor can report (EURange.High)")
    description: str = ""
    sensor_id: str = Field(description="The sensor (device) that produces this tag")

    @field_validator("path")
    @classmethod
    def _valid_path(cls, value: str) -> str:
        return validate_path(value)

    @property
    def sensor(self) -> str:
        return split_path(self.path)[0]

    @property
    def tag(self) -> str:
        return split_path(self.path)[1]


class Reading(BaseModel):
    """One observation of one tag. ``observed_at`` is new at every observation, failed ones included."""

    path: str
    value: float | None = Field(description="The value; null when the quality is bad")
    quality: Quality
    reason: str | None = Field(default=None, description="Why the quality is not good")
    observed_at: datetime = Field(description="When the sensor service observed it (UTC)")


class TagReading(TagMeta):
    """A reading together with its tag's metadata: one row of the all-tags endpoint."""

    value: float | None
    quality: Quality
    reason: str | None = None
    observed_at: datetime


@dataclass(frozen=True)
class Unit:
    """An engineering unit with its UNECE Recommendation 20 common code."""

    symbol: str
    unece_code: str
    description: str

    @property
    def unit_id(self) -> int:
        """The OPC UA UnitId for the code (OPC 10000-8, the UNECE mapping)."""
        value = 0
        for char in self.unece_code.upper():
            value = (value << 8) | ord(char)
        return value


UNITS: dict[str, Unit] = {
    unit.symbol: unit
    for unit in (
        Unit("°C", "CEL", "degree Celsius"),
        Unit("1/min", "RPM", "revolutions per minute"),
        Unit("V", "VLT", "volt"),
        Unit("dB", "2N", "decibel"),
        Unit("dBFS", "2N", "decibel relative to full scale"),
        Unit("", "C62", "one (dimensionless)"),
    )
}
