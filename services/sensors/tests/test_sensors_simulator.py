"""The plant model: coupling, repeatability, and what each fault does."""

from __future__ import annotations

import numpy as np
import pytest
from plantmon_sensors.drivers import NoResponseError, OpenCircuitError
from plantmon_sensors.simulator import (
    Fault,
    FaultError,
    PlantModel,
    Simulation,
    WeibullFailure,
    parse_fault_spec,
    parse_schedule_spec,
)


def run(model: PlantModel, seconds: float, dt: float = 0.5) -> list[float]:
    """Step ``model`` for ``seconds``; return the upper temperature after each step."""
    return [model.step(dt).upper_c for _ in range(round(seconds / dt))]


def test_normal_operation_stays_in_the_expected_band() -> None:
    model = PlantModel(np.random.default_rng(7))
    for _ in range(600):
        state = model.step(0.5)
        assert 1300 < state.speed_rpm < 1700
        assert 55 < state.upper_c < 80
        assert state.lower_c < state.upper_c
        assert 21.5 < state.supply_v < 24.5


def test_raising_speed_raises_temperature_after_a_lag() -> None:
    reference, faster = PlantModel(np.random.default_rng(1)), PlantModel(np.random.default_rng(1))
    faster.speed_setpoint_rpm = 2000.0
    reference.step(0.5)
    faster.step(0.5)
    # Half a second later the shaft is accelerating but the bearing has barely noticed.
    assert faster.state.speed_rpm > reference.state.speed_rpm + 50
    assert faster.state.upper_c - reference.state.upper_c < 1.0
    reference.step(60.0)
    faster.step(60.0)
    assert faster.state.upper_c - reference.state.upper_c > 15.0
    assert faster.state.lower_c - reference.state.lower_c > 10.0


def test_same_seed_same_run_and_other_seed_other_run() -> None:
    def states(seed: int) -> list[tuple[float, ...]]:
        model = PlantModel(np.random.default_rng(seed))
        out: list[tuple[float, ...]] = []
        for dt in [0.1, 0.5, 0.25, 2.0] * 20:
            s = model.step(dt)
            out.append((s.load, s.speed_rpm, s.upper_c, s.lower_c, s.supply_v, s.ambient_c))
        return out

    assert states(42) == states(42)
    assert states(42) != states(43)


async def test_simulation_with_the_same_seed_reads_the_same_values() -> None:
    async def readings(seed: int) -> list[float]:
        clock = iter(np.arange(0.0, 100.0, 0.5))
        sim = Simulation(seed, clock=lambda: float(next(clock)))
        temp, rpm = sim.temperature("temperature_upper", "upper"), sim.rpm("rpm")
        return [v for _ in range(20) for v in (await temp.read_celsius(), await rpm.read_rpm())]

    assert await readings(5) == await readings(5)


def test_overheating_crosses_100_degrees_within_20_seconds_and_cools_back() -> None:
    model = PlantModel(np.random.default_rng(3))
    run(model, 30)
    normal = model.state.upper_c
    model.faults.set(Fault.OVERHEATING, True)
    temps = run(model, 20)
    assert max(temps[:30]) > 100.0  # within 15 s
    assert temps[-1] > 120.0
    run(model, 60)
    assert model.state.upper_c > 120.0  # stays there while active
    model.faults.set(Fault.OVERHEATING, False)
    run(model, 90)
    assert model.state.upper_c < normal + 5


def test_overspeed_runs_the_shaft_fast_and_heats_it() -> None:
    model = PlantModel(np.random.default_rng(4))
    run(model, 10)
    before = model.state
    model.faults.set(Fault.OVERSPEED, True)
    run(model, 60)
    assert model.state.speed_rpm > 2000
    assert model.state.upper_c > before.upper_c + 20


def test_voltage_sag_lowers_the_supply() -> None:
    model = PlantModel(np.random.default_rng(5))
    run(model, 5)
    before = model.state.supply_v
    model.faults.set(Fault.VOLTAGE_SAG, True)
    run(model, 5)
    assert model.state.supply_v < before - 4


def test_bearing_wear_grows_and_adds_a_little_heat() -> None:
    worn, healthy = PlantModel(np.random.default_rng(6)), PlantModel(np.random.default_rng(6))
    worn.faults.set(Fault.BEARING_WEAR, True)
    run(worn, 60)
    run(healthy, 60)
    assert worn.state.wear > 0.9
    assert 3.0 < worn.state.upper_c - healthy.state.upper_c < 15.0


