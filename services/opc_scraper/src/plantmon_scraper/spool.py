"""The on-disk spool: samples the database could not take yet, kept in order across restarts.

Layout: a folder of segment files ``NNNNNNNNNNNN.seg`` (append-only, rotated at
``segment_bytes``) and a ``cursor`` file naming the next record to replay. A record is one batch:

    header  magic b"PMS1" | payload length (u32) | CRC-32 of the payload (u32)
    payload rows (u32) | paths (u16) | per path: length (u16) + UTF-8
            | path index u16[rows] | time in microseconds since the epoch i64[rows]
            | value f64[rows] | has value u8[rows] | status u32[rows]      (little endian)

Every append is written and ``fsync``'d before it returns, so a sample the spool accepted
survives ``kill -9`` and a power cut. At open, a torn record at the end of the newest segment
(a crash in the middle of an append) is cut off. The cursor is replaced atomically (write,
fsync, rename) after a record was committed to the database; a crash between the commit and the
cursor update replays that record again, which the database's key turns into no-ops.

The spool is capped at ``max_bytes``: when an append would go beyond it, the oldest segments are
deleted and their unreplayed rows counted as dropped (a metric and an error log each time).
"""

from __future__ import annotations

import logging
import os
import struct
import sys
import zlib
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from plantmon_common.opcua import Sample

logger = logging.getLogger(__name__)

MAGIC = b"PMS1"
HEADER = struct.Struct("<4sII")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
NEAR_CAP = 0.8
"""Share of ``max_bytes`` above which the spool logs loudly (once per crossing)."""


class SpoolError(OSError):
    """The spool folder cannot be written or read."""


