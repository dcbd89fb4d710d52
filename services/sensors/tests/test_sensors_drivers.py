"""The real drivers, each with its real library above a fake at the lowest layer (the bus or the device)."""

from __future__ import annotations

import asyncio
import itertools
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import numpy as np
import pytest
from gpiozero.pins.mock import MockFactory, MockPin
from plantmon_dev.waiting import eventually
from plantmon_sensors.catalog import SENSOR_BY_ID
from plantmon_sensors.devices import adapt
from plantmon_sensors.drivers import (
    DeviceMissingError,
    NoResponseError,
    SensorError,
    ThermocoupleReading,
    WarmingUpError,
)
from plantmon_sensors.drivers.ads1115 import Ads1115Driver
from plantmon_sensors.drivers.device import Backoff
from plantmon_sensors.drivers.hall import HallRpmDriver
from plantmon_sensors.drivers.max31855 import Max31855Driver, decode_frame
from plantmon_sensors.drivers.microphone import Microphone, RingBuffer

NO_WAIT = Backoff(retry_min_s=0.0, retry_max_s=0.0)


# -- MAX31855 ------------------------------------------------------------------------------
def frame(hot_c: float, cold_c: float, oc: bool = False, scg: bool = False, scv: bool = False) -> list[int]:
    """A frame laid out as in the datasheet: D31..D18 hot (0.25 °C), D16 fault, D15..D4 cold (0.0625 °C), D2..D0."""
    hot = round(hot_c / 0.25) & 0x3FFF
    cold = round(cold_c / 0.0625) & 0xFFF
    faults = (oc << 0) | (scg << 1) | (scv << 2)
    word = (hot << 18) | ((1 if faults else 0) << 16) | (cold << 4) | faults
    return list(word.to_bytes(4, "big"))


@pytest.mark.parametrize(
    ("hot", "cold"),
    [(25.0, 24.5), (1350.0, 85.0), (0.25, 0.0625), (-0.25, -0.0625), (-200.0, -40.0), (-12.75, -3.125), (100.5, 30.0)],
)
def test_max31855_decodes_positive_and_negative_temperatures(hot: float, cold: float) -> None:
    assert decode_frame(frame(hot, cold)) == ThermocoupleReading(hot, cold, None)


def test_max31855_decodes_the_datasheet_examples() -> None:
    # Datasheet table 2/3: +1600.00 °C = 0110 0100 0000 00, -250.00 °C = 1111 0000 0110 00;
    # cold junction +127.0000 °C = 0111 1111 0000, -55.0000 °C = 1100 1001 0000.
    word = (0b01100100000000 << 18) | (0b011111110000 << 4)
    assert decode_frame(word.to_bytes(4, "big")).fault == "outside the sensor range (1600 °C)"
    word = (0b11110000011000 << 18) | (0b110010010000 << 4)
    reading = decode_frame(word.to_bytes(4, "big"))
    assert reading.cold_junction_celsius == -55.0 and reading.celsius is None and "-250" in str(reading.fault)


@pytest.mark.parametrize(
    ("bits", "reason"),
    [
        ({"oc": True}, "open circuit"),
        ({"scg": True}, "short to GND"),
        ({"scv": True}, "short to VCC"),
        ({"oc": True, "scv": True}, "open circuit, short to VCC"),
    ],
)
def test_max31855_fault_bits_make_the_thermocouple_bad_and_keep_the_cold_junction(
    bits: dict[str, bool], reason: str
) -> None:
    assert decode_frame(frame(123.0, 26.5, **bits)) == ThermocoupleReading(None, 26.5, reason)


@pytest.mark.parametrize("raw", [[0xFF] * 4, [0, 0, 0, 0], [0x00, 0x02, 0x00, 0x00], [0x00, 0x00, 0x00, 0x08], [1, 2]])
def test_max31855_frames_no_chip_can_send_mean_no_response(raw: list[int]) -> None:
    with pytest.raises(NoResponseError, match="no response"):
        decode_frame(raw)


