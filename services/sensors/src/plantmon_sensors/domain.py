"""Readings and the latest snapshot: what a sensor read means for its tags.

The sampler turns each read (a channel mapping, or a :class:`~plantmon_sensors.drivers.SensorError`)
into :class:`~plantmon_common.tags.TagReading` rows for that sensor's tags only, stamped with a
fresh UTC ``observed_at``; :class:`SnapshotStore` keeps the latest row per tag. Requests read the
store and never wait for a device. A row whose sensor has not been observed for a while is served
as ``uncertain`` ("stale"), never as a stale ``good``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
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
    """The latest reading of every tag; ``stale_after_s`` per sensor decides when a row turns uncertain.

    Each row is serialised to JSON once, when the sampler stores it, so a request only joins
    bytes (:meth:`readings_json`): the all-tags endpoint does no model building, validation or
    serialisation per request. Whether a good row has gone stale is still decided per request,
    against the row's own deadline, so a stale value is never served as good.
    """

    def __init__(self, stale_after_s: Mapping[str, float]) -> None:
        self.stale_after_s = dict(stale_after_s)
        started = utc_now()
        self._entries: dict[str, _Entry] = {}
        self.update(_row(tag, None, Quality.UNCERTAIN, "not sampled yet", started) for tag in TAGS)

    def update(self, rows: Iterable[TagReading]) -> None:
        for row in rows:
            limit = self.stale_after_s.get(row.sensor_id)
            stale_at = (
                row.observed_at.timestamp() + limit if row.quality is Quality.GOOD and limit is not None else math.inf
            )
            self._entries[row.path] = _Entry(row, _to_json(row), stale_at)

    def get(self, path: str, now: datetime | None = None) -> TagReading:
        """The latest row of ``path`` (``KeyError`` for an unknown path)."""
        entry = self._entries[path]
        if (now or utc_now()).timestamp() > entry.stale_at:
            return _stale(entry.row)
        return entry.row

    def rows(self, paths: Iterable[str] | None = None) -> list[TagReading]:
        """Rows for ``paths`` (default: every tag, in catalog order)."""
        now = utc_now()
        return [self.get(p, now) for p in (paths if paths is not None else (t.path for t in TAGS))]

    def row_json(self, path: str) -> bytes:
        """:meth:`get` as JSON bytes (``KeyError`` for an unknown path)."""
        entry = self._entries[path]
        return entry.json if time.time() <= entry.stale_at else _to_json(_stale(entry.row))

    def readings_json(self, paths: Iterable[str]) -> bytes:
        """``{"readings": [...]}`` for ``paths`` as JSON bytes, the shape of the readings endpoints."""
        now = time.time()
        entries = self._entries
        parts = [e.json if now <= e.stale_at else _to_json(_stale(e.row)) for e in (entries[path] for path in paths)]
        return b'{"readings":[' + b",".join(parts) + b"]}"


@dataclass(frozen=True, slots=True)
class _Entry:
    row: TagReading
    json: bytes
    stale_at: float  # POSIX seconds after which a good row is served as uncertain/"stale"; inf otherwise


_to_json = TagReading.__pydantic_serializer__.to_json


def _stale(row: TagReading) -> TagReading:
    return row.model_copy(update={"quality": Quality.UNCERTAIN, "reason": "stale"})
