"""Prometheus metrics of the alert worker (registered on the registry passed in)."""

from __future__ import annotations

import logging
from collections import Counter as Tally
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from plantmon_alerts.engine import ActiveAlert, Cleared, Raised, Transition

logger = logging.getLogger(__name__)


class _StateCollector(Collector):
    """Gauges read at scrape time: open alerts by rule and severity, the outbox depth."""

    def __init__(self, active: Callable[[], list[ActiveAlert]], outbox_depth: Callable[[], int]) -> None:
        self.active = active
        self.outbox_depth = outbox_depth

    def collect(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily(
            "plantmon_alerts_active", "Alerts open now (raised, not cleared)", labels=["rule", "severity"]
        )
        for (rule, severity), count in sorted(Tally((a.rule, str(a.severity)) for a in self.active()).items()):
            gauge.add_metric([rule, severity], count)
        yield gauge
        yield GaugeMetricFamily(
            "plantmon_alerts_outbox_depth",
            "Alert transitions not yet written to the database",
            value=self.outbox_depth(),
        )


class AlertMetrics:
    """Counters and gauges of one worker."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        active: Callable[[], list[ActiveAlert]],
        outbox_depth: Callable[[], int],
    ) -> None:
        self.raised = Counter("plantmon_alerts_raised", "Alerts raised", ["rule", "severity"], registry=registry)
        self.cleared = Counter("plantmon_alerts_cleared", "Alerts cleared", ["rule", "severity"], registry=registry)
        self.samples = Counter("plantmon_alerts_samples", "Samples evaluated", registry=registry)
        self.dropped = Counter(
            "plantmon_alerts_samples_dropped",
            "Samples dropped because the evaluation queue was full",
            registry=registry,
        )
        self.evaluation = Histogram(
            "plantmon_alerts_evaluation_latency_seconds",
            "Time from a sample's arrival to the end of its evaluation",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=registry,
        )
        self.db_errors = Counter(
            "plantmon_alerts_db_errors", "Failed attempts to write alert transitions", registry=registry
        )
        self.opcua_connected = Gauge(
            "plantmon_alerts_opcua_connected", "1 while subscribed to the OPC UA server", registry=registry
        )
        self.db_up = Gauge("plantmon_alerts_db_up", "1 while the database answers", registry=registry)
        registry.register(_StateCollector(active, outbox_depth))

    def count(self, transitions: list[Transition]) -> None:
        for t in transitions:
            if isinstance(t, Raised):
                self.raised.labels(t.rule, str(t.severity)).inc()
            elif isinstance(t, Cleared):
                self.cleared.labels(t.rule, str(t.severity)).inc()