class FakeSpiDev:
    """``spidev.SpiDev`` at the lowest layer: a chip select that answers ``frames`` (or fails)."""

    present = True
    frames: ClassVar[list[list[int]]] = []

    def __init__(self) -> None:
        self.max_speed_hz = 0
        self.mode = -1
        self.opened: tuple[int, int] | None = None
        self.closed = False

    def open(self, bus: int, device: int) -> None:
        if not type(self).present:
            raise FileNotFoundError(2, "No such file or directory")
        self.opened = (bus, device)

    def readbytes(self, n: int) -> list[int]:
        assert self.opened is not None and not self.closed and n == 4
        if not type(self).present:
            raise OSError(5, "Input/output error")
        return type(self).frames.pop(0)

    def xfer2(self, data: list[int]) -> list[int]:
        return self.readbytes(len(data))

    def close(self) -> None:
        self.closed = True


async def test_max31855_driver_reads_frames_through_spidev_and_adapts_to_both_tags() -> None:
    class Chip(FakeSpiDev):
        frames: ClassVar[list[list[int]]] = [frame(64.25, 27.0625), frame(70.0, 27.0, oc=True)]

    driver = Max31855Driver(0, 1, 2_000_000, spi_factory=Chip, backoff=NO_WAIT)
    device = adapt(SENSOR_BY_ID["temperature_lower"], driver)
    assert await device.read() == {"celsius": 64.25, "cold_junction_celsius": 27.0625}
    faulty = await device.read()
    assert faulty["cold_junction_celsius"] == 27.0 and getattr(faulty["celsius"], "reason", None) == "open circuit"
    spi = driver.handle.get()
    assert (spi.opened, spi.max_speed_hz, spi.mode) == ((0, 1), 2_000_000, 0)  # type: ignore[attr-defined]


async def test_max31855_missing_device_with_the_real_spidev_is_device_missing() -> None:
    driver = Max31855Driver(0, 0, backoff=NO_WAIT)  # the real spidev.SpiDev: no /dev/spidev0.0 here
    with pytest.raises(DeviceMissingError, match=r"/dev/spidev0\.0"):
        await driver.read_thermocouple()


async def test_max31855_recovers_when_the_device_comes_back_and_after_a_bus_error() -> None:
    class Flaky(FakeSpiDev):
        present = False
        frames: ClassVar[list[list[int]]] = [frame(50.0, 25.0), frame(51.0, 25.0)]

    driver = Max31855Driver(0, 0, spi_factory=Flaky, backoff=NO_WAIT)
    for _ in range(3):
        with pytest.raises(DeviceMissingError):
            await driver.read_thermocouple()
    Flaky.present = True
    assert (await driver.read_thermocouple()).celsius == 50.0
    Flaky.present = False  # unplugged while open: the transfer fails, the handle closes it
    with pytest.raises(NoResponseError, match="SPI transfer failed"):
        await driver.read_thermocouple()
    assert not driver.handle.is_open
    Flaky.present = True
    assert (await driver.read_thermocouple()).celsius == 51.0


def attempt_times(random: float, step: float, steps: int) -> list[float]:
    """When a handle whose device is always missing tries to open it, polled every ``step`` s."""
    from plantmon_sensors.drivers.device import DeviceHandle

    now = [0.0]
    attempts: list[float] = []

    def opener() -> object:
        attempts.append(now[0])
        raise FileNotFoundError("gone")

    handle: DeviceHandle[object] = DeviceHandle(
        "x", opener, backoff=Backoff(1.0, 4.0), clock=lambda: now[0], random=lambda: random
    )
    for i in range(steps):
        now[0] = i * step
        with pytest.raises(DeviceMissingError, match="device missing: x"):
            handle.get()
    return attempts


def test_device_handle_backs_off_exponentially_between_attempts() -> None:
    # random() == 0: no share of the delay taken off, the nominal schedule exactly.
    assert attempt_times(0.0, 0.1, 200) == pytest.approx([0.0, 1.0, 3.0, 7.0, 11.0, 15.0, 19.0])


def test_device_handle_jitter_shortens_each_wait_by_at_most_half() -> None:
    # random() just below 1: the most the default jitter takes off, half of each delay.
    attempts = attempt_times(0.999, 0.01, 2000)
    waits = [later - earlier for earlier, later in itertools.pairwise(attempts)]
    nominal = [1.0, 2.0, 4.0, 4.0, 4.0]
    assert len(waits) >= len(nominal)
    for wait, full in zip(waits, nominal, strict=False):
        assert full / 2 - 0.02 <= wait <= full / 2 + 0.02


# -- Hall RPM via gpiozero's MockFactory -------------------------------------------------------
class Clock:
    now = 1000.0


