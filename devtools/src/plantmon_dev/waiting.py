"""The one bounded wait of the tests and dev tools: poll a condition until it holds, or fail saying
what was awaited.

``eventually`` is for async code (its condition may be a plain function or return an awaitable),
``eventually_sync`` for blocking code. Both return the condition's first truthy result, so a probe
can hand back what it found (the rows, the response); both raise :class:`WaitTimeout` (an
``AssertionError`` for the tests, and a ``TimeoutError`` for the dev tools that catch one) after
``timeout`` seconds, naming ``what`` and the last value seen (``what`` may be a function, called only
then, for a message that says what was still missing). An exception of the condition propagates at
once (a failed check is a failure, not a "not yet"), except one of the types listed in ``retry_on``
(a connection refused while a server starts), which counts as "not yet" and is chained to the
final error.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar, overload

T = TypeVar("T")

_NOTHING = object()


Description = str | Callable[[], str]


class WaitTimeout(AssertionError, TimeoutError):
    """A condition did not hold in time: a failed check in a test, a ``TimeoutError`` elsewhere."""


def _timed_out(what: Description, timeout: float, last: object, error: BaseException | None) -> WaitTimeout:
    if callable(what):
        what = what()
    seen = f"; last error: {error!r}" if error is not None else "" if last is _NOTHING else f"; last value: {last!r}"
    message = f"not within {timeout} s: {what}{seen}"
    if len(message) > 2000:
        message = message[:2000] + " ..."
    return WaitTimeout(message)


# The result is the condition's first truthy value: a probe typed ``X | None`` yields an ``X``.
@overload
async def eventually(
    condition: Callable[[], Awaitable[T | None]],
    *,
    timeout: float = ...,  # noqa: ASYNC109
    interval: float = ...,
    what: Description,
    retry_on: tuple[type[BaseException], ...] = ...,
) -> T: ...


@overload
async def eventually(
    condition: Callable[[], T | None],
    *,
    timeout: float = ...,  # noqa: ASYNC109
    interval: float = ...,
    what: Description,
    retry_on: tuple[type[BaseException], ...] = ...,
) -> T: ...


async def eventually(
    condition: Callable[[], object],
    *,
    timeout: float = 30.0,  # noqa: ASYNC109 - a bounded poll, not a cancellation scope
    interval: float = 0.1,
    what: Description,
    retry_on: tuple[type[BaseException], ...] = (),
) -> object:
    """Await ``condition()`` every ``interval`` seconds until it is truthy and return that value."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: object = _NOTHING
    error: BaseException | None = None
    while True:
        hung = False
        try:
            result = condition()
            if inspect.isawaitable(result):  # bounded too: a probe that hangs is cut at the deadline
                try:
                    result = await asyncio.wait_for(result, max(0.0, deadline - loop.time()))
                except TimeoutError:
                    if loop.time() < deadline:
                        raise  # the probe's own timeout, not ours
                    hung = True
        except retry_on as exc:
            error = exc
        else:
            if hung:
                raise _timed_out(what, timeout, last, error or TimeoutError("the probe did not answer"))
            error = None
            if result:
                return result
            last = result
        if loop.time() >= deadline:
            raise _timed_out(what, timeout, last, error) from error
        await asyncio.sleep(interval)


def eventually_sync(
    condition: Callable[[], T | None],
    *,
    timeout: float = 30.0,
    interval: float = 0.1,
    what: Description,
    retry_on: tuple[type[BaseException], ...] = (),
) -> T:
    """Call ``condition()`` every ``interval`` seconds until it is truthy and return that value."""
    deadline = time.monotonic() + timeout
    last: object = _NOTHING
    error: BaseException | None = None
    while True:
        try:
            result = condition()
        except retry_on as exc:
            error = exc
        else:
            if inspect.isawaitable(result):
                if inspect.iscoroutine(result):
                    result.close()  # never awaited, said here rather than by a RuntimeWarning
                raise TypeError(f"eventually_sync got an awaitable from {condition!r}: use eventually")
            error = None
            if result:
                return result
            last = result
        if time.monotonic() >= deadline:
            raise _timed_out(what, timeout, last, error) from error
        time.sleep(interval)
