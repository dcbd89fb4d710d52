"""The exception family drivers raise; each carries the reason the API reports."""

from __future__ import annotations

from dataclasses import dataclass


class SensorError(Exception):
    """A sensor could not deliver a value; ``reason`` is what the tag's reading reports."""

    reason: str = "sensor error"

    def __init__(self, reason: str | None = None) -> None:
        if reason is not None:
            self.reason = reason
        super().__init__(self.reason)


class NoResponseError(SensorError):
    """The device did not answer (bus timeout, unplugged, stopped)."""

    reason = "no response"


class DeviceMissingError(NoResponseError):
    """The device (or its bus, or its library) is not there: ``/dev/spidev0.0`` absent, no audio input, ..."""

    reason = "device missing"


class OpenCircuitError(SensorError):
    """The thermocouple is disconnected (the MAX31855's OC fault bit)."""

    reason = "open circuit"


class WarmingUpError(SensorError):
    """The sensor is not ready yet (audio features compiling); its tags are uncertain, not bad."""

    reason = "warming up"


@dataclass(frozen=True, slots=True)
class ChannelFault:
    """One channel of an otherwise successful read is bad (e.g. the thermocouple of a MAX31855
    whose cold-junction temperature is still valid)."""

    reason: str
