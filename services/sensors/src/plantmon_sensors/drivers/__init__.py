"""Driver protocols, one per sensor kind, and the exceptions every driver raises.

Real drivers (:mod:`.max31855` over spidev, :mod:`.hall` with gpiozero, :mod:`.ads1115` with
adafruit-circuitpython-ads1x15, :mod:`.microphone` with sounddevice) and the simulator implement
the same protocols; the sampler never knows which one it talks to. The real drivers import their
library only when they are built, so sim mode never needs them.
"""

from plantmon_sensors.drivers.audio import AudioDriver
from plantmon_sensors.drivers.errors import (
    ChannelFault,
    DeviceMissingError,
    NoResponseError,
    OpenCircuitError,
    SensorError,
    WarmingUpError,
)
from plantmon_sensors.drivers.rpm import RpmDriver
from plantmon_sensors.drivers.temperature import TemperatureDriver, ThermocoupleReading
from plantmon_sensors.drivers.voltage import VoltageDriver

__all__ = [
    "AudioDriver",
    "ChannelFault",
    "DeviceMissingError",
    "NoResponseError",
    "OpenCircuitError",
    "RpmDriver",
    "SensorError",
    "TemperatureDriver",
    "ThermocoupleReading",
    "VoltageDriver",
    "WarmingUpError",
]
