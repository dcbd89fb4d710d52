"""Rule kinds and the rules-file loader.

A rules file is YAML with one key, ``rules``, a list of rules. Each rule names its ``kind``;
:data:`RULE_KINDS` maps the kind to its pydantic class, so adding a kind is adding a class and
a row there. Every rule is validated at start; an invalid file is refused as a whole with one
line per problem, each naming the rule and the field (:class:`RulesError`).
"""

from __future__ import annotations

import fnmatch
import logging
import math
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import yaml
from plantmon_common.opcua import Sample
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

logger = logging.getLogger(__name__)

DEFAULT_RULES_FILE = Path(__file__).with_name("default.yaml")

#: The placeholders a ``message`` template may use (``str.format`` syntax, format specs allowed).
#: ``measured`` is what the rule kind measured: the rate of a rate-of-change rule, the age of
#: the latest update of a stale rule, the score of an anomaly rule (the value for a threshold).
MESSAGE_FIELDS = ("tag", "value", "threshold", "rule", "unit", "measured")


class RulesError(ValueError):
    """The rules file cannot be used; ``problems`` has one line per rule and field."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"rules file {source} is invalid:\n" + "\n".join(f"  - {p}" for p in problems))


class VerdictState(StrEnum):
    """What one sample says about a rule's condition on one tag."""

    VIOLATED = "violated"  # the condition holds (an alert is, or is about to be, open)
    NORMAL = "normal"  # the condition is over (an open alert clears, a pending one is dropped)
    UNKNOWN = "unknown"  # the sample proves nothing (bad quality, no value): nothing changes


@dataclass(frozen=True, slots=True)
class Verdict:
    """A rule's answer for one sample; ``side`` tells apart the conditions of one rule (high/low)."""

    state: VerdictState
    side: str = ""
    threshold: float | None = None
    measured: float | None = None


UNKNOWN = Verdict(VerdictState.UNKNOWN)
NORMAL = Verdict(VerdictState.NORMAL)


@dataclass(slots=True)
class ConditionState:
    """What the engine remembers about one (rule, tag) pair between samples.

    ``active_side`` is the side of the open alert (``None`` while none is open); ``scratch`` is
    the private memory of stateful rule kinds (the previous value of a rate-of-change rule ...).
    """

    active_side: str | None = None
    scratch: dict[str, Any] = field(default_factory=dict)


class RuleBase(BaseModel):
    """What every rule kind has: identity, selector, persistence window, severity, message."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    kind: str
    name: str = Field(min_length=1, max_length=100, description="Unique name; the alert's `rule` column")
    tags: str = Field(min_length=1, description="Path glob (fnmatch), e.g. Plant/Temperature/*")
    for_s: float = Field(
        default=0.0,
        alias="for",
        ge=0,
        allow_inf_nan=False,
        description="Seconds the condition must hold before the alert is raised (0 = at once)",
    )
    severity: int = Field(ge=1, le=5, description="1 (information) .. 5 (critical)")
    message: str = Field(
        min_length=1, description="str.format template: {tag} {value} {threshold} {rule} {unit} {measured}"
    )
    description: str = Field(default="", description="Why the rule exists (free text)")

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if value != value.strip():
            raise ValueError("must not start or end with white space")
        return value

    @field_validator("tags")
    @classmethod
    def _plant_glob(cls, value: str) -> str:
        if not value.startswith("Plant/"):
            raise ValueError(f"{value!r} must start with 'Plant/' (tag paths look like Plant/<Sensor>/<Tag>)")
        return value

    @field_validator("message")
    @classmethod
    def _known_placeholders(cls, value: str) -> str:
        try:
            value.format(tag="Plant/Sensor/Tag", value=1.0, threshold=1.0, rule="rule", unit="", measured=1.0)
        except (KeyError, IndexError, ValueError, AttributeError) as exc:
            raise ValueError(
                f"template {value!r} does not format ({type(exc).__name__}: {exc}); "
                f"placeholders are {', '.join('{' + f + '}' for f in MESSAGE_FIELDS)}"
            ) from exc
        return value

    def matches(self, path: str) -> bool:
        """Whether this rule watches the tag ``path``."""
        return fnmatch.fnmatchcase(path, self.tags)

    def evaluate(self, sample: Sample, state: ConditionState) -> Verdict:
        """The verdict of one sample of a matching tag (each kind implements it)."""
        raise NotImplementedError

    def evaluate_time(self, now: datetime, state: ConditionState) -> Verdict:
        """The verdict of time passing without a sample (a stale-data kind overrides this)."""
        return UNKNOWN

    def more_severe(self, side: str, candidate: float, peak: float) -> bool:
        """Whether ``candidate`` is a worse value than the alert's ``peak`` so far."""
        return False

    def side_of(self, value: float | None) -> str:
        """The side of a stored open alert raised at ``value`` (used when restoring state)."""
        return ""

    def render(
        self, tag: str, value: float | None, threshold: float | None, unit: str, measured: float | None = None
    ) -> str:
        """The alert message; a template that cannot format this value falls back to itself."""
        if measured is None:
            measured = value
        try:
            return self.message.format(
                tag=tag, value=value, threshold=threshold, rule=self.name, unit=unit, measured=measured
            )
        except (KeyError, IndexError, ValueError, TypeError, AttributeError):
            logger.warning("alert message does not format", extra={"rule": self.name, "tag": tag})
            return self.message


