"""The worker's durable local state: one SQLite file in ``ALERTS_STATE_DIR``.

Why SQLite on local disk, not the database: alerting must work while PostgreSQL is down, so what
the worker owes the database and Event Hubs cannot live there. A local file is the only store the
worker always has. SQLite (WAL, ``synchronous=FULL``) gives what an append-only file would, an
fsync'd commit per change that survives ``kill -9`` and power loss, plus atomic multi-table
commits (a transition, its event and the open-alert mirror change together or not at all) and
deletion of what is done without compacting a log by hand.

Three tables:

``db_outbox``
    Engine transitions not yet committed to the ``alerts`` table, in order (``seq``).
``event_outbox``
    Events not yet accepted by Event Hubs, in order, each with its stable ``alert_id`` and its own
    ``transition_id`` (consumers drop duplicates by them: delivery is at least once).
``open_alerts``
    The alerts open right now, so a restart continues them even while the database is down.

Every method is synchronous and short (one small transaction); transitions are rare events.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from pathlib import Path
from typing import Any

from plantmon_alerts.engine import Cleared, OpenAlert, PeakUpdated, Raised, Transition

logger = logging.getLogger(__name__)

STATE_FILE = "alerts-state.sqlite3"

TRANSITION_TYPES: dict[str, type[Any]] = {cls.__name__: cls for cls in (Raised, PeakUpdated, Cleared)}

SCHEMA = """
CREATE TABLE IF NOT EXISTS db_outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    rule TEXT NOT NULL,
    tag_path TEXT NOT NULL,
    transition TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS event_outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    transition_id TEXT NOT NULL UNIQUE,
    alert_id TEXT NOT NULL,
    partition_key TEXT NOT NULL,
    event TEXT NOT NULL,
    created_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS open_alerts (
    alert_id TEXT PRIMARY KEY,
    rule TEXT NOT NULL,
    tag_path TEXT NOT NULL,
    severity INTEGER NOT NULL,
    value_at_raise REAL,
    peak_value REAL,
    raised_at TEXT NOT NULL
);
"""


def _encode(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return {"$uuid": str(value)}
    if isinstance(value, datetime):
        return {"$dt": value.isoformat()}
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if "$uuid" in value:
            return uuid.UUID(value["$uuid"])
        if "$dt" in value:
            return datetime.fromisoformat(value["$dt"])
    return value


def dump_transition(t: Transition) -> str:
    """A transition as JSON (every dataclass field, uuids and datetimes tagged)."""
    payload = {f.name: _encode(getattr(t, f.name)) for f in fields(t)}
    return json.dumps({"type": type(t).__name__, **payload})


def load_transition(text: str) -> Transition:
    payload = json.loads(text)
    cls = TRANSITION_TYPES[payload.pop("type")]
    known = {f.name for f in fields(cls)}
    result: Transition = cls(**{k: _decode(v) for k, v in payload.items() if k in known})
    return result


@dataclass(frozen=True, slots=True)
class PendingEvent:
    """An event waiting for Event Hubs."""

    seq: int
    transition_id: str
    alert_id: str
    partition_key: str
    event: dict[str, Any]
    created_at: float
    attempts: int


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event to queue: ``event`` is the JSON body (it carries both ids)."""

    transition_id: str
    alert_id: str
    partition_key: str
    event: dict[str, Any]


EventFactory = Callable[[Transition, OpenAlert | None], NewEvent | None]


