"""Feature vectors from the sensors service's plant simulator, generated offline (no clock, no I/O).

For the tests, the benchmark and trying a model without a plant: :func:`simulate` steps
:class:`plantmon_sensors.simulator.Simulation` on a clock it drives itself, reads every simulated
driver at each vector time (``cadence`` seconds apart) the way the sensor service does, turns the
audio buffer into bands, MFCC and level with the service's own feature code, and lays the values
out by tag path, exactly as the alert worker sees them through OPC UA (the latest value of each
tag at the vector's time).

``episodes`` switch the ``bearing_wear`` fault on and off; with ``wear_ramp_s`` the wear grows
linearly from zero, so a fault starts inside the healthy noise instead of jumping.

It lives in bench/ (not in plantmon_alerts) because it needs plantmon-sensors, which the alert
worker's image does not contain; the tests and the anomaly benchmark import it from here.
"""

from __future__ import annotations

import logging
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

logger = logging.getLogger(__name__)

T = TypeVar("T")

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Episode:
    """A bearing fault switched on at ``onset_s`` (model seconds) and off ``duration_s`` later."""

    onset_s: float
    duration_s: float

    @property
    def end_s(self) -> float:
        return self.onset_s + self.duration_s


@dataclass(frozen=True, slots=True)
class Replay:
    """Vectors at ``times`` (model seconds), one column per tag in ``features``; ``wear`` is the truth."""

    times: FloatArray
    vectors: FloatArray
    features: tuple[str, ...]
    wear: FloatArray
    episodes: tuple[Episode, ...]

    def column(self, path: str) -> FloatArray:
        return np.asarray(self.vectors[:, self.features.index(path)], dtype=np.float64)


def _now(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends (the simulated drivers) to its result."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        result: T = done.value
        return result
    coroutine.close()
    raise RuntimeError("a simulated driver suspended; it cannot be replayed offline")


def simulate(
    seed: int,
    duration_s: float,
    *,
    cadence_s: float = 10.0,
    episodes: Sequence[Episode] = (),
    wear_ramp_s: float = 600.0,
) -> Replay:
    """``duration_s`` seconds of the simulated plant, sampled every ``cadence_s`` seconds."""
    from plantmon_sensors.catalog import TAGS
    from plantmon_sensors.features import FeatureConfig, FeatureExtractor
    from plantmon_sensors.simulator import Fault, Simulation

    clock = [0.0]
    sim = Simulation(seed, clock=lambda: clock[0], wear_ramp_s=wear_ramp_s)
    upper = sim.temperature("temperature_upper", "upper")
    lower = sim.temperature("temperature_lower", "lower")
    rpm = sim.rpm("rpm")
    voltage = sim.voltage("voltage")
    audio = sim.audio("audio")
    extractor = FeatureExtractor(FeatureConfig(sample_rate=audio.sample_rate))

    def read() -> dict[tuple[str, str], float]:
        readings: dict[tuple[str, str], float] = {}
        for sensor_id, driver in (("temperature_upper", upper), ("temperature_lower", lower)):
            thermocouple = _now(driver.read_thermocouple())
            if thermocouple.celsius is not None:
                readings[(sensor_id, "celsius")] = thermocouple.celsius
            readings[(sensor_id, "cold_junction_celsius")] = thermocouple.cold_junction_celsius
        readings[("rpm", "rpm")] = _now(rpm.read_rpm())
        readings[("voltage", "volts")] = _now(voltage.read_volts())
        for channel, value in extractor.extract(audio.buffer()).channels().items():
            readings[("audio", channel)] = value
        return readings

    # The columns: every catalog tag the simulated sensors produce, in catalog order.
    produced = read()
    features = tuple(tag.path for tag in TAGS if (tag.sensor_id, tag.channel) in produced)
    channel_of = {tag.path: (tag.sensor_id, tag.channel) for tag in TAGS}

    switches = sorted([(e.onset_s, True) for e in episodes] + [(e.end_s, False) for e in episodes], key=lambda s: s[0])
    n = int(duration_s // cadence_s)
    times = np.arange(1, n + 1, dtype=np.float64) * cadence_s
    vectors = np.empty((n, len(features)), dtype=np.float64)
    wear = np.empty(n, dtype=np.float64)
    next_switch = 0
    for i, t in enumerate(times):
        while next_switch < len(switches) and switches[next_switch][0] <= t:
            clock[0] = switches[next_switch][0]
            sim.set_fault(Fault.BEARING_WEAR, switches[next_switch][1])
            next_switch += 1
        clock[0] = float(t)
        readings = read()
        vectors[i] = [readings[channel_of[path]] for path in features]
        wear[i] = sim.model.state.wear
    logger.debug("plant replayed", extra={"seed": seed, "vectors": n, "episodes": len(episodes)})
    return Replay(times, vectors, features, wear, tuple(episodes))
