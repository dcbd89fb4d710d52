"""ADS1115 16-bit ADC on I2C via adafruit-circuitpython-ads1x15: a DC supply through a divider.

The library drives the chip (config register: single-shot conversion, multiplexer, PGA gain,
data rate; conversion register: the signed result). We choose gain 1 (±4.096 V full scale,
125 µV per bit) and 860 samples/s, read ``samples`` single-ended conversions on ``channel`` and
average them, then scale back through the external divider:
``volts = mean(adc volts) * divider_ratio`` with ``divider_ratio = (R_top + R_bottom) / R_bottom``.

The I2C bus object is ours, not Blinka's ``board``/``busio`` (their board detection fails off a
Pi): :class:`LinuxI2C` is a busio-compatible bus (``try_lock``, ``writeto``, ``readfrom_into``,
``writeto_then_readfrom``) over Blinka's generic Linux ``/dev/i2c-N`` backend. Tests pass a bus
object that models the chip's registers.

The quantity is a DC supply voltage. Never put mains voltage on a divider and this ADC: use an
isolated voltage transducer with a low-voltage output.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from plantmon_sensors.drivers.device import Backoff, BlockingCall, DeviceHandle
from plantmon_sensors.drivers.errors import DeviceMissingError, NoResponseError, SensorError

GAIN = 1  # ±4.096 V
DATA_RATE = 860
FULL_SCALE_CODE = 32767


class LinuxI2C:
    """A busio-compatible I2C bus on ``/dev/i2c-<bus>`` (Blinka's generic Linux backend, no board detection)."""

    def __init__(self, bus: int = 1) -> None:
        from adafruit_blinka.microcontroller.generic_linux.i2c import I2C

        self._bus = I2C(bus)
        self._lock = threading.Lock()

    def try_lock(self) -> bool:
        return self._lock.acquire(blocking=False)

    def unlock(self) -> None:
        self._lock.release()

    def writeto(self, address: int, buffer: Any, *, start: int = 0, end: int | None = None) -> None:
        self._bus.writeto(address, buffer, start=start, end=end)

    def readfrom_into(self, address: int, buffer: Any, *, start: int = 0, end: int | None = None) -> None:
        self._bus.readfrom_into(address, buffer, start=start, end=end)

    def writeto_then_readfrom(
        self,
        address: int,
        buffer_out: Any,
        buffer_in: Any,
        *,
        out_start: int = 0,
        out_end: int | None = None,
        in_start: int = 0,
        in_end: int | None = None,
    ) -> None:
        self._bus.writeto_then_readfrom(
            address, buffer_out, buffer_in, out_start=out_start, out_end=out_end, in_start=in_start, in_end=in_end
        )

    def deinit(self) -> None:
        """Nothing to release beyond the file the backend holds."""


class Ads1115Driver:
    """The supply voltage on one ADS1115 input."""

    def __init__(
        self,
        i2c_bus: int = 1,
        address: int = 0x48,
        channel: int = 0,
        divider_ratio: float = 9.333,
        samples: int = 8,
        i2c_factory: Callable[[], Any] | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        if not 0 <= channel <= 3 or samples < 1 or divider_ratio <= 0:
            raise ValueError("channel 0..3, samples >= 1 and a positive divider ratio are required")
        self.i2c_bus, self.address, self.channel = i2c_bus, address, channel
        self.divider_ratio, self.samples = divider_ratio, samples
        self._i2c_factory = i2c_factory or (lambda: LinuxI2C(i2c_bus))
        name = f"ADS1115 at 0x{address:02x} on /dev/i2c-{i2c_bus}"
        self.handle: DeviceHandle[Any] = DeviceHandle(name, self._open, None, backoff)
        self._calls = BlockingCall()

    def _open(self) -> Any:
        from adafruit_ads1x15.ads1115 import ADS1115
        from adafruit_ads1x15.analog_in import AnalogIn

        try:
            bus = self._i2c_factory()
        except (OSError, RuntimeError) as exc:
            raise DeviceMissingError(
                f"device missing: /dev/i2c-{self.i2c_bus} ({exc}; enable I2C: raspi-config nonint do_i2c 0)"
            ) from exc
        try:
            adc = ADS1115(bus, gain=GAIN, data_rate=DATA_RATE, address=self.address)
        except (OSError, ValueError) as exc:  # the library's probe raises ValueError("No I2C device at ...")
            raise DeviceMissingError(f"device missing: no ADS1115 at 0x{self.address:02x} ({exc})") from exc
        return AnalogIn(adc, self.channel)

    def read_blocking(self) -> float:
        analog = self.handle.get()
        total = 0.0
        try:
            for _ in range(self.samples):
                code = analog.value
                if code >= FULL_SCALE_CODE:
                    raise SensorError("ADC input at full scale (check the divider)")
                total += analog.convert_to_voltage(code)
        except OSError as exc:
            self.handle.failed(f"no response ({exc})")
            raise NoResponseError(f"no response (I2C transfer failed: {exc})") from exc
        return total / self.samples * self.divider_ratio

    async def read_volts(self) -> float:
        return await self._calls.run(self.read_blocking)

    def close(self) -> None:
        self.handle.close()
