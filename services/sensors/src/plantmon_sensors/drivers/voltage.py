"""The voltage driver protocol (an ADC such as the ADS1115 on I2C behind a divider)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class VoltageDriver(Protocol):
    """Reads one DC voltage, already scaled back through the divider."""

    async def read_volts(self) -> float:
        """The voltage in V; raises :class:`~plantmon_sensors.drivers.SensorError`."""
        ...
