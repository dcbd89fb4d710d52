"""The alert engine: samples in, lifecycle transitions out. Pure: no I/O, no clock of its own.

For every (rule, tag) pair the engine keeps one slot: the rule kind's :class:`ConditionState`,
the pending condition (side and since when it holds) and the open alert. The lifecycle is the
same for every rule kind:

* a ``VIOLATED`` verdict starts (or continues) the persistence window; once the condition has
  held for the rule's ``for`` seconds the alert is raised (:class:`Raised`, with the value);
* while the alert is open, a worse value of the same side is a :class:`PeakUpdated`;
* a ``NORMAL`` verdict (or a violation of the other side) clears it (:class:`Cleared`);
* an ``UNKNOWN`` verdict (a bad-quality sample) changes nothing.

At most one alert is open per (rule, tag): a condition already active never raises again.
Time comes in from outside: a sample's own ``source_time`` in :meth:`Engine.feed`, and the
caller's ``now`` in :meth:`Engine.tick`, which completes persistence windows when no new sample
arrives (an unchanged value may not be republished) and lets time-judged kinds (stale data) speak.
:meth:`Engine.restore` takes the open alerts back from the database after a restart, so they are
continued, not raised twice; :meth:`Engine.replace_rules` swaps in a reloaded rules file, keeping
the open alerts and windows of the rules that did not change kind.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from plantmon_common.opcua import Sample

from plantmon_alerts.rules import ConditionState, RuleBase, Verdict, VerdictState

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Raised:
    """A new alert: the condition held for the rule's persistence window."""

    alert_id: uuid.UUID
    rule: str
    tag_path: str
    severity: int
    message: str
    value: float | None
    at: datetime


@dataclass(frozen=True, slots=True)
class PeakUpdated:
    """The open alert's value got worse than ever before while it is open."""

    alert_id: uuid.UUID
    rule: str
    tag_path: str
    severity: int
    peak: float
    at: datetime


@dataclass(frozen=True, slots=True)
class Cleared:
    """The condition is over (or, ``orphaned``, no rule evaluates it any more)."""

    alert_id: uuid.UUID
    rule: str
    tag_path: str
    severity: int
    value: float | None
    at: datetime
    orphaned: bool = False


Transition = Raised | PeakUpdated | Cleared


@dataclass(frozen=True, slots=True)
class OpenAlert:
    """An alert the database holds as not cleared (what :meth:`Engine.restore` takes)."""

    alert_id: uuid.UUID
    rule: str
    tag_path: str
    severity: int
    value_at_raise: float | None
    peak_value: float | None
    raised_at: datetime


@dataclass(slots=True)
class ActiveAlert:
    """An alert open in the engine."""

    alert_id: uuid.UUID
    rule: str
    tag_path: str
    side: str
    severity: int
    value_at_raise: float | None
    peak: float | None
    raised_at: datetime


@dataclass(slots=True)
class _Slot:
    condition: ConditionState = field(default_factory=ConditionState)
    pending_side: str | None = None
    pending_since: datetime | None = None
    pending_threshold: float | None = None
    pending_measured: float | None = None
    last_state: VerdictState = VerdictState.UNKNOWN
    last_value: float | None = None
    active: ActiveAlert | None = None