class ThresholdRule(RuleBase):
    """A value above ``high`` or below ``low``, cleared with hysteresis.

    Raises when the value is strictly above ``high`` (or strictly below ``low``) for ``for``
    seconds. An open high alert clears only when the value falls strictly below
    ``high - hysteresis`` (a low alert: rises strictly above ``low + hysteresis``); in between,
    the alert stays as it is. Bad-quality samples prove nothing: they neither raise nor clear.
    """

    kind: Literal["threshold"] = "threshold"
    high: float | None = Field(default=None, allow_inf_nan=False, description="Raise above this value")
    low: float | None = Field(default=None, allow_inf_nan=False, description="Raise below this value")
    hysteresis: float = Field(
        default=0.0,
        ge=0,
        allow_inf_nan=False,
        description="How far back inside the limit the value must come before the alert clears",
    )

    @model_validator(mode="after")
    def _limits(self) -> ThresholdRule:
        if self.high is None and self.low is None:
            raise ValueError("fields 'high'/'low': a threshold rule needs high, low or both")
        if self.high is not None and self.low is not None and not self.low < self.high:
            raise ValueError(f"fields 'high'/'low': low ({self.low}) must be below high ({self.high})")
        return self

    def evaluate(self, sample: Sample, state: ConditionState) -> Verdict:
        value = sample.value
        if not sample.is_good or value is None or math.isnan(value):
            return UNKNOWN
        high, low, hyst = self.high, self.low, self.hysteresis
        if state.active_side == "high" and high is not None and value >= high - hyst:
            return Verdict(VerdictState.VIOLATED, "high", high)
        if state.active_side == "low" and low is not None and value <= low + hyst:
            return Verdict(VerdictState.VIOLATED, "low", low)
        if high is not None and value > high:
            return Verdict(VerdictState.VIOLATED, "high", high)
        if low is not None and value < low:
            return Verdict(VerdictState.VIOLATED, "low", low)
        return NORMAL

    def more_severe(self, side: str, candidate: float, peak: float) -> bool:
        return candidate > peak if side == "high" else candidate < peak

    def side_of(self, value: float | None) -> str:
        if self.low is None:
            return "high"
        if self.high is None:
            return "low"
        if value is None:
            return "high"
        return "high" if value >= (self.high + self.low) / 2 else "low"


def _good_value(sample: Sample) -> float | None:
    """The sample's value when it proves something (good quality, a number), else ``None``."""
    value = sample.value
    if not sample.is_good or value is None or math.isnan(value):
        return None
    return value


