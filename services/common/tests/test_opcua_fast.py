"""The fast PublishResponse decoder gives exactly what asyncua's decoder gives, or steps aside.

Every message here is encoded by asyncua's own encoder; the reference is asyncua's decoder
followed by ``datavalue_to_sample``, the path the fast decoder replaces.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from asyncua import ua
from asyncua.common.utils import Buffer
from asyncua.ua.ua_binary import struct_from_binary, struct_to_binary
from plantmon_common.opcua import Sample, datavalue_to_sample
from plantmon_common.opcua_fast import decode_publish

PATHS = {handle: f"Plant/Load/Tag_{handle}" for handle in range(1, 200)}
T0 = datetime(2026, 11, 23, 12, 0, 0, 123456, tzinfo=UTC)


def response(*notifications: object, subscription: int = 7, sequence: int = 42, available: int = 2) -> bytes:
    message = ua.PublishResponse()
    message.ResponseHeader.Timestamp = T0
    message.ResponseHeader.RequestHandle = 99
    message.Parameters.SubscriptionId = subscription
    message.Parameters.AvailableSequenceNumbers = list(range(sequence - available + 1, sequence + 1))
    message.Parameters.NotificationMessage.SequenceNumber = sequence
    message.Parameters.NotificationMessage.PublishTime = T0
    message.Parameters.NotificationMessage.NotificationData = list(notifications)  # type: ignore[arg-type]
    message.Parameters.Results = [ua.StatusCode(0)]
    return bytes(struct_to_binary(message))


def data_change(*items: tuple[int, ua.DataValue]) -> ua.DataChangeNotification:
    notification = ua.DataChangeNotification()
    for handle, value in items:
        item = ua.MonitoredItemNotification()
        item.ClientHandle = handle
        item.Value = value
        notification.MonitoredItems.append(item)
    return notification


def value(
    v: object,
    vtype: ua.VariantType | None = None,
    status: int | None = None,
    source: datetime | None = T0,
    server: datetime | None = None,
) -> ua.DataValue:
    dv = ua.DataValue(ua.Variant(v, vtype) if vtype is not None else ua.Variant(v))
    dv.StatusCode = ua.StatusCode(status) if status is not None else None
    dv.SourceTimestamp = source
    dv.ServerTimestamp = server
    return dv


def reference(raw: bytes) -> tuple[int, int, bool, list[Sample]]:
    decoded = struct_from_binary(ua.PublishResponse, Buffer(raw))
    result = decoded.Parameters
    samples = [
        datavalue_to_sample(PATHS[item.ClientHandle], item.Value)
        for notification in result.NotificationMessage.NotificationData
        for item in notification.MonitoredItems
        if item.ClientHandle in PATHS
    ]
    data = bool(result.NotificationMessage.NotificationData)
    return result.SubscriptionId, result.NotificationMessage.SequenceNumber, data, samples


def same(raw: bytes) -> tuple[int, int, bool, list[Sample]]:
    fast = decode_publish(raw, PATHS)
    assert fast is not None, "the fast decoder stepped aside"
    ref = reference(raw)
    assert fast[:3] == ref[:3]
    assert len(fast[3]) == len(ref[3])
    for a, b in zip(fast[3], ref[3], strict=True):  # by repr: NaN != NaN
        assert repr(a) == repr(b)
        assert a.source_time.tzinfo == b.source_time.tzinfo and type(a.value) is type(b.value)
    return fast


def test_every_numeric_variant_type_status_and_timestamp_as_asyncua_decodes_them() -> None:
    cases = [
        value(21.5, ua.VariantType.Double),
        value(float("nan"), ua.VariantType.Double),
        value(float("-inf"), ua.VariantType.Double),
        value(1.25, ua.VariantType.Float),
        value(True, ua.VariantType.Boolean),
        value(-5, ua.VariantType.SByte),
        value(250, ua.VariantType.Byte),
        value(-30000, ua.VariantType.Int16),
        value(60000, ua.VariantType.UInt16),
        value(-2_000_000_000, ua.VariantType.Int32),
        value(4_000_000_000, ua.VariantType.UInt32),
        value(-(2**62), ua.VariantType.Int64),
        value(2**64 - 1, ua.VariantType.UInt64),
        value(None, ua.VariantType.Null, status=ua.StatusCodes.BadSensorFailure),
        value(3.0, ua.VariantType.Double, status=ua.StatusCodes.UncertainLastUsableValue),
        value(4.0, ua.VariantType.Double, status=0),
        value(5.0, ua.VariantType.Double, source=None, server=T0 + timedelta(seconds=1)),  # server time only
        value(6.0, ua.VariantType.Double, server=T0 + timedelta(seconds=2)),  # both: the source time wins
        value(7.0, ua.VariantType.Double, source=datetime(1601, 1, 1, tzinfo=UTC)),  # tick 0
        value(8.0, ua.VariantType.Double, source=datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)),  # clamped
        value(9.0, ua.VariantType.Double, source=datetime(1990, 1, 1, 0, 0, 0, 7, tzinfo=UTC)),
        # The common item (all four fields, a Double) has its own path through the decoder.
        value(10.5, ua.VariantType.Double, status=0, server=T0 + timedelta(seconds=3)),
        value(11.5, ua.VariantType.Double, status=ua.StatusCodes.BadOutOfRange, server=T0),
        value(12.5, ua.VariantType.Double, status=0, source=datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC), server=T0),
        value(13.5, ua.VariantType.Double, status=0, source=datetime(1601, 1, 1, tzinfo=UTC), server=T0),
    ]
    items = [(handle, dv) for handle, dv in enumerate(cases, start=1)]
    items.append((500, value(1.0, ua.VariantType.Double)))  # a handle nobody subscribed: skipped
    _, _, data, samples = same(response(data_change(*items)))
    assert data and len(samples) == len(cases)
    assert samples[0] == Sample("Plant/Load/Tag_1", 21.5, 0, T0)


def test_a_dataValue_without_a_value_and_an_empty_variant_store_no_value() -> None:
    no_value = ua.DataValue()
    no_value.Value = None
    no_value.StatusCode = ua.StatusCode(ua.StatusCodes.BadNoCommunication)
    no_value.SourceTimestamp = T0
    samples = same(response(data_change((1, no_value), (2, value(None)))))[3]
    assert [(s.value, s.status) for s in samples] == [(None, ua.StatusCodes.BadNoCommunication), (None, 0)]


def test_keep_alives_several_notifications_and_many_random_values() -> None:
    assert same(response(available=0)) == (7, 42, False, [])
    rng = random.Random(5)
    types = [ua.VariantType.Double, ua.VariantType.Float, ua.VariantType.Int32, ua.VariantType.UInt64]
    batches = []
    for _ in range(3):
        items = []
        for _ in range(300):
            vtype = rng.choice(types)
            raw: object = rng.uniform(-1e6, 1e6) if vtype in types[:2] else rng.randrange(0, 2**31)
            if vtype == ua.VariantType.Float:
                raw = float(ua.ua_binary.struct.unpack("<f", ua.ua_binary.struct.pack("<f", raw))[0])  # type: ignore[arg-type]
            stamp = T0 + timedelta(microseconds=rng.randrange(0, 10**12))
            status = rng.choice([None, 0, ua.StatusCodes.BadSensorFailure, ua.StatusCodes.UncertainInitialValue])
            server = rng.choice([None, stamp + timedelta(milliseconds=3)])
            items.append((rng.randrange(1, 220), value(raw, vtype, status=status, source=stamp, server=server)))
        batches.append(data_change(*items))
    _, _, _, samples = same(response(*batches, subscription=3, sequence=2**32 - 1, available=5))
    assert len(samples) == sum(1 for b in batches for i in b.MonitoredItems if i.ClientHandle in PATHS)


def status_change() -> ua.StatusChangeNotification:
    notification = ua.StatusChangeNotification()
    notification.Status = ua.StatusCode(ua.StatusCodes.BadTimeout)
    return notification


def events() -> ua.EventNotificationList:
    notification = ua.EventNotificationList()
    field = ua.EventFieldList()
    field.ClientHandle = 1
    field.EventFields = [ua.Variant(1.0)]
    notification.Events = [field]
    return notification


def with_picoseconds() -> ua.DataChangeNotification:
    dv = value(1.0, ua.VariantType.Double)
    dv.SourcePicoseconds = 5
    return data_change((1, dv))


@pytest.mark.parametrize(
    "message",
    [
        pytest.param(lambda: response(status_change()), id="status change"),
        pytest.param(lambda: response(data_change((1, value(1.0))), events()), id="events"),
        pytest.param(lambda: response(data_change((1, value("3.5", ua.VariantType.String)))), id="string"),
        pytest.param(lambda: response(data_change((1, value([1.0, 2.0], ua.VariantType.Double)))), id="array"),
        pytest.param(lambda: response(with_picoseconds()), id="picoseconds"),
        pytest.param(lambda: response(data_change((1, value(1.0, source=None)))), id="no timestamp"),
        pytest.param(lambda: response(data_change((1, value(1.0))))[:-9], id="truncated"),
        pytest.param(lambda: response(data_change((1, value(1.0)))) + b"\x00", id="trailing byte"),
        pytest.param(lambda: struct_to_binary(ua.ReadResponse()), id="another response"),
    ],
)
def test_anything_else_is_left_to_asyncua(message: object) -> None:
    raw = message()  # type: ignore[operator]
    assert decode_publish(raw, PATHS) is None


def test_a_bad_service_result_or_diagnostics_are_left_to_asyncua() -> None:
    message = ua.PublishResponse()
    message.ResponseHeader.ServiceResult = ua.StatusCode(ua.StatusCodes.BadTooManyPublishRequests)
    assert decode_publish(struct_to_binary(message), PATHS) is None
    message = ua.PublishResponse()
    message.ResponseHeader.StringTable = ["x"]
    assert decode_publish(struct_to_binary(message), PATHS) is None
    message = ua.PublishResponse()
    message.Parameters.DiagnosticInfos = [ua.DiagnosticInfo(SymbolicId=1)]
    assert decode_publish(struct_to_binary(message), PATHS) is None


def test_mutated_messages_decode_as_asyncua_decodes_them_or_not_at_all() -> None:
    """Random byte flips, truncations and insertions: whenever the fast decoder answers, asyncua's
    decoder answers the same; where asyncua fails, the fast decoder steps aside."""
    rng = random.Random(11)
    items = [
        (h, value(float(h), ua.VariantType.Double, status=0, server=T0 + timedelta(seconds=h))) for h in range(1, 9)
    ]
    items += [(9, value(3, ua.VariantType.Int32)), (10, value(None, status=ua.StatusCodes.BadSensorFailure))]
    original = response(data_change(*items), available=3)
    answered = 0
    for _ in range(3000):
        raw = bytearray(original)
        for _ in range(rng.randint(1, 3)):
            kind = rng.random()
            at = rng.randrange(len(raw))
            if kind < 0.7:
                raw[at] = rng.randrange(256)
            elif kind < 0.85:
                del raw[at:]
            else:
                raw[at:at] = bytes([rng.randrange(256)])
        message = bytes(raw)
        fast = decode_publish(message, PATHS)
        if fast is None:
            continue
        answered += 1
        try:
            ref = reference(message)
        except Exception as exc:  # asyncua refuses what the fast decoder accepted
            raise AssertionError(f"fast decoder accepted a message asyncua refuses: {message.hex()}") from exc
        assert fast[:3] == ref[:3]
        assert [repr(s) for s in fast[3]] == [repr(s) for s in ref[3]]
    assert answered > 100  # flips inside values, statuses and timestamps still decode


def test_array_lengths_below_minus_one_are_left_to_asyncua() -> None:
    raw = bytearray(response(data_change((1, value(1.0))), available=0))
    offset = 4 + 16 + 8 + 4  # TypeId, header, empty diagnostics/string table/additional header, SubscriptionId
    assert raw[offset : offset + 4] == b"\x00\x00\x00\x00"
    raw[offset : offset + 4] = (-2).to_bytes(4, "little", signed=True)
    assert decode_publish(bytes(raw), PATHS) is None
