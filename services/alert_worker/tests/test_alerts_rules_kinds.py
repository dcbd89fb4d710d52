"""Rate of change, stale data, bad quality and anomaly rules in the engine, time driven by the test."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest
from plantmon_alerts.engine import Cleared, Engine, PeakUpdated, Raised
from plantmon_alerts.rules import AnomalyRule, RulesError, parse_rules
from plantmon_common.opcua import Sample

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
GOOD = 0
BAD = 0x80310000  # BadNoCommunication
UNCERTAIN = 0x40000000
UPPER = "Plant/Temperature/Upper"


def engine(**rule: object) -> Engine:
    return Engine(parse_rules({"rules": [rule]}), units={UPPER: "°C"})


def at(seconds: float, value: float | None, status: int = GOOD, path: str = UPPER) -> Sample:
    return Sample(path, value, status, T0 + timedelta(seconds=seconds))


def when(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def kinds(transitions: Sequence[object]) -> list[type]:
    return [type(t) for t in transitions]


# -- rate of change ----------------------------------------------------------------------------

RATE = {
    "name": "heating_fast",
    "kind": "rate_of_change",
    "tags": "Plant/Temperature/*",
    "rise": 5.0,  # °C per minute
    "per": 60,
    "window": 60,
    "severity": 3,
    "message": "{tag} rises {measured:.1f} {unit}/min (limit {threshold:.0f})",
}


def test_rate_of_change_says_nothing_until_the_history_spans_the_window() -> None:
    eng = engine(**RATE)
    assert eng.feed(at(0, 50.0)) == []
    assert eng.feed(at(30, 80.0)) == []  # +60 °C/min, but only 30 s of history
    [raised] = eng.feed(at(60, 80.0))  # (80 - 50) over 60 s = 30 °C/min
    assert isinstance(raised, Raised)
    assert raised.message == "Plant/Temperature/Upper rises 30.0 °C/min (limit 5)"


def test_rate_of_change_raises_above_the_rate_and_clears_below_it() -> None:
    eng = engine(**RATE)
    # 4 °C/min for two minutes: within the limit.
    assert [t for s in range(0, 121, 10) for t in eng.feed(at(s, 50.0 + 4.0 * s / 60))] == []
    # Then 10 °C/min from 58 °C at 120 s. At 130 s the slope against 70 s is exactly 5.0 °C/min
    # (not above the limit); at 140 s, against 80 s, it is 6.0.
    assert eng.feed(at(130, 58.0 + 10.0 * 10 / 60)) == []
    [raised] = eng.feed(at(140, 58.0 + 10.0 * 20 / 60))
    assert isinstance(raised, Raised) and raised.at == when(140)
    # Flat from then on at 61.33 °C: against 90 s (56.0) the slope is 5.33, still above;
    # against 100 s (56.67) it is 4.67: cleared at 160 s.
    flat = 58.0 + 10.0 * 20 / 60
    assert eng.feed(at(150, flat)) == []
    [cleared] = eng.feed(at(160, flat))
    assert isinstance(cleared, Cleared) and cleared.alert_id == raised.alert_id
    assert eng.active() == []


def test_rate_of_change_with_persistence_and_hysteresis() -> None:
    eng = engine(**{**RATE, "for": 30, "hysteresis": 2.0})
    out = []
    for s in range(0, 61, 10):
        out += eng.feed(at(s, 50.0 + s / 10))  # 6 °C/min from the start
    assert out == []  # rate known at 60 s, the window of 30 s starts there
    for s in range(70, 91, 10):
        out += eng.feed(at(s, 50.0 + s / 10))
    assert kinds(out) == [Raised] and out[0].at == when(90)
    # 4 °C/min: below the limit but not below limit - hysteresis (3 °C/min): stays open.
    base = 59.0
    for s in range(100, 221, 10):
        assert not any(isinstance(t, Cleared) for t in eng.feed(at(s, base + 4.0 * (s - 90) / 60)))
    # 2 °C/min: clears.
    top = base + 4.0 * (220 - 90) / 60
    cleared = [t for s in range(230, 400, 10) for t in eng.feed(at(s, top + 2.0 * (s - 220) / 60))]
    assert [k for k in kinds(cleared) if k is not PeakUpdated] == [Cleared]  # the value still rises: peaks


def test_rate_of_change_falling_side_and_bad_samples_ignored() -> None:
    eng = engine(**{**RATE, "rise": None, "fall": 3.0})
    eng.feed(at(0, 80.0))
    assert eng.feed(at(30, None, BAD)) == []
    [raised] = eng.feed(at(60, 70.0))  # -10 °C/min
    assert isinstance(raised, Raised)
    assert eng.feed(at(90, 0.0, BAD)) == []  # proves nothing
    assert eng.active()[0].side == "fall"


def test_rate_of_change_never_raises_twice_for_one_condition() -> None:
    eng = engine(**RATE)
    out = [t for s in range(0, 600, 10) for t in eng.feed(at(s, 50.0 + s))]  # 60 °C/min all along
    assert kinds(out).count(Raised) == 1


# -- stale -------------------------------------------------------------------------------------

STALE = {
    "name": "no_data",
    "kind": "stale",
    "tags": "Plant/*/*",
    "max_age": 30,
    "severity": 2,
    "message": "{tag}: no update for {measured:.0f} s",
}


def test_stale_raises_when_no_update_for_longer_than_max_age_and_clears_on_the_next() -> None:
    eng = engine(**STALE)
    assert eng.feed(at(0, 50.0)) == []
    assert eng.tick(when(30)) == []  # exactly max_age: not yet
    [raised] = eng.tick(when(31))
    assert isinstance(raised, Raised) and raised.at == when(31)
    assert raised.message == "Plant/Temperature/Upper: no update for 31 s"
    assert eng.tick(when(60)) == []  # no duplicate while it stays stale
    [cleared] = eng.feed(at(61, 50.0))
    assert isinstance(cleared, Cleared) and cleared.alert_id == raised.alert_id


def test_a_bad_quality_update_is_still_an_update_for_the_stale_rule() -> None:
    eng = engine(**STALE)
    eng.feed(at(0, 50.0))
    eng.feed(at(25, None, BAD))
    assert eng.tick(when(50)) == []
    assert kinds(eng.tick(when(56))) == [Raised]


def test_stale_with_persistence_waits_max_age_plus_for() -> None:
    eng = engine(**{**STALE, "for": 60})
    eng.feed(at(0, 50.0))
    assert eng.tick(when(31)) == []
    assert eng.tick(when(90)) == []
    assert kinds(eng.tick(when(91))) == [Raised]


def test_stale_watches_each_tag_on_its_own() -> None:
    eng = engine(**STALE)
    eng.feed(at(0, 50.0))
    eng.feed(at(0, 1500.0, path="Plant/RPM/MainShaft"))
    eng.feed(at(20, 1500.0, path="Plant/RPM/MainShaft"))
    [raised] = eng.tick(when(40))
    assert isinstance(raised, Raised) and raised.tag_path == UPPER


# -- bad quality -------------------------------------------------------------------------------

BADQ = {
    "name": "sensor_bad",
    "kind": "bad_quality",
    "tags": "Plant/*/*",
    "for": 20,
    "severity": 3,
    "message": "{tag} has had bad quality for a while",
}


def test_bad_quality_raises_after_lasting_for_and_clears_on_a_good_sample() -> None:
    eng = engine(**BADQ)
    assert eng.feed(at(0, 50.0)) == []
    assert eng.feed(at(1, None, BAD)) == []
    assert eng.feed(at(11, None, BAD)) == []
    [raised] = eng.feed(at(21, None, BAD))
    assert isinstance(raised, Raised) and raised.at == when(21)
    assert eng.feed(at(30, None, BAD)) == []
    [cleared] = eng.feed(at(31, 50.0))
    assert isinstance(cleared, Cleared)


def test_bad_quality_interrupted_by_a_good_sample_restarts_the_window() -> None:
    eng = engine(**BADQ)
    eng.feed(at(0, None, BAD))
    eng.feed(at(15, 50.0))
    eng.feed(at(16, None, BAD))
    assert eng.feed(at(35, None, BAD)) == []
    assert kinds(eng.feed(at(36, None, BAD))) == [Raised]


def test_bad_quality_window_ends_on_the_tick_when_bad_samples_stop_coming() -> None:
    eng = engine(**BADQ)
    eng.feed(at(0, None, BAD))
    assert eng.tick(when(19)) == []
    assert kinds(eng.tick(when(20))) == [Raised]


def test_uncertain_counts_as_bad_only_when_asked() -> None:
    assert engine(**{**BADQ, "for": 0}).feed(at(0, 50.0, UNCERTAIN)) == []
    assert kinds(engine(**{**BADQ, "for": 0, "uncertain": True}).feed(at(0, 50.0, UNCERTAIN))) == [Raised]


# -- anomaly -----------------------------------------------------------------------------------

ANOMALY = {
    "name": "plant_anomaly",
    "kind": "anomaly",
    "tags": "Plant/*",
    "threshold": 1.5,
    "hysteresis": 0.5,
    "for": 20,
    "severity": 4,
    "message": "unusual plant behaviour, score {measured:.2f}",
}
SCORE = "Plant/Anomaly/plant_anomaly"


def test_anomaly_rule_watches_its_score_tag_and_selects_features_by_glob() -> None:
    [rule] = parse_rules({"rules": [ANOMALY]})
    assert isinstance(rule, AnomalyRule)
    assert rule.score_path == SCORE and rule.matches(SCORE) and not rule.matches(UPPER)
    assert rule.selects_feature(UPPER) and rule.selects_feature("Plant/Audio/Spectrum/Band_3")
    assert not rule.selects_feature(SCORE)


def test_anomaly_score_above_threshold_for_n_seconds_raises_and_hysteresis_clears() -> None:
    eng = engine(**ANOMALY)
    assert eng.feed(at(0, 0.2, path=SCORE)) == []
    assert eng.feed(at(10, 2.0, path=SCORE)) == []
    assert eng.feed(at(20, 1.0, path=SCORE)) == []  # dipped: the window restarts
    assert eng.feed(at(30, 1.8, path=SCORE)) == []
    assert eng.feed(at(40, 2.5, path=SCORE)) == []
    [raised] = eng.feed(at(50, 3.0, path=SCORE))
    assert isinstance(raised, Raised) and raised.message == "unusual plant behaviour, score 3.00"
    [peak] = eng.feed(at(60, 4.0, path=SCORE))
    assert isinstance(peak, PeakUpdated)
    assert eng.feed(at(70, 1.0, path=SCORE)) == []  # exactly the clear level
    [cleared] = eng.feed(at(80, 0.9, path=SCORE))
    assert isinstance(cleared, Cleared) and cleared.alert_id == raised.alert_id


# -- validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ({**RATE, "rise": None}, ["rule 'heating_fast'", "'rise'/'fall'"]),
        ({**RATE, "rise": -1}, ["rule 'heating_fast'", "field 'rise'"]),
        ({**RATE, "window": 0}, ["rule 'heating_fast'", "field 'window'"]),
        ({**RATE, "hysteresis": 6}, ["rule 'heating_fast'", "field 'hysteresis'"]),
        ({k: v for k, v in STALE.items() if k != "max_age"}, ["rule 'no_data'", "field 'max_age'"]),
        ({**STALE, "max_age": "soon"}, ["rule 'no_data'", "field 'max_age'"]),
        ({**BADQ, "uncertain": "maybe"}, ["rule 'sensor_bad'", "field 'uncertain'"]),
        ({**ANOMALY, "threshold": 0}, ["rule 'plant_anomaly'", "field 'threshold'"]),
        ({**ANOMALY, "hysteresis": 2}, ["rule 'plant_anomaly'", "field 'hysteresis'"]),
        ({**ANOMALY, "train_window": 60}, ["rule 'plant_anomaly'", "field 'train_window'"]),
        ({**ANOMALY, "severity": 6}, ["rule 'plant_anomaly'", "field 'severity'"]),
        ({**STALE, "message": "{tag} {age}"}, ["rule 'no_data'", "field 'message'", "{measured}"]),
    ],
)
def test_invalid_rules_of_every_new_kind_are_refused_naming_rule_and_field(
    rule: dict[str, object], expected: list[str]
) -> None:
    with pytest.raises(RulesError) as info:
        parse_rules({"rules": [rule]})
    for text in expected:
        assert text in str(info.value)


def test_the_examples_in_the_shipped_rules_file_comments_are_valid_rules() -> None:
    import yaml
    from plantmon_alerts.rules import DEFAULT_RULES_FILE, RULE_KINDS

    examples, current = [], ""
    for line in DEFAULT_RULES_FILE.read_text().splitlines():
        text = line.lstrip("#").strip()
        if text.startswith("e.g."):
            current = text.removeprefix("e.g.").strip()
        elif current:
            current += " " + text
        if current and current.count("{") == current.count("}") and current.endswith("}"):
            examples.append(yaml.safe_load(current))
            current = ""
    rules = parse_rules({"rules": examples})
    assert sorted({r.kind for r in rules}) == sorted(set(RULE_KINDS) - {"threshold"})
