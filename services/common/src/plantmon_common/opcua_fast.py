"""A fast decoder for the Publish responses the plant sends: numeric data changes, nothing else.

asyncua decodes a PublishResponse generically: a dataclass per MonitoredItemNotification,
DataValue, Variant and StatusCode, built field by field. Profiled at 3,000 tags x 10 Hz that
was three quarters of the scraper's CPU (about 21 µs per value). The plant's server only ever
sends one shape: DataChangeNotifications of scalar numbers with a status and timestamps. This
module reads exactly that shape from the bytes with precompiled ``struct`` calls and returns
:class:`~plantmon_common.opcua.Sample` objects directly. Anything else (a status change, events,
arrays, strings, picoseconds, diagnostics, a bad service result, a truncated message) makes
:func:`decode_publish` return ``None``, and the caller decodes that response with asyncua as
before, so the result never differs from asyncua's; the tests compare both on every case.

The benchmark that justifies it is ``bench/scraper_throughput.py`` (``python -m
bench.scraper_throughput``; docs/benchmarks.md, "Scraper and storage", run E, change 2): about
18 µs per value with asyncua's decoder, 3.9 µs with this one, the scraper's CPU at 3,000 tags
x 10 Hz from 75 % to 23 % of a core. Re-run it before changing or removing this module.

Layout (OPC UA Part 6, 5.2 binary encoding; Part 4, 5.13.5 Publish): the response's TypeId
NodeId, ResponseHeader (Timestamp, RequestHandle, ServiceResult, ServiceDiagnostics,
StringTable, AdditionalHeader), then SubscriptionId, AvailableSequenceNumbers, MoreNotifications,
NotificationMessage (SequenceNumber, PublishTime, NotificationData as ExtensionObjects), Results
and DiagnosticInfos. A DataValue is an encoding mask then Value (Variant), StatusCode,
SourceTimestamp, ServerTimestamp (picoseconds make it fall back: asyncua and the specification
disagree on their order).
"""

from __future__ import annotations

import struct
from datetime import timedelta

from asyncua import ua

from plantmon_common.sample import Sample

PUBLISH_RESPONSE = ua.ObjectIds.PublishResponse_Encoding_DefaultBinary
DATA_CHANGE = ua.ObjectIds.DataChangeNotification_Encoding_DefaultBinary
FILETIME_EPOCH = ua.uatypes.FILETIME_EPOCH_AS_UTC_DATETIME
MAX_FILETIME = ua.uatypes.MAX_OPC_FILETIME

_U16 = struct.Struct("<H").unpack_from
_U32 = struct.Struct("<I").unpack_from
_I32 = struct.Struct("<i").unpack_from
_I64 = struct.Struct("<q").unpack_from
_HEADER = struct.Struct("<qII").unpack_from  # Timestamp, RequestHandle, ServiceResult
# Variant built-in type id -> (unpack, size) for the scalar numbers a sample stores.
_NUMBERS = {
    type_id: (struct.Struct(fmt).unpack_from, struct.calcsize(fmt))
    for type_id, fmt in (
        (ua.VariantType.Boolean.value, "<?"),
        (ua.VariantType.SByte.value, "<b"),
        (ua.VariantType.Byte.value, "<B"),
        (ua.VariantType.Int16.value, "<h"),
        (ua.VariantType.UInt16.value, "<H"),
        (ua.VariantType.Int32.value, "<i"),
        (ua.VariantType.UInt32.value, "<I"),
        (ua.VariantType.Int64.value, "<q"),
        (ua.VariantType.UInt64.value, "<Q"),
        (ua.VariantType.Float.value, "<f"),
        (ua.VariantType.Double.value, "<d"),
    )
}
_PLAIN_MASK = 0x0F  # Value, StatusCode, SourceTimestamp, ServerTimestamp; no picoseconds
# The item almost every notification is: handle, mask 0x0F, a Double, status, both timestamps.
_DOUBLE_ITEM = struct.Struct("<IBBdIqq")
_DOUBLE_ITEM_PREFIX = bytes([_PLAIN_MASK, ua.VariantType.Double.value])


class Unsupported(Exception):
    """The response holds something this decoder leaves to asyncua."""


def _numeric_nodeid(raw: bytes, pos: int) -> tuple[int, int]:
    """A namespace-0 numeric NodeId (two- or four-byte or numeric form): (identifier, new pos)."""
    kind = raw[pos]
    if kind == 0:
        return raw[pos + 1], pos + 2
    if kind == 1 and raw[pos + 1] == 0:
        return _U16(raw, pos + 2)[0], pos + 4
    if kind == 2 and _U16(raw, pos + 1)[0] == 0:
        return _U32(raw, pos + 3)[0], pos + 7
    raise Unsupported("NodeId form")


