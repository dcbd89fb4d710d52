"""Alert events as they go to Event Hubs: one per lifecycle transition (raised, acknowledged, cleared).

Body (JSON, ``content_type`` ``application/json``)::

    {"schema": "plantmon.alert.v1", "event": "raised", "alert_id": "...", "transition_id": "...",
     "site": "plant", "rule": "...", "tag": "Plant/Temperature/Upper", "asset": "temperature",
     "severity": 4, "message": "...", "value": 120.0, "value_at_raise": 120.0, "peak_value": 120.0,
     "raised_at": "...", "at": "...", ...}

Application properties: ``alert_id``, ``transition_id``, ``event``, ``severity``, ``tag``, ``site``
(and ``rule``); the AMQP ``message_id`` is the transition id. The partition key is the asset (the
tag's sensor, ``temperature`` for ``Plant/Temperature/Upper``), so one asset's events stay in order.

``transition_id`` is ``uuid5(alert_id, event)``: the same transition always has the same id, even
when it is queued again, so a consumer drops duplicates by it (delivery is at least once).
A peak update is not a lifecycle transition and is not published (the cleared event carries the
peak). Only transitions with ``severity >= ALERTS_EVENTHUB_MIN_SEVERITY`` are queued.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Any

from plantmon_common.tags import split_path

from plantmon_alerts.delivery.journal import EventFactory, NewEvent
from plantmon_alerts.engine import Cleared, OpenAlert, Raised, Transition

logger = logging.getLogger(__name__)

SCHEMA = "plantmon.alert.v1"


def transition_id(alert_id: uuid.UUID | str, event: str) -> str:
    """The stable id of one transition of one alert."""
    return str(uuid.uuid5(uuid.UUID(str(alert_id)), event))


def asset_of(tag_path: str) -> str:
    """The partition key: the tag's sensor (``Plant/RPM/MainShaft`` -> ``rpm``)."""
    try:
        return split_path(tag_path)[0]
    except ValueError:
        return tag_path


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat() if value is not None else None


def _event(
    alert_id: uuid.UUID | str, kind: str, site: str, rule: str, tag: str, severity: int, **extra: Any
) -> NewEvent:
    tid = transition_id(alert_id, kind)
    body = {
        "schema": SCHEMA,
        "event": kind,
        "alert_id": str(alert_id),
        "transition_id": tid,
        "site": site,
        "rule": rule,
        "tag": tag,
        "asset": asset_of(tag),
        "severity": severity,
        **extra,
    }
    return NewEvent(tid, str(alert_id), asset_of(tag), body)


def event_factory(site: str, min_severity: int) -> EventFactory:
    """What :meth:`StateJournal.record` calls for each transition (``before``: the open alert)."""

    def make(t: Transition, before: OpenAlert | None) -> NewEvent | None:
        if t.severity < min_severity:
            return None
        if isinstance(t, Raised):
            return _event(
                t.alert_id,
                "raised",
                site,
                t.rule,
                t.tag_path,
                t.severity,
                message=t.message,
                value=t.value,
                value_at_raise=t.value,
                peak_value=t.value,
                raised_at=_iso(t.at),
                at=_iso(t.at),
            )
        if isinstance(t, Cleared):
            return _event(
                t.alert_id,
                "cleared",
                site,
                t.rule,
                t.tag_path,
                t.severity,
                value=t.value,
                value_at_raise=before.value_at_raise if before else None,
                peak_value=before.peak_value if before else None,
                raised_at=_iso(before.raised_at) if before else None,
                at=_iso(t.at),
                orphaned=t.orphaned,
            )
        return None

    return make


def acknowledged_event(row: dict[str, Any], site: str, min_severity: int) -> NewEvent | None:
    """The event of an acknowledgement (a row of the alerts table, as the API returns it)."""
    if int(row["severity"]) < min_severity:
        return None
    return _event(
        row["id"],
        "acknowledged",
        site,
        row["rule"],
        row["tag_path"],
        int(row["severity"]),
        message=row["message"],
        value_at_raise=row["value_at_raise"],
        peak_value=row["peak_value"],
        raised_at=_iso(row["raised_at"]),
        at=_iso(row["acknowledged_at"]),
        acknowledged_by=row["acknowledged_by"],
        comment=row["ack_comment"],
    )
