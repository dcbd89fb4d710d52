"""MAX31855 thermocouple amplifier over spidev: the 32-bit frame and its decoding.

The chip is read-only: with chip select low it clocks out 32 bits, MSB first (datasheet, "Memory
Map - Bit Weights and Functions"):

====== ===================================================================================
bits   meaning
====== ===================================================================================
31..18 thermocouple (hot junction) temperature, 14-bit two's complement, 0.25 °C per LSB
17     reserved, always 0
16     fault: 1 when any of bits 2..0 is set
15..4  internal (cold junction) temperature, 12-bit two's complement, 0.0625 °C per LSB
3      reserved, always 0
2      SCV: thermocouple shorted to VCC
1      SCG: thermocouple shorted to GND
0      OC: thermocouple open (no connection)
====== ===================================================================================

A fault makes the thermocouple value meaningless but leaves the cold junction valid. A frame
with a reserved bit set (all ones: MISO floating high) or all zeros (MISO held low) means no chip
answered. Thermocouple values outside the type K range of the chip (-200..+1350 °C) are refused.

The two chips sit on SPI0: CE0 (GPIO 8, the upper bearing) and CE1 (GPIO 7, the lower one);
``/dev/spidev0.0`` and ``/dev/spidev0.1``. SPI mode 0, at most 5 MHz.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Protocol

from plantmon_sensors.drivers.device import Backoff, BlockingCall, DeviceHandle
from plantmon_sensors.drivers.errors import DeviceMissingError, NoResponseError, OpenCircuitError, SensorError
from plantmon_sensors.drivers.temperature import ThermocoupleReading

logger = logging.getLogger(__name__)

RANGE_C = (-200.0, 1350.0)
THERMOCOUPLE_LSB_C = 0.25
COLD_JUNCTION_LSB_C = 0.0625
FAULT_OC, FAULT_SCG, FAULT_SCV = 0x1, 0x2, 0x4
FAULT_REASONS = ((FAULT_OC, "open circuit"), (FAULT_SCG, "short to GND"), (FAULT_SCV, "short to VCC"))
_FAULT_BIT = 1 << 16
_RESERVED_BITS = (1 << 17) | (1 << 3)


class SpiDevice(Protocol):
    """The part of ``spidev.SpiDev`` this driver uses."""

    max_speed_hz: int
    mode: int

    def open(self, bus: int, device: int) -> None: ...

    def readbytes(self, n: int) -> list[int]: ...

    def close(self) -> None: ...


def _signed(value: int, bits: int) -> int:
    return value - (1 << bits) if value & (1 << (bits - 1)) else value


def decode_frame(frame: Sequence[int] | bytes) -> ThermocoupleReading:
    """Decode the chip's 4 bytes; raises :class:`NoResponseError` for a frame no chip can send."""
    if len(frame) != 4:
        raise NoResponseError(f"no response (short SPI frame of {len(frame)} bytes)")
    word = int.from_bytes(bytes(frame), "big")
    if word == 0 or word & _RESERVED_BITS:
        raise NoResponseError(f"no response (invalid frame 0x{word:08X}: is the MAX31855 connected?)")
    cold = _signed((word >> 4) & 0xFFF, 12) * COLD_JUNCTION_LSB_C
    if word & _FAULT_BIT:
        reasons = [reason for bit, reason in FAULT_REASONS if word & bit]
        return ThermocoupleReading(None, cold, ", ".join(reasons) or "thermocouple fault")
    hot = _signed(word >> 18, 14) * THERMOCOUPLE_LSB_C
    if not RANGE_C[0] <= hot <= RANGE_C[1]:
        return ThermocoupleReading(None, cold, f"outside the sensor range ({hot:g} °C)")
    return ThermocoupleReading(hot, cold, None)


def _spidev() -> SpiDevice:
    import spidev

    device: SpiDevice = spidev.SpiDev()
    return device


class Max31855Driver:
    """One MAX31855 on ``/dev/spidev<bus>.<chip_select>``."""

    def __init__(
        self,
        bus: int = 0,
        chip_select: int = 0,
        max_speed_hz: int = 1_000_000,
        spi_factory: Callable[[], SpiDevice] = _spidev,
        backoff: Backoff | None = None,
    ) -> None:
        self.bus, self.chip_select, self.max_speed_hz = bus, chip_select, max_speed_hz
        self._spi_factory = spi_factory
        self.path = f"/dev/spidev{bus}.{chip_select}"
        self.handle: DeviceHandle[SpiDevice] = DeviceHandle(self.path, self._open, _close, backoff)
        self._calls = BlockingCall()

    def _open(self) -> SpiDevice:
        spi = self._spi_factory()
        try:
            spi.open(self.bus, self.chip_select)
        except FileNotFoundError as exc:
            raise DeviceMissingError(f"device missing: {self.path} (enable SPI: raspi-config nonint do_spi 0)") from exc
        spi.max_speed_hz = self.max_speed_hz
        spi.mode = 0
        return spi

    def read_frame(self) -> list[int]:
        """One raw 4-byte frame (blocking)."""
        spi = self.handle.get()
        try:
            return list(spi.readbytes(4))
        except OSError as exc:
            self.handle.failed(f"no response ({exc})")
            raise NoResponseError(f"no response (SPI transfer failed: {exc})") from exc

    def read_blocking(self) -> ThermocoupleReading:
        return decode_frame(self.read_frame())

    async def read_thermocouple(self) -> ThermocoupleReading:
        return await self._calls.run(self.read_blocking)

    async def read_celsius(self) -> float:
        """The hot-junction temperature alone; a fault raises :class:`SensorError` with its reason."""
        reading = await self.read_thermocouple()
        if reading.celsius is None:
            raise OpenCircuitError() if reading.fault == "open circuit" else SensorError(reading.fault)
        return reading.celsius

    def close(self) -> None:
        self.handle.close()


def _close(spi: SpiDevice) -> None:
    spi.close()
