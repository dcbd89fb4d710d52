"""Every use of a private asyncua API in plantmon, and the start-up check that they still exist.

plantmon is written against asyncua 2.1 (pinned ``>=2.1,<2.2``) and reaches below its public API
in a few measured places (docs/benchmarks.md, "scraper throughput"):

- the subscriber hands each publish response's data changes to one batch call instead of an
  asyncio task per notification (:func:`batch_datachanges`, ``Subscription._explode_datachange``);
- it decodes Publish responses itself (:func:`replace_session_publish`, ``UaSession.publish``
  replaced, the request sent with ``UaSession._send_request``);
- it builds monitored-item requests with asyncua's own builder, which keeps the client handles
  consistent (:func:`make_monitored_item_request`, ``Subscription._make_monitored_item_request``);
- the OPC UA server counts monitored items for its metrics (:func:`monitored_items`,
  ``MonitoredItemService._monitored_items``), and evaluates data-change deadbands as OPC UA Part 4
  (7.22.2) says, where asyncua compares with the previous *sample* instead of the last *reported*
  value, lets a status change be swallowed by the deadband and has no Percent deadband
  (:func:`install_deadband_filters`, ``MonitoredItemService._is_deadband_exceeded`` replaced and
  its monitored-item creation and modification wrapped);
- the tests look at the Publish requests waiting at the server (:func:`queued_publish_requests`,
  ``UaProcessor._publish_requests``), and the benchmark's load server takes a lean data-change
  path (:func:`install_lean_datachange_callback`).

Nothing else in plantmon touches these names. Each group of uses is a :data:`Requirement` table;
:func:`check_asyncua` verifies, before anything connects or serves, that every attribute exists,
that each function still takes the parameters we call or replace it with, and that the library
still calls what we replace (so a patch cannot silently stop applying). Otherwise it raises
:class:`AsyncuaIncompatibleError` naming the asyncua version and every missing or changed
attribute; the services turn it into a clean exit with that message.
"""

from __future__ import annotations

import inspect
import logging
import math
import weakref
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from asyncua import Client, Node, ua
from asyncua.client.ua_session import UaSession
from asyncua.common.subscription import Subscription
from asyncua.server.address_space import AddressSpace
from asyncua.server.monitored_item_service import MonitoredItemData, MonitoredItemService, MonitoredItemValues
from asyncua.server.uaprocessor import UaProcessor
from asyncua.ua import uaprotocol_auto

__all__ = [
    "BENCH_LOAD_SERVER",
    "SERVER",
    "SERVER_DEADBAND",
    "SUBSCRIBER",
    "TESTS",
    "AsyncuaIncompatibleError",
    "Requirement",
    "asyncua_version",
    "batch_datachanges",
    "check_asyncua",
    "install_deadband_filters",
    "install_lean_datachange_callback",
    "make_monitored_item_request",
    "monitored_items",
    "queued_publish_requests",
    "replace_session_publish",
]

logger = logging.getLogger(__name__)

WRITTEN_AGAINST = "2.1"


class AsyncuaIncompatibleError(RuntimeError):
    """The installed asyncua lacks (or changed) a private attribute plantmon relies on."""

    def __init__(self, version: str, problems: Sequence[str]) -> None:
        self.version = version
        self.problems = list(problems)
        super().__init__(
            f"asyncua {version} is not the asyncua plantmon was written against ({WRITTEN_AGAINST}.x): "
            + "; ".join(self.problems)
            + f". Install asyncua>={WRITTEN_AGAINST},<2.2 (see {__name__})."
        )


