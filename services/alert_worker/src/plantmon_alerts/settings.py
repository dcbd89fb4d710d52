"""Settings of the alert worker: ``ALERTS_*`` variables, plus libpq's ``PG*`` for the database."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from azure.eventhub import parse_connection_string
from plantmon_common.opcua import OpcUaClientSettings
from plantmon_common.settings import DatabaseSettings, ServiceSettings, require_secret
from pydantic import Field, SecretStr, field_validator, model_validator
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

    # -- durable state, retention ------------------------------------------------------------
    state_dir: Path = Field(
        default=Path("alerts-state"),
        description="Local folder of the durable outbox and the open alerts (SQLite); survives restarts",
    )
    retention_days: int = Field(
        default=2557, ge=1, description="Cleared alerts older than this many days are deleted (default 7 years)"
    )
    maintenance_interval_s: float = Field(default=3600.0, gt=0, description="How often old alerts are deleted")

    # -- Azure Event Hubs ---------------------------------------------------------------------
    eventhub_connection_string: SecretStr | None = Field(
        default=None, description="Event Hubs connection string; unset or empty = delivery off"
    )
    eventhub_name: str | None = Field(default=None, description="Event hub name when the string has no EntityPath")
    eventhub_min_severity: int = Field(default=3, ge=1, le=5, description="Publish transitions of this severity up")
    eventhub_transport: Literal["amqp", "websockets"] = Field(
        default="amqp", description="amqp (port 5671) or websockets (AMQP over WebSockets, port 443)"
    )
    eventhub_http_proxy: str | None = Field(
        default=None, description="http://[user:password@]host:port; implies websockets"
    )
    eventhub_custom_endpoint: str | None = Field(
        default=None, description="sb://host:port to connect to instead of the namespace (a relay in front of it)"
    )
    eventhub_retry_total: int = Field(default=1, ge=0, le=10, description="SDK retries inside one send")
    eventhub_retry_backoff_s: float = Field(default=0.2, ge=0, description="SDK retry backoff factor")
    eventhub_retry_backoff_max_s: float = Field(default=2.0, ge=0, description="SDK retry backoff ceiling")
    eventhub_send_timeout_s: float = Field(
        default=10.0, gt=0, description="Bound on one delivery round (connect included); then retry later"
    )
    eventhub_backoff_max_s: float = Field(default=10.0, gt=0, description="Longest wait between delivery rounds")

    # -- operator page ------------------------------------------------------------------------
    session_max_age_s: int = Field(default=8 * 3600, ge=60, description="Operator page sign-in lifetime")

    @field_validator("eventhub_connection_string", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("eventhub_http_proxy", "eventhub_name", "eventhub_custom_endpoint", mode="before")
    @classmethod
    def _empty_text_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("api_token")
    @classmethod
    def _no_placeholder(cls, value: SecretStr | None) -> SecretStr | None:
        return require_secret("ALERTS_API_TOKEN", value)

    @field_validator("eventhub_connection_string")
    @classmethod
    def _no_placeholder_connection(cls, value: SecretStr | None) -> SecretStr | None:
        return require_secret("ALERTS_EVENTHUB_CONNECTION_STRING", value)

    @model_validator(mode="after")
    def _connection_string_is_complete(self) -> AlertSettings:
        if self.eventhub_connection_string is not None:
            # The SDK's own parser: what it accepts is what EventHubProducerClient will connect with.
            try:
                parsed = parse_connection_string(self.eventhub_connection_string.get_secret_value())
            except ValueError as exc:  # its messages name the format, never the key
                raise ValueError(f"ALERTS_EVENTHUB_CONNECTION_STRING: {exc}") from None
            if not (parsed.eventhub_name or self.eventhub_name):
                raise ValueError("ALERTS_EVENTHUB_CONNECTION_STRING lacks EntityPath (or set ALERTS_EVENTHUB_NAME)")
        return self

    @model_validator(mode="after")
    def _proxy_is_a_url(self) -> AlertSettings:
        if self.eventhub_http_proxy is not None:
            from plantmon_alerts.delivery.eventhub import proxy_settings

            proxy_settings(self.eventhub_http_proxy)  # raises ValueError with the reason
        return self
