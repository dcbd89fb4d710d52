"""HistoryRead (ReadRaw) for the Plant variables: a recent in-memory ring, older ranges from the database.

asyncua's history storage interface (:class:`asyncua.server.history.HistoryStorageInterface`) is
implemented by :class:`PlantHistory`:

- the **ring**: every DataValue the server itself published for a tag (value, SourceTimestamp,
  ServerTimestamp, StatusCode, Bad ones included), kept for ``window`` (default 15 minutes). It
  is fed directly by the poll loop (:meth:`PlantHistory.record`), not through asyncua's internal
  history subscription, so nothing is lost to a subscription's trigger or queue and the server
  pays no per-tag monitored item for it. Per tag the ring is authoritative from ``covered_from``:
  the time it started recording (or the first stamp it recorded, if older), moved forward when
  old values are dropped.
- the **database**: older ranges are read from ``samples`` joined to ``tags`` on ``path`` through
  the read-only role ``plantmon_reader`` (what the scraper stored). When the database cannot be
  reached, a read that needs it fails with ``Bad_DataUnavailable`` (the specification's status
  for an off-line archive) while reads within the ring and live values carry on.

:class:`PlantHistoryManager` replaces asyncua's ``HistoryManager`` so that (a) a failure has a
per-node StatusCode instead of failing the whole request, and (b) continuation points carry the
read direction as well as the next timestamp (asyncua's own is a bare timestamp, which cannot
resume a backwards read).
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import psycopg
from asyncua import ua
from asyncua.server.history import HistoryManager, HistoryStorageInterface

if TYPE_CHECKING:
    from asyncua.common.events import Event
    from asyncua.common.node import Node

logger = logging.getLogger(__name__)

EPOCH_US = datetime(1970, 1, 1, tzinfo=UTC)
CONTINUATION = struct.Struct("<cq")  # direction (b"F"/b"B"), next SourceTimestamp in µs since 1970

SAMPLES_QUERY_FORWARD = (
    "SELECT s.time, s.value, s.status FROM samples s JOIN tags t ON t.id = s.tag_id "
    "WHERE t.path = %s AND s.time >= %s AND s.time < %s ORDER BY s.time ASC LIMIT %s"
)
SAMPLES_QUERY_BACKWARD = (
    "SELECT s.time, s.value, s.status FROM samples s JOIN tags t ON t.id = s.tag_id "
    "WHERE t.path = %s AND s.time >= %s AND s.time < %s ORDER BY s.time DESC LIMIT %s"
)


class HistoryReadError(Exception):
    """A history read that cannot be answered; ``status`` is what the client sees for that node."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _utc(stamp: datetime) -> datetime:
    return stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp.astimezone(UTC)


def _unspecified(stamp: datetime | None) -> bool:
    """OPC UA's "no time given": null, or the DateTime minimum (1601-01-01)."""
    return stamp is None or _utc(stamp) <= _utc(ua.get_win_epoch())


def _to_us(stamp: datetime) -> int:
    delta = _utc(stamp) - EPOCH_US
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def _from_us(us: int) -> datetime:
    return EPOCH_US + timedelta(microseconds=us)


@dataclass(slots=True)
class Ring:
    """What the server published for one tag, oldest first, and from when it is complete."""

    covered_from: datetime
    values: deque[ua.DataValue] = field(default_factory=deque)


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """One node's ReadRaw, normalised: an inclusive ``[low, high]`` walked ``forward`` or back."""

    path: str
    low: datetime
    high: datetime
    forward: bool
    limit: int


