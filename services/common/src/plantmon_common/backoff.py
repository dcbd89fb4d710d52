"""The one retry schedule of plantmon: exponential backoff with jitter, reset on success.

Every retrying place in the services (the OPC UA subscriber's reconnect, the scraper's database
writes, the alert worker's writer and Event Hubs delivery, the sensors' device reopening and audio
warm-up) and the local stack's process restarts wait by this schedule. Why not stamina or
tenacity: both retry *one call* a bounded number of times and sleep themselves, where most of these
places either run forever, reset after a success and stop early on an ``asyncio.Event``, or do not
sleep at all but compute when the next attempt is due (the scraper's replay, a device's reopening,
checked against a clock the tests drive). What they share is only the arithmetic, which is this
class; the loops that do sleep wait with :func:`plantmon_common.lifecycle.wait_or_stop`.

The n-th delay after a reset is ``min(maximum, initial * multiplier**n)`` shortened by a random
share of up to ``jitter`` of it: ``jitter=0`` is the plain doubling schedule, ``1`` full jitter,
the default ``0.5`` "equal jitter" (between half the nominal delay and all of it). Jitter only ever
shortens a wait, so ``maximum`` stays the longest wait, as the settings describe it, and a peer
that many clients lost at once does not see them all come back in the same instant. ``random`` is
injectable so tests see exact delays.
"""

from __future__ import annotations

import random as _random
from collections.abc import Callable

DEFAULT_JITTER = 0.5


class ExponentialBackoff:
    """Delays ``initial``, ``initial * multiplier``, ... up to ``maximum``, each jittered; :meth:`reset` on success."""

    def __init__(
        self,
        initial: float,
        maximum: float,
        multiplier: float = 2.0,
        jitter: float = DEFAULT_JITTER,
        random: Callable[[], float] = _random.random,
    ) -> None:
        if initial < 0 or maximum < 0:
            raise ValueError(f"delays must not be negative: initial={initial}, maximum={maximum}")
        if multiplier < 1:
            raise ValueError(f"multiplier must be at least 1, got {multiplier}")
        if not 0 <= jitter <= 1:
            raise ValueError(f"jitter is a share of the delay, between 0 and 1, got {jitter}")
        self.initial = initial
        self.maximum = maximum
        self.multiplier = multiplier
        self.jitter = jitter
        self._random = random
        self.failures = 0  # delays handed out since the last reset

    @property
    def nominal(self) -> float:
        """The un-jittered delay :meth:`next` bases its answer on."""
        # Capped before it can overflow: a service that retried for days stays at ``maximum``.
        delay = self.initial
        for _ in range(self.failures):
            if delay >= self.maximum:
                break
            delay *= self.multiplier
        return min(delay, self.maximum)

    def next(self) -> float:
        """The wait before the next attempt (seconds); the one after it is longer, up to ``maximum``."""
        delay = self.nominal * (1.0 - self.jitter * self._random())
        self.failures += 1
        return delay

    def reset(self) -> None:
        """An attempt succeeded: the next failure waits ``initial`` (jittered) again."""
        self.failures = 0
