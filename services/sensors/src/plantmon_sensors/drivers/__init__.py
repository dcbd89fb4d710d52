"""Driver protocols, one per sensor kind, and the exceptions every driver raises.

Real drivers (spidev/MAX31855, gpiozero hall pick-up, ADS1115, sounddevice) and the simulator
implement the same protocols; the sampler never knows which one it talks to.
"""

from plantmon_sensors.drivers.audio import AudioDriver
from plantmon_sensors.drivers.errors import NoResponseError, OpenCircuitError, SensorError
from plantmon_sensors.drivers.rpm import RpmDriver
from plantmon_sensors.drivers.temperature import TemperatureDriver
from plantmon_sensors.drivers.voltage import VoltageDriver

__all__ = [
    "AudioDriver",
    "NoResponseError",
    "OpenCircuitError",
    "RpmDriver",
    "SensorError",
    "TemperatureDriver",
    "VoltageDriver",
]
