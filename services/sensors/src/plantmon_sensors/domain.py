"""Readings and the latest snapshot: what a sensor read means for its tags.

The sampler turns each read (a channel mapping, or a :class:`~plantmon_sensors.drivers.SensorError`)
into :class:`~plantmon_common.tags.TagReading` rows for that sensor's tags only, stamped with a
fresh UTC ``observed_at``; :class:`SnapshotStore` keeps the latest row per tag. Requests read the
store and never wait for a device. A row whose sensor has not been observed for a while is served
as ``uncertain`` ("stale"), never as a stale ``good``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

from plantmon_common.tags import Quality, TagReading

from plantmon_sensors.catalog import TAGS, TagSpec, tags_of
from plantmon_sensors.drivers import ChannelFault

Channels = Mapping[str, float | ChannelFault]


def utc_now() -> datetime:
    """The observation timestamp: timezone-aware UTC."""
    return datetime.now(UTC)


def _row(tag: TagSpec, value: float | None, quality: Quality, reason: str | None, observed_at: datetime) -> TagReading:
    return TagReading(
        path=tag.path,
        unit=tag.unit,
        eu_low=tag.eu_low,
        eu_high=tag.eu_high,
        description=tag.description,
        sensor_id=tag.sensor_id,
        value=value,
        quality=quality,
        reason=reason,
        observed_at=observed_at,
    )


def good_readings(sensor_id: str, channels: Channels, observed_at: datetime) -> list[TagReading]:
    """Rows for a successful read: good, or uncertain outside the EU range, bad when a channel is
    missing or carries a :class:`~plantmon_sensors.drivers.ChannelFault` (with its reason)."""
    rows = []
    for tag in tags_of(sensor_id):
        raw = channels.get(tag.channel)
        if isinstance(raw, ChannelFault):
            rows.append(_row(tag, None, Quality.BAD, raw.reason, observed_at))
        elif raw is None or not math.isfinite(raw):
            rows.append(_row(tag, None, Quality.BAD, "invalid value", observed_at))
        elif not tag.eu_low <= raw <= tag.eu_high:
            rows.append(_row(tag, float(raw), Quality.UNCERTAIN, "outside EU range", observed_at))
        else:
            rows.append(_row(tag, float(raw), Quality.GOOD, None, observed_at))
    return rows


def bad_readings(
    sensor_id: str, reason: str, observed_at: datetime, quality: Quality = Quality.BAD
) -> list[TagReading]:
    """Rows for a failed read: every tag of that sensor ``quality`` (bad; uncertain while warming up)
    with ``reason`` and no value."""
    return [_row(tag, None, quality, reason, observed_at) for tag in tags_of(sensor_id)]


class SnapshotStore:
    """The latest reading of every tag; ``stale_after_s`` per sensor decides when a row turns uncertain."""

    def __init__(self, stale_after_s: Mapping[str, float]) -> None:
        self.stale_after_s = dict(stale_after_s)
        started = utc_now()
        self._rows: dict[str, TagReading] = {
            tag.path: _row(tag, None, Quality.UNCERTAIN, "not sampled yet", started) for tag in TAGS
        }

    def update(self, rows: Iterable[TagReading]) -> None:
        for row in rows:
            self._rows[row.path] = row

    def get(self, path: str, now: datetime | None = None) -> TagReading:
        """The latest row of ``path`` (``KeyError`` for an unknown path)."""
        row = self._rows[path]
        limit = self.stale_after_s.get(row.sensor_id)
        now = now or utc_now()
        if row.quality is Quality.GOOD and limit is not None and (now - row.observed_at).total_seconds() > limit:
            return row.model_copy(update={"quality": Quality.UNCERTAIN, "reason": "stale"})
        return row

    def rows(self, paths: Iterable[str] | None = None) -> list[TagReading]:
        """Rows for ``paths`` (default: every tag, in catalog order)."""
        now = utc_now()
        return [self.get(p, now) for p in (paths if paths is not None else (t.path for t in TAGS))]
