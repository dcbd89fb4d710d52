"""The scraper's Prometheus metrics, registered in the registry the service is given."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector


class PublishDecoding(Collector):
    """``plantmon_scraper_publish_responses_total{decoder}``: Publish responses read by the fast
    decoder (numeric data changes) and those left to asyncua's (anything else), as counted by
    the OPC UA subscriber. A growing ``asyncua`` count means the server sends other shapes
    (strings, arrays, picoseconds, status changes), which cost about three times the CPU."""

    def __init__(self, counts: Callable[[], tuple[int, int]]) -> None:
        self.counts = counts

    def collect(self) -> Iterator[CounterMetricFamily]:
        fast, asyncua = self.counts()
        family = CounterMetricFamily(
            "plantmon_scraper_publish_responses", "OPC UA Publish responses by decoder", labels=["decoder"]
        )
        family.add_metric(["fast"], fast)
        family.add_metric(["asyncua"], asyncua)
        yield family


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
            "plantmon_scraper_dropped",
            "Samples lost: not written and the spool could not take them (a disk error)",
            registry=registry,
        )
        self.spilled = Counter(
            "plantmon_scraper_spilled",
            "Samples sent to the spool because the in-memory queue was full",
            registry=registry,
        )
        self.spooled = Counter(
            "plantmon_scraper_spooled", "Samples written to the on-disk spool (any reason)", registry=registry
        )
        self.replayed = Counter(
            "plantmon_scraper_replayed", "Samples replayed from the spool into the database", registry=registry
        )
        self.spool_dropped = Counter(
            "plantmon_scraper_spool_dropped", "Samples dropped because the spool reached its cap", registry=registry
        )
        self.spool_bytes = Gauge("plantmon_scraper_spool_bytes", "Bytes in the on-disk spool", registry=registry)
        self.spool_max_bytes = Gauge(
            "plantmon_scraper_spool_max_bytes", "Cap of the on-disk spool in bytes", registry=registry
        )
        self.spool_rows = Gauge(
            "plantmon_scraper_spool_rows", "Samples in the spool not yet replayed", registry=registry
        )
        self.backfilled = Counter(
            "plantmon_scraper_backfilled",
            "Samples read back from the server's history after a (re)connect",
            registry=registry,
        )
        self.backfill_errors = Counter(
            "plantmon_scraper_backfill_errors", "Tags whose HistoryRead failed during a backfill", registry=registry
        )
        self.opcua_gaps = Counter(
            "plantmon_scraper_opcua_gaps",
            "Disconnections from the OPC UA server (each a gap in sampling)",
            registry=registry,
        )
        self.opcua_gap_seconds = Counter(
            "plantmon_scraper_opcua_gap_seconds",
            "Seconds without a subscription to the OPC UA server, summed",
            registry=registry,
        )
        self.clock_future = Counter(
            "plantmon_scraper_clock_future",
            "Samples whose source timestamp lies in the future (beyond the tolerance); stored anyway",
            registry=registry,
        )
        self.clock_old = Counter(
            "plantmon_scraper_clock_old",
            "Samples whose source timestamp is implausibly old; stored anyway",
            registry=registry,
        )
        self.maintenance_runs = Counter(
            "plantmon_scraper_maintenance_runs", "Rollup and retention runs (plain PostgreSQL path)", registry=registry
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
            buckets=(1, 10, 50, 100, 500, 1000, 2500, 5000, 10000, 20000, 50000),
            registry=registry,
        )
        self.backlog_batches = Counter(
            "plantmon_scraper_backlog_batches",
            "Batches written larger than batch_size because the queue held more than one batch",
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
