"""The sensor service's Prometheus metrics, registered in a registry passed in (one per test)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from plantmon_sensors.catalog import SENSORS

PREFIX = "plantmon_sensors"


class _StatusCollector(Collector):
    """Age of the last good read and up/down per sensor, computed at scrape time."""

    def __init__(self, last_good: Callable[[], Mapping[str, float | None]], up: Callable[[], Mapping[str, bool]]):
        self._last_good = last_good
        self._up = up

    def collect(self) -> Iterable[Metric]:
        now = time.monotonic()
        age = GaugeMetricFamily(
            f"{PREFIX}_last_good_read_age_seconds",
            "Seconds since the last good read of each sensor (+Inf when none yet)",
            labels=["sensor"],
        )
        for sensor, stamp in self._last_good().items():
            age.add_metric([sensor], float("inf") if stamp is None else max(0.0, now - stamp))
        yield age
        up = GaugeMetricFamily(f"{PREFIX}_sensor_up", "1 when the sensor's last read was good", labels=["sensor"])
        for sensor, ok in self._up().items():
            up.add_metric([sensor], 1.0 if ok else 0.0)
        yield up


class SensorMetrics:
    """Read counters per sensor and the feature-extraction time."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.reads = Counter(f"{PREFIX}_reads", "Sensor reads attempted", ["sensor"], registry=registry)
        self.read_errors = Counter(f"{PREFIX}_read_errors", "Sensor reads that failed", ["sensor"], registry=registry)
        self.feature_seconds = Histogram(
            f"{PREFIX}_feature_extraction_seconds",
            "Time to compute the audio features of one buffer",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=registry,
        )
        for sensor in SENSORS:
            self.reads.labels(sensor.sensor_id)
            self.read_errors.labels(sensor.sensor_id)

    def watch_status(
        self, last_good: Callable[[], Mapping[str, float | None]], up: Callable[[], Mapping[str, bool]]
    ) -> None:
        """Register the scrape-time gauges fed by the sampler."""
        self.registry.register(_StatusCollector(last_good, up))
