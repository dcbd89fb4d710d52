"""The temperature driver protocol (a thermocouple amplifier such as the MAX31855 on SPI).

One read yields both junctions: the thermocouple (hot junction) and the amplifier's own
cold-junction temperature. A thermocouple fault (open circuit, short to GND or VCC) leaves the
cold-junction value valid, so it is reported in :attr:`ThermocoupleReading.fault` rather than
raised; a chip that does not answer raises :class:`~plantmon_sensors.drivers.SensorError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class ThermocoupleReading:
    """One conversion: ``celsius`` is ``None`` exactly when ``fault`` says why."""

    celsius: float | None
    cold_junction_celsius: float
    fault: str | None = None


@runtime_checkable
class TemperatureDriver(Protocol):
    """Reads one thermocouple amplifier."""

    async def read_thermocouple(self) -> ThermocoupleReading:
        """Both junction temperatures in °C; raises :class:`~plantmon_sensors.drivers.SensorError`."""
        ...
