"""The audio driver protocol (a USB microphone read with sounddevice)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt


@runtime_checkable
class AudioDriver(Protocol):
    """Records short mono buffers."""

    @property
    def sample_rate(self) -> int:
        """Samples per second of the buffers :meth:`read_buffer` returns."""
        ...

    async def read_buffer(self) -> npt.NDArray[np.float64]:
        """One mono buffer scaled to [-1, 1]; raises :class:`~plantmon_sensors.drivers.SensorError`."""
        ...
