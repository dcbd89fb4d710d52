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


class ScraperSettings(ServiceSettings):
    """Everything the scraper reads from the environment."""

    model_config = SettingsConfigDict(env_prefix="SCRAPER_", extra="ignore", env_nested_delimiter="__")

    http_port: int = Field(default=9102, ge=0, le=65535, description="Port of /health and /metrics")
    opcua: ScraperOpcUaSettings = Field(default_factory=ScraperOpcUaSettings)
    # PG* as libpq reads them; the scraper connects as plantmon_writer.
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)  # type: ignore[arg-type]
    batch_size: int = Field(default=5000, ge=1, description="Rows per COPY at most")
    batch_age_s: float = Field(default=1.0, gt=0, description="Oldest a sample waits before its batch is written")
    queue_max: int = Field(default=100_000, ge=1, description="Samples held in memory; more are dropped (counted)")
    pool_max_size: int = Field(default=2, ge=1, description="Database connections at most")
    retry_initial_s: float = Field(default=0.2, gt=0, description="First wait after a failed write")
    retry_max_s: float = Field(default=5.0, gt=0, description="Longest wait between write attempts")
    shutdown_flush_s: float = Field(default=10.0, ge=0, description="How long a stop waits to flush the queue")
