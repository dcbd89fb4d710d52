"""The simulator: a coupled plant model advanced in real time, and drivers that read it.

:class:`Simulation` owns the model, the active faults and the random generators (one each for the
plant's dynamics, measurement noise, sound and failures, all derived from one seed with numpy's
``SeedSequence``, so a seed repeats a run exactly). Its drivers implement the protocols of
:mod:`plantmon_sensors.drivers`; each read first advances the model to "now" on a monotonic
clock, so the model runs in real time whatever the read rates.

Distributions (documented in ``services/sensors/README.md``):

- measurement noise: Normal, sigma 0.15 °C (thermocouples, then quantised to the MAX31855's
  0.25 °C), 0.0625 °C cold junction, 2 rpm, 0.02 V;
- load: a new level ~ Uniform(0.3, 0.9) at exponentially distributed intervals (mean 20 s), see
  :mod:`.plant`;
- time to failure: Weibull(shape k, scale lambda) seconds after start (``SENSORS_FAILURE__*``,
  default k=2, lambda=8 h), when the configured fault (bearing wear) switches on.

Faults also come from the configuration at start, from a schedule (``FAULT@START+DURATION``,
applied in model time, so a schedule is exact whatever the read rates) and from ``/admin``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from plantmon_sensors.drivers import NoResponseError, OpenCircuitError, ThermocoupleReading
from plantmon_sensors.simulator import sound
from plantmon_sensors.simulator.faults import (
    FAULT_DESCRIPTIONS,
    OPEN_THERMOCOUPLE_SENSOR,
    Fault,
    FaultError,
    FaultSet,
    ScheduledFault,
    parse_fault_spec,
    parse_schedule_spec,
)
from plantmon_sensors.simulator.plant import PlantModel, PlantState

logger = logging.getLogger(__name__)

# A process suspended for longer than this resumes with a jump of this size, not hours of catch-up.
MAX_CATCH_UP_S = 60.0

TEMPERATURE_NOISE_C = 0.15
COLD_JUNCTION_NOISE_C = 0.0625
BOARD_RISE_C = 3.0  # the amplifier board runs a little above ambient
RPM_NOISE = 2.0
VOLTAGE_NOISE_V = 0.02


@dataclass(frozen=True, slots=True)
class WeibullFailure:
    """A random failure: ``fault`` starts ``scale_s * Weibull(shape)`` seconds after the start."""

    fault: str = "bearing_wear"
    shape: float = 2.0
    scale_s: float = 8 * 3600.0


@dataclass(frozen=True, slots=True)
class _Event:
    at_s: float
    fault: Fault
    sensor: str | None
    active: bool
    cause: str


class Simulation:
    """The simulated plant and its sensors."""

    def __init__(
        self,
        seed: int,
        faults: list[str] | tuple[str, ...] = (),
        clock: Callable[[], float] = time.monotonic,
        wear_ramp_s: float = 0.0,
        schedule: list[str] | tuple[str, ...] = (),
        failure: WeibullFailure | None = None,
        audio_sample_rate: int = sound.SAMPLE_RATE,
        audio_window_s: float = sound.BUFFER_S,
    ):
        dynamics, measurement, audio, failures = np.random.SeedSequence(seed).spawn(4)
        self.faults = FaultSet()
        for spec in faults:
            fault, sensor = parse_fault_spec(spec)
            self.faults.set(fault, True, sensor)
        self.model = PlantModel(np.random.default_rng(dynamics), self.faults, wear_ramp_s)
        self.noise = np.random.default_rng(measurement)
        self.audio_rng = np.random.default_rng(audio)
        self.audio_sample_rate, self.audio_window_s = audio_sample_rate, audio_window_s
        self.clock = clock
        self._last = clock()
        self._events: list[_Event] = []
        for text in schedule:
            self._add_schedule(parse_schedule_spec(text))
        self.failure_at_s: float | None = None
        if failure is not None:
            fault, sensor = parse_fault_spec(failure.fault)
            self.failure_at_s = failure.scale_s * float(np.random.default_rng(failures).weibull(failure.shape))
            self._events.append(_Event(self.failure_at_s, fault, sensor, True, "weibull time to failure"))
            logger.info(
                "simulated time to failure drawn",
                extra={"fault": failure.fault, "at_s": round(self.failure_at_s, 1), "shape": failure.shape},
            )
        self._events.sort(key=lambda e: e.at_s)

    def _add_schedule(self, item: ScheduledFault) -> None:
        self._events.append(_Event(item.start_s, item.fault, item.sensor, True, "schedule"))
        if item.duration_s is not None:
            self._events.append(_Event(item.start_s + item.duration_s, item.fault, item.sensor, False, "schedule"))

    def advance(self) -> PlantState:
        """Step the model up to now on the monotonic clock, applying due scheduled faults on the way."""
        now = self.clock()
        dt, self._last = min(max(0.0, now - self._last), MAX_CATCH_UP_S), now
        end = self.model.state.time_s + dt
        while self._events and self._events[0].at_s <= end + 1e-9:  # float sums of sub-steps
            event = self._events.pop(0)
            gap = event.at_s - self.model.state.time_s
            if gap > 0:
                self.model.step(gap)
            self.faults.set(event.fault, event.active, event.sensor)
            logger.warning(
                "simulated fault event",
                extra={
                    "fault": event.fault.value,
                    "active": event.active,
                    "sensor": event.sensor,
                    "cause": event.cause,
                },
            )
        remaining = end - self.model.state.time_s
        return self.model.step(remaining) if remaining > 0 else self.model.state

    def set_fault(self, fault: Fault, active: bool, sensor: str | None = None) -> None:
        """Switch a fault at run time (the model is advanced first, so the change starts now)."""
        self.advance()
        self.faults.set(fault, active, sensor)

    def check_responding(self, sensor_id: str) -> PlantState:
        """Advance the model, then raise :class:`NoResponseError` if ``sensor_id`` is stopped."""
        state = self.advance()
        if self.faults.sensor_stopped(sensor_id):
            raise NoResponseError()
        return state

    # -- drivers ----------------------------------------------------------------------------
    def temperature(self, sensor_id: str, position: str) -> SimTemperatureDriver:
        return SimTemperatureDriver(self, sensor_id, position)

    def rpm(self, sensor_id: str) -> SimRpmDriver:
        return SimRpmDriver(self, sensor_id)

    def voltage(self, sensor_id: str) -> SimVoltageDriver:
        return SimVoltageDriver(self, sensor_id)

    def audio(self, sensor_id: str) -> SimAudioDriver:
        return SimAudioDriver(self, sensor_id)


class SimTemperatureDriver:
    """A simulated thermocouple on the upper or lower bearing."""

    def __init__(self, sim: Simulation, sensor_id: str, position: str) -> None:
        if position not in ("upper", "lower"):
            raise ValueError("position must be 'upper' or 'lower'")
        self.sim, self.sensor_id, self.position = sim, sensor_id, position

    async def read_thermocouple(self) -> ThermocoupleReading:
        state = self.sim.check_responding(self.sensor_id)
        noise = self.sim.noise.standard_normal(2)
        # The MAX31855 resolves 0.25 °C (thermocouple) and 0.0625 °C (cold junction).
        cold = round((state.ambient_c + BOARD_RISE_C + COLD_JUNCTION_NOISE_C * float(noise[1])) * 16) / 16
        if self.sensor_id == OPEN_THERMOCOUPLE_SENSOR and self.sim.faults.is_active(Fault.THERMOCOUPLE_OPEN):
            return ThermocoupleReading(None, cold, OpenCircuitError.reason)
        true = state.upper_c if self.position == "upper" else state.lower_c
        return ThermocoupleReading(round((true + TEMPERATURE_NOISE_C * float(noise[0])) * 4) / 4, cold)

    async def read_celsius(self) -> float:
        """The hot junction alone; an open thermocouple raises :class:`OpenCircuitError`."""
        reading = await self.read_thermocouple()
        if reading.celsius is None:
            raise OpenCircuitError()
        return reading.celsius


class SimRpmDriver:
    """A simulated hall pick-up."""

    def __init__(self, sim: Simulation, sensor_id: str) -> None:
        self.sim, self.sensor_id = sim, sensor_id

    async def read_rpm(self) -> float:
        state = self.sim.check_responding(self.sensor_id)
        return max(0.0, state.speed_rpm + RPM_NOISE * float(self.sim.noise.standard_normal()))


class SimVoltageDriver:
    """A simulated supply ADC."""

    def __init__(self, sim: Simulation, sensor_id: str) -> None:
        self.sim, self.sensor_id = sim, sensor_id

    async def read_volts(self) -> float:
        state = self.sim.check_responding(self.sensor_id)
        return max(0.0, state.supply_v + VOLTAGE_NOISE_V * float(self.sim.noise.standard_normal()))


class SimAudioDriver:
    """A simulated microphone: a synthesised buffer for the current plant state."""

    def __init__(self, sim: Simulation, sensor_id: str) -> None:
        self.sim, self.sensor_id = sim, sensor_id

    @property
    def sample_rate(self) -> int:
        return self.sim.audio_sample_rate

    def buffer(self) -> npt.NDArray[np.float64]:
        """One window of sound for the plant's state now (synchronous, for offline replays)."""
        state = self.sim.check_responding(self.sensor_id)
        return sound.synthesise(state, self.sim.audio_rng, self.sample_rate, self.sim.audio_window_s)

    async def read_buffer(self) -> npt.NDArray[np.float64]:
        state = self.sim.check_responding(self.sensor_id)
        # A few milliseconds of numpy per window: off the event loop, which serves the API. The
        # audio generator is this driver's alone and reads are sequential, so a seed still
        # repeats the same sound.
        return await asyncio.to_thread(
            sound.synthesise, state, self.sim.audio_rng, self.sample_rate, self.sim.audio_window_s
        )


__all__ = [
    "FAULT_DESCRIPTIONS",
    "Fault",
    "FaultError",
    "FaultSet",
    "PlantModel",
    "PlantState",
    "ScheduledFault",
    "SimAudioDriver",
    "SimRpmDriver",
    "SimTemperatureDriver",
    "SimVoltageDriver",
    "Simulation",
    "WeibullFailure",
    "parse_fault_spec",
    "parse_schedule_spec",
]