class Engine:
    """Evaluates rules on samples; see the module docstring for the lifecycle.

    ``new_id`` makes alert ids (a stable uuid per alert, chosen here, not by the database);
    ``units`` maps a tag path to its engineering unit for the ``{unit}`` placeholder.
    """

    def __init__(
        self,
        rules: Iterable[RuleBase],
        *,
        new_id: Callable[[], uuid.UUID] = uuid.uuid4,
        units: Mapping[str, str] | None = None,
    ) -> None:
        self.rules: dict[str, RuleBase] = {rule.name: rule for rule in rules}
        self.new_id = new_id
        self.units: dict[str, str] = dict(units or {})
        self._slots: dict[tuple[str, str], _Slot] = {}
        self._matching: dict[str, tuple[RuleBase, ...]] = {}

    # -- queries -----------------------------------------------------------------------------

    def active(self) -> list[ActiveAlert]:
        """Every open alert, oldest first."""
        alerts = [slot.active for slot in self._slots.values() if slot.active is not None]
        return sorted(alerts, key=lambda a: a.raised_at)

    def active_for(self, rule: str, tag_path: str) -> ActiveAlert | None:
        """The open alert of one condition, if any."""
        slot = self._slots.get((rule, tag_path))
        return slot.active if slot else None

    def rules_for(self, path: str) -> tuple[RuleBase, ...]:
        """The rules that watch ``path`` (cached: tag paths are few and stable)."""
        found = self._matching.get(path)
        if found is None:
            found = tuple(rule for rule in self.rules.values() if rule.matches(path))
            self._matching[path] = found
        return found

    # -- input ---------------------------------------------------------------------------------

    def feed(self, sample: Sample) -> list[Transition]:
        """Evaluate one sample against every matching rule; time is its ``source_time``."""
        transitions: list[Transition] = []
        for rule in self.rules_for(sample.path):
            slot = self._slot(rule.name, sample.path)
            verdict = rule.evaluate(sample, slot.condition)
            transitions += self._apply(rule, sample.path, slot, verdict, sample.value, sample.source_time)
        return transitions

    def tick(self, now: datetime) -> list[Transition]:
        """Let time pass: raise conditions whose persistence window has ended by ``now``.

        Only a condition whose latest sample still violated the rule is raised here (with that
        sample's value); one whose latest sample was bad quality waits for a good one.
        """
        transitions: list[Transition] = []
        for (name, path), slot in self._slots.items():
            rule = self.rules[name]
            verdict = rule.evaluate_time(now, slot.condition)
            if verdict.state is not VerdictState.UNKNOWN:
                transitions += self._apply(rule, path, slot, verdict, None, now)
            elif (
                slot.active is None and slot.last_state is VerdictState.VIOLATED and self._window_over(rule, slot, now)
            ):
                transitions.append(self._raise(rule, path, slot, slot.last_value, now))
        return transitions

    def restore(self, open_alerts: Iterable[OpenAlert], now: datetime) -> list[Transition]:
        """Continue the alerts the database holds open (after a restart).

        A condition the engine already has open is left alone. An open alert whose rule is
        gone from the rules file, or no longer matches its tag, is cleared (``orphaned``):
        nothing would ever evaluate it again.
        """
        transitions: list[Transition] = []
        for alert in open_alerts:
            rule = self.rules.get(alert.rule)
            if rule is None or not rule.matches(alert.tag_path):
                logger.warning(
                    "clearing an open alert no rule evaluates any more",
                    extra={"alert_id": str(alert.alert_id), "rule": alert.rule, "tag": alert.tag_path},
                )
                transitions.append(
                    Cleared(alert.alert_id, alert.rule, alert.tag_path, alert.severity, None, now, orphaned=True)
                )
                continue
            slot = self._slot(rule.name, alert.tag_path)
            if slot.active is not None:
                continue
            side = rule.side_of(alert.value_at_raise)
            peak = alert.peak_value if alert.peak_value is not None else alert.value_at_raise
            slot.active = ActiveAlert(
                alert.alert_id,
                rule.name,
                alert.tag_path,
                side,
                alert.severity,
                alert.value_at_raise,
                peak,
                alert.raised_at,
            )
            slot.condition.active_side = side
            slot.pending_side = slot.pending_since = None
            logger.info(
                "open alert restored",
                extra={"alert_id": str(alert.alert_id), "rule": rule.name, "tag": alert.tag_path},
            )
        return transitions

    def replace_rules(self, rules: Iterable[RuleBase], now: datetime) -> list[Transition]:
        """Swap in a reloaded rules file without losing what is going on.

        A rule whose name and kind are unchanged keeps its state on every tag it still matches:
        open alerts continue (the new definition decides when they clear), persistence windows
        and the memory of stateful kinds carry on. An open alert whose rule is gone, changed
        kind, or no longer matches the tag is cleared (``orphaned``), as at a restart.
        """
        new_rules = {rule.name: rule for rule in rules}
        transitions: list[Transition] = []
        for key, slot in list(self._slots.items()):
            name, path = key
            old, new = self.rules.get(name), new_rules.get(name)
            if new is not None and old is not None and new.kind == old.kind and new.matches(path):
                continue
            del self._slots[key]
            if slot.active is not None:
                alert = slot.active
                logger.info(
                    "clearing an open alert whose rule was removed or changed kind",
                    extra={"alert_id": str(alert.alert_id), "rule": name, "tag": path},
                )
                transitions.append(
                    Cleared(alert.alert_id, name, path, alert.severity, slot.last_value, now, orphaned=True)
                )
        self.rules = new_rules
        self._matching.clear()
        return transitions

    # -- lifecycle -----------------------------------------------------------------------------

    def _slot(self, rule: str, path: str) -> _Slot:
        key = (rule, path)
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = _Slot()
        return slot

    @staticmethod
    def _window_over(rule: RuleBase, slot: _Slot, at: datetime) -> bool:
        return slot.pending_since is not None and (at - slot.pending_since).total_seconds() >= rule.for_s

    def _apply(
        self, rule: RuleBase, path: str, slot: _Slot, verdict: Verdict, value: float | None, at: datetime
    ) -> list[Transition]:
        slot.last_state = verdict.state
        if verdict.state is VerdictState.UNKNOWN:
            return []
        slot.last_value = value
        transitions: list[Transition] = []
        active = slot.active
        if active is not None:
            if verdict.state is VerdictState.VIOLATED and verdict.side == active.side:
                if value is not None and (active.peak is None or rule.more_severe(active.side, value, active.peak)):
                    active.peak = value
                    transitions.append(PeakUpdated(active.alert_id, rule.name, path, active.severity, value, at))
                return transitions
            transitions.append(Cleared(active.alert_id, rule.name, path, active.severity, value, at))
            slot.active = None
            slot.condition.active_side = None
        if verdict.state is VerdictState.NORMAL:
            slot.pending_side = slot.pending_since = slot.pending_threshold = None
            return transitions
        if slot.pending_side != verdict.side or slot.pending_since is None:
            slot.pending_side, slot.pending_since = verdict.side, at
        slot.pending_threshold = verdict.threshold
        slot.pending_measured = verdict.measured
        if self._window_over(rule, slot, at):
            transitions.append(self._raise(rule, path, slot, value, at))
        return transitions

    def _raise(self, rule: RuleBase, path: str, slot: _Slot, value: float | None, at: datetime) -> Raised:
        side = slot.pending_side or ""
        alert = ActiveAlert(self.new_id(), rule.name, path, side, rule.severity, value, value, at)
        slot.active = alert
        slot.condition.active_side = side
        message = rule.render(path, value, slot.pending_threshold, self.units.get(path, ""), slot.pending_measured)
        slot.pending_side = slot.pending_since = slot.pending_threshold = slot.pending_measured = None
        return Raised(alert.alert_id, rule.name, path, rule.severity, message, value, at)