@dataclass(frozen=True, slots=True)
class Requirement:
    """One private attribute of an asyncua class that plantmon uses.

    ``params``: the parameter names its signature must have (``None``: not a function).
    ``uses``: names the function's code must still reference (an attribute it calls or assigns),
    so that a replacement of that attribute still takes effect.
    """

    owner: type
    name: str
    params: tuple[str, ...] | None = None
    uses: tuple[str, ...] = ()
    why: str = ""

    @property
    def qualname(self) -> str:
        return f"{self.owner.__module__}.{self.owner.__qualname__}.{self.name}"

    def problems(self) -> list[str]:
        try:
            attribute = inspect.getattr_static(self.owner, self.name)
        except AttributeError:
            return [f"{self.qualname} is missing ({self.why})"]
        found: list[str] = []
        function = attribute.__func__ if isinstance(attribute, (staticmethod, classmethod)) else attribute
        if self.params is not None:
            try:
                names = tuple(inspect.signature(function).parameters)
            except (TypeError, ValueError):
                return [f"{self.qualname} is no longer a function ({self.why})"]
            if names != self.params:
                found.append(
                    f"{self.qualname} takes ({', '.join(names)}), expected ({', '.join(self.params)}) ({self.why})"
                )
        code = getattr(function, "__code__", None)
        for name in self.uses:
            if code is None or name not in code.co_names:
                found.append(f"{self.qualname} no longer uses {name!r} ({self.why})")
        return found


SUBSCRIBER: tuple[Requirement, ...] = (
    Requirement(Subscription, "_explode_datachange", ("self", "datachange"), why="replaced to batch data changes"),
    Requirement(
        Subscription,
        "_explode_notifications",
        ("self", "notification_data"),
        uses=("_explode_datachange",),
        why="must call the replaced _explode_datachange",
    ),
    Requirement(
        Subscription,
        "_make_monitored_item_request",
        ("self", "node", "attr", "mfilter", "queuesize", "monitoring", "sampling_interval"),
        why="builds the monitored-item requests",
    ),
    Requirement(
        UaSession,
        "_send_request",
        ("self", "request", "timeout", "message_type"),
        why="sends the Publish requests the fast decoder reads",
    ),
    Requirement(UaSession, "publish", ("self", "acks"), why="replaced by the fast Publish decoder"),
    Requirement(UaSession, "_publish_loop", ("self",), uses=("publish",), why="must call the replaced publish"),
)
"""What :class:`~plantmon_common.opcua.subscriber.PlantSubscriber` uses (scraper, alert worker)."""

SERVER: tuple[Requirement, ...] = (
    Requirement(
        MonitoredItemService,
        "__init__",
        ("self", "isub", "aspace"),
        uses=("_monitored_items",),
        why="the server's monitored-items metric reads _monitored_items",
    ),
)
"""What the OPC UA server uses (plantmon_opc_server)."""

SERVER_DEADBAND: tuple[Requirement, ...] = (
    Requirement(
        MonitoredItemService,
        "_is_deadband_exceeded",
        ("self", "values", "flt"),
        why="replaced: deadband against the last reported value, Percent of EURange",
    ),
    Requirement(
        MonitoredItemService,
        "datachange_callback",
        ("self", "handle", "value", "error"),
        uses=("_is_deadband_exceeded",),
        why="must call the replaced _is_deadband_exceeded",
    ),
    Requirement(
        MonitoredItemService,
        "_create_data_change_monitored_item",
        ("self", "params"),
        why="wrapped: refuses an invalid deadband filter",
    ),
    Requirement(
        MonitoredItemService,
        "create_monitored_items",
        ("self", "params"),
        uses=("_create_data_change_monitored_item",),
        why="must call the wrapped _create_data_change_monitored_item",
    ),
    Requirement(
        MonitoredItemService,
        "_modify_monitored_item",
        ("self", "params"),
        why="wrapped: refuses an invalid deadband filter",
    ),
    Requirement(
        MonitoredItemService,
        "modify_monitored_items",
        ("self", "params"),
        uses=("_modify_monitored_item",),
        why="must call the wrapped _modify_monitored_item",
    ),
    Requirement(
        MonitoredItemService,
        "__init__",
        ("self", "isub", "aspace"),
        uses=("aspace", "_monitored_items"),
        why="the deadband check reads the variable's EURange from the address space",
    ),
)
"""What the OPC UA server's deadband filters replace and wrap (:func:`install_deadband_filters`)."""

