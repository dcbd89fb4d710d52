"""plantmon-sensors: the only plantmon code that touches hardware.

Layers, from the device up:

- :mod:`plantmon_sensors.drivers`: one driver protocol per sensor kind (temperature, rpm,
  voltage, audio) and the small exception family drivers raise;
- :mod:`plantmon_sensors.simulator`: a coupled plant model with injectable faults and
  simulated drivers implementing those protocols;
- :mod:`plantmon_sensors.features`: audio features (spectrum bands, MFCC, RMS level), numpy only;
- :mod:`plantmon_sensors.librosa_tables`: their mel filter bank and DCT matrix, built by librosa in a
  short-lived child process (the service never imports librosa, hence never numba);
- :mod:`plantmon_sensors.catalog`: the table of sensors and tags (adding a sensor is adding a row);
- :mod:`plantmon_sensors.devices`: builds the drivers for the configured mode;
- :mod:`plantmon_sensors.domain`: readings and the latest snapshot;
- :mod:`plantmon_sensors.sampler`: background tasks that read the drivers at their rates;
- :mod:`plantmon_sensors.api`: the FastAPI transport (``create_app``).
"""

__version__ = "0.1.0"