class SampleArchive:
    """The ``samples`` table through one lazily (re)opened read-only connection."""

    def __init__(self, conninfo: str, timeout_s: float) -> None:
        self.conninfo = conninfo
        self.timeout_s = timeout_s
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._lock = asyncio.Lock()
        self.available: bool | None = None

    async def read(self, path: str, low: datetime, below: datetime, forward: bool, limit: int) -> list[ua.DataValue]:
        """Samples of ``path`` with ``low <= time < below`` in the read direction, at most ``limit``."""
        query = SAMPLES_QUERY_FORWARD if forward else SAMPLES_QUERY_BACKWARD
        async with self._lock:
            try:
                conn: psycopg.AsyncConnection[Any] | None = self._conn
                if conn is None or conn.closed:
                    conn = await asyncio.wait_for(
                        psycopg.AsyncConnection.connect(self.conninfo, autocommit=True), timeout=self.timeout_s
                    )
                    self._conn = conn
                assert conn is not None
                cursor = await asyncio.wait_for(conn.execute(query, (path, low, below, limit)), self.timeout_s)
                rows = await cursor.fetchall()
            except (psycopg.Error, OSError, TimeoutError) as exc:
                await self._drop()
                if self.available is not False:
                    logger.warning("history database unavailable", extra={"error": f"{type(exc).__name__}: {exc}"})
                self.available = False
                raise HistoryReadError(
                    ua.StatusCodes.BadDataUnavailable, f"history database unavailable: {type(exc).__name__}"
                ) from exc
        if self.available is False:
            logger.info("history database reachable again")
        self.available = True
        return [
            ua.DataValue(
                ua.Variant(float(value), ua.VariantType.Double) if value is not None else ua.Variant(),
                StatusCode=ua.StatusCode(int(status)),
                SourceTimestamp=_utc(stamp),
            )
            for stamp, value, status in rows
        ]

    async def _drop(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                await conn.close()
            except (psycopg.Error, OSError) as exc:
                logger.debug("closing a broken history connection failed", extra={"error": str(exc)})

    async def close(self) -> None:
        async with self._lock:
            await self._drop()


class PlantHistory(HistoryStorageInterface):
    """asyncua history storage: the recent ring per tag, older ranges from :class:`SampleArchive`."""

    def __init__(
        self,
        ns: int,
        window: timedelta,
        archive: SampleArchive | None = None,
        max_history_data_response_size: int = 10000,
    ) -> None:
        super().__init__(max_history_data_response_size)
        self.ns = ns
        self.window = window
        self.archive = archive
        self.rings: dict[str, Ring] = {}

    # -- the storage interface -------------------------------------------------------------
    async def init(self) -> None:
        if self.archive is None:
            logger.info("no history database configured: HistoryRead answers from the recent window only")

    async def new_historized_node(self, node_id: ua.NodeId, period: timedelta | None, count: int = 0) -> None:
        self.rings.setdefault(str(node_id.Identifier), Ring(covered_from=datetime.now(UTC)))

    async def save_node_value(self, node_id: ua.NodeId, datavalue: ua.DataValue) -> None:
        if datavalue.SourceTimestamp is None:
            datavalue = ua.DataValue(
                datavalue.Value, StatusCode=datavalue.StatusCode, SourceTimestamp=datetime.now(UTC)
            )
        self.record(str(node_id.Identifier), datavalue)

    async def read_node_history(
        self, node_id: ua.NodeId, start: datetime | None, end: datetime | None, nb_values: int
    ) -> tuple[list[ua.DataValue], datetime | None]:
        values, resume = await self.read_raw(node_id, start, end, nb_values)
        return values, _from_us(resume[1]) if resume else None

    async def new_historized_event(
        self, source_id: ua.NodeId, evtypes: list[Node], period: timedelta | None, count: int = 0
    ) -> None:
        raise ua.UaStatusCodeError(ua.StatusCodes.BadHistoryOperationUnsupported)

    async def save_event(self, event: Event) -> None:
        raise ua.UaStatusCodeError(ua.StatusCodes.BadHistoryOperationUnsupported)

    async def read_event_history(
        self,
        source_id: ua.NodeId,
        start: datetime | None,
        end: datetime | None,
        nb_values: int,
        evfilter: ua.EventFilter,
    ) -> tuple[list[Event], datetime | None]:
        raise HistoryReadError(ua.StatusCodes.BadHistoryOperationUnsupported, "no event history")

    async def stop(self) -> None:
        if self.archive is not None:
            await self.archive.close()

    # -- recording -------------------------------------------------------------------------
    def record(self, path: str, dv: ua.DataValue, cutoff: datetime | None = None) -> None:
        """Keep ``dv`` (just published for ``path``, with an aware SourceTimestamp); drop what is
        older than ``cutoff`` (default: now minus the window). Called for every value: keep it cheap.
        """
        stamp = dv.SourceTimestamp
        assert stamp is not None and stamp.tzinfo is not None, "published values carry an aware SourceTimestamp"
        ring = self.rings.get(path)
        if ring is None:
            ring = self.rings[path] = Ring(covered_from=stamp)
        elif not ring.values and stamp < ring.covered_from:
            ring.covered_from = stamp  # the first value was observed just before we started
        values = ring.values
        values.append(dv)
        if cutoff is None:
            cutoff = datetime.now(UTC) - self.window
        if values[0].SourceTimestamp < cutoff:  # type: ignore[operator]
            while values and values[0].SourceTimestamp < cutoff:  # type: ignore[operator]
                values.popleft()
            ring.covered_from = max(ring.covered_from, cutoff)

    # -- reading ---------------------------------------------------------------------------
    def _request(self, node_id: ua.NodeId, start: datetime | None, end: datetime | None, nb_values: int) -> ReadRequest:
        path = str(node_id.Identifier)
        if node_id.NamespaceIndex != self.ns or path not in self.rings:
            raise HistoryReadError(ua.StatusCodes.BadHistoryOperationUnsupported, f"{node_id} is not historized")
        cap = self.max_history_data_response_size
        limit = min(nb_values, cap) if nb_values else cap
        no_start, no_end = _unspecified(start), _unspecified(end)
        if no_start and no_end:
            raise HistoryReadError(ua.StatusCodes.BadHistoryOperationInvalid, "neither StartTime nor EndTime given")
        lowest, highest = datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC)
        if no_start:
            assert end is not None
            if not nb_values:
                raise HistoryReadError(ua.StatusCodes.BadHistoryOperationInvalid, "no StartTime needs NumValuesPerNode")
            return ReadRequest(path, lowest, _utc(end), False, limit)
        assert start is not None
        if no_end:
            if not nb_values:
                raise HistoryReadError(ua.StatusCodes.BadHistoryOperationInvalid, "no EndTime needs NumValuesPerNode")
            return ReadRequest(path, _utc(start), highest, True, limit)
        assert end is not None
        start, end = _utc(start), _utc(end)
        return ReadRequest(path, min(start, end), max(start, end), start <= end, limit)

    async def read_raw(
        self,
        node_id: ua.NodeId,
        start: datetime | None,
        end: datetime | None,
        nb_values: int,
        resume: tuple[bool, int] | None = None,
    ) -> tuple[list[ua.DataValue], tuple[bool, int] | None]:
        """Values of one node in the read direction and where to resume (direction, µs) if cut off."""
        req = self._request(node_id, start, end, nb_values)
        low, high, forward = req.low, req.high, req.forward
        if resume is not None:
            forward, at = resume[0], _from_us(resume[1])
            low, high = (at, high) if forward else (low, at)
        ring = self.rings[req.path]
        border = ring.covered_from
        wanted = req.limit + 1  # one more tells whether to hand out a continuation point

        def from_ring() -> list[ua.DataValue]:
            lo = max(low, border)
            picked = [dv for dv in ring.values if lo <= _utc(dv.SourceTimestamp) <= high]  # type: ignore[arg-type]
            return picked if forward else picked[::-1]

        async def from_archive(count: int) -> list[ua.DataValue]:
            if low >= border or count <= 0:
                return []
            if self.archive is None:
                return []
            below = min(border, high + timedelta(microseconds=1))
            return await self.archive.read(req.path, low, below, forward, count)

        if forward:
            values = await from_archive(wanted)
            if len(values) < wanted:
                values += from_ring()
        else:
            values = from_ring()
            if len(values) < wanted:
                values += await from_archive(wanted - len(values))
        if len(values) > req.limit:
            nxt = values[req.limit].SourceTimestamp
            assert nxt is not None
            return values[: req.limit], (forward, _to_us(nxt))
        return values, None


