"""Hall-effect shaft speed on a GPIO via gpiozero: edge callbacks, a sliding window, a stop timeout.

The open-collector hall sensor pulls GPIO 23 low while the magnet passes; the pin has the internal
pull-up, so every pulse is one falling edge. gpiozero's pin calls :meth:`HallRpmDriver._on_edge`
with the edge's timestamp (``ticks``, from the pin factory: lgpio timestamps the edge in the
kernel, so the callback thread's latency does not matter).

Speed from the edges seen up to "now" (the pin factory's clock):

- counting: with at least ``min_window_pulses`` edges in the last ``window_s`` seconds,
  ``rpm = pulses / pulses_per_revolution * 60 / window_s`` (the window is shorter right after
  the pin was opened);
- period: at low speed a count over the window is too coarse, so
  ``rpm = 60 / (pulses_per_revolution * period)`` from the time between the last two edges; while
  no new edge arrives the period used is at least the time since the last edge, so a slowing
  shaft reads lower at once;
- stopped: no edge for ``stop_timeout_s`` reads 0, never the last value.

On a Raspberry Pi 5 gpiozero needs the lgpio pin factory (``GPIOZERO_PIN_FACTORY=lgpio``, the
``lgpio`` package and ``/dev/gpiochip*``); RPi.GPIO and ``/dev/gpiomem`` do not work there.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

from plantmon_sensors.drivers.device import Backoff, DeviceHandle
from plantmon_sensors.drivers.errors import DeviceMissingError

MAX_EDGES = 100_000


class HallRpmDriver:
    """Shaft speed from a hall pick-up on ``gpio`` (BCM numbering)."""

    def __init__(
        self,
        gpio: int = 23,
        pulses_per_revolution: int = 1,
        window_s: float = 1.0,
        stop_timeout_s: float = 2.0,
        min_window_pulses: int = 10,
        pin_factory: Any = None,
        backoff: Backoff | None = None,
    ) -> None:
        if pulses_per_revolution < 1 or window_s <= 0 or stop_timeout_s <= 0:
            raise ValueError("pulses_per_revolution >= 1, window_s > 0 and stop_timeout_s > 0 are required")
        self.gpio = gpio
        self.pulses_per_revolution = pulses_per_revolution
        self.window_s = window_s
        self.stop_timeout_s = stop_timeout_s
        self.min_window_pulses = min_window_pulses
        self._pin_factory = pin_factory
        self._edges: deque[float] = deque(maxlen=MAX_EDGES)
        self._lock = threading.Lock()
        self._opened_at = 0.0
        self._factory: Any = None
        self.handle: DeviceHandle[Any] = DeviceHandle(f"GPIO {gpio}", self._open, _close, backoff)

    def _open(self) -> Any:
        try:
            from gpiozero import InputDevice
        except ImportError as exc:  # pragma: no cover - gpiozero is a dependency
            raise DeviceMissingError(f"device missing: gpiozero is not installed ({exc})") from exc
        try:
            device = InputDevice(self.gpio, pull_up=True, pin_factory=self._pin_factory)
        except Exception as exc:
            raise DeviceMissingError(
                f"device missing: GPIO {self.gpio} ({type(exc).__name__}: {exc}; on a Pi 5 set "
                "GPIOZERO_PIN_FACTORY=lgpio and give access to /dev/gpiochip*)"
            ) from exc
        self._factory = device.pin_factory
        with self._lock:
            self._edges.clear()
        self._opened_at = float(self._factory.ticks())
        device.pin.edges = "falling"
        device.pin.when_changed = self._on_edge
        return device

    def _on_edge(self, ticks: float, state: int | bool) -> None:
        if state:  # only falling edges count (a factory may report both)
            return
        with self._lock:
            self._edges.append(float(ticks))

    def rpm_now(self) -> float:
        """The speed at the pin factory's "now" (non-blocking: it only reads the edges recorded)."""
        self.handle.get()
        factory = self._factory
        now = float(factory.ticks())
        with self._lock:
            edges = list(self._edges)
            horizon = now - 2 * max(self.window_s, self.stop_timeout_s)
            while self._edges and self._edges[0] < horizon and len(self._edges) > 2:
                self._edges.popleft()
        if not edges or factory.ticks_diff(now, edges[-1]) > self.stop_timeout_s:
            return 0.0
        window = min(self.window_s, factory.ticks_diff(now, self._opened_at))
        in_window = sum(1 for t in edges if factory.ticks_diff(now, t) <= window)
        if in_window >= self.min_window_pulses and window > 0:
            return float(in_window / self.pulses_per_revolution * 60.0 / window)
        if len(edges) < 2:
            return 0.0  # one edge after a standstill: turning, but no period to measure yet
        period = float(max(factory.ticks_diff(edges[-1], edges[-2]), factory.ticks_diff(now, edges[-1])))
        return 60.0 / (self.pulses_per_revolution * period) if period > 0 else 0.0

    async def read_rpm(self) -> float:
        return self.rpm_now()

    def close(self) -> None:
        self.handle.close()


def _close(device: Any) -> None:
    device.pin.when_changed = None
    device.close()
