"""The rules file: the shipped one is valid, an invalid one is refused naming the rule and field."""

from __future__ import annotations

from pathlib import Path

import pytest
from plantmon_alerts.__main__ import main
from plantmon_alerts.rules import DEFAULT_RULES_FILE, RulesError, ThresholdRule, load_rules, parse_rules

VALID = {
    "name": "hot",
    "kind": "threshold",
    "tags": "Plant/Temperature/*",
    "high": 100,
    "severity": 4,
    "message": "{tag} is {value}",
}


def refused(*rules: dict[str, object]) -> str:
    with pytest.raises(RulesError) as info:
        parse_rules({"rules": list(rules)})
    return str(info.value)


def test_the_shipped_rules_are_valid_and_cover_temperature_speed_and_voltage() -> None:
    rules = {r.name: r for r in load_rules(DEFAULT_RULES_FILE)}
    temperature = rules["temperature_high"]
    assert isinstance(temperature, ThresholdRule)
    assert (temperature.high, temperature.severity) == (100.0, 4)
    assert temperature.matches("Plant/Temperature/Upper") and temperature.matches("Plant/Temperature/Lower")
    assert rules["main_shaft_overspeed"].matches("Plant/RPM/MainShaft")
    assert rules["supply_voltage_low"].matches("Plant/Voltage/MainSupply")


def test_for_is_the_persistence_window_in_seconds() -> None:
    [rule] = parse_rules({"rules": [{**VALID, "for": 300}]})
    assert rule.for_s == 300


def test_severity_out_of_range_is_refused_naming_rule_and_field() -> None:
    message = refused({**VALID, "severity": 7})
    assert "rule 'hot'" in message and "field 'severity'" in message


def test_unknown_message_placeholder_is_refused() -> None:
    message = refused({**VALID, "message": "{tag} at {temperature}"})
    assert "rule 'hot'" in message and "field 'message'" in message and "temperature" in message


def test_a_threshold_rule_without_limits_is_refused() -> None:
    rule = {k: v for k, v in VALID.items() if k != "high"}
    message = refused(rule)
    assert "rule 'hot'" in message and "'high'/'low'" in message


def test_low_above_high_is_refused() -> None:
    assert "low (200.0) must be below high" in refused({**VALID, "low": 200})


def test_misspelt_field_is_refused() -> None:
    message = refused({**VALID, "hysteresys": 5})
    assert "rule 'hot'" in message and "field 'hysteresys'" in message


def test_negative_persistence_window_is_refused() -> None:
    assert "field 'for'" in refused({**VALID, "for": -1})


def test_unknown_kind_is_refused_with_the_known_kinds() -> None:
    message = refused({**VALID, "kind": "magic"})
    assert "rule 'hot'" in message and "field 'kind'" in message and "threshold" in message


def test_duplicate_names_are_refused() -> None:
    assert "field 'name': duplicate of rule #1" in refused(VALID, VALID)


def test_a_tag_glob_outside_the_plant_is_refused() -> None:
    assert "field 'tags'" in refused({**VALID, "tags": "Temperature/*"})


def test_a_rule_without_a_name_is_named_by_its_position() -> None:
    rule = {k: v for k, v in VALID.items() if k != "name"}
    message = refused(VALID | {"name": "ok"}, rule)
    assert "rule #2: field 'name'" in message


def test_every_problem_of_a_file_is_reported_at_once(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(
        "rules:\n"
        "  - {name: a, kind: threshold, tags: 'Plant/X/*', high: 1, severity: 0, message: m}\n"
        "  - {name: b, kind: threshold, tags: 'Plant/X/*', high: nope, severity: 1, message: m}\n"
    )
    with pytest.raises(RulesError) as info:
        load_rules(path)
    assert info.value.problems == [
        "rule 'a' (#1): field 'severity': Input should be greater than or equal to 1",
        "rule 'b' (#2): field 'high': Input should be a valid number, unable to parse string as a number",
    ]


def test_broken_yaml_and_wrong_shape_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("rules: [\n")
    with pytest.raises(RulesError, match="not valid YAML"):
        load_rules(path)
    path.write_text("- just a list\n")
    with pytest.raises(RulesError, match="top level"):
        load_rules(path)


def test_check_rules_command_exits_2_on_an_invalid_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("rules:\n  - {name: a, kind: threshold, tags: 'Plant/X/*', severity: 1, message: m}\n")
    assert main(["--check-rules", str(path)]) == 2
    assert "rule 'a' (#1)" in capsys.readouterr().err
    assert main(["--check-rules", str(DEFAULT_RULES_FILE)]) == 0
