"""The engine's lifecycle, with time driven by the test: persistence, hysteresis, no duplicates."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from plantmon_alerts.engine import Cleared, Engine, OpenAlert, PeakUpdated, Raised
from plantmon_alerts.rules import parse_rules
from plantmon_common.opcua import Sample

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
GOOD = 0
BAD = 0x80000000
UPPER = "Plant/Temperature/Upper"


def engine(**rule: object) -> Engine:
    base: dict[str, object] = {
        "name": "temperature_high",
        "kind": "threshold",
        "tags": "Plant/Temperature/*",
        "high": 100.0,
        "severity": 4,
        "message": "{tag} is {value:.1f} {unit}, above {threshold:.0f} {unit} ({rule})",
    }
    base.update(rule)
    return Engine(parse_rules({"rules": [base]}), units={UPPER: "°C"})


def at(seconds: float, value: float | None, status: int = GOOD, path: str = UPPER) -> Sample:
    return Sample(path, value, status, T0 + timedelta(seconds=seconds))


def test_raises_at_once_without_persistence_window_with_value_and_message() -> None:
    eng = engine()
    assert eng.feed(at(0, 99.0)) == []
    [raised] = eng.feed(at(1, 120.0))
    assert isinstance(raised, Raised)
    assert (raised.rule, raised.tag_path, raised.severity, raised.value, raised.at) == (
        "temperature_high",
        UPPER,
        4,
        120.0,
        T0 + timedelta(seconds=1),
    )
    assert raised.message == "Plant/Temperature/Upper is 120.0 °C, above 100 °C (temperature_high)"
    assert [a.alert_id for a in eng.active()] == [raised.alert_id]


def test_raises_only_after_the_condition_held_for_the_whole_window() -> None:
    eng = engine(**{"for": 300})
    assert eng.feed(at(0, 120.0)) == []
    assert eng.feed(at(150, 125.0)) == []
    assert eng.feed(at(299, 121.0)) == []
    [raised] = eng.feed(at(300, 122.0))
    assert isinstance(raised, Raised)
    assert raised.value == 122.0


def test_a_dip_below_the_limit_restarts_the_persistence_window() -> None:
    eng = engine(**{"for": 300})
    eng.feed(at(0, 120.0))
    eng.feed(at(200, 99.0))
    assert eng.feed(at(300, 120.0)) == []
    assert eng.feed(at(599, 120.0)) == []
    assert [type(t) for t in eng.feed(at(600, 120.0))] == [Raised]


def test_tick_ends_the_window_when_no_new_sample_arrives() -> None:
    eng = engine(**{"for": 60})
    eng.feed(at(0, 130.0))
    assert eng.tick(T0 + timedelta(seconds=59)) == []
    [raised] = eng.tick(T0 + timedelta(seconds=60))
    assert isinstance(raised, Raised)
    assert (raised.value, raised.at) == (130.0, T0 + timedelta(seconds=60))
    assert eng.tick(T0 + timedelta(seconds=120)) == []


def test_tick_does_not_raise_on_a_bad_quality_latest_sample() -> None:
    eng = engine(**{"for": 60})
    eng.feed(at(0, 130.0))
    eng.feed(at(10, None, BAD))
    assert eng.tick(T0 + timedelta(seconds=100)) == []


def test_an_active_condition_never_raises_a_second_alert() -> None:
    eng = engine()
    transitions = [t for s in range(10) for t in eng.feed(at(s, 120.0))]
    assert [type(t) for t in transitions] == [Raised]
    assert len(eng.active()) == 1


def test_peak_follows_the_worst_value_while_open() -> None:
    eng = engine()
    [raised] = eng.feed(at(0, 110.0))
    [peak] = eng.feed(at(1, 130.0))
    assert isinstance(peak, PeakUpdated)
    assert (peak.alert_id, peak.peak) == (raised.alert_id, 130.0)
    assert eng.feed(at(2, 120.0)) == []
    assert eng.active()[0].peak == 130.0


def test_hysteresis_keeps_the_alert_until_the_value_is_below_the_clear_level() -> None:
    eng = engine(hysteresis=5.0)
    [raised] = eng.feed(at(0, 120.0))
    assert eng.feed(at(1, 99.0)) == []
    assert eng.feed(at(2, 95.0)) == []  # exactly the clear level: still open
    [cleared] = eng.feed(at(3, 94.9))
    assert isinstance(cleared, Cleared)
    assert (cleared.alert_id, cleared.value, cleared.at) == (raised.alert_id, 94.9, T0 + timedelta(seconds=3))
    assert eng.active() == []


def test_a_value_back_inside_the_band_does_not_raise_again() -> None:
    eng = engine(hysteresis=5.0)
    eng.feed(at(0, 120.0))
    eng.feed(at(1, 90.0))
    assert eng.feed(at(2, 98.0)) == []  # below high: no new alert
    assert [type(t) for t in eng.feed(at(3, 101.0))] == [Raised]


def test_bad_quality_samples_neither_raise_nor_clear() -> None:
    eng = engine()
    assert eng.feed(at(0, 500.0, BAD)) == []
    assert eng.active() == []
    eng.feed(at(1, 120.0))
    assert eng.feed(at(2, 0.0, BAD)) == []
    assert eng.feed(at(3, None, BAD)) == []
    assert len(eng.active()) == 1


def test_low_limit_raises_below_and_clears_above_low_plus_hysteresis() -> None:
    eng = engine(name="supply_low", tags="Plant/Voltage/*", high=None, low=11.0, hysteresis=0.5)
    path = "Plant/Voltage/MainSupply"
    assert [type(t) for t in eng.feed(at(0, 10.5, path=path))] == [Raised]
    [peak] = eng.feed(at(1, 10.0, path=path))
    assert isinstance(peak, PeakUpdated) and peak.peak == 10.0
    assert eng.feed(at(2, 11.4, path=path)) == []
    assert [type(t) for t in eng.feed(at(3, 11.6, path=path))] == [Cleared]


def test_a_jump_from_high_to_low_clears_one_alert_and_raises_the_other() -> None:
    eng = engine(low=0.0)
    [high] = eng.feed(at(0, 120.0))
    cleared, low = eng.feed(at(1, -5.0))
    assert isinstance(cleared, Cleared) and cleared.alert_id == high.alert_id
    assert isinstance(low, Raised) and low.alert_id != high.alert_id


def test_each_tag_matching_the_glob_has_its_own_alert() -> None:
    eng = engine()
    eng.feed(at(0, 120.0))
    eng.feed(at(0, 120.0, path="Plant/Temperature/Lower"))
    assert eng.feed(at(0, 500.0, path="Plant/RPM/MainShaft")) == []
    assert sorted(a.tag_path for a in eng.active()) == ["Plant/Temperature/Lower", UPPER]


def test_restored_open_alert_is_continued_not_raised_again() -> None:
    alert_id = uuid.uuid4()
    stored = OpenAlert(alert_id, "temperature_high", UPPER, 4, 120.0, 125.0, T0)
    eng = engine(hysteresis=5.0)
    assert eng.restore([stored], T0) == []
    assert eng.feed(at(10, 121.0)) == []
    [peak] = eng.feed(at(11, 126.0))
    assert isinstance(peak, PeakUpdated) and peak.alert_id == alert_id
    [cleared] = eng.feed(at(12, 50.0))
    assert isinstance(cleared, Cleared) and cleared.alert_id == alert_id


def test_restore_clears_alerts_of_rules_that_no_longer_exist() -> None:
    gone = OpenAlert(uuid.uuid4(), "renamed_rule", UPPER, 2, 1.0, 1.0, T0)
    [cleared] = engine().restore([gone], T0 + timedelta(hours=1))
    assert isinstance(cleared, Cleared) and cleared.orphaned and cleared.alert_id == gone.alert_id
