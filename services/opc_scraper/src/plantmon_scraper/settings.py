"""The scraper's settings: ``SCRAPER_*`` (OPC UA nested as ``SCRAPER_OPCUA__*``) plus libpq's ``PG*``."""

from __future__ import annotations

from pathlib import Path

from plantmon_common.opcua import OpcUaClientSettings
from plantmon_common.settings import DatabaseSettings, ServiceSettings
from pydantic import Field
from pydantic_settings import SettingsConfigDict


class ScraperOpcUaSettings(OpcUaClientSettings):
    """The shared OPC UA client settings with the scraper's own identity as defaults."""

    application_uri: str = Field(default="urn:plantmon:scraper", description="ApplicationUri of this client")
    cert_dir: Path = Field(default=Path("certs/scraper"), description="Where this client's certificate lives")
    publish_requests: int = Field(
        default=3,
        ge=1,
        le=10,
        description="Publish requests kept in flight (more than one lets the server send while the client decodes)",
    )


class ScraperSettings(ServiceSettings):
    """Everything the scraper reads from the environment."""

    model_config = SettingsConfigDict(env_prefix="SCRAPER_", extra="ignore", env_nested_delimiter="__")

    http_port: int = Field(default=9102, ge=0, le=65535, description="Port of /health and /metrics")
    opcua: ScraperOpcUaSettings = Field(default_factory=ScraperOpcUaSettings)
    # PG* as libpq reads them; the scraper connects as plantmon_writer.
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)  # type: ignore[arg-type]
    batch_size: int = Field(default=5000, ge=1, description="Rows per COPY at most")
    batch_age_s: float = Field(default=1.0, gt=0, description="Oldest a sample waits before its batch is written")
    batch_max_factor: int = Field(
        default=4,
        ge=1,
        description="With a backlog (queue deeper than a batch), one COPY takes this many batches at most",
    )
    queue_max: int = Field(default=100_000, ge=1, description="Samples held in memory; more spill to the spool")
    pool_max_size: int = Field(default=2, ge=1, description="Database connections at most")
    retry_initial_s: float = Field(default=0.2, gt=0, description="First wait after a failed write")
    retry_max_s: float = Field(default=5.0, gt=0, description="Longest wait between write attempts")
    shutdown_flush_s: float = Field(default=10.0, ge=0, description="How long a stop waits to flush the queue")
    spool_dir: Path = Field(default=Path("spool"), description="Folder of the on-disk spool (database outages)")
    spool_max_bytes: int = Field(
        default=256 * 1024 * 1024, ge=64 * 1024, description="Cap of the spool; beyond it the oldest data is dropped"
    )
    spool_segment_bytes: int = Field(default=8 * 1024 * 1024, ge=4096, description="Size of one spool file")
    backfill: bool = Field(default=True, description="HistoryRead from the last stored time at every (re)connect")
    backfill_max_s: float = Field(
        default=3600.0, gt=0, description="Furthest back a backfill reads when nothing is known about a tag"
    )
    backfill_concurrency: int = Field(default=4, ge=1, description="HistoryRead requests in flight at once")
    clock_future_s: float = Field(default=5.0, gt=0, description="Source timestamps further ahead count as future")
    clock_max_age_s: float = Field(
        default=7 * 86400.0, gt=0, description="Source timestamps older than this count as implausibly old"
    )
    maintenance_interval_s: float = Field(
        default=10.0, gt=0, description="Plain PostgreSQL: how often rollups are refreshed and retention applied"
    )
