"""What every real driver shares: open a device lazily, retry with backoff, run blocking I/O off the loop.

:class:`DeviceHandle` owns one open device (an ``SpiDev``, a gpiozero device, an ADS1115 object,
an audio stream). A device that cannot be opened (no ``/dev/spidev0.0``, no ``/dev/i2c-1``, no
audio input, the library itself missing) raises :class:`~plantmon_sensors.drivers.DeviceMissingError`
with a clear reason: one warning line when it goes missing, one info line when it comes back,
nothing in between. Opening is retried with exponential backoff (``retry_min_s`` doubling up to
``retry_max_s``, jittered: :class:`plantmon_common.backoff.ExponentialBackoff`); between attempts
reads fail at once with the last reason. A read that fails on
an open device closes it, so the next read (after the backoff) opens it afresh.

:class:`BlockingCall` runs a driver's blocking bus transfer in a worker thread, one at a time: a
read that is still stuck in the kernel makes the next reads fail fast ("no response") instead of
piling up threads.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from plantmon_common.backoff import ExponentialBackoff

from plantmon_sensors.drivers.errors import DeviceMissingError, NoResponseError

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Backoff:
    """Seconds between attempts to open a missing device (the settings of its schedule)."""

    retry_min_s: float = 1.0
    retry_max_s: float = 60.0

    def schedule(self, random: Callable[[], float] | None = None) -> ExponentialBackoff:
        """The delays these settings give; ``random`` (tests) fixes the jitter."""
        if random is None:
            return ExponentialBackoff(self.retry_min_s, self.retry_max_s)
        return ExponentialBackoff(self.retry_min_s, self.retry_max_s, random=random)


class DeviceHandle(Generic[T]):
    """One device, opened on demand by ``opener`` and closed by ``closer``."""

    def __init__(
        self,
        name: str,
        opener: Callable[[], T],
        closer: Callable[[T], None] | None = None,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.monotonic,
        random: Callable[[], float] | None = None,
    ) -> None:
        self.name = name
        self._opener = opener
        self._closer = closer
        self.backoff = backoff or Backoff()
        self._clock = clock
        self._device: T | None = None
        self._lock = threading.Lock()
        self._next_attempt = 0.0
        self._retry = self.backoff.schedule(random)
        self._missing_reason: str | None = None
        self.attempts = 0

    @property
    def is_open(self) -> bool:
        return self._device is not None

    def get(self) -> T:
        """The open device; opens it if due, else raises :class:`DeviceMissingError`."""
        with self._lock:
            if self._device is not None:
                return self._device
            now = self._clock()
            if self._missing_reason is not None and now < self._next_attempt:
                raise DeviceMissingError(self._missing_reason)
            self.attempts += 1
            try:
                device = self._opener()
            except DeviceMissingError as exc:
                self._mark_missing(exc.reason, now)
                raise
            except Exception as exc:  # every library has its own "not there" exception
                self._mark_missing(f"device missing: {self.name} ({type(exc).__name__}: {exc})", now)
                raise DeviceMissingError(self._missing_reason) from exc
            if self._missing_reason is not None:
                logger.info("device opened again", extra={"device": self.name, "attempts": self.attempts})
            else:
                logger.info("device opened", extra={"device": self.name})
            self._device, self._missing_reason = device, None
            self._retry.reset()
            return device

    def _mark_missing(self, reason: str, now: float) -> None:
        delay = self._retry.next()
        if self._missing_reason is None:
            logger.warning(
                "device missing; its tags are bad until it answers (retrying with backoff)",
                extra={"device": self.name, "reason": reason, "retry_in_s": round(delay, 2)},
            )
        self._missing_reason = reason
        self._next_attempt = now + delay

    def failed(self, reason: str) -> None:
        """The open device stopped answering: close it; the next :meth:`get` reopens it (after the backoff)."""
        with self._lock:
            device, self._device = self._device, None
            self._close(device)
            if self._missing_reason is None:
                logger.warning("device lost; reopening", extra={"device": self.name, "reason": reason})
            self._missing_reason = reason
            self._next_attempt = self._clock() + self._retry.next()

    def close(self) -> None:
        with self._lock:
            device, self._device = self._device, None
            self._close(device)

    def _close(self, device: T | None) -> None:
        if device is None or self._closer is None:
            return
        try:
            self._closer(device)
        except Exception as exc:  # closing a device that is already gone may fail; nothing to do
            logger.debug("closing the device failed", extra={"device": self.name, "error": str(exc)})


class BlockingCall:
    """Runs blocking driver calls in a worker thread, at most one at a time per driver."""

    def __init__(self) -> None:
        self._pending: asyncio.Future[object] | None = None

    async def run(self, fn: Callable[[], R]) -> R:
        if self._pending is not None and not self._pending.done():
            raise NoResponseError("no response (the previous read is still running)")
        future = asyncio.get_running_loop().run_in_executor(None, fn)
        self._pending = future  # type: ignore[assignment]
        # shield: a timed-out read is abandoned by the sampler, but the thread finishes it; the
        # pending future keeps later reads from stacking up behind it meanwhile.
        return await asyncio.shield(future)
