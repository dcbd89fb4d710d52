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
  ``MonitoredItemService._monitored_items``);
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
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from asyncua import Client, Node, ua
from asyncua.client.ua_session import UaSession
from asyncua.common.subscription import Subscription
from asyncua.server.monitored_item_service import MonitoredItemData, MonitoredItemService
from asyncua.server.uaprocessor import UaProcessor

__all__ = [
    "BENCH_LOAD_SERVER",
    "SERVER",
    "SUBSCRIBER",
    "TESTS",
    "AsyncuaIncompatibleError",
    "Requirement",
    "asyncua_version",
    "batch_datachanges",
    "check_asyncua",
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