class RateOfChangeRule(RuleBase):
    """A value changing faster than ``rise`` (or falling faster than ``fall``) per ``per`` seconds.

    The rate is the slope between the newest good sample and the newest good sample at least
    ``window`` seconds older (so a single noisy sample cannot make a rate on its own); until the
    history spans the window the rule says nothing. An open ``rise`` alert clears when the rate
    falls strictly below ``rise - hysteresis`` (``fall``: rises strictly above
    ``-(fall - hysteresis)``). ``{measured}`` in the message is the rate, in unit per ``per`` s.
    """

    kind: Literal["rate_of_change"] = "rate_of_change"
    rise: float | None = Field(default=None, gt=0, allow_inf_nan=False, description="Raise above this rate")
    fall: float | None = Field(
        default=None, gt=0, allow_inf_nan=False, description="Raise when falling faster than this rate (positive)"
    )
    per_s: float = Field(
        default=60.0, alias="per", gt=0, allow_inf_nan=False, description="Rates are per this many seconds (60: /min)"
    )
    window_s: float = Field(
        default=60.0, alias="window", gt=0, allow_inf_nan=False, description="Seconds the rate is measured over"
    )
    hysteresis: float = Field(default=0.0, ge=0, allow_inf_nan=False, description="Clear level below the limit")

    @model_validator(mode="after")
    def _limits(self) -> RateOfChangeRule:
        if self.rise is None and self.fall is None:
            raise ValueError("fields 'rise'/'fall': a rate_of_change rule needs rise, fall or both")
        for name, limit in (("rise", self.rise), ("fall", self.fall)):
            if limit is not None and self.hysteresis >= limit:
                raise ValueError(f"field 'hysteresis': must be below {name} ({limit})")
        return self

    def rate(self, sample: Sample, state: ConditionState) -> float | None:
        """Record a good sample and return the rate over the window (``None`` until it spans it)."""
        value = _good_value(sample)
        if value is None:
            return None
        now = sample.source_time.timestamp()
        history: deque[tuple[float, float]] = state.scratch.setdefault("history", deque())
        if history and now <= history[-1][0]:
            return None  # out of order or repeated: proves nothing new
        history.append((now, value))
        # Keep exactly one sample at or before the window's start: the anchor of the slope.
        while len(history) >= 2 and history[1][0] <= now - self.window_s:
            history.popleft()
        anchor_time, anchor_value = history[0]
        if now - anchor_time < self.window_s:
            return None
        return (value - anchor_value) / (now - anchor_time) * self.per_s

    def evaluate(self, sample: Sample, state: ConditionState) -> Verdict:
        rate = self.rate(sample, state)
        if rate is None:
            return UNKNOWN
        rise, fall, hyst = self.rise, self.fall, self.hysteresis
        if state.active_side == "rise" and rise is not None and rate >= rise - hyst:
            return Verdict(VerdictState.VIOLATED, "rise", rise, rate)
        if state.active_side == "fall" and fall is not None and rate <= -(fall - hyst):
            return Verdict(VerdictState.VIOLATED, "fall", fall, rate)
        if rise is not None and rate > rise:
            return Verdict(VerdictState.VIOLATED, "rise", rise, rate)
        if fall is not None and rate < -fall:
            return Verdict(VerdictState.VIOLATED, "fall", fall, rate)
        return Verdict(VerdictState.NORMAL, measured=rate)

    def more_severe(self, side: str, candidate: float, peak: float) -> bool:
        return candidate > peak if side == "rise" else candidate < peak

    def side_of(self, value: float | None) -> str:
        return "fall" if self.rise is None else "rise"