TESTS: tuple[Requirement, ...] = (
    Requirement(
        UaProcessor,
        "__init__",
        ("self", "internal_server", "transport", "limits"),
        uses=("_publish_requests",),
        why="the tests count the Publish requests queued at the server",
    ),
)
"""What the tests inspect at the server."""

BENCH_LOAD_SERVER: tuple[Requirement, ...] = (
    Requirement(
        MonitoredItemService,
        "datachange_callback",
        ("self", "handle", "value", "error"),
        why="replaced by the benchmark's lean load server",
    ),
    Requirement(
        MonitoredItemService,
        "__init__",
        ("self", "isub", "aspace"),
        uses=("_monitored_items", "_monitored_datachange"),
        why="the benchmark's lean data-change path reads them",
    ),
)
"""What bench/scraper_throughput.py's load server patches (its own process only)."""


def asyncua_version() -> str:
    try:
        return metadata.version("asyncua")
    except metadata.PackageNotFoundError:
        return "(unknown version)"


def check_asyncua(*groups: Iterable[Requirement]) -> None:
    """Raise :class:`AsyncuaIncompatibleError` unless every requirement of ``groups`` holds."""
    problems = [problem for group in groups for requirement in group for problem in requirement.problems()]
    if problems:
        raise AsyncuaIncompatibleError(asyncua_version(), problems)


# -- the client side (subscriber) ---------------------------------------------------------------


def batch_datachanges(sub: Subscription, handler: Callable[[ua.DataChangeNotification], Iterable[Any]]) -> None:
    """Have ``sub`` hand each DataChangeNotification to ``handler`` in one call.

    asyncua 2.x turns each MonitoredItemNotification into an event and an asyncio task; its
    publish callback asks ``_explode_datachange`` for the events of a DataChangeNotification.
    ``handler`` returns the events asyncua should still deliver (usually none).
    """
    sub._explode_datachange = handler  # type: ignore[method-assign,assignment]


def replace_session_publish(client: Client, decode: Callable[[bytes], ua.PublishResponse]) -> None:
    """Every Publish of ``client``'s session (asyncua's loop and any extra one through
    ``client.uaclient.publish``) is sent as asyncua sends it and its raw response bytes are
    decoded by ``decode`` instead of asyncua's generic decoder."""
    session = client.uaclient.session

    async def publish(acks: list[ua.SubscriptionAcknowledgement]) -> ua.PublishResponse:
        request = ua.PublishRequest()
        request.Parameters.SubscriptionAcknowledgements = acks if acks else []
        data = await session._send_request(request, timeout=0)
        return decode(bytes(data))

    session.publish = publish  # type: ignore[method-assign]


def make_monitored_item_request(
    sub: Subscription,
    node: Node,
    mfilter: ua.MonitoringFilter | None,
    queue_size: int,
    sampling_interval_ms: float,
) -> ua.MonitoredItemCreateRequest:
    """A Reporting request for ``node``'s Value from asyncua's own builder (a fresh client handle)."""
    return sub._make_monitored_item_request(
        node, ua.AttributeIds.Value, mfilter, queue_size, ua.MonitoringMode.Reporting, sampling_interval_ms
    )


# -- the server side ---------------------------------------------------------------------------


def monitored_items(service: MonitoredItemService) -> list[MonitoredItemData]:
    """The monitored items of one server-side subscription (``InternalSubscription.monitored_item_srv``)."""
    return list(service._monitored_items.values())


def queued_publish_requests(processor: UaProcessor) -> int:
    """How many Publish requests one client connection has waiting at the server (tests)."""
    return len(processor._publish_requests)