def encode(samples: Sequence[Sample]) -> bytes:
    """One record (header and payload) holding ``samples`` in their order."""
    paths: dict[str, int] = {}
    index = array("H")
    times = array("q")
    values = array("d")
    has_value = array("B")
    status = array("I")
    for s in samples:
        idx = paths.setdefault(s.path, len(paths))
        index.append(idx)
        delta = s.source_time - EPOCH
        times.append((delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds)
        values.append(s.value if s.value is not None else 0.0)
        has_value.append(0 if s.value is None else 1)
        status.append(s.status & 0xFFFFFFFF)
    parts = [struct.pack("<IH", len(samples), len(paths))]
    for path in paths:
        raw = path.encode("utf-8")
        parts.append(struct.pack("<H", len(raw)))
        parts.append(raw)
    for arr in (index, times, values, has_value, status):
        if arr.itemsize > 1 and sys.byteorder != "little":
            arr.byteswap()
        parts.append(arr.tobytes())
    payload = b"".join(parts)
    return HEADER.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload


def decode(payload: bytes) -> list[Sample]:
    """The samples of one record's payload."""
    rows, n_paths = struct.unpack_from("<IH", payload, 0)
    pos = 6
    paths: list[str] = []
    for _ in range(n_paths):
        (length,) = struct.unpack_from("<H", payload, pos)
        pos += 2
        paths.append(payload[pos : pos + length].decode("utf-8"))
        pos += length
    arrays = []
    for code in ("H", "q", "d", "B", "I"):
        arr = array(code)
        size = arr.itemsize * rows
        arr.frombytes(payload[pos : pos + size])
        if arr.itemsize > 1 and sys.byteorder != "little":
            arr.byteswap()
        arrays.append(arr)
        pos += size
    index, times, values, has_value, status = arrays
    return [
        Sample(
            paths[index[i]],
            values[i] if has_value[i] else None,
            status[i],
            EPOCH + timedelta(microseconds=times[i]),
        )
        for i in range(rows)
    ]


@dataclass(slots=True)
class _Segment:
    seq: int
    path: Path
    size: int = 0
    records: list[tuple[int, int, int]] = field(default_factory=list)  # (offset, length, rows)


@dataclass(frozen=True, slots=True, order=True)
class Position:
    """Where a record is: segment number and byte offset."""

    seq: int
    offset: int


class Spool:
    """Append batches, read them back in order, advance past replayed ones; all calls are blocking
    (the store runs them in a worker thread) and must not run concurrently."""

    def __init__(self, directory: Path, max_bytes: int, segment_bytes: int = 8 * 1024 * 1024) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = max(4096, min(segment_bytes, max_bytes // 4))
        self._segments: list[_Segment] = []
        self._cursor = Position(0, 0)
        self.dropped_rows = 0
        """Rows deleted at the cap since this process started."""
        self._near_cap_logged = False

    # -- state ----------------------------------------------------------------------------------

    @property
    def bytes(self) -> int:
        """Bytes on disk in segment files."""
        return sum(s.size for s in self._segments)

    @property
    def pending_rows(self) -> int:
        """Rows not yet replayed."""
        return sum(rows for seg, (offset, _, rows) in self._records() if Position(seg.seq, offset) >= self._cursor)

    @property
    def empty(self) -> bool:
        return self._next_record() is None

    def _records(self) -> list[tuple[_Segment, tuple[int, int, int]]]:
        return [(seg, rec) for seg in self._segments for rec in seg.records]

    def _next_record(self) -> tuple[_Segment, int, int, int] | None:
        for seg in self._segments:
            if seg.seq < self._cursor.seq:
                continue
            for offset, length, rows in seg.records:
                if seg.seq > self._cursor.seq or offset >= self._cursor.offset:
                    return seg, offset, length, rows
        return None

    # -- open -----------------------------------------------------------------------------------

    def open(self) -> None:
        """Create the folder or load what a previous run left (cutting off a torn last record)."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            files = sorted(self.directory.glob("*.seg"))
            for file in files:
                seg = _Segment(int(file.stem), file)
                self._scan(seg, is_last=file == files[-1])
                self._segments.append(seg)
            cursor_file = self.directory / "cursor"
            if cursor_file.exists():
                seq, offset = (int(x) for x in cursor_file.read_text("ascii").split())
                self._cursor = Position(seq, offset)
            elif self._segments:
                self._cursor = Position(self._segments[0].seq, 0)
        except (OSError, ValueError) as exc:
            raise SpoolError(f"cannot open the spool in {self.directory}: {exc}") from exc
        self._discard_replayed_segments()
        if not self.empty:
            logger.warning(
                "spool holds samples from before the start; they are replayed when the database takes writes",
                extra={"spool_rows": self.pending_rows, "spool_bytes": self.bytes},
            )

    def _scan(self, seg: _Segment, *, is_last: bool) -> None:
        data = seg.path.read_bytes()
        pos = 0
        while pos + HEADER.size <= len(data):
            magic, length, crc = HEADER.unpack_from(data, pos)
            payload = data[pos + HEADER.size : pos + HEADER.size + length]
            if magic != MAGIC or len(payload) != length or zlib.crc32(payload) != crc:
                break
            (rows,) = struct.unpack_from("<I", payload, 0)
            seg.records.append((pos, HEADER.size + length, rows))
            pos += HEADER.size + length
        if pos != len(data):
            if not is_last:
                logger.error("spool segment is damaged; keeping its intact records", extra={"segment": seg.path.name})
            else:
                logger.warning("spool ends in a torn record (a crash during an append); cutting it off")
            with seg.path.open("r+b") as f:
                f.truncate(pos)
                os.fsync(f.fileno())
        seg.size = pos

    # -- append ---------------------------------------------------------------------------------

    def append(self, samples: Sequence[Sample]) -> None:
        """Write one batch durably (fsync'd before returning); make room at the cap first."""
        if not samples:
            return
        record = encode(samples)
        self._make_room(len(record))
        try:
            seg = self._segments[-1] if self._segments else None
            if seg is None or (seg.size > 0 and seg.size + len(record) > self.segment_bytes):
                seg = self._new_segment()
            with seg.path.open("ab") as f:
                f.write(record)
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            raise SpoolError(f"cannot append to the spool in {self.directory}: {exc}") from exc
        seg.records.append((seg.size, len(record), len(samples)))
        seg.size += len(record)
        self._check_near_cap()

    def _new_segment(self) -> _Segment:
        seq = self._segments[-1].seq + 1 if self._segments else max(self._cursor.seq, 1)
        seg = _Segment(seq, self.directory / f"{seq:012d}.seg")
        seg.path.touch()
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        if not self._segments and self._cursor.seq < seq:
            self._write_cursor(Position(seq, 0))
        self._segments.append(seg)
        return seg

    def _make_room(self, incoming: int) -> None:
        while self._segments and self.bytes + incoming > self.max_bytes:
            oldest = self._segments[0]
            if len(self._segments) == 1 and oldest.size + incoming <= self.segment_bytes:
                break
            lost = sum(rows for offset, _, rows in oldest.records if Position(oldest.seq, offset) >= self._cursor)
            self._segments.pop(0)
            oldest.path.unlink(missing_ok=True)
            self.dropped_rows += lost
            next_seq = self._segments[0].seq if self._segments else oldest.seq + 1
            if self._cursor.seq <= oldest.seq:
                self._write_cursor(Position(next_seq, 0))
            logger.error(
                "spool full: dropped its oldest samples",
                extra={"dropped_rows": lost, "dropped_total": self.dropped_rows, "max_bytes": self.max_bytes},
            )

    def _check_near_cap(self) -> None:
        used = self.bytes / self.max_bytes
        if used >= NEAR_CAP and not self._near_cap_logged:
            self._near_cap_logged = True
            logger.error(
                "spool nearly full: at the cap the oldest samples are dropped; is the database reachable?",
                extra={"spool_bytes": self.bytes, "max_bytes": self.max_bytes, "percent": round(used * 100)},
            )
        elif used < NEAR_CAP / 2:
            self._near_cap_logged = False

    # -- replay ---------------------------------------------------------------------------------

    def peek(self) -> tuple[Position, list[Sample]] | None:
        """The oldest record not yet replayed, or None."""
        found = self._next_record()
        if found is None:
            return None
        seg, offset, length, _ = found
        try:
            with seg.path.open("rb") as f:
                f.seek(offset)
                data = f.read(length)
        except OSError as exc:
            raise SpoolError(f"cannot read the spool in {self.directory}: {exc}") from exc
        return Position(seg.seq, offset), decode(data[HEADER.size :])

    def advance(self, position: Position) -> None:
        """Mark the record at ``position`` replayed (after its rows were committed)."""
        for seg in self._segments:
            if seg.seq == position.seq:
                for offset, length, _ in seg.records:
                    if offset == position.offset:
                        self._write_cursor(Position(seg.seq, offset + length))
                        self._discard_replayed_segments()
                        return
        raise SpoolError(f"no spool record at {position}")

    def _discard_replayed_segments(self) -> None:
        # Every segment but the newest, once the cursor is past its end, can go.
        while len(self._segments) > 1:
            seg = self._segments[0]
            if self._cursor.seq > seg.seq or (self._cursor.seq == seg.seq and self._cursor.offset >= seg.size):
                self._segments.pop(0)
                seg.path.unlink(missing_ok=True)
                if self._cursor.seq <= seg.seq:
                    self._write_cursor(Position(self._segments[0].seq, 0))
                continue
            break
        if len(self._segments) == 1:
            seg = self._segments[0]
            if self._cursor.seq == seg.seq and self._cursor.offset >= seg.size and seg.size >= self.segment_bytes // 2:
                # Fully replayed and large: start a fresh file rather than grow this one.
                self._segments.pop(0)
                seg.path.unlink(missing_ok=True)
                self._write_cursor(Position(seg.seq + 1, 0))

    def _write_cursor(self, position: Position) -> None:
        tmp = self.directory / "cursor.tmp"
        with tmp.open("w", encoding="ascii") as f:
            f.write(f"{position.seq} {position.offset}\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.directory / "cursor")
        self._cursor = position