async def test_open_thermocouple_breaks_only_the_upper_sensor() -> None:
    sim = Simulation(1, faults=["thermocouple_open"])
    with pytest.raises(OpenCircuitError) as raised:
        await sim.temperature("temperature_upper", "upper").read_celsius()
    assert raised.value.reason == "open circuit"
    assert 40 < await sim.temperature("temperature_lower", "lower").read_celsius() < 80
    assert await sim.rpm("rpm").read_rpm() > 1000


async def test_stopped_sensor_does_not_answer_and_the_others_do() -> None:
    sim = Simulation(1)
    sim.set_fault(Fault.SENSOR_STOPPED, True, "voltage")
    with pytest.raises(NoResponseError):
        await sim.voltage("voltage").read_volts()
    assert await sim.rpm("rpm").read_rpm() > 1000
    sim.set_fault(Fault.SENSOR_STOPPED, False, "voltage")
    assert 20 < await sim.voltage("voltage").read_volts() < 25


def test_fault_specs_are_checked() -> None:
    assert parse_fault_spec("sensor_stopped:rpm") == (Fault.SENSOR_STOPPED, "rpm")
    with pytest.raises(FaultError, match="unknown fault"):
        parse_fault_spec("meltdown")
    with pytest.raises(FaultError, match="needs a sensor"):
        parse_fault_spec("sensor_stopped")
    with pytest.raises(FaultError, match="unknown sensor"):
        parse_fault_spec("sensor_stopped:nope")


def test_scheduled_faults_switch_on_and_off_at_their_model_time() -> None:
    now = [0.0]
    sim = Simulation(3, clock=lambda: now[0], schedule=["overheating@10+20", "sensor_stopped:rpm@5"])
    for t, overheating, rpm_stopped in [(4.9, False, False), (5.0, False, True), (9.9, False, True), (10.0, True, True),
                                        (29.9, True, True), (30.1, False, True)]:  # fmt: skip
        now[0] = t
        sim.advance()
        assert sim.faults.is_active(Fault.OVERHEATING) is overheating, t
        assert sim.faults.sensor_stopped("rpm") is rpm_stopped, t
    with pytest.raises(FaultError, match="needs a time"):
        parse_schedule_spec("overheating")
    with pytest.raises(FaultError, match="seconds"):
        parse_schedule_spec("overheating@soon")


def test_a_large_clock_step_applies_a_scheduled_fault_at_its_own_time() -> None:
    now = [0.0]
    hot = Simulation(3, clock=lambda: now[0], schedule=["overheating@10+20"])
    now[0] = 40.0  # one read long after the fault ended: the model still lived through it
    assert hot.advance().upper_c > Simulation(3, clock=lambda: 40.0).advance().upper_c + 5


def test_weibull_time_to_failure_is_seeded_and_switches_its_fault_on() -> None:
    failure = WeibullFailure("bearing_wear", shape=2.0, scale_s=100.0)
    draws = [Simulation(seed, failure=failure).failure_at_s for seed in (1, 1, 2)]
    assert draws[0] == draws[1] != draws[2]
    many = np.array([Simulation(seed, failure=failure).failure_at_s for seed in range(300)])
    assert 80 < many.mean() < 100  # Weibull(k=2, lambda=100): mean = 100 * Gamma(1.5) = 88.6
    now = [0.0]
    sim = Simulation(1, clock=lambda: now[0], failure=failure)
    assert sim.failure_at_s is not None
    now[0] = sim.failure_at_s - 0.5
    sim.advance()
    assert not sim.faults.is_active(Fault.BEARING_WEAR)
    now[0] = sim.failure_at_s + 0.5
    sim.advance()
    assert sim.faults.is_active(Fault.BEARING_WEAR)


async def test_open_thermocouple_keeps_the_cold_junction() -> None:
    sim = Simulation(1, faults=["thermocouple_open"])
    reading = await sim.temperature("temperature_upper", "upper").read_thermocouple()
    assert reading.celsius is None and reading.fault == "open circuit"
    assert 20 < reading.cold_junction_celsius < 35 and (reading.cold_junction_celsius * 16).is_integer()
