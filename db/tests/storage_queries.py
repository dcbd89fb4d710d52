"""Queries and expectations shared by the storage tests of both paths (plain PostgreSQL here,
TimescaleDB in WebAssembly in tests/timescale): the rollup columns, reference aggregates computed
in Python, and the seed's compatibility queries."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

ROLLUPS = ("samples_5s", "samples_1m", "samples_1h")
ROLLUP_COLUMNS = ["bucket", "tag_id", "avg", "min", "max", "stddev", "count", "last", "sum", "sumsq"]
COLUMNS_QUERY = (
    "SELECT column_name, data_type FROM information_schema.columns "
    "WHERE table_schema = 'public' AND table_name = %s ORDER BY ordinal_position"
)
# 2026-11-23 10:00:00 UTC is a bucket boundary of every layer.
START = datetime(2026, 11, 23, 10, 0, 0, tzinfo=UTC)
WIDTHS = {"samples_5s": timedelta(seconds=5), "samples_1m": timedelta(minutes=1), "samples_1h": timedelta(hours=1)}

SEED_QUERY = (
    "SELECT time_bucket('5s', timestamp) AS time, avg(value) AS temperature FROM sensor_data "
    "WHERE sensorname = 'temperature' AND tagname = 'upper' AND timestamp >= %s AND timestamp < %s "
    "GROUP BY time ORDER BY time"
)
SEED_JOIN_QUERY = """
SELECT u.time, u.upper, l.lower
FROM (SELECT time_bucket('5s', timestamp) AS time, avg(value) AS upper FROM sensor_data
      WHERE sensorname = 'temperature' AND tagname = 'upper' AND timestamp >= %(lo)s AND timestamp < %(hi)s
      GROUP BY 1) u
JOIN (SELECT time_bucket('5s', timestamp) AS time, avg(value) AS lower FROM sensor_data
      WHERE sensorname = 'temperature' AND tagname = 'lower' AND timestamp >= %(lo)s AND timestamp < %(hi)s
      GROUP BY 1) l ON l.time = u.time
ORDER BY u.time
"""

INSERT_TAGS = (
    "INSERT INTO tags (path, sensor, tag) VALUES "
    "('Plant/Temperature/Upper', 'temperature', 'upper'), ('Plant/Temperature/Lower', 'temperature', 'lower') "
    "RETURNING id"
)
# Server-side rows (small statements only: the WASM bridge cannot take big client batches).
# Upper: the consecutive integers 0..n-1, one a second; lower: 1000 + i*i/7, the last one Bad (NULL).
INSERT_SAMPLES = """
INSERT INTO samples (time, tag_id, value, status)
SELECT %(start)s::timestamptz + make_interval(secs => i), %(upper)s, i::float8, 0 FROM generate_series(0, %(n)s - 1) i
UNION ALL
SELECT %(start)s::timestamptz + make_interval(secs => i), %(lower)s,
       CASE WHEN i = %(n)s - 1 THEN NULL ELSE 1000 + i * i / 7.0 END,
       CASE WHEN i = %(n)s - 1 THEN 2156527616 ELSE 0 END
FROM generate_series(0, %(n)s - 1) i
"""


def series(n: int) -> dict[str, list[tuple[datetime, float | None]]]:
    """The rows INSERT_SAMPLES writes, by tag name."""
    upper: list[tuple[datetime, float | None]] = [(START + timedelta(seconds=i), float(i)) for i in range(n)]
    lower = [(START + timedelta(seconds=i), None if i == n - 1 else 1000 + i * i / 7.0) for i in range(n)]
    return {"upper": upper, "lower": lower}


@dataclass(frozen=True)
class Expected:
    bucket: datetime
    avg: float | None
    min: float | None
    max: float | None
    stddev: float | None
    count: int
    last: float | None
    sum: float | None
    sumsq: float | None


def expected_rollup(rows: Sequence[tuple[datetime, float | None]], width: timedelta) -> list[Expected]:
    """What every layer must hold for one tag, computed directly from the raw rows."""
    buckets: dict[datetime, list[tuple[datetime, float | None]]] = {}
    for ts, value in rows:
        bucket = START + ((ts - START) // width) * width
        buckets.setdefault(bucket, []).append((ts, value))
    out = []
    for bucket, members in sorted(buckets.items()):
        values = [v for _, v in members if v is not None]
        last = max(members, key=lambda m: m[0])[1]
        out.append(
            Expected(
                bucket,
                statistics.fmean(values) if values else None,
                min(values) if values else None,
                max(values) if values else None,
                statistics.stdev(values) if len(values) > 1 else None,
                len(values),
                last,
                math.fsum(values) if values else None,
                math.fsum(v * v for v in values) if values else None,
            )
        )
    return out


def assert_close(got: object, want: float | int | None, what: str) -> None:
    if want is None:
        assert got is None, what
        return
    assert got is not None, what
    assert math.isclose(float(got), want, rel_tol=1e-9, abs_tol=1e-9), f"{what}: {got} != {want}"  # type: ignore[arg-type]


def check_rollup(rows: Sequence[Sequence[object]], expected: Sequence[Expected], what: str) -> None:
    """``rows``: (bucket, avg, min, max, stddev, count, last, sum, sumsq) ordered by bucket."""
    assert [r[0] for r in rows] == [e.bucket for e in expected], what
    for row, exp in zip(rows, expected, strict=True):
        for got, want, name in zip(
            row[1:],
            (exp.avg, exp.min, exp.max, exp.stddev, exp.count, exp.last, exp.sum, exp.sumsq),
            ("avg", "min", "max", "stddev", "count", "last", "sum", "sumsq"),
            strict=True,
        ):
            assert_close(got, want, f"{what} {exp.bucket} {name}")


ROLLUP_QUERY = (
    "SELECT r.bucket, r.avg, r.min, r.max, r.stddev, r.count, r.last, r.sum, r.sumsq "
    "FROM {table} r JOIN tags t ON t.id = r.tag_id WHERE t.tag = %s ORDER BY r.bucket"
)
