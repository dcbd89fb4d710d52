"""The simulator: a coupled plant model advanced in real time, and drivers that read it.

:class:`Simulation` owns the model, the active faults and the random generators (one for the
plant's dynamics, one for measurement noise, one for sound, all derived from one seed). Its
drivers implement the protocols of :mod:`plantmon_sensors.drivers`; each read first advances the
model to "now" on a monotonic clock, so the model runs in real time whatever the read rates.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from plantmon_sensors.drivers import NoResponseError, OpenCircuitError
from plantmon_sensors.simulator import sound
from plantmon_sensors.simulator.faults import (
    FAULT_DESCRIPTIONS,
    OPEN_THERMOCOUPLE_SENSOR,
    Fault,
    FaultError,
    FaultSet,
    parse_fault_spec,
)
from plantmon_sensors.simulator.plant import PlantModel, PlantState

logger = logging.getLogger(__name__)

# A process suspended for longer than this resumes with a jump of this size, not hours of catch-up.
MAX_CATCH_UP_S = 60.0

TEMPERATURE_NOISE_C = 0.15
RPM_NOISE = 2.0
VOLTAGE_NOISE_V = 0.02


class Simulation:
    """The simulated plant and its sensors."""

    def __init__(
        self, seed: int, faults: list[str] | tuple[str, ...] = (), clock: Callable[[], float] = time.monotonic
    ):
        dynamics, measurement, audio = np.random.SeedSequence(seed).spawn(3)
        self.faults = FaultSet()
        for spec in faults:
            fault, sensor = parse_fault_spec(spec)
            self.faults.set(fault, True, sensor)
        self.model = PlantModel(np.random.default_rng(dynamics), self.faults)
        self.noise = np.random.default_rng(measurement)
        self.audio_rng = np.random.default_rng(audio)
        self.clock = clock
        self._last = clock()

    def advance(self) -> PlantState:
        """Step the model up to now on the monotonic clock."""
        now = self.clock()
        dt, self._last = min(max(0.0, now - self._last), MAX_CATCH_UP_S), now
        return self.model.step(dt) if dt > 0 else self.model.state

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

    async def read_celsius(self) -> float:
        state = self.sim.check_responding(self.sensor_id)
        if self.sensor_id == OPEN_THERMOCOUPLE_SENSOR and self.sim.faults.is_active(Fault.THERMOCOUPLE_OPEN):
            raise OpenCircuitError()
        true = state.upper_c if self.position == "upper" else state.lower_c
        # The MAX31855 resolves 0.25 °C.
        return round((true + TEMPERATURE_NOISE_C * float(self.sim.noise.standard_normal())) * 4) / 4


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
        return sound.SAMPLE_RATE

    async def read_buffer(self) -> npt.NDArray[np.float64]:
        state = self.sim.check_responding(self.sensor_id)
        return sound.synthesise(state, self.sim.audio_rng, self.sample_rate)


__all__ = [
    "FAULT_DESCRIPTIONS",
    "Fault",
    "FaultError",
    "FaultSet",
    "PlantModel",
    "PlantState",
    "SimAudioDriver",
    "SimRpmDriver",
    "SimTemperatureDriver",
    "SimVoltageDriver",
    "Simulation",
    "parse_fault_spec",
]
