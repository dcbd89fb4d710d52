"""Reloading the rules file without a restart: on change, on SIGHUP, refusing a broken file."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from plantmon_alerts.engine import Cleared, Engine, Raised
from plantmon_alerts.rules import RuleBase, RulesWatcher, ThresholdRule, load_rules
from plantmon_common.opcua import Sample

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
UPPER = "Plant/Temperature/Upper"

RULES = """
rules:
  - {name: hot, kind: threshold, tags: 'Plant/Temperature/*', high: 100, hysteresis: 5, severity: 4, message: hot}
  - {name: fast, kind: threshold, tags: 'Plant/RPM/*', high: 1800, severity: 5, message: fast}
"""


def at(seconds: float, value: float, path: str = UPPER) -> Sample:
    return Sample(path, value, 0, T0 + timedelta(seconds=seconds))


def write(path: Path, text: str) -> None:
    """Write and move the modification time forward (file systems with coarse time stamps)."""
    path.write_text(text)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))


class Harness:
    """An engine fed by a watcher, the way the worker wires them."""

    def __init__(self, path: Path) -> None:
        self.rules = load_rules(path)
        self.engine = Engine(self.rules)
        self.transitions: list[object] = []
        self.watcher = RulesWatcher(path, self.apply, initial=self.rules)

    def apply(self, rules: list[RuleBase]) -> None:
        self.rules = rules
        self.transitions += self.engine.replace_rules(rules, T0 + timedelta(seconds=100))


def test_a_changed_file_is_reloaded_and_unchanged_rules_keep_their_open_alerts(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    write(path, RULES)
    h = Harness(path)
    [raised] = h.engine.feed(at(0, 120.0))
    assert h.watcher.check() is False  # nothing changed
    # Raise the limit of 'hot' and add a rule; 'hot' keeps its open alert, judged by the new limit.
    write(
        path,
        RULES.replace("high: 100, hysteresis: 5", "high: 110, hysteresis: 5")
        + ("  - {name: low_supply, kind: threshold, tags: 'Plant/Voltage/*', low: 20, severity: 3, message: low}\n"),
    )
    assert h.watcher.check() is True
    assert sorted(h.engine.rules) == ["fast", "hot", "low_supply"]
    rule = h.engine.rules["hot"]
    assert isinstance(rule, ThresholdRule) and rule.high == 110
    assert h.transitions == []
    assert [a.alert_id for a in h.engine.active()] == [raised.alert_id]
    assert h.engine.feed(at(10, 121.0)) != []  # a peak of the same alert, no second raise
    [cleared] = h.engine.feed(at(20, 104.0))  # below 110 - 5
    assert isinstance(cleared, Cleared) and cleared.alert_id == raised.alert_id


def test_a_removed_rule_clears_its_open_alert_at_reload(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    write(path, RULES)
    h = Harness(path)
    [raised] = h.engine.feed(at(0, 2000.0, "Plant/RPM/MainShaft"))
    h.engine.feed(at(0, 120.0))
    write(path, RULES.split("  - {name: fast")[0])
    assert h.watcher.check() is True
    [cleared] = h.transitions
    assert isinstance(cleared, Cleared) and cleared.alert_id == raised.alert_id and cleared.orphaned
    assert [a.rule for a in h.engine.active()] == ["hot"]


def test_a_broken_file_is_refused_the_previous_rules_stay_and_the_reason_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "rules.yaml"
    write(path, RULES)
    h = Harness(path)
    [raised] = h.engine.feed(at(0, 120.0))
    write(path, RULES.replace("severity: 4", "severity: 9"))
    with caplog.at_level(logging.ERROR, logger="plantmon_alerts.rules.watch"):
        assert h.watcher.check() is False
    [record] = [r for r in caplog.records if "reload refused" in r.getMessage()]
    problems = record.__dict__["problems"]
    assert any("rule 'hot' (#1)" in p and "field 'severity'" in p for p in problems)
    assert sorted(h.engine.rules) == ["fast", "hot"] and h.engine.rules["hot"].severity == 4
    assert h.watcher.refusals == 1 and h.watcher.last_error is not None
    assert [a.alert_id for a in h.engine.active()] == [raised.alert_id]
    # The same broken file is not re-read at every poll; fixing it is picked up.
    assert h.watcher.check() is False and h.watcher.refusals == 1
    write(path, RULES.replace("message: hot", "message: 'too hot: {value}'"))
    assert h.watcher.check() is True
    assert h.engine.rules["hot"].message == "too hot: {value}"
    assert [a.alert_id for a in h.engine.active()] == [raised.alert_id]


def test_broken_yaml_and_a_deleted_file_keep_the_previous_rules(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    write(path, RULES)
    h = Harness(path)
    write(path, "rules: [\n")
    assert h.watcher.check() is False
    assert h.watcher.last_error is not None and "not valid YAML" in str(h.watcher.last_error)
    path.unlink()
    assert h.watcher.check() is False
    assert "cannot read" in str(h.watcher.last_error)
    assert sorted(h.engine.rules) == ["fast", "hot"]


def test_a_rule_that_changes_kind_starts_afresh(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    write(path, RULES)
    h = Harness(path)
    [raised] = h.engine.feed(at(0, 120.0))
    write(
        path,
        RULES.replace(
            "{name: hot, kind: threshold, tags: 'Plant/Temperature/*', high: 100, hysteresis: 5,",
            "{name: hot, kind: rate_of_change, tags: 'Plant/Temperature/*', rise: 5,",
        ),
    )
    assert h.watcher.check() is True
    [cleared] = h.transitions
    assert isinstance(cleared, Cleared) and cleared.alert_id == raised.alert_id


async def test_sighup_reloads_at_once_and_the_poll_notices_a_change(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    write(path, RULES)
    h = Harness(path)
    h.watcher.poll_s = 3600.0  # only SIGHUP can trigger a reload in the first part
    stop = asyncio.Event()
    task = asyncio.create_task(h.watcher.run(stop))
    try:
        await asyncio.sleep(0)  # let it install its handler
        # Same size and time stamps as before: only the signal makes the watcher look.
        original = path.stat()
        path.write_text(RULES.replace("message: fast", "message: FAST"))
        os.utime(path, ns=(original.st_atime_ns, original.st_mtime_ns))
        os.kill(os.getpid(), signal.SIGHUP)
        for _ in range(200):
            if h.watcher.reloads:
                break
            await asyncio.sleep(0.05)
        assert h.watcher.reloads == 1
        assert h.engine.rules["fast"].message == "FAST"
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=10)
    # The poll: a short interval notices a rewritten file without any signal.
    h.watcher.poll_s = 0.05
    stop = asyncio.Event()
    task = asyncio.create_task(h.watcher.run(stop))
    try:
        write(path, RULES.replace("high: 1800", "high: 1900"))
        for _ in range(200):
            if h.watcher.reloads == 2:
                break
            await asyncio.sleep(0.05)
        assert h.watcher.reloads == 2
        fast = h.engine.rules["fast"]
        assert isinstance(fast, ThresholdRule) and fast.high == 1900
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=10)
    assert [t for t in h.transitions if isinstance(t, Raised)] == []