class StaleRule(RuleBase):
    """No update of a tag (good or bad) for more than ``max_age`` seconds.

    Judged when time passes (the engine's tick): a tag whose newest notification is older than
    ``max_age`` is stale; the next notification clears it. The age is measured from the
    notification's source timestamp to the engine's clock. A tag never heard of is not judged
    (a stale rule cannot tell a missing tag from a misspelt selector). ``{measured}`` is the age.
    """

    kind: Literal["stale"] = "stale"
    max_age_s: float = Field(
        alias="max_age", gt=0, allow_inf_nan=False, description="Seconds without any update before the tag is stale"
    )

    def evaluate(self, sample: Sample, state: ConditionState) -> Verdict:
        last = state.scratch.get("last_update")
        if last is None or sample.source_time > last:
            state.scratch["last_update"] = sample.source_time
        return NORMAL

    def evaluate_time(self, now: datetime, state: ConditionState) -> Verdict:
        last: datetime | None = state.scratch.get("last_update")
        if last is None:
            return UNKNOWN
        age = (now - last).total_seconds()
        if age > self.max_age_s:
            return Verdict(VerdictState.VIOLATED, "stale", self.max_age_s, age)
        return UNKNOWN

    def side_of(self, value: float | None) -> str:
        return "stale"


class BadQualityRule(RuleBase):
    """A tag whose samples are bad (no value, or a Bad StatusCode) for ``for`` seconds.

    Each bad sample continues the condition, each good one ends it; with ``uncertain: true`` an
    Uncertain StatusCode counts as bad too. The persistence window (``for``) is "lasting N
    seconds"; the engine's tick completes it when the bad samples stop coming.
    """

    kind: Literal["bad_quality"] = "bad_quality"
    uncertain: bool = Field(default=False, description="Count Uncertain status codes as bad too")

    def evaluate(self, sample: Sample, state: ConditionState) -> Verdict:
        severity = sample.status & 0xC0000000
        bad = severity == 0x80000000 or severity == 0xC0000000 or (self.uncertain and severity == 0x40000000)
        if bad or (sample.value is None and severity == 0):
            return Verdict(VerdictState.VIOLATED, "bad", None, float(sample.status))
        return NORMAL

    def side_of(self, value: float | None) -> str:
        return "bad"


#: Where the anomaly score of an anomaly rule appears as a tag (its alerts' ``tag_path``).
ANOMALY_PATH_PREFIX = "Plant/Anomaly/"


class AnomalyRule(RuleBase):
    """A model's anomaly score above ``threshold`` for ``for`` seconds.

    ``tags`` selects the feature tags (the model's inputs); the rule itself watches one virtual
    tag, ``Plant/Anomaly/<name>``, whose samples are the model's scores (one per ``cadence``
    seconds, :mod:`plantmon_alerts.anomaly`). The score is 0 for a typical healthy vector and 1
    at the 99.9th percentile of the healthy training window. An open alert clears strictly below
    ``threshold - hysteresis``. The model is trained on the last ``train_window`` seconds of the
    database (good samples, outside any alert), and retrained every ``retrain_every`` seconds.
    """

    kind: Literal["anomaly"] = "anomaly"
    threshold: float = Field(gt=0, allow_inf_nan=False, description="Raise when the score is above this")
    hysteresis: float = Field(default=0.0, ge=0, allow_inf_nan=False, description="Clear level below threshold")
    cadence_s: float = Field(
        default=10.0, alias="cadence", gt=0, allow_inf_nan=False, description="Seconds between feature vectors"
    )
    train_window_s: float = Field(
        default=24 * 3600.0, alias="train_window", gt=0, allow_inf_nan=False, description="Healthy training window"
    )
    retrain_every_s: float = Field(
        default=24 * 3600.0, alias="retrain_every", gt=0, allow_inf_nan=False, description="Seconds between trainings"
    )
    min_vectors: int = Field(
        default=2160, ge=10, description="Fewest healthy training vectors (2160 = 6 h at 10 s; fewer over-fit)"
    )
    max_feature_age_s: float = Field(
        default=30.0,
        alias="max_feature_age",
        gt=0,
        allow_inf_nan=False,
        description="A vector is built only when every feature was updated (good) this recently",
    )

    @model_validator(mode="after")
    def _clear_level(self) -> AnomalyRule:
        if self.hysteresis >= self.threshold:
            raise ValueError(f"field 'hysteresis': must be below threshold ({self.threshold})")
        if self.train_window_s < self.min_vectors * self.cadence_s:
            raise ValueError(
                f"field 'train_window': {self.train_window_s:g} s cannot hold min_vectors ({self.min_vectors}) "
                f"vectors at one per cadence ({self.cadence_s:g} s)"
            )
        return self

    @property
    def score_path(self) -> str:
        """The virtual tag of this rule's score (the ``tag_path`` of its alerts)."""
        return ANOMALY_PATH_PREFIX + self.name

    def matches(self, path: str) -> bool:
        return path == self.score_path

    def selects_feature(self, path: str) -> bool:
        """Whether the tag ``path`` is one of this rule's model inputs."""
        return not path.startswith(ANOMALY_PATH_PREFIX) and fnmatch.fnmatchcase(path, self.tags)

    def evaluate(self, sample: Sample, state: ConditionState) -> Verdict:
        score = _good_value(sample)
        if score is None:
            return UNKNOWN
        if state.active_side == "anomaly" and score >= self.threshold - self.hysteresis:
            return Verdict(VerdictState.VIOLATED, "anomaly", self.threshold, score)
        if score > self.threshold:
            return Verdict(VerdictState.VIOLATED, "anomaly", self.threshold, score)
        return Verdict(VerdictState.NORMAL, measured=score)

    def more_severe(self, side: str, candidate: float, peak: float) -> bool:
        return candidate > peak

    def side_of(self, value: float | None) -> str:
        return "anomaly"


