"""A coupled plant model: load drives shaft speed, speed drives friction heat, load sags the supply.

The model is stepped with an explicit ``dt`` (:meth:`PlantModel.step`), so tests drive it without
sleeping; :class:`~plantmon_sensors.simulator.Simulation` steps it in real time from a monotonic
clock. All randomness comes from one numpy ``Generator`` seeded by the caller, so the same seed
and the same sequence of ``dt`` give the same sequence of states.

Dynamics (first-order lags, integrated exactly so any ``dt`` is stable):

- load: a new value ~ Uniform(0.3, 0.9) at exponentially distributed times (mean 20 s);
- speed: towards ``setpoint * (1 - droop * (load - 0.5))`` with a 2 s lag plus a little wander;
  the ``overspeed`` fault raises the setpoint by half;
- temperatures: towards ``ambient + friction(speed) + load heat (+ wear, + overheating)``;
  the upper bearing with a 12 s lag, the lower one cooler and slower;
- supply voltage: about 24 V minus a load-dependent sag (``voltage_sag`` removes another 5.5 V);
- bearing wear: towards 1 while ``bearing_wear`` is active, back to 0 after (10 s lag); with
  ``wear_ramp_s`` > 0 it instead grows linearly from where it is to 1 over that many seconds, so a
  developing fault starts inside the healthy noise (the anomaly benchmark uses this).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from plantmon_sensors.simulator.faults import Fault, FaultSet

NOMINAL_RPM = 1500.0
OVERSPEED_FACTOR = 1.5
AMBIENT_C = 25.0
FRICTION_RISE_C = 38.0  # upper bearing rise at nominal speed
LOAD_RISE_C = 10.0
LOWER_SHARE = 0.75  # the lower bearing sees this share of the upper one's rise
WEAR_RISE_C = 8.0
OVERHEAT_RISE_C = 90.0
NOMINAL_SUPPLY_V = 24.2
LOAD_SAG_V = 1.5
FAULT_SAG_V = 5.5
DROOP = 0.04
TAU_SPEED_S = 2.0
TAU_UPPER_S = 12.0
TAU_LOWER_S = 20.0
TAU_SUPPLY_S = 0.3
TAU_WEAR_S = 10.0
TAU_AMBIENT_S = 600.0
MEAN_LOAD_CHANGE_S = 20.0
MAX_SUBSTEP_S = 0.1


@dataclass(frozen=True, slots=True)
class PlantState:
    """The true (noise-free) state of the plant at ``time_s`` seconds of model time."""

    time_s: float
    load: float
    speed_rpm: float
    upper_c: float
    lower_c: float
    ambient_c: float
    supply_v: float
    wear: float


def _lag(value: float, target: float, dt: float, tau: float) -> float:
    return target + (value - target) * math.exp(-dt / tau)


class PlantModel:
    """The plant's physics; ``faults`` is shared with the simulated drivers."""

    def __init__(self, rng: np.random.Generator, faults: FaultSet | None = None, wear_ramp_s: float = 0.0) -> None:
        if wear_ramp_s < 0:
            raise ValueError("wear_ramp_s must not be negative")
        self.rng = rng
        self.faults = faults if faults is not None else FaultSet()
        self.wear_ramp_s = wear_ramp_s
        self.speed_setpoint_rpm = NOMINAL_RPM
        self._time = 0.0
        self._load = float(rng.uniform(0.3, 0.9))
        self._next_load_change = float(rng.exponential(MEAN_LOAD_CHANGE_S))
        self._ambient = AMBIENT_C
        self._wear = 0.0
        self._speed = self._speed_target()
        self._upper = self._upper_target()
        self._lower = self._lower_target()
        self._supply = self._supply_target()

    # -- targets: what each quantity settles to, given the others ------------------------
    def _speed_target(self) -> float:
        setpoint = self.speed_setpoint_rpm
        if self.faults.is_active(Fault.OVERSPEED):
            setpoint *= OVERSPEED_FACTOR
        return setpoint * (1.0 - DROOP * (self._load - 0.5))

    def _heat_rise(self) -> float:
        return FRICTION_RISE_C * (self._speed / NOMINAL_RPM) ** 2 + LOAD_RISE_C * self._load

    def _upper_target(self) -> float:
        target = self._ambient + self._heat_rise() + WEAR_RISE_C * self._wear
        if self.faults.is_active(Fault.OVERHEATING):
            target += OVERHEAT_RISE_C
        return target

    def _lower_target(self) -> float:
        target = self._ambient + LOWER_SHARE * self._heat_rise() + 0.5 * WEAR_RISE_C * self._wear
        if self.faults.is_active(Fault.OVERHEATING):
            target += 0.3 * OVERHEAT_RISE_C
        return target

    def _supply_target(self) -> float:
        target = NOMINAL_SUPPLY_V - LOAD_SAG_V * self._load
        if self.faults.is_active(Fault.VOLTAGE_SAG):
            target -= FAULT_SAG_V
        return target

    # -- stepping -------------------------------------------------------------------------
    def step(self, dt: float) -> PlantState:
        """Advance the model by ``dt`` seconds (in sub-steps of at most 0.1 s) and return the new state."""
        if dt < 0:
            raise ValueError("dt must not be negative")
        remaining = dt
        while remaining > 1e-12:
            sub = min(remaining, MAX_SUBSTEP_S)
            self._substep(sub)
            remaining -= sub
        return self.state

    def _substep(self, dt: float) -> None:
        rng = self.rng
        self._time += dt
        while self._time >= self._next_load_change:
            self._load = float(rng.uniform(0.3, 0.9))
            self._next_load_change += float(rng.exponential(MEAN_LOAD_CHANGE_S))
        wander = rng.standard_normal(2) * math.sqrt(dt)
        self._ambient = _lag(self._ambient, AMBIENT_C, dt, TAU_AMBIENT_S) + 0.05 * float(wander[0])
        wearing = self.faults.is_active(Fault.BEARING_WEAR)
        if wearing and self.wear_ramp_s > 0:
            self._wear = min(1.0, self._wear + dt / self.wear_ramp_s)
        else:
            self._wear = _lag(self._wear, 1.0 if wearing else 0.0, dt, TAU_WEAR_S)
        self._speed = _lag(self._speed, self._speed_target(), dt, TAU_SPEED_S) + 3.0 * float(wander[1])
        self._upper = _lag(self._upper, self._upper_target(), dt, TAU_UPPER_S)
        self._lower = _lag(self._lower, self._lower_target(), dt, TAU_LOWER_S)
        self._supply = _lag(self._supply, self._supply_target(), dt, TAU_SUPPLY_S)

    @property
    def state(self) -> PlantState:
        """The current true state."""
        return PlantState(
            time_s=self._time,
            load=self._load,
            speed_rpm=max(0.0, self._speed),
            upper_c=self._upper,
            lower_c=self._lower,
            ambient_c=self._ambient,
            supply_v=self._supply,
            wear=self._wear,
        )
