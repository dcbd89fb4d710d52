"""Alert rules: the YAML rules file, validated at start, and one class per rule kind.

A rule kind decides only *whether its condition holds* for a sample (:class:`Verdict`);
the engine owns the lifecycle around it (persistence window, raise, peak, clear). A new kind
(rate of change, stale, bad quality, anomaly) is a new subclass of :class:`RuleBase` with its
own ``kind`` literal, added to :data:`Rule`.
"""

from plantmon_alerts.rules.model import (
    DEFAULT_RULES_FILE,
    ConditionState,
    Rule,
    RuleBase,
    RulesError,
    ThresholdRule,
    Verdict,
    VerdictState,
    load_rules,
    parse_rules,
)

__all__ = [
    "DEFAULT_RULES_FILE",
    "ConditionState",
    "Rule",
    "RuleBase",
    "RulesError",
    "ThresholdRule",
    "Verdict",
    "VerdictState",
    "load_rules",
    "parse_rules",
]
