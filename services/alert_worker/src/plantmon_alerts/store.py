"""The alerts table (PostgreSQL through a psycopg 3 async pool) and the in-memory outbox.

:class:`AlertStore` turns engine transitions into rows: a raise is an ``INSERT`` with the id the
engine chose, a peak an ``UPDATE`` of ``peak_value``, a clear sets ``state='cleared'`` and
``cleared_at`` (an acknowledged alert keeps its acknowledgement; one cleared unacknowledged keeps
``acknowledged_at`` null). Acknowledgement is the API's: only an open, unacknowledged alert can
be acknowledged.

:class:`Outbox` keeps transitions, in order, in the worker's durable local state file
(:mod:`plantmon_alerts.delivery.journal`) until they are committed: alerting goes on while the
database is down, the backlog survives a restart and is written when the database is back.
:meth:`AlertStore.delete_expired` is the retention step. A raise that meets an open alert of
the same condition in the table (a restart while the database was down) adopts that row instead
of opening a second one.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from plantmon_alerts.delivery.journal import EventFactory, StateJournal
from plantmon_alerts.engine import Cleared, OpenAlert, PeakUpdated, Raised, Transition

logger = logging.getLogger(__name__)

AlertState = Literal["active", "acknowledged", "cleared"]

COLUMNS = (
    "id, rule, tag_path, severity, state, message, value_at_raise, peak_value, raised_at, "
    "acknowledged_at, acknowledged_by, ack_comment, cleared_at, updated_at"
)

# The column list is a constant; every value is a parameter.
ACK_STATEMENT = " ".join(
    (
        "UPDATE alerts SET state = 'acknowledged', acknowledged_at = now(), acknowledged_by = %s,",
        "ack_comment = %s, updated_at = now()",
        "WHERE id = %s AND cleared_at IS NULL AND acknowledged_at IS NULL RETURNING",
        COLUMNS,
    )
)


class StoreError(Exception):
    """The database could not be reached or refused the statement."""


class AlertNotFoundError(StoreError):
    """No alert has this id."""


class AlertNotOpenError(StoreError):
    """The alert cannot be acknowledged: it is cleared, or acknowledged already."""

    def __init__(self, alert: dict[str, Any]) -> None:
        self.alert = alert
        super().__init__(f"alert {alert['id']} is {alert['state']}")


@dataclass(frozen=True, slots=True)
class AlertQuery:
    """Filters of the alert list; ``since``/``until`` select alerts open at some time in between."""

    states: tuple[AlertState, ...] = ()
    open_only: bool = False
    min_severity: int = 1
    rule: str | None = None
    tag_like: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 100


def glob_to_like(glob: str) -> str:
    """An fnmatch-style glob (``*`` and ``?``) as a SQL ``LIKE`` pattern with ``\\`` as escape."""
    out = []
    for char in glob:
        if char in "\\%_":
            out.append("\\" + char)
        elif char == "*":
            out.append("%")
        elif char == "?":
            out.append("_")
        else:
            out.append(char)
    return "".join(out)


def make_pool(conninfo: str, *, max_size: int = 4, timeout: float = 5.0) -> AsyncConnectionPool:
    """A closed pool (open it in the service's lifecycle); connections are checked on checkout."""
    return AsyncConnectionPool(
        conninfo,
        min_size=1,
        max_size=max_size,
        open=False,
        timeout=timeout,
        name="alerts",
        kwargs={"autocommit": True},
        check=AsyncConnectionPool.check_connection,
    )


class AlertStore:
    """The ``alerts`` table. Every method raises :class:`StoreError` when the database fails."""

    def __init__(self, pool: AsyncConnectionPool, *, timeout: float = 5.0) -> None:
        self.pool = pool
        self.timeout = timeout
        #: engine id -> id of the row it adopted (see the module docstring)
        self.aliases: dict[uuid.UUID, uuid.UUID] = {}

    async def ping(self) -> None:
        try:
            async with self.pool.connection(timeout=self.timeout) as conn:
                await conn.execute("SELECT 1")
        except psycopg.Error as exc:
            raise StoreError(f"{type(exc).__name__}: {exc}") from exc

    async def open_alerts(self) -> list[OpenAlert]:
        """Every alert not cleared yet, oldest first."""
        try:
            async with self.pool.connection(timeout=self.timeout) as conn:
                cur = await conn.execute(
                    "SELECT id, rule, tag_path, severity, value_at_raise, peak_value, raised_at "
                    "FROM alerts WHERE cleared_at IS NULL ORDER BY raised_at"
                )
                rows = await cur.fetchall()
        except psycopg.Error as exc:
            raise StoreError(f"{type(exc).__name__}: {exc}") from exc
        return [OpenAlert(*row) for row in rows]

    async def write(self, batch: Sequence[Transition]) -> None:
        """Write ``batch`` in one transaction, in order (all or nothing)."""
        adopted: dict[uuid.UUID, uuid.UUID] = {}
        try:
            async with self.pool.connection(timeout=self.timeout) as conn, conn.transaction():
                for transition in batch:
                    await self._write_one(conn, transition, adopted)
        except psycopg.Error as exc:
            raise StoreError(f"{type(exc).__name__}: {exc}") from exc
        self.aliases.update(adopted)

    def _row_id(self, alert_id: uuid.UUID, adopted: dict[uuid.UUID, uuid.UUID]) -> uuid.UUID:
        return adopted.get(alert_id) or self.aliases.get(alert_id) or alert_id

    async def _write_one(
        self, conn: psycopg.AsyncConnection[Any], t: Transition, adopted: dict[uuid.UUID, uuid.UUID]
    ) -> None:
        if isinstance(t, Raised):
            cur = await conn.execute(
                "INSERT INTO alerts (id, rule, tag_path, severity, state, message, value_at_raise, peak_value, "
                "raised_at) VALUES (%s, %s, %s, %s, 'active', %s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING id",
                (t.alert_id, t.rule, t.tag_path, t.severity, t.message, t.value, t.value, t.at),
            )
            if await cur.fetchone() is not None:
                return
            cur = await conn.execute(
                "SELECT id FROM alerts WHERE id = %s OR (rule = %s AND tag_path = %s AND cleared_at IS NULL) "
                "ORDER BY (id = %s) DESC LIMIT 1",
                (t.alert_id, t.rule, t.tag_path, t.alert_id),
            )
            row = await cur.fetchone()
            if row is not None and row[0] != t.alert_id:
                adopted[t.alert_id] = row[0]
                logger.info(
                    "raise adopted the open alert already in the table",
                    extra={"alert_id": str(t.alert_id), "row_id": str(row[0]), "rule": t.rule, "tag": t.tag_path},
                )
        elif isinstance(t, PeakUpdated):
            await conn.execute(
                "UPDATE alerts SET peak_value = %s, updated_at = now() WHERE id = %s AND cleared_at IS NULL",
                (t.peak, self._row_id(t.alert_id, adopted)),
            )
        elif isinstance(t, Cleared):
            await conn.execute(
                "UPDATE alerts SET state = 'cleared', cleared_at = %s, updated_at = now() "
                "WHERE id = %s AND cleared_at IS NULL",
                (t.at, self._row_id(t.alert_id, adopted)),
            )

    async def delete_expired(self, retention_days: int) -> int:
        """Delete alerts cleared more than ``retention_days`` ago (open ones are never deleted)."""
        try:
            async with self.pool.connection(timeout=self.timeout) as conn:
                # The role cannot DELETE; this SECURITY DEFINER function deletes only old cleared alerts.
                cur = await conn.execute("SELECT purge_cleared_alerts(%s)", (retention_days,))
                row = await cur.fetchone()
                return int(row[0]) if row else 0
        except psycopg.Error as exc:
            raise StoreError(f"{type(exc).__name__}: {exc}") from exc

    async def get(self, alert_id: uuid.UUID) -> dict[str, Any] | None:
        try:
            async with self.pool.connection(timeout=self.timeout) as conn:
                cur = conn.cursor(row_factory=dict_row)
                await cur.execute(f"SELECT {COLUMNS} FROM alerts WHERE id = %s", (alert_id,))  # noqa: S608
                return await cur.fetchone()
        except psycopg.Error as exc:
            raise StoreError(f"{type(exc).__name__}: {exc}") from exc

    async def query(self, q: AlertQuery) -> list[dict[str, Any]]:
        """Alerts matching ``q``, newest raise first."""
        where: list[str] = ["severity >= %s"]
        params: list[Any] = [q.min_severity]
        if q.states:
            where.append("state = ANY(%s)")
            params.append(list(q.states))
        if q.open_only:
            where.append("cleared_at IS NULL")
        if q.rule is not None:
            where.append("rule = %s")
            params.append(q.rule)
        if q.tag_like is not None:
            where.append("tag_path LIKE %s ESCAPE '\\'")
            params.append(q.tag_like)
        if q.since is not None:
            where.append("(cleared_at IS NULL OR cleared_at >= %s)")
            params.append(q.since)
        if q.until is not None:
            where.append("raised_at < %s")
            params.append(q.until)
        params.append(q.limit)
        statement = f"SELECT {COLUMNS} FROM alerts WHERE {' AND '.join(where)} ORDER BY raised_at DESC, id LIMIT %s"  # noqa: S608
        try:
            async with self.pool.connection(timeout=self.timeout) as conn:
                cur = conn.cursor(row_factory=dict_row)
                await cur.execute(statement, params)
                return await cur.fetchall()
        except psycopg.Error as exc:
            raise StoreError(f"{type(exc).__name__}: {exc}") from exc

    async def acknowledge(self, alert_id: uuid.UUID, by: str, comment: str | None) -> dict[str, Any]:
        """Acknowledge an open alert; :class:`AlertNotFoundError` / :class:`AlertNotOpenError` otherwise."""
        try:
            async with self.pool.connection(timeout=self.timeout) as conn:
                cur = conn.cursor(row_factory=dict_row)
                await cur.execute(ACK_STATEMENT, (by, comment, alert_id))
                row = await cur.fetchone()
        except psycopg.Error as exc:
            raise StoreError(f"{type(exc).__name__}: {exc}") from exc
        if row is not None:
            return row
        existing = await self.get(alert_id)
        if existing is None:
            raise AlertNotFoundError(f"no alert {alert_id}")
        raise AlertNotOpenError(existing)


class Outbox:
    """Transitions not yet committed, in order, kept in the durable :class:`StateJournal`.

    :meth:`put` records them (and their Event Hubs events, through ``make_event``) in the local
    state file before returning; :meth:`flush` writes them to the database in batches and drops
    each batch from the file once committed. Without a journal (tests of other parts) the state
    lives in an in-memory SQLite database.
    """

    def __init__(self, store: AlertStore, *, batch_size: int = 200, journal: StateJournal | None = None) -> None:
        self.store = store
        self.batch_size = batch_size
        self.journal = journal if journal is not None else StateJournal(None)
        self._lock = asyncio.Lock()
        self.wakeup = asyncio.Event()

    @property
    def depth(self) -> int:
        """Transitions not yet written to the database."""
        return self.journal.write_depth

    def put(self, transitions: Iterable[Transition], make_event: EventFactory | None = None) -> int:
        """Record ``transitions`` durably; returns how many events were queued for Event Hubs."""
        batch = list(transitions)
        if not batch:
            return 0
        events = self.journal.record(batch, make_event)
        self.wakeup.set()
        return events

    def holds(self, rule: str, tag_path: str) -> bool:
        """Whether a transition of this condition waits to be written."""
        return self.journal.holds(rule, tag_path)

    async def flush(self) -> int:
        """Write everything pending (raises :class:`StoreError`, keeping what was not committed)."""
        written = 0
        async with self._lock:
            self.wakeup.clear()
            while batch := self.journal.pending_writes(self.batch_size):
                await self.store.write([t for _, t in batch])
                self.journal.written(seq for seq, _ in batch)
                written += len(batch)
        return written