class ClockedPin(MockPin):
    """gpiozero's MockPin with edge timestamps from a test clock instead of the wall clock."""

    _state: bool

    def _change_state(self, value: bool) -> bool:
        if self._state != value:
            self._state = value
            self._last_change = Clock.now
            return True
        return False


class ClockedFactory(MockFactory):
    def __init__(self) -> None:
        super().__init__(pin_class=ClockedPin)

    def ticks(self) -> float:  # type: ignore[override]
        return Clock.now


def pulse(pin: Any, at: float) -> None:
    Clock.now = at
    pin.drive_low()
    Clock.now = at + 0.0005
    pin.drive_high()


@pytest.fixture
def factory() -> Any:
    Clock.now = 1000.0
    factory = ClockedFactory()
    yield factory
    factory.close()


def test_hall_rpm_counts_pulses_over_the_window(factory: Any) -> None:
    driver = HallRpmDriver(23, pulses_per_revolution=2, window_s=1.0, min_window_pulses=10, pin_factory=factory)
    assert driver.rpm_now() == 0.0  # opened, no pulse yet
    pin = factory.pin(23)
    assert pin.pull == "up" and pin.state  # the pull-up holds the line high between pulses
    start = Clock.now
    for i in range(200):  # 50 pulses/s = 25 rev/s = 1500 rpm
        pulse(pin, start + 0.02 * (i + 1))
    Clock.now = start + 4.001
    assert driver.rpm_now() == pytest.approx(1500.0, rel=0.03)


def test_hall_rpm_uses_the_period_at_low_speed_and_reads_zero_after_the_timeout(factory: Any) -> None:
    driver = HallRpmDriver(23, pulses_per_revolution=1, window_s=1.0, stop_timeout_s=3.0, pin_factory=factory)
    driver.rpm_now()
    pin = factory.pin(23)
    start = Clock.now
    for i in range(4):  # one pulse every 1.2 s: 50 rpm, fewer than 2 pulses per window
        pulse(pin, start + 1.2 * (i + 1))
    Clock.now = start + 4.9
    assert driver.rpm_now() == pytest.approx(50.0, rel=0.01)
    Clock.now = start + 4.8 + 2.0  # slowing down: 2 s since the last pulse bounds the speed
    assert driver.rpm_now() == pytest.approx(30.0, rel=0.01)
    Clock.now = start + 4.8 + 3.5  # stopped: past the timeout it reads 0, not its last value
    assert driver.rpm_now() == 0.0


async def test_hall_rpm_through_the_protocol_and_a_missing_pin_factory(factory: Any, monkeypatch: Any) -> None:
    driver = HallRpmDriver(23, pin_factory=factory)
    assert await adapt(SENSOR_BY_ID["rpm"], driver).read() == {"rpm": 0.0}
    driver.close()
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "lgpio")  # the Pi 5 default: lgpio is absent off a Pi
    missing = HallRpmDriver(23, backoff=NO_WAIT)
    with pytest.raises(DeviceMissingError, match=r"GPIO 23.*lgpio"):
        await missing.read_rpm()


