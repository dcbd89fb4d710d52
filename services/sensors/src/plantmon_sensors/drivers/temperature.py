"""The temperature driver protocol (a thermocouple amplifier such as the MAX31855 on SPI)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class TemperatureDriver(Protocol):
    """Reads one thermocouple."""

    async def read_celsius(self) -> float:
        """The hot-junction temperature in °C; raises :class:`~plantmon_sensors.drivers.SensorError`."""
        ...
