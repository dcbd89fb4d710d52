"""The scraper's Prometheus metrics, registered in the registry the service is given."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class ScraperMetrics:
    """Counters and gauges of one scraper instance."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.notifications = Counter(
            "plantmon_scraper_notifications", "OPC UA data change notifications received", registry=registry
        )
        self.rows_written = Counter(
            "plantmon_scraper_rows_written", "Sample rows inserted into the database", registry=registry
        )
        self.duplicates = Counter(
            "plantmon_scraper_duplicates",
            "Samples already stored (same tag and source timestamp), skipped by key",
            registry=registry,
        )
        self.dropped = Counter(
            "plantmon_scraper_dropped", "Samples dropped because the in-memory queue was full", registry=registry
        )
        self.write_errors = Counter(
            "plantmon_scraper_write_errors", "Failed batch writes (each is retried)", registry=registry
        )
        self.reconnects = Counter(
            "plantmon_scraper_opcua_reconnects", "Reconnects to the OPC UA server after a loss", registry=registry
        )
        self.batch_seconds = Histogram(
            "plantmon_scraper_batch_seconds",
            "Time to write one batch (COPY and insert)",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=registry,
        )
        self.batch_rows = Histogram(
            "plantmon_scraper_batch_rows",
            "Samples per batch",
            buckets=(1, 10, 50, 100, 500, 1000, 2500, 5000, 10000),
            registry=registry,
        )
        self.queue_depth = Gauge("plantmon_scraper_queue_depth", "Samples waiting to be written", registry=registry)
        self.lag_seconds = Gauge(
            "plantmon_scraper_lag_seconds", "Now minus the newest source timestamp received", registry=registry
        )
        self.db_up = Gauge("plantmon_scraper_db_up", "1 when the last database write succeeded", registry=registry)
        self.opcua_connected = Gauge(
            "plantmon_scraper_opcua_connected", "1 while subscribed to the OPC UA server", registry=registry
        )
        self.tags = Gauge("plantmon_scraper_tags", "Tags registered in the database", registry=registry)