def decode_publish(raw: bytes, paths: dict[int, str]) -> tuple[int, int, bool, list[Sample]] | None:
    """``(subscription id, sequence number, has notifications, samples)`` of one PublishResponse,
    or ``None`` when it holds anything but numeric data changes (decode it with asyncua then).

    ``paths`` maps client handles to tag paths; items with other handles are skipped, as the
    subscriber's batch handler skips them. The samples are what
    :func:`~plantmon_common.opcua.datavalue_to_sample` makes of asyncua's decoding.
    """
    try:
        return _decode(raw, paths)
    except (Unsupported, struct.error, IndexError):
        return None


def _decode(raw: bytes, paths: dict[int, str]) -> tuple[int, int, bool, list[Sample]]:
    type_id, pos = _numeric_nodeid(raw, 0)
    if type_id != PUBLISH_RESPONSE:
        raise Unsupported("not a PublishResponse")
    _, _, service_result = _HEADER(raw, pos)
    pos += 16
    # No service result, no diagnostics, no string table, no additional header.
    if service_result != 0 or raw[pos] != 0 or _I32(raw, pos + 1)[0] > 0 or raw[pos + 5 : pos + 8] != b"\x00\x00\x00":
        raise Unsupported("response header")
    pos += 8
    subscription_id = _U32(raw, pos)[0]
    available = _I32(raw, pos + 4)[0]
    if available < -1:
        raise Unsupported("array length")  # -1 is a null array; below that asyncua fails too
    pos += 8 + 4 * max(available, 0) + 1  # the sequence numbers, MoreNotifications
    sequence_number = _U32(raw, pos)[0]
    count = _I32(raw, pos + 12)[0]
    if count < -1:
        raise Unsupported("array length")
    pos += 16
    samples: list[Sample] = []
    append = samples.append
    get_path = paths.get
    numbers = _NUMBERS
    epoch = FILETIME_EPOCH
    max_ticks = MAX_FILETIME
    double_item = _DOUBLE_ITEM.unpack_from
    double_size = _DOUBLE_ITEM.size
    double_prefix = _DOUBLE_ITEM_PREFIX
    for _ in range(max(count, 0)):
        type_id, pos = _numeric_nodeid(raw, pos)
        if type_id != DATA_CHANGE or raw[pos] != 1:
            raise Unsupported("notification other than a data change")
        end = pos + 5 + _I32(raw, pos + 1)[0]
        items = _I32(raw, pos + 5)[0]
        if items < -1:
            raise Unsupported("array length")
        pos += 9
        for _ in range(max(items, 0)):
            if raw[pos + 4 : pos + 6] == double_prefix:
                handle, _, _, number, status, ticks, _ = double_item(raw, pos)
                pos += double_size
                path = get_path(handle)
                if path is not None:
                    if 0 <= ticks < max_ticks:
                        append(Sample(path, number, status, epoch + timedelta(microseconds=ticks // 10)))
                    else:
                        append(Sample(path, number, status, ua.win_epoch_to_datetime(ticks)))
                continue
            handle = _U32(raw, pos)[0]
            mask = raw[pos + 4]
            pos += 5
            if mask & ~_PLAIN_MASK:
                raise Unsupported("picoseconds")
            value: float | None = None
            if mask & 1:
                encoding = raw[pos]
                pos += 1
                if encoding:
                    reader = numbers.get(encoding)  # arrays and dimensions set high bits: not here
                    if reader is None:
                        raise Unsupported("variant type")
                    value = float(reader[0](raw, pos)[0])
                    pos += reader[1]
            status = 0
            if mask & 2:
                status = _U32(raw, pos)[0]
                pos += 4
            found: int | None = None
            if mask & 4:
                found = _I64(raw, pos)[0]
                pos += 8
            if mask & 8:
                if found is None:
                    found = _I64(raw, pos)[0]
                pos += 8
            path = get_path(handle)
            if path is None:
                continue
            if found is None:
                raise Unsupported("no timestamp")  # asyncua's path stamps it with the time of arrival
            stamp = (
                epoch + timedelta(microseconds=found // 10)
                if 0 <= found < max_ticks
                else ua.win_epoch_to_datetime(found)
            )
            append(Sample(path, value, status, stamp))
        if _I32(raw, pos)[0] > 0:
            raise Unsupported("diagnostic infos")
        pos += 4
        if pos != end:
            raise Unsupported("notification length")
    results = _I32(raw, pos)[0]
    if results < -1:
        raise Unsupported("array length")
    pos += 4 + 4 * max(results, 0)
    if _I32(raw, pos)[0] > 0:
        raise Unsupported("diagnostic infos")
    if pos + 4 != len(raw):
        raise Unsupported("trailing bytes")
    return subscription_id, sequence_number, count > 0, samples