class StateJournal:
    """The SQLite state file (``path=None``: in memory, for tests of other parts)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(str(path) if path else ":memory:", isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.executescript(SCHEMA)
        self._write_depth = self._count("db_outbox")
        self._event_depth = self._count("event_outbox")
        if path is not None:
            logger.info(
                "alert state opened",
                extra={
                    "path": str(path),
                    "pending_writes": self._write_depth,
                    "pending_events": self._event_depth,
                    "open_alerts": self._count("open_alerts"),
                },
            )

    @classmethod
    def in_dir(cls, state_dir: Path) -> StateJournal:
        return cls(state_dir / STATE_FILE)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _count(self, table: str) -> int:
        return int(self._conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # noqa: S608

    # -- depths ------------------------------------------------------------------------------

    @property
    def write_depth(self) -> int:
        """Transitions not yet written to the database."""
        return self._write_depth

    @property
    def event_depth(self) -> int:
        """Events not yet accepted by Event Hubs."""
        return self._event_depth

    # -- recording ---------------------------------------------------------------------------

    def record(self, transitions: Sequence[Transition], make_event: EventFactory | None = None) -> int:
        """Queue ``transitions`` for the database (and their events) and update the open alerts.

        One transaction, committed (fsync'd) before this returns. Returns the events queued.
        """
        if not transitions:
            return 0
        events = 0
        with self._lock:
            cur = self._conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                for t in transitions:
                    cur.execute(
                        "INSERT INTO db_outbox (rule, tag_path, transition) VALUES (?, ?, ?)",
                        (t.rule, t.tag_path, dump_transition(t)),
                    )
                    before = self._open_alert(cur, t.alert_id)
                    self._mirror(cur, t)
                    if make_event is not None:
                        new = make_event(t, before)
                        if new is not None:
                            self._insert_event(cur, new)
                            events += 1
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
        self._write_depth += len(transitions)
        self._event_depth += events
        return events

    def add_event(self, event: NewEvent) -> None:
        """Queue one event that is no engine transition (an acknowledgement)."""
        with self._lock:
            cur = self._conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                self._insert_event(cur, event)
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
        self._event_depth += 1

    @staticmethod
    def _insert_event(cur: sqlite3.Cursor, event: NewEvent) -> None:
        cur.execute(
            "INSERT OR IGNORE INTO event_outbox (transition_id, alert_id, partition_key, event, created_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (event.transition_id, event.alert_id, event.partition_key, json.dumps(event.event), time.time()),
        )

    @staticmethod
    def _open_alert(cur: sqlite3.Cursor, alert_id: uuid.UUID) -> OpenAlert | None:
        row = cur.execute(
            "SELECT alert_id, rule, tag_path, severity, value_at_raise, peak_value, raised_at "
            "FROM open_alerts WHERE alert_id = ?",
            (str(alert_id),),
        ).fetchone()
        return _open_alert_from_row(row) if row is not None else None

    @staticmethod
    def _mirror(cur: sqlite3.Cursor, t: Transition) -> None:
        if isinstance(t, Raised):
            cur.execute(
                "INSERT OR REPLACE INTO open_alerts VALUES (?, ?, ?, ?, ?, ?, ?)",
                (str(t.alert_id), t.rule, t.tag_path, t.severity, t.value, t.value, t.at.isoformat()),
            )
        elif isinstance(t, PeakUpdated):
            cur.execute("UPDATE open_alerts SET peak_value = ? WHERE alert_id = ?", (t.peak, str(t.alert_id)))
        elif isinstance(t, Cleared):
            cur.execute("DELETE FROM open_alerts WHERE alert_id = ?", (str(t.alert_id),))

    # -- the database outbox -----------------------------------------------------------------

    def pending_writes(self, limit: int) -> list[tuple[int, Transition]]:
        with self._lock:
            rows = self._conn.execute("SELECT seq, transition FROM db_outbox ORDER BY seq LIMIT ?", (limit,)).fetchall()
        return [(int(seq), load_transition(text)) for seq, text in rows]

    def written(self, seqs: Iterable[int]) -> None:
        """Drop transitions the database committed."""
        done = [(seq,) for seq in seqs]
        with self._lock:
            cur = self._conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            cur.executemany("DELETE FROM db_outbox WHERE seq = ?", done)
            cur.execute("COMMIT")
            self._write_depth = self._count("db_outbox")

    def holds(self, rule: str, tag_path: str) -> bool:
        """Whether a transition of this condition waits to be written."""
        with self._lock:
            row = self._conn.execute(
                "SELECT 1 FROM db_outbox WHERE rule = ? AND tag_path = ? LIMIT 1", (rule, tag_path)
            ).fetchone()
        return row is not None

    # -- the event outbox --------------------------------------------------------------------

    def pending_events(self, limit: int) -> list[PendingEvent]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT seq, transition_id, alert_id, partition_key, event, created_at, attempts "
                "FROM event_outbox ORDER BY seq LIMIT ?",
                (limit,),
            ).fetchall()
        return [PendingEvent(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5], r[6]) for r in rows]

    def delivered(self, seqs: Iterable[int]) -> None:
        done = [(seq,) for seq in seqs]
        with self._lock:
            cur = self._conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            cur.executemany("DELETE FROM event_outbox WHERE seq = ?", done)
            cur.execute("COMMIT")
            self._event_depth = self._count("event_outbox")

    def attempted(self, seqs: Iterable[int]) -> None:
        attempts = [(seq,) for seq in seqs]
        with self._lock:
            cur = self._conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            cur.executemany("UPDATE event_outbox SET attempts = attempts + 1 WHERE seq = ?", attempts)
            cur.execute("COMMIT")

    # -- open alerts -------------------------------------------------------------------------

    def open_alerts(self) -> list[OpenAlert]:
        """The alerts open at the last recorded transition, oldest first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT alert_id, rule, tag_path, severity, value_at_raise, peak_value, raised_at "
                "FROM open_alerts ORDER BY raised_at"
            ).fetchall()
        return [_open_alert_from_row(row) for row in rows]


def _open_alert_from_row(row: Sequence[Any]) -> OpenAlert:
    return OpenAlert(uuid.UUID(row[0]), row[1], row[2], int(row[3]), row[4], row[5], datetime.fromisoformat(row[6]))
