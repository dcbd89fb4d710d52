"""Alert rules: the YAML rules file, validated at start and reloaded on change, one class per kind.

A rule kind decides only *whether its condition holds* for a sample or as time passes
(:class:`Verdict`); the engine owns the lifecycle around it (persistence window, raise, peak,
clear). Kinds: ``threshold``, ``rate_of_change``, ``stale``, ``bad_quality``, ``anomaly``
(:data:`RULE_KINDS`). :class:`RulesWatcher` reloads the file on SIGHUP or when it changes.
"""

from plantmon_alerts.rules.model import (
    ANOMALY_PATH_PREFIX,
    DEFAULT_RULES_FILE,
    MESSAGE_FIELDS,
    RULE_KINDS,
    AnomalyRule,
    BadQualityRule,
    ConditionState,
    RateOfChangeRule,
    Rule,
    RuleBase,
    RulesError,
    StaleRule,
    ThresholdRule,
    Verdict,
    VerdictState,
    load_rules,
    parse_rules,
)
from plantmon_alerts.rules.watch import RulesWatcher

__all__ = [
    "ANOMALY_PATH_PREFIX",
    "DEFAULT_RULES_FILE",
    "MESSAGE_FIELDS",
    "RULE_KINDS",
    "AnomalyRule",
    "BadQualityRule",
    "ConditionState",
    "RateOfChangeRule",
    "Rule",
    "RuleBase",
    "RulesError",
    "RulesWatcher",
    "StaleRule",
    "ThresholdRule",
    "Verdict",
    "VerdictState",
    "load_rules",
    "parse_rules",
]
