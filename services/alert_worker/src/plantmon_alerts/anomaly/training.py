"""Training data from the database, and when to (re)train.

:func:`read_healthy_window` reads, as the worker's role (``plantmon_alerts`` may SELECT tags,
samples and alerts), the last value of each feature tag in each ``cadence`` bucket of the
window, good samples only, and lays them out like the live vectors (:func:`build_matrix`: the
latest value carried forward at most ``max_feature_age`` seconds; a vector needs every
feature). Buckets inside any alert (raised to cleared, or still open) are left out: the window
is the plant's *healthy* behaviour. :func:`next_training` is the retrain schedule.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import numpy.typing as npt
from psycopg_pool import AsyncConnectionPool

from plantmon_alerts.rules import AnomalyRule

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]

#: StatusCodes below this are Good (the two severity bits are 0).
_GOOD_BELOW = 0x40000000


@dataclass(frozen=True, slots=True)
class TrainingSet:
    """Healthy vectors of a window (rows in the order of ``features``) and their bucket times."""

    vectors: FloatArray
    features: tuple[str, ...]
    times: list[datetime]
    start: datetime
    end: datetime


def next_training(
    trained_at: datetime | None,
    last_attempt: datetime | None,
    last_failed: bool,
    *,
    every_s: float,
    retry_s: float,
) -> datetime | None:
    """When the next training is due (``None``: now).

    Without any model a training is due at once; after a failed attempt (too little healthy
    data, the database down) it is retried ``retry_s`` later; otherwise ``every_s`` after the
    current model was trained.
    """
    if last_failed and last_attempt is not None:
        return last_attempt + timedelta(seconds=retry_s)
    if trained_at is None:
        return None
    return trained_at + timedelta(seconds=every_s)


def build_matrix(
    rows: Iterable[tuple[str, int, float]],
    features: Sequence[str],
    n_buckets: int,
    *,
    max_gap_buckets: int,
    excluded: Iterable[int] = (),
) -> tuple[FloatArray, list[int]]:
    """Rows of ``(path, bucket index, last value in bucket)`` -> (vectors, their bucket indexes).

    A feature's value is carried forward into following empty buckets for at most
    ``max_gap_buckets``; buckets where any feature has no value, or in ``excluded``, are dropped.
    """
    column = {path: i for i, path in enumerate(features)}
    grid = np.full((n_buckets, len(features)), np.nan)
    for path, bucket, value in rows:
        j = column.get(path)
        if j is not None and 0 <= bucket < n_buckets:
            grid[bucket, j] = value
    for j in range(len(features)):
        last, last_at = math.nan, -(10**9)
        for i in range(n_buckets):
            if not math.isnan(grid[i, j]):
                last, last_at = grid[i, j], i
            elif i - last_at <= max_gap_buckets:
                grid[i, j] = last
    keep = ~np.isnan(grid).any(axis=1)
    for bucket in excluded:
        if 0 <= bucket < n_buckets:
            keep[bucket] = False
    indexes = [int(i) for i in np.flatnonzero(keep)]
    return np.asarray(grid[keep], dtype=np.float64), indexes


_ROWS = """
SELECT DISTINCT ON (s.tag_id, bucket)
       s.tag_id, floor(extract(epoch FROM s.time - %(start)s) / %(cadence)s)::bigint AS bucket, s.value
FROM samples s
WHERE s.tag_id = ANY(%(ids)s) AND s.time >= %(start)s AND s.time < %(end)s
  AND s.status < %(good_below)s AND s.value IS NOT NULL AND s.value <> 'NaN'::float8
ORDER BY s.tag_id, bucket, s.time DESC
"""

_ALERTS = """
SELECT raised_at, cleared_at FROM alerts
WHERE raised_at < %(end)s AND (cleared_at IS NULL OR cleared_at > %(start)s)
"""


async def read_healthy_window(pool: AsyncConnectionPool, rule: AnomalyRule, end: datetime) -> TrainingSet:
    """The healthy vectors of the ``train_window`` seconds before ``end`` (see the module docstring)."""
    start = end - timedelta(seconds=rule.train_window_s)
    cadence = rule.cadence_s
    n_buckets = int(rule.train_window_s // cadence)
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT id, path FROM tags ORDER BY path")
        tags = [(int(i), str(p)) for i, p in await cur.fetchall() if rule.selects_feature(str(p))]
        ids = [i for i, _ in tags]
        params = {"start": start, "end": end, "cadence": cadence, "ids": ids, "good_below": _GOOD_BELOW}
        cur = await conn.execute(_ROWS, params)
        raw_rows = await cur.fetchall()
        cur = await conn.execute(_ALERTS, {"start": start, "end": end})
        alert_spans = await cur.fetchall()
    path_of = dict(tags)
    seen = {path_of[int(tag_id)] for tag_id, _, _ in raw_rows}
    features = tuple(p for _, p in tags if p in seen)
    excluded: set[int] = set()
    for raised_at, cleared_at in alert_spans:
        first = math.floor((raised_at - start).total_seconds() / cadence)
        last = math.ceil(((cleared_at or end) - start).total_seconds() / cadence)
        excluded.update(range(max(0, first), min(n_buckets, last + 1)))
    rows = ((path_of[int(t)], int(b), float(v)) for t, b, v in raw_rows)
    max_gap = max(0, math.ceil(rule.max_feature_age_s / cadence) - 1)
    vectors, indexes = build_matrix(rows, features, n_buckets, max_gap_buckets=max_gap, excluded=excluded)
    times = [start + timedelta(seconds=(i + 1) * cadence) for i in indexes]
    logger.info(
        "training window read",
        extra={
            "rule": rule.name,
            "start": start.isoformat(),
            "end": end.isoformat(),
            "features": len(features),
            "vectors": len(indexes),
            "excluded_buckets": len(excluded),
        },
    )
    return TrainingSet(vectors, features, times, start, end)