# -- ADS1115 via the adafruit library above a register model ---------------------------------
class FakeAds1115Bus:
    """A busio-compatible I2C bus with an ADS1115 at ``address``: pointer, config and conversion registers."""

    PGA_FS: ClassVar[dict[int, float]] = {
        0: 6.144,
        1: 4.096,
        2: 2.048,
        3: 1.024,
        4: 0.512,
        5: 0.256,
        6: 0.256,
        7: 0.256,
    }

    def __init__(self, inputs: list[float], address: int = 0x48) -> None:
        self.inputs = inputs  # volts on A0..A3
        self.address = address
        self.pointer = 0
        self.config = 0x8583  # the power-on default
        self.conversion = 0
        self.configs: list[int] = []
        self.conversions = 0
        self.fail = False
        self._lock = threading.Lock()

    def try_lock(self) -> bool:
        return self._lock.acquire(blocking=False)

    def unlock(self) -> None:
        self._lock.release()

    def _check(self, address: int) -> None:
        if address != self.address or self.fail:
            raise OSError(121, "Remote I/O error")

    def writeto(self, address: int, buffer: Any, *, start: int = 0, end: int | None = None) -> None:
        self._check(address)
        data = bytes(buffer[start:end])
        if not data:
            return  # the library's probe
        self.pointer = data[0] & 0x03
        if len(data) == 3:
            value = data[1] << 8 | data[2]
            if self.pointer == 1:
                self.configs.append(value)
                self.config = value & 0x7FFF
                if value & 0x8000:
                    self._convert()

    def _convert(self) -> None:
        mux = (self.config >> 12) & 0x7
        assert mux >= 4, "single-ended inputs only"
        full_scale = self.PGA_FS[(self.config >> 9) & 0x7]
        code = int(self.inputs[mux - 4] / full_scale * 32768)
        self.conversion = max(-32768, min(32767, code)) & 0xFFFF
        self.conversions += 1
        self.config |= 0x8000  # conversion done

    def readfrom_into(self, address: int, buffer: Any, *, start: int = 0, end: int | None = None) -> None:
        self._check(address)
        value = self.conversion if self.pointer == 0 else self.config
        buffer[start] = value >> 8
        buffer[start + 1] = value & 0xFF

    def writeto_then_readfrom(
        self, address: int, out: Any, into: Any, *, out_start: int = 0, out_end: int | None = None,
        in_start: int = 0, in_end: int | None = None,
    ) -> None:  # fmt: skip
        self.writeto(address, out, start=out_start, end=out_end)
        self.readfrom_into(address, into, start=in_start, end=in_end)


def test_ads1115_reads_the_divided_supply_at_4v096_and_860_sps_averaging_n_samples() -> None:
    bus = FakeAds1115Bus([0.1, 0.2, 2.5714, 0.0])
    driver = Ads1115Driver(channel=2, divider_ratio=9.333, samples=5, i2c_factory=lambda: bus)
    volts = driver.read_blocking()
    assert volts == pytest.approx(2.5714 * 9.333, abs=0.01)
    assert bus.conversions == 5
    conversion = bus.configs[-1]
    assert (conversion >> 12) & 0x7 == 0b110  # MUX: AIN2 against GND
    assert (conversion >> 9) & 0x7 == 0b001  # PGA: ±4.096 V
    assert (conversion >> 5) & 0x7 == 0b111  # DR: 860 SPS
    assert conversion & 0x0100  # single-shot


async def test_ads1115_missing_chip_saturation_and_recovery() -> None:
    absent = Ads1115Driver(address=0x49, i2c_factory=lambda: FakeAds1115Bus([1.0] * 4), backoff=NO_WAIT)
    with pytest.raises(DeviceMissingError, match="no ADS1115 at 0x49"):
        await absent.read_volts()
    no_bus = Ads1115Driver(i2c_bus=7, backoff=NO_WAIT)  # the real /dev/i2c-7 backend: not on this machine
    with pytest.raises(DeviceMissingError, match="i2c-7"):
        await no_bus.read_volts()
    bus = FakeAds1115Bus([5.0, 0, 0, 0])
    driver = Ads1115Driver(i2c_factory=lambda: bus, backoff=NO_WAIT)
    with pytest.raises(SensorError, match="full scale"):
        await driver.read_volts()
    bus.inputs[0] = 2.0
    assert await driver.read_volts() == pytest.approx(2.0 * 9.333, abs=0.01)
    bus.fail = True
    with pytest.raises(NoResponseError, match="I2C transfer failed"):
        await driver.read_volts()
    bus.fail = False
    assert await driver.read_volts() == pytest.approx(2.0 * 9.333, abs=0.01)


# -- microphone via a fake sounddevice stream ----------------------------------------------
class FakeStream:
    """``sounddevice.InputStream`` at the lowest layer: the test pushes blocks into the callback."""

    def __init__(self, module: Any, **kwargs: Any) -> None:
        if not module.devices:
            raise module.PortAudioError("Error querying device -1")
        self.kwargs = kwargs
        self.started = self.closed = False
        module.streams.append(self)

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        self.started = False

    def close(self) -> None:
        self.closed = True

    def push(self, block: np.ndarray) -> None:
        self.kwargs["callback"](block.reshape(-1, 1).astype(np.float32), len(block), None, None)


def fake_sounddevice(devices: bool = True) -> Any:
    module = SimpleNamespace(devices=devices, streams=[], PortAudioError=type("PortAudioError", (Exception,), {}))
    module.InputStream = lambda **kwargs: FakeStream(module, **kwargs)
    return module


