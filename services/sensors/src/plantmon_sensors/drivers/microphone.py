"""USB microphone via sounddevice: a callback stream feeding a ring buffer.

PortAudio calls :meth:`Microphone._callback` from its own thread with each block of samples; the
callback only copies the block into a ring buffer (no allocation, no logging, no features).
:meth:`Microphone.read_buffer` returns the latest ``window_s`` seconds, oldest first.

Failure behaviour: PortAudio missing (``import sounddevice`` raises ``OSError``), no input device
or a stream that cannot open are "device missing" (one log line, retried with backoff); a stream
whose callback has gone quiet for ``stall_s`` is closed and reopened. Until the ring holds a full
window the reading is uncertain, "warming up (filling the audio buffer)".
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt

from plantmon_sensors.drivers.device import Backoff, DeviceHandle
from plantmon_sensors.drivers.errors import DeviceMissingError, NoResponseError, WarmingUpError


def _import_sounddevice() -> ModuleType:
    try:
        import sounddevice as sd
    except OSError as exc:  # the wheel loads libportaudio at import time
        raise DeviceMissingError(f"device missing: PortAudio library not found ({exc}); install libportaudio2") from exc
    module: ModuleType = sd
    return module


class RingBuffer:
    """A fixed-size float32 ring; one writer (the audio thread), readers take copies."""

    def __init__(self, capacity: int) -> None:
        self._data = np.zeros(capacity, dtype=np.float32)
        self._write = 0
        self.total = 0
        self._lock = threading.Lock()

    @property
    def capacity(self) -> int:
        return int(self._data.size)

    def write(self, block: npt.NDArray[Any]) -> None:
        samples = np.asarray(block, dtype=np.float32).reshape(-1)[-self.capacity :]
        n = samples.size
        with self._lock:
            end = self._write + n
            if end <= self.capacity:
                self._data[self._write : end] = samples
            else:
                first = self.capacity - self._write
                self._data[self._write :] = samples[:first]
                self._data[: n - first] = samples[first:]
            self._write = end % self.capacity
            self.total += n

    def latest(self, n: int) -> npt.NDArray[np.float64] | None:
        """The last ``n`` samples, oldest first; ``None`` until that many were written."""
        with self._lock:
            if self.total < n or n > self.capacity:
                return None
            start = (self._write - n) % self.capacity
            if start + n <= self.capacity:
                out = self._data[start : start + n].copy()
            else:
                out = np.concatenate((self._data[start:], self._data[: self._write]))
        return out.astype(np.float64)


class Microphone:
    """Mono input from ``device`` (sounddevice name or index; ``None`` = the default input)."""

    def __init__(
        self,
        sample_rate: int = 16_000,
        window_s: float = 0.5,
        device: str | int | None = None,
        block_size: int = 0,
        stall_s: float = 2.0,
        sounddevice_loader: Callable[[], ModuleType] = _import_sounddevice,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sample_rate = sample_rate
        self.window_samples = round(sample_rate * window_s)
        self.device = device
        self.block_size = block_size
        self.stall_s = stall_s
        self._loader = sounddevice_loader
        self._clock = clock
        self.ring = RingBuffer(max(4 * self.window_samples, sample_rate))
        self.overflows = 0
        self._last_block = 0.0
        name = f"audio input {device!r}" if device is not None else "default audio input"
        self.handle: DeviceHandle[Any] = DeviceHandle(name, self._open, _close, backoff, clock)

    @property
    def sample_rate(self) -> int:
        return self._sample_rate

    def _open(self) -> Any:
        sd = self._loader()
        self.ring = RingBuffer(self.ring.capacity)  # never serve samples from before a reopen
        try:
            stream = sd.InputStream(
                samplerate=self._sample_rate,
                channels=1,
                dtype="float32",
                device=self.device,
                blocksize=self.block_size,
                callback=self._callback,
            )
            stream.start()
        except (sd.PortAudioError, ValueError) as exc:  # no device, or it refuses the format
            raise DeviceMissingError(f"device missing: no usable audio input ({exc})") from exc
        self._last_block = self._clock()
        return stream

    def _callback(self, indata: npt.NDArray[Any], frames: int, time_info: Any, status: Any) -> None:
        if status:
            self.overflows += 1
        self.ring.write(indata[:frames, 0] if indata.ndim == 2 else indata[:frames])
        self._last_block = self._clock()

    async def read_buffer(self) -> npt.NDArray[np.float64]:
        self.handle.get()
        if self._clock() - self._last_block > self.stall_s:
            self.handle.failed("no response (the audio stream stopped delivering)")
            raise NoResponseError("no response (the audio stream stopped delivering)")
        buffer = self.ring.latest(self.window_samples)
        if buffer is None:
            raise WarmingUpError("warming up (filling the audio buffer)")
        return buffer

    def close(self) -> None:
        self.handle.close()


def _close(stream: Any) -> None:
    stream.stop()
    stream.close()
