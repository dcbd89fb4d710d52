"""Settings of the alert worker: ``ALERTS_*`` variables, plus libpq's ``PG*`` for the database."""

from __future__ import annotations

from pathlib import Path

from plantmon_common.opcua import OpcUaClientSettings
from plantmon_common.settings import DatabaseSettings, ServiceSettings, require_secret
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from plantmon_alerts.rules import DEFAULT_RULES_FILE


class AlertsOpcUaSettings(OpcUaClientSettings):
    """The shared OPC UA client settings with the alert worker's own identity as defaults."""

    cert_dir: Path = Field(default=Path("certs/alerts"), description="Where this client's certificate lives")
    application_uri: str = Field(default="urn:plantmon:alerts", description="ApplicationUri of this client")


def _database_from_env() -> DatabaseSettings:
    return DatabaseSettings()  # type: ignore[call-arg]  # PGUSER and friends come from the environment


class AlertSettings(ServiceSettings):
    """``ALERTS_OPCUA__URL``, ``ALERTS_RULES_FILE``, ``ALERTS_API_TOKEN`` ...; the database from ``PG*``."""

    model_config = SettingsConfigDict(env_prefix="ALERTS_", extra="ignore", env_nested_delimiter="__")

    http_port: int = Field(default=9103, ge=0, le=65535, description="Port of the API, /health and /metrics")
    opcua: AlertsOpcUaSettings = Field(default_factory=AlertsOpcUaSettings, description="The plant's OPC UA server")
    rules_file: Path = Field(default=DEFAULT_RULES_FILE, description="YAML rules file (default: the shipped rules)")
    api_token: SecretStr | None = Field(
        default=None, description="Bearer token that acknowledging alerts requires; unset = acknowledging is off"
    )
    site: str = Field(default="plant", min_length=1, description="Name of this site (in events and /health)")
    queue_size: int = Field(default=10000, ge=1, description="Samples waiting for evaluation before drops")
    tick_interval_s: float = Field(default=1.0, gt=0, description="How often persistence windows are checked")
    db_timeout_s: float = Field(default=5.0, gt=0, description="Wait for a database connection at most this long")
    database: DatabaseSettings = Field(
        default_factory=_database_from_env, exclude=True, description="From PGHOST, PGPORT, PGDATABASE, PGUSER ..."
    )

    @field_validator("api_token")
    @classmethod
    def _no_placeholder(cls, value: SecretStr | None) -> SecretStr | None:
        return require_secret("ALERTS_API_TOKEN", value)