async def test_microphone_callback_fills_the_ring_and_reads_the_latest_window() -> None:
    sd = fake_sounddevice()
    clock = [0.0]
    mic = Microphone(16_000, 0.5, sounddevice_loader=lambda: sd, clock=lambda: clock[0])
    with pytest.raises(WarmingUpError, match="filling the audio buffer"):
        await mic.read_buffer()
    stream = sd.streams[0]
    assert stream.started and stream.kwargs["samplerate"] == 16_000 and stream.kwargs["channels"] == 1
    signal = np.arange(20_000, dtype=np.float32) / 20_000
    for block in np.split(signal, 40):
        stream.push(block)
    buffer = await mic.read_buffer()
    assert buffer.shape == (8000,) and buffer.dtype == np.float64
    np.testing.assert_allclose(buffer, signal[-8000:])
    clock[0] = 10.0  # the stream went quiet: closed, then reopened with an empty ring
    with pytest.raises(NoResponseError, match="stopped delivering"):
        await mic.read_buffer()
    assert stream.closed


async def test_microphone_without_an_input_device_is_device_missing() -> None:
    with pytest.raises(DeviceMissingError, match="no usable audio input"):
        await Microphone(sounddevice_loader=lambda: fake_sounddevice(devices=False), backoff=NO_WAIT).read_buffer()
    with pytest.raises(DeviceMissingError, match="no usable audio input"):  # the real PortAudio: no input here
        await Microphone(backoff=NO_WAIT).read_buffer()


def test_portaudio_missing_at_import_is_one_clear_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins
    import sys

    from plantmon_sensors.drivers.microphone import _import_sounddevice

    real_import = builtins.__import__

    def failing_import(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "sounddevice":
            raise OSError("PortAudio library not found")  # what the wheel raises without libportaudio2
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "sounddevice", raising=False)
    monkeypatch.setattr(builtins, "__import__", failing_import)
    with pytest.raises(DeviceMissingError, match=r"PortAudio library not found.*libportaudio2"):
        _import_sounddevice()


def test_ring_buffer_wraps_around() -> None:
    ring = RingBuffer(10)
    assert ring.latest(3) is None
    ring.write(np.arange(7))
    ring.write(np.arange(7, 15))
    np.testing.assert_array_equal(ring.latest(10), np.arange(5, 15))
    np.testing.assert_array_equal(ring.latest(4), np.arange(11, 15))


async def test_microphone_features_go_through_librosa(audio_tables: Path) -> None:
    from plantmon_sensors.features import FeatureConfig, FeatureExtractor, band_of

    sd = fake_sounddevice()
    mic = Microphone(16_000, 0.5, sounddevice_loader=lambda: sd)
    extractor = FeatureExtractor(FeatureConfig(), tables_dir=audio_tables)
    device = adapt(SENSOR_BY_ID["audio"], mic, extractor=extractor)
    with pytest.raises(WarmingUpError, match="tables"):
        await device.read()  # the tables are not loaded yet
    assert extractor.wait_ready(timeout=60), extractor.warm_up_error
    with pytest.raises(WarmingUpError):
        await device.read()  # the stream opens; nothing recorded yet
    t = np.arange(16_000) / 16_000
    sd.streams[0].push(0.5 * np.sin(2 * np.pi * 2000.0 * t))
    channels = await device.read()
    bands = [band for band in (channels[f"band_{i}"] for i in range(32)) if isinstance(band, float)]
    assert len(bands) == 32  # no band is a ChannelFault
    assert int(np.argmax(bands)) == band_of(2000.0, 16_000)
    assert channels["level_dbfs"] == pytest.approx(-9.0, abs=0.2)


async def test_blocking_reads_do_not_pile_up_behind_a_stuck_transfer() -> None:
    from plantmon_sensors.drivers.device import BlockingCall

    calls = BlockingCall()
    release = threading.Event()
    started = threading.Event()

    def transfer() -> bool:
        started.set()
        return release.wait()

    stuck = asyncio.ensure_future(calls.run(transfer))
    await eventually(started.is_set, timeout=10, what="the stuck transfer running in its thread")
    with pytest.raises(NoResponseError, match="still running"):
        await calls.run(lambda: 1)
    release.set()
    assert await stuck is True
    assert await calls.run(lambda: 2) == 2
