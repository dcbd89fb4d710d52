"""The exception family drivers raise; each carries the reason the API reports."""

from __future__ import annotations


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


class OpenCircuitError(SensorError):
    """The thermocouple is disconnected (the MAX31855's OC fault bit)."""

    reason = "open circuit"
