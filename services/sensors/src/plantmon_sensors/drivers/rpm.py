"""The shaft-speed driver protocol (a hall-effect pick-up counting pulses on a GPIO)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class RpmDriver(Protocol):
    """Reads the speed of one shaft."""

    async def read_rpm(self) -> float:
        """The shaft speed in 1/min; raises :class:`~plantmon_sensors.drivers.SensorError`."""
        ...
