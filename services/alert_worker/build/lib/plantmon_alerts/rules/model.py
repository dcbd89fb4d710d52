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
MESSAGE_FIELDS = ("tag", "value", "threshold", "rule", "unit")


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
    message: str = Field(min_length=1, description="str.format template: {tag} {value} {threshold} {rule} {unit}")
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
            value.format(tag="Plant/Sensor/Tag", value=1.0, threshold=1.0, rule="rule", unit="")
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

    def render(self, tag: str, value: float | None, threshold: float | None, unit: str) -> str:
        """The alert message; a template that cannot format this value falls back to itself."""
        try:
            return self.message.format(tag=tag, value=value, threshold=threshold, rule=self.name, unit=unit)
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


#: Every rule kind by its ``kind`` value. A new kind is a new :class:`RuleBase` subclass here.
RULE_KINDS: dict[str, type[RuleBase]] = {"threshold": ThresholdRule}

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