def pack_continuation(resume: tuple[bool, int]) -> bytes:
    return CONTINUATION.pack(b"F" if resume[0] else b"B", resume[1])


def unpack_continuation(raw: bytes) -> tuple[bool, int]:
    try:
        direction, us = CONTINUATION.unpack(raw)
    except struct.error as exc:
        raise HistoryReadError(ua.StatusCodes.BadContinuationPointInvalid, "unknown continuation point") from exc
    if direction not in (b"F", b"B"):
        raise HistoryReadError(ua.StatusCodes.BadContinuationPointInvalid, "unknown continuation point")
    return direction == b"F", us


class PlantHistoryManager(HistoryManager):
    """asyncua's HistoryManager with per-node status codes and direction-aware continuation points."""

    storage: PlantHistory

    def __init__(self, iserver: Any, storage: PlantHistory) -> None:
        super().__init__(iserver)
        self.storage = storage

    async def read_history(self, params: ua.HistoryReadParameters) -> list[ua.HistoryReadResult]:
        return [
            await self._read_one(params.HistoryReadDetails, rv, params.ReleaseContinuationPoints)
            for rv in params.NodesToRead
        ]

    async def _read_one(self, details: Any, rv: ua.HistoryReadValueId, release: bool) -> ua.HistoryReadResult:
        result = ua.HistoryReadResult()
        if not isinstance(details, ua.ReadRawModifiedDetails) or details.IsReadModified:
            result.StatusCode = ua.StatusCode(ua.StatusCodes.BadHistoryOperationUnsupported)
            return result
        if release:
            return result  # nothing is held server-side: releasing is free
        try:
            resume = unpack_continuation(rv.ContinuationPoint) if rv.ContinuationPoint else None
            values, nxt = await self.storage.read_raw(
                rv.NodeId, details.StartTime, details.EndTime, details.NumValuesPerNode, resume
            )
        except HistoryReadError as exc:
            logger.debug("history read refused", extra={"node": str(rv.NodeId), "error": str(exc)})
            result.StatusCode = ua.StatusCode(exc.status)
            return result
        result.HistoryData = ua.HistoryData(DataValues=values)
        result.ContinuationPoint = pack_continuation(nxt) if nxt else None
        if nxt is None and not values:
            result.StatusCode = ua.StatusCode(ua.StatusCodes.GoodNoData)
        elif nxt is not None:
            result.StatusCode = ua.StatusCode(ua.StatusCodes.GoodMoreData)
        return result


def install_history(server: Any, storage: PlantHistory) -> PlantHistoryManager:
    """Make ``server`` (an asyncua Server, before ``init``) answer HistoryRead from ``storage``."""
    manager = PlantHistoryManager(server.iserver, storage)
    server.iserver.history_manager = manager
    return manager


__all__: Sequence[str] = [
    "HistoryReadError",
    "PlantHistory",
    "PlantHistoryManager",
    "SampleArchive",
    "install_history",
]