def install_lean_datachange_callback() -> None:
    """Cut asyncua's per-write overhead in a benchmark's load-server process (never a service).

    Profiled at 2,000 tags, the stock write path spent about 60 us per value: a deep copy of
    every DataValue per monitored item, a default ``MonitoredItemNotification()`` (which builds a
    default DataValue and Variant) before overwriting both fields, and the type checks of
    ``write_attribute_value``. Every value the load server writes is a fresh DataValue with a new
    SourceTimestamp that it never changes, and neither client uses a deadband, so the copy and the
    change test always end the same way; skipping them changes nothing on the wire.
    """
    check_asyncua(BENCH_LOAD_SERVER)
    stock: Callable[..., Awaitable[None]] = MonitoredItemService.datachange_callback

    async def lean(
        self: MonitoredItemService, handle: int, value: ua.DataValue, error: ua.StatusCode | None = None
    ) -> None:
        if error:
            await stock(self, handle, value, error)
            return
        mid = self._monitored_datachange[handle]
        mdata = self._monitored_items[mid]
        if mdata.mode == ua.MonitoringMode.Disabled:
            return
        mdata.mvalue.old_dvalue = mdata.mvalue.current_dvalue
        mdata.mvalue.current_dvalue = value
        event = object.__new__(ua.MonitoredItemNotification)
        event.ClientHandle = mdata.client_handle  # type: ignore[assignment]
        event.Value = value
        await self.isub.enqueue_datachange_event(mid, event, mdata.queue_size)

    MonitoredItemService.datachange_callback = lean  # type: ignore[method-assign]


# -- the server side: data-change deadbands (OPC UA Part 4, 7.22.2) -----------------------------


@dataclass
class _Deadband:
    """One monitored item's deadband: the threshold in the value's unit, and what was last reported."""

    threshold: float
    reported: ua.DataValue | None = None


# The server decodes a filter into the generated class; ``ua.DataChangeFilter`` is asyncua's hand-made one.
DATA_CHANGE_FILTERS = (ua.DataChangeFilter, uaprotocol_auto.DataChangeFilter)

# Keyed by the monitored item's MonitoredItemValues (the object _is_deadband_exceeded is given).
_deadbands: weakref.WeakKeyDictionary[MonitoredItemValues, _Deadband] = weakref.WeakKeyDictionary()
_installed = False


def _eu_range(aspace: AddressSpace, node_id: ua.NodeId) -> ua.Range | None:
    """The EURange property of a variable (AnalogItemType), if it has a usable one."""
    node = aspace.get(node_id)
    for ref in node.references if node is not None else ():
        if ref.IsForward and ref.ReferenceTypeId == ua.NodeId(ua.ObjectIds.HasProperty):
            if ref.BrowseName.Name != "EURange":
                continue
            value = aspace.read_attribute_value(ref.NodeId, ua.AttributeIds.Value).Value
            found = value.Value if value is not None else None
            if isinstance(found, ua.Range) and math.isfinite(found.High - found.Low) and found.High > found.Low:
                return found
    return None


def _deadband_of(aspace: AddressSpace, item: ua.ReadValueId, flt: object) -> tuple[ua.StatusCode | None, float | None]:
    """(a refusal, None) for an invalid deadband; (None, threshold) for a valid one; (None, None) without."""
    if not isinstance(flt, DATA_CHANGE_FILTERS) or flt.DeadbandType == ua.DeadbandType.None_:
        return None, None
    if item.AttributeId != ua.AttributeIds.Value:
        return ua.StatusCode(ua.StatusCodes.BadFilterNotAllowed), None
    value = flt.DeadbandValue
    if not math.isfinite(value) or value < 0:
        return ua.StatusCode(ua.StatusCodes.BadDeadbandFilterInvalid), None
    if flt.DeadbandType == ua.DeadbandType.Absolute:
        return None, value
    if flt.DeadbandType == ua.DeadbandType.Percent:
        eu_range = _eu_range(aspace, item.NodeId)
        if eu_range is None or value > 100:  # Percent needs an EURange, and is a share of it
            return ua.StatusCode(ua.StatusCodes.BadDeadbandFilterInvalid), None
        return None, value / 100.0 * (eu_range.High - eu_range.Low)
    return ua.StatusCode(ua.StatusCodes.BadDeadbandFilterInvalid), None


