"""What Grafana sends to PostgreSQL for a dashboard's SQL panel, reproduced for the tests.

A panel query passes two stages in Grafana, both modelled here:

1. the frontend's template service replaces variables (``$name``, ``${name}``, ``[[name]]``):
   the dashboard's template variables, formatted as the PostgreSQL datasource formats them
   (a multi-value or include-all variable becomes ``'a','b'``, a single value is inserted with
   its quotes doubled), and the built-ins ``$__interval`` / ``$__interval_ms``, computed from the
   time range, the panel's max data points and its min interval (the datasource's
   ``timeInterval`` when the panel sets none) and rounded like ``rangeutil.calculateInterval``;
2. the backend's macro engine (``pkg/tsdb/grafana-postgresql-datasource/macros.go``) expands
   ``$__macro(args)`` with the regular expression Grafana uses; with the TimescaleDB option on,
   ``$__timeGroup(col, 5m)`` is ``time_bucket('300.000s',col)``; a ``$__timeGroup`` directly
   followed by a comma gets the ``AS "time"`` alias, as in Grafana.

Anything else starting with ``$__`` is an error, so a macro the model does not know cannot slip
through untested.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS = REPO / "grafana" / "dashboards"
PG_UID = "plantmon-timescaledb"

# The frontend's variable syntax (public/app/features/templating/template_srv.ts, variableRegex).
VARIABLE = re.compile(r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?:\.([^:^\}]+))?(?::([^\}]+))?\}")
# The backend's macro syntax (macros.go: sExpr).
MACRO = re.compile(r"\$([_a-zA-Z0-9]+)\(([^\)]*)\)")

MS = 1
SECOND = 1000 * MS
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR
# (upper bound inclusive, rounded interval) in milliseconds: gtime.RoundInterval / rangeutil.roundInterval.
ROUNDING = [
    (10, 1), (15, 10), (35, 20), (75, 50), (150, 100), (350, 200), (750, 500), (1500, 1000),
    (3500, 2000), (7500, 5000), (12500, 10000), (17500, 15000), (25000, 20000), (45000, 30000),
    (90000, MINUTE), (210000, 2 * MINUTE), (450000, 5 * MINUTE), (750000, 10 * MINUTE),
    (1050000, 15 * MINUTE), (1500000, 20 * MINUTE), (2700000, 30 * MINUTE), (5400000, HOUR),
    (9000000, 2 * HOUR), (16200000, 3 * HOUR), (32400000, 6 * HOUR), (86400000, 12 * HOUR),
    (172800000, DAY), (604800000, DAY), (1814400000, 7 * DAY),
]  # fmt: skip


def round_interval(ms: float) -> int:
    for bound, rounded in ROUNDING:
        if ms <= bound:
            return rounded
    return 30 * DAY if ms < 3628800000 else 365 * DAY


def format_interval(ms: int) -> str:
    """Grafana's interval text: ``500ms``, ``2s``, ``30m``, ``12h``, ``1d``, ``1y``."""
    for unit, size in (("y", 365 * DAY), ("d", DAY), ("h", HOUR), ("m", MINUTE), ("s", SECOND)):
        if ms >= size:
            return f"{ms // size}{unit}"
    return f"{max(ms, 1)}ms"


def parse_interval(text: str) -> int:
    """``1s``, ``5m``, ``250ms``, ``1d`` ... in milliseconds (Grafana's ParseInterval for fixed units)."""
    match = re.fullmatch(r"(\d+)(ms|s|m|h|d|w)", text.strip().strip("'"))
    if not match:
        raise ValueError(f"not an interval Grafana parses here: {text!r}")
    size = {"ms": MS, "s": SECOND, "m": MINUTE, "h": HOUR, "d": DAY, "w": 7 * DAY}[match.group(2)]
    return int(match.group(1)) * size


def calculate_interval(start: datetime, end: datetime, max_data_points: int, min_interval: str) -> int:
    """``$__interval_ms`` of a panel: the range over max data points, rounded, at least the min interval."""
    span_ms = (end - start) / timedelta(milliseconds=1)
    return max(round_interval(span_ms / max_data_points), parse_interval(min_interval))


def rfc3339nano(moment: datetime) -> str:
    """Go's time.RFC3339Nano in UTC (trailing zeros of the fraction dropped, ``Z``)."""
    utc = moment.astimezone(UTC)
    text = utc.strftime("%Y-%m-%dT%H:%M:%S")
    if utc.microsecond:
        text += f".{utc.microsecond:06d}".rstrip("0")
    return text + "Z"


def quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


@dataclass(frozen=True)
class Variable:
    """A dashboard template variable with the values it takes (all options for ``All``)."""

    name: str
    values: tuple[str, ...]
    multi: bool

    def sql(self) -> str:
        """How the PostgreSQL datasource's ``interpolateVariable`` inserts it into SQL."""
        if self.multi:
            return ",".join(quote_literal(value) for value in self.values)
        return self.values[0].replace("'", "''")


