"""plantmon_dev.waiting: the one bounded wait of the tests and dev tools."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from plantmon_dev.waiting import WaitTimeout, eventually, eventually_sync


def test_the_first_truthy_value_is_returned() -> None:
    counter = itertools.count()
    assert eventually_sync(lambda: next(counter) >= 3 and "found", interval=0, what="three calls") == "found"


def test_a_timeout_names_what_was_awaited_and_the_last_value_and_is_both_kinds_of_error() -> None:
    with pytest.raises(WaitTimeout, match=r"not within 0.05 s: the answer; last value: \[\]") as failed:
        eventually_sync(list, timeout=0.05, interval=0.01, what="the answer")
    assert isinstance(failed.value, AssertionError) and isinstance(failed.value, TimeoutError)


def test_a_failed_check_propagates_at_once_and_retry_on_counts_as_not_yet() -> None:
    calls = itertools.count()

    def refused_twice() -> bool:
        if next(calls) < 2:
            raise ConnectionRefusedError("not up yet")
        return True

    assert eventually_sync(refused_twice, interval=0, retry_on=(ConnectionRefusedError,), what="a server")
    with pytest.raises(ZeroDivisionError):
        eventually_sync(lambda: 1 / 0, what="a broken check")

    def down() -> bool:
        raise ConnectionRefusedError("down")

    with pytest.raises(WaitTimeout, match=r"never; last error: ConnectionRefusedError\('down'\)") as failed:
        eventually_sync(down, timeout=0.05, interval=0.01, what="never", retry_on=(ConnectionRefusedError,))
    assert isinstance(failed.value.__cause__, ConnectionRefusedError)


def test_eventually_sync_refuses_an_async_probe() -> None:
    async def probe() -> bool:
        return True

    with pytest.raises(TypeError, match="use eventually"):
        _ = eventually_sync(probe, what="an async probe")  # typed, but refused when run


async def test_eventually_awaits_async_probes_and_accepts_plain_ones() -> None:
    seen: list[int] = []

    async def grows() -> list[int] | None:
        seen.append(1)
        return seen if len(seen) >= 3 else None

    assert await eventually(grows, interval=0, what="three calls") == [1, 1, 1]
    assert await eventually(lambda: len(seen) == 3, what="a plain probe") is True


async def test_a_probe_that_hangs_is_cut_at_the_deadline() -> None:
    async def hangs() -> bool:
        await asyncio.Event().wait()  # never set
        return True

    with pytest.raises(WaitTimeout, match=r"not within 0\.1 s: a hung probe; last error: TimeoutError"):
        await eventually(hangs, timeout=0.1, what="a hung probe")