#: Every rule kind by its ``kind`` value. A new kind is a new :class:`RuleBase` subclass here.
RULE_KINDS: dict[str, type[RuleBase]] = {
    "threshold": ThresholdRule,
    "rate_of_change": RateOfChangeRule,
    "stale": StaleRule,
    "bad_quality": BadQualityRule,
    "anomaly": AnomalyRule,
}

#: Any rule (the base class is the interface the engine uses).
Rule = RuleBase


class _RulesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rules: list[Any]


def _field_name(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc)


def parse_rules(document: Any, source: str = "<rules>") -> list[RuleBase]:
    """Validate a loaded YAML document; raise :class:`RulesError` naming each rule and field."""
    try:
        top = _RulesFile.model_validate(document)
    except ValidationError as exc:
        top_problems = [f"top level: field {_field_name(e['loc']) or 'rules'!r}: {e['msg']}" for e in exc.errors()]
        if not isinstance(document, dict):
            top_problems = ["top level: must be a mapping with a 'rules' list"]
        raise RulesError(source, top_problems) from exc
    problems: list[str] = []
    rules: list[RuleBase] = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(top.rules):
        label = f"rule #{index + 1}"
        if not isinstance(raw, dict):
            problems.append(f"{label}: must be a mapping, got {type(raw).__name__}")
            continue
        name = raw.get("name")
        if isinstance(name, str) and name:
            label = f"rule {name!r} (#{index + 1})"
        kind = raw.get("kind")
        cls = RULE_KINDS.get(kind) if isinstance(kind, str) else None
        if cls is None:
            known = ", ".join(sorted(RULE_KINDS))
            problems.append(f"{label}: field 'kind': {kind!r} is not a rule kind (known: {known})")
            continue
        try:
            rule = cls.model_validate(raw)
        except ValidationError as exc:
            for error in exc.errors():
                where = _field_name(error["loc"])
                message = error["msg"].removeprefix("Value error, ")
                problems.append(f"{label}: field {where!r}: {message}" if where else f"{label}: {message}")
            continue
        if rule.name in seen:
            problems.append(f"{label}: field 'name': duplicate of rule #{seen[rule.name] + 1}")
            continue
        seen[rule.name] = index
        rules.append(rule)
    if problems:
        raise RulesError(source, problems)
    return rules


def load_rules(path: Path = DEFAULT_RULES_FILE) -> list[RuleBase]:
    """Read and validate a rules file (:class:`RulesError` when it cannot be used)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RulesError(str(path), [f"cannot read: {exc}"]) from exc
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RulesError(str(path), [f"not valid YAML: {exc}"]) from exc
    rules = parse_rules(document, str(path))
    logger.info("rules loaded", extra={"rules_file": str(path), "rules": [r.name for r in rules]})
    return rules
