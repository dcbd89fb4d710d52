"""Background sampling: one task per sensor reads it at its kind's interval.

A slow or hanging device delays only its own task.

Each read is bounded by a timeout; a failure (a :class:`~plantmon_sensors.drivers.SensorError`,
a timeout, or an unexpected driver exception) degrades only that sensor's tags. Every attempt,
failed ones included, writes rows with a fresh ``observed_at`` into the
:class:`~plantmon_sensors.domain.SnapshotStore`. State changes (degraded, recovered) are logged
once, not on every loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Literal

from plantmon_common.tags import Quality
from pydantic import BaseModel, Field

from plantmon_sensors.catalog import SensorKind
from plantmon_sensors.devices import Device, DeviceSet
from plantmon_sensors.domain import SnapshotStore, bad_readings, good_readings, utc_now
from plantmon_sensors.drivers import ChannelFault, SensorError, WarmingUpError
from plantmon_sensors.metrics import SensorMetrics

logger = logging.getLogger(__name__)

MIN_READ_TIMEOUT_S = 2.0


class SensorHealth(BaseModel):
    """Health of one sensor as ``/health`` reports it."""

    sensor_id: str
    kind: SensorKind
    status: Literal["ok", "degraded"]
    reason: str | None = Field(default=None, description="Why the sensor is degraded")
    last_good_age_s: float | None = Field(default=None, description="Seconds since the last good read")
    reads: int
    errors: int


@dataclass
class _SensorState:
    last_good: float | None = None
    reason: str | None = "not sampled yet"
    reads: int = 0
    errors: int = 0
    degraded_logged: bool = field(default=False)


class Sampler:
    """Reads every device at its kind's interval into the snapshot store."""

    def __init__(
        self,
        devices: DeviceSet,
        intervals: dict[SensorKind, float],
        store: SnapshotStore,
        metrics: SensorMetrics | None = None,
    ) -> None:
        self.devices = devices
        self.intervals = intervals
        self.store = store
        self.metrics = metrics
        self._state = {sensor_id: _SensorState() for sensor_id in devices.devices}
        self._tasks: list[asyncio.Task[None]] = []
        self._running = False
        if metrics is not None:
            metrics.watch_status(self.last_good, self.up)

    # -- reading --------------------------------------------------------------------------
    async def sample(self, device: Device) -> None:
        """Read one device once and store its rows."""
        sensor_id = device.spec.sensor_id
        state = self._state[sensor_id]
        timeout = max(MIN_READ_TIMEOUT_S, 2 * self.intervals[device.spec.kind])
        reason: str | None = None
        quality = Quality.BAD
        try:
            channels = await asyncio.wait_for(device.read(), timeout=timeout)
        except WarmingUpError as exc:
            reason, quality = exc.reason, Quality.UNCERTAIN
        except SensorError as exc:
            reason = exc.reason
        except TimeoutError:
            reason = "no response"
        except Exception as exc:  # a driver bug must not kill the loop; it degrades that sensor only
            reason = f"driver error: {type(exc).__name__}"
            if state.reason != reason:
                logger.exception("driver raised unexpectedly", extra={"sensor": sensor_id})
        observed_at = utc_now()
        state.reads += 1
        if self.metrics:
            self.metrics.reads.labels(sensor_id).inc()
        if reason is None:
            self.store.update(good_readings(sensor_id, channels, observed_at))
            # A channel fault (an open thermocouple behind a chip that answers) degrades the sensor too.
            faults = [v.reason for v in channels.values() if isinstance(v, ChannelFault)]
            reason = ", ".join(dict.fromkeys(faults)) if faults else None
            if reason is None:
                state.last_good = time.monotonic()
                if state.degraded_logged:
                    logger.info("sensor recovered", extra={"sensor": sensor_id})
                state.reason, state.degraded_logged = None, False
                return
        else:
            self.store.update(bad_readings(sensor_id, reason, observed_at, quality))
        if quality is Quality.BAD:
            state.errors += 1
            if self.metrics:
                self.metrics.read_errors.labels(sensor_id).inc()
        if not state.degraded_logged or state.reason != reason:
            logger.warning("sensor degraded", extra={"sensor": sensor_id, "reason": reason})
        state.reason, state.degraded_logged = reason, True

    async def _loop(self, device: Device) -> None:
        interval = self.intervals[device.spec.kind]
        deadline = time.monotonic()
        # The flag, not only cancel(): Python 3.11's wait_for can swallow a cancellation that
        # arrives just as the read completes, and the loop must still end.
        while self._running:
            deadline += interval
            delay = deadline - time.monotonic()
            if delay < 0:  # fell behind (slow device): skip the missed ticks instead of bursting
                deadline = time.monotonic()
                delay = 0.0
            await asyncio.sleep(delay)
            if not self._running:
                break
            await self.sample(device)

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """One read of every sensor (so the snapshot is complete), then one background task per sensor."""
        devices = [d for d in self.devices.devices.values() if d.spec.kind in self.intervals]
        await asyncio.gather(*(self.sample(d) for d in devices))
        self._running = True
        self._tasks = [asyncio.create_task(self._loop(d), name=f"sample:{d.spec.sensor_id}") for d in devices]
        logger.info(
            "sampling started",
            extra={"intervals_s": {d.spec.sensor_id: self.intervals[d.spec.kind] for d in devices}},
        )

    async def stop(self) -> None:
        self._running = False
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        logger.info("sampling stopped")

    async def __aenter__(self) -> Sampler:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- status ---------------------------------------------------------------------------
    def alive(self) -> bool:
        """True while every sampling task runs."""
        return bool(self._tasks) and not any(t.done() for t in self._tasks)

    def dead_loops(self) -> list[str]:
        return [t.get_name() for t in self._tasks if t.done()]

    def last_good(self) -> dict[str, float | None]:
        return {sensor_id: s.last_good for sensor_id, s in self._state.items()}

    def up(self) -> dict[str, bool]:
        return {sensor_id: s.reason is None for sensor_id, s in self._state.items()}

    def health(self) -> list[SensorHealth]:
        now = time.monotonic()
        return [
            SensorHealth(
                sensor_id=sensor_id,
                kind=self.devices.devices[sensor_id].spec.kind,
                status="ok" if s.reason is None else "degraded",
                reason=s.reason,
                last_good_age_s=None if s.last_good is None else round(now - s.last_good, 3),
                reads=s.reads,
                errors=s.errors,
            )
            for sensor_id, s in self._state.items()
        ]