def _exceeded(values: MonitoredItemValues, flt: object) -> bool:
    """Report ``values``' current value? Against the last *reported* one; a status change always."""
    current = values.get_current_datavalue()
    state = _deadbands.get(values)
    if state is None or current is None:
        return True
    last = state.reported
    report = (
        last is None
        or current.StatusCode != last.StatusCode
        or not isinstance(current.Value.Value if current.Value else None, (int, float))
        or not isinstance(last.Value.Value if last.Value else None, (int, float))
        or abs(float(current.Value.Value) - float(last.Value.Value)) > state.threshold  # type: ignore[union-attr]
    )
    if report:
        state.reported = current
    return report


def install_deadband_filters() -> None:
    """Make every asyncua server of this process evaluate data-change deadbands as Part 4 says.

    Absolute: a value is reported when it differs from the last *reported* value by more than the
    deadband (asyncua compares with the previous sample, so a slow drift is never reported).
    Percent: the same with ``DeadbandValue`` percent of the variable's EURange; refused with
    ``BadDeadbandFilterInvalid`` on a variable without one, or above 100. A status change is
    always reported. Negative or non-finite values and unknown deadband types are
    ``BadDeadbandFilterInvalid``; a deadband on another attribute than Value ``BadFilterNotAllowed``.
    Idempotent.
    """
    global _installed
    check_asyncua(SERVER_DEADBAND)
    if _installed:
        return
    stock_create = MonitoredItemService._create_data_change_monitored_item
    stock_modify = MonitoredItemService._modify_monitored_item

    async def create(self: MonitoredItemService, params: ua.MonitoredItemCreateRequest) -> ua.MonitoredItemCreateResult:
        refused, threshold = _deadband_of(self.aspace, params.ItemToMonitor, params.RequestedParameters.Filter)
        if refused is not None:
            result = ua.MonitoredItemCreateResult()
            result.StatusCode = refused
            return result
        result = await stock_create(self, params)
        mdata = self._monitored_items.get(result.MonitoredItemId)
        if threshold is not None and mdata is not None:
            # The first value went out while the item was made: it is the one reported.
            _deadbands[mdata.mvalue] = _Deadband(threshold, mdata.mvalue.get_current_datavalue())
        return result

    def modify(self: MonitoredItemService, params: ua.MonitoredItemModifyRequest) -> ua.MonitoredItemModifyResult:
        mdata = self._monitored_items.get(params.MonitoredItemId)
        if mdata is not None and mdata.read_value_id is not None and params.RequestedParameters.Filter is not None:
            refused, threshold = _deadband_of(self.aspace, mdata.read_value_id, params.RequestedParameters.Filter)
            if refused is not None:
                result = ua.MonitoredItemModifyResult()
                result.StatusCode = refused
                return result
            if threshold is None:
                _deadbands.pop(mdata.mvalue, None)
            else:
                last = _deadbands[mdata.mvalue].reported if mdata.mvalue in _deadbands else None
                _deadbands[mdata.mvalue] = _Deadband(threshold, last or mdata.mvalue.get_current_datavalue())
        return stock_modify(self, params)

    def is_deadband_exceeded(self: MonitoredItemService, values: MonitoredItemValues, flt: ua.DataChangeFilter) -> bool:
        return _exceeded(values, flt)

    MonitoredItemService._create_data_change_monitored_item = create  # type: ignore[method-assign]
    MonitoredItemService._modify_monitored_item = modify  # type: ignore[method-assign]
    MonitoredItemService._is_deadband_exceeded = is_deadband_exceeded  # type: ignore[method-assign]
    _installed = True