@dataclass(frozen=True)
class QueryContext:
    """The time range and the panel's interval settings for one run of a panel query."""

    start: datetime
    end: datetime
    max_data_points: int
    min_interval: str

    @property
    def interval_ms(self) -> int:
        return calculate_interval(self.start, self.end, self.max_data_points, self.min_interval)


def interpolate_variables(sql: str, context: QueryContext, variables: Mapping[str, Variable]) -> str:
    """The frontend's stage: template variables and ``$__interval`` / ``$__interval_ms``."""
    builtins = {"__interval": format_interval(context.interval_ms), "__interval_ms": str(context.interval_ms)}

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(4)
        if name in builtins:
            return builtins[name]
        if name in variables:
            return variables[name].sql()
        return match.group(0)

    return VARIABLE.sub(replace, sql)


def time_group(args: Sequence[str]) -> str:
    if len(args) < 2:
        raise ValueError("$__timeGroup needs a time column and an interval")
    seconds = parse_interval(args[1]) / SECOND
    return f"time_bucket('{seconds:.3f}s',{args[0]})"


def evaluate_macro(name: str, args: Sequence[str], context: QueryContext) -> str:
    """One macro as macros.go expands it with ``timescaledb: true``."""
    start, end = rfc3339nano(context.start), rfc3339nano(context.end)
    if name == "__time":
        return f'{args[0]} AS "time"'
    if name == "__timeEpoch":
        return f'extract(epoch from {args[0]}) as "time"'
    if name == "__timeFilter":
        return f"{args[0]} BETWEEN '{start}' AND '{end}'"
    if name == "__timeFrom":
        return f"'{start}'"
    if name == "__timeTo":
        return f"'{end}'"
    if name == "__timeGroup":
        return time_group(args)
    if name == "__timeGroupAlias":
        return time_group(args) + ' AS "time"'
    if name == "__unixEpochFilter":
        lo, hi = int(context.start.timestamp()), int(context.end.timestamp())
        return f"{args[0]} >= {lo} AND {args[0]} <= {hi}"
    if name == "__unixEpochGroup":
        seconds = parse_interval(args[1]) / SECOND
        return f"floor(({args[0]})/{seconds:g})*{seconds:g}"
    if name == "__unixEpochGroupAlias":
        return evaluate_macro("__unixEpochGroup", args, context) + ' AS "time"'
    raise ValueError(f"unknown macro ${name}")


def expand_macros(sql: str, context: QueryContext) -> str:
    """The backend's stage: ``$__unixEpochFrom()``/``To()``, then every ``$__macro(args)``."""
    sql = sql.replace("$__unixEpochFrom()", str(int(context.start.timestamp())))
    sql = sql.replace("$__unixEpochTo()", str(int(context.end.timestamp())))
    original = sql

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        after = original.find(match.group(0)) + len(match.group(0))
        if name == "__timeGroup" and original[after : after + 1] == ",":
            name = "__timeGroupAlias"  # Grafana's pre-5.3 compatibility rule
        args = [arg.strip() for arg in match.group(2).split(",")]
        return evaluate_macro(name, args, context)

    return MACRO.sub(replace, sql)


def grafana_sql(sql: str, context: QueryContext, variables: Mapping[str, Variable]) -> str:
    """The statement PostgreSQL receives for ``sql`` in ``context``."""
    expanded = expand_macros(interpolate_variables(sql, context, variables), context)
    leftover = re.findall(r"\$\{?\w+|\[\[\w+", expanded)
    if leftover:
        raise ValueError(f"not expanded: {leftover} in\n{expanded}")
    return expanded


# --- the dashboards --------------------------------------------------------------------------------


def dashboards() -> dict[str, dict[str, Any]]:
    """Every provisioned dashboard by uid."""
    boards = [json.loads(path.read_text(encoding="utf-8")) for path in sorted(DASHBOARDS.glob("*.json"))]
    return {board["uid"]: board for board in boards}


def panels(board: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows' nested panels included."""
    for panel in board.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


@dataclass(frozen=True)
class SqlTarget:
    """One SQL query of one panel."""

    dashboard: str
    panel: dict[str, Any]
    target: dict[str, Any]

    @property
    def name(self) -> str:
        return f"{self.dashboard}/{self.panel['title']}/{self.target['refId']}"

    @property
    def sql(self) -> str:
        return str(self.target["rawSql"])


def sql_targets() -> list[SqlTarget]:
    found = []
    for uid, board in dashboards().items():
        for panel in panels(board):
            for target in panel.get("targets", []):
                source = target.get("datasource") or panel.get("datasource") or {}
                if source.get("uid") == PG_UID:
                    found.append(SqlTarget(uid, panel, target))
    return found
