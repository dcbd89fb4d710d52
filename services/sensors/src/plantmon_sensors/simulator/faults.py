"""The faults the simulator can inject, and the set of those currently active.

``overheating``, ``overspeed``, ``voltage_sag`` and ``bearing_wear`` change the plant model's
physics; ``thermocouple_open`` and ``sensor_stopped`` break a sensor and leave the plant alone.

A fault is switched on at start (``SENSORS_FAULTS``), at a scheduled time
(``SENSORS_FAULT_SCHEDULE``: ``FAULT@START+DURATION`` in seconds after start, see
:func:`parse_schedule_spec`), by the Weibull time to failure, or at run time through ``/admin``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from enum import StrEnum

from plantmon_sensors.catalog import SENSOR_BY_ID

logger = logging.getLogger(__name__)


class Fault(StrEnum):
    """Injectable faults."""

    OVERHEATING = "overheating"
    THERMOCOUPLE_OPEN = "thermocouple_open"
    OVERSPEED = "overspeed"
    VOLTAGE_SAG = "voltage_sag"
    BEARING_WEAR = "bearing_wear"
    SENSOR_STOPPED = "sensor_stopped"


FAULT_DESCRIPTIONS: dict[Fault, str] = {
    Fault.OVERHEATING: "cooling lost: the upper bearing heats well above 100 °C, cools back when cleared",
    Fault.THERMOCOUPLE_OPEN: "the upper thermocouple is disconnected: its tag goes bad ('open circuit')",
    Fault.OVERSPEED: "governor failure: the shaft runs about 50 % fast (and heats up)",
    Fault.VOLTAGE_SAG: "the main supply sags by about 5 V",
    Fault.BEARING_WEAR: "a worn bearing: rising high-frequency sound and a little heat",
    Fault.SENSOR_STOPPED: "a named sensor stops answering: its tags go bad ('no response')",
}

#: The sensor the thermocouple_open fault disconnects.
OPEN_THERMOCOUPLE_SENSOR = "temperature_upper"


class FaultError(ValueError):
    """A fault request that cannot be applied (unknown fault or sensor, missing sensor)."""


def parse_fault_spec(text: str) -> tuple[Fault, str | None]:
    """``"overheating"`` -> ``(OVERHEATING, None)``; ``"sensor_stopped:rpm"`` -> ``(SENSOR_STOPPED, "rpm")``."""
    name, _, sensor = text.strip().partition(":")
    try:
        fault = Fault(name.strip())
    except ValueError:
        known = ", ".join(f.value for f in Fault)
        raise FaultError(f"unknown fault {name.strip()!r}; known faults: {known}") from None
    sensor = sensor.strip()
    if fault is Fault.SENSOR_STOPPED:
        if not sensor:
            raise FaultError("sensor_stopped needs a sensor: write 'sensor_stopped:<sensor_id>'")
        _check_sensor(sensor)
        return fault, sensor
    if sensor:
        raise FaultError(f"fault {fault.value!r} takes no sensor")
    return fault, None


@dataclass(frozen=True, slots=True)
class ScheduledFault:
    """A fault switched on ``start_s`` seconds after the simulation starts, for ``duration_s`` (None: stays)."""

    fault: Fault
    sensor: str | None
    start_s: float
    duration_s: float | None


def parse_schedule_spec(text: str) -> ScheduledFault:
    """``"overheating@60+120"``: on at t+60 s for 120 s; ``"sensor_stopped:rpm@30"``: on at t+30 s, stays."""
    spec, at, timing = text.strip().partition("@")
    if not at:
        raise FaultError(f"scheduled fault {text!r} needs a time: write FAULT@START_S or FAULT@START_S+DURATION_S")
    fault, sensor = parse_fault_spec(spec)
    start_text, plus, duration_text = timing.partition("+")
    try:
        start = float(start_text)
        duration = float(duration_text) if plus else None
    except ValueError:
        raise FaultError(
            f"scheduled fault {text!r}: START_S and DURATION_S are seconds, e.g. overheating@60+120"
        ) from None
    if start < 0 or (duration is not None and duration <= 0):
        raise FaultError(f"scheduled fault {text!r}: START_S >= 0 and DURATION_S > 0 are required")
    return ScheduledFault(fault, sensor, start, duration)


def _check_sensor(sensor: str) -> None:
    if sensor not in SENSOR_BY_ID:
        raise FaultError(f"unknown sensor {sensor!r}; known sensors: {', '.join(SENSOR_BY_ID)}")


@dataclass
class FaultSet:
    """The faults active now; the plant model and the simulated drivers read it."""

    active: set[Fault] = field(default_factory=set)
    stopped_sensors: set[str] = field(default_factory=set)

    def is_active(self, fault: Fault) -> bool:
        return fault in self.active

    def set(self, fault: Fault, active: bool, sensor: str | None = None) -> None:
        """Switch a fault on or off; ``sensor_stopped`` needs ``sensor`` (off without one clears all)."""
        if fault is Fault.SENSOR_STOPPED:
            if sensor is None and active:
                raise FaultError("sensor_stopped needs a sensor")
            if sensor is not None:
                _check_sensor(sensor)
                if active:
                    self.stopped_sensors.add(sensor)
                else:
                    self.stopped_sensors.discard(sensor)
            else:
                self.stopped_sensors.clear()
            changed_on = bool(self.stopped_sensors)
        else:
            if sensor is not None:
                raise FaultError(f"fault {fault.value!r} takes no sensor")
            changed_on = active
        before = fault in self.active
        if changed_on:
            self.active.add(fault)
        else:
            self.active.discard(fault)
        if before != changed_on or fault is Fault.SENSOR_STOPPED:
            logger.warning(
                "fault switched",
                extra={
                    "fault": fault.value,
                    "active": changed_on,
                    "sensor": sensor,
                    "stopped_sensors": sorted(self.stopped_sensors),
                },
            )

    def sensor_stopped(self, sensor_id: str) -> bool:
        return sensor_id in self.stopped_sensors
