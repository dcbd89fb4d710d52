"""Settings of the OPC UA server (env prefix ``OPC_SERVER_``)."""

from __future__ import annotations

import socket
from pathlib import Path

from plantmon_common.settings import ServiceSettings, require_secret
from psycopg.conninfo import make_conninfo
from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict


class HistoryDatabase(BaseModel):
    """The database older history comes from, as ``OPC_SERVER_DB__*`` (the read-only role).

    Nested under the server's own prefix on purpose: libpq's ``PG*`` variables of the
    container are never picked up, so the server cannot end up reading as another role.
    """

    host: str = Field(default="127.0.0.1", description="PostgreSQL host")
    port: int = Field(default=5432, ge=1, le=65535)
    database: str = Field(default="plantmon")
    user: str = Field(default="plantmon_reader", description="Read-only role")
    password: SecretStr | None = None
    timeout_s: float = Field(default=3.0, gt=0, description="Connect and query timeout of one history read")

    @field_validator("password")
    @classmethod
    def _no_placeholder(cls, value: SecretStr | None) -> SecretStr | None:
        return require_secret("OPC_SERVER_DB__PASSWORD", value)

    def conninfo(self) -> str:
        return make_conninfo(
            host=self.host,
            port=self.port,
            dbname=self.database,
            user=self.user,
            password=self.password.get_secret_value() if self.password else None,
            connect_timeout=max(1, round(self.timeout_s)),
            application_name="plantmon-opc-server-history",
        )


class OpcServerSettings(ServiceSettings):
    """Where the sensors are, how often to poll them, and who may connect."""

    model_config = SettingsConfigDict(env_prefix="OPC_SERVER_", extra="ignore", env_nested_delimiter="__")

    http_port: int = Field(default=9101, ge=0, le=65535)
    sensors_url: str = Field(default="http://127.0.0.1:8081", description="Sensor API, through the nginx DMZ")
    poll_interval_s: float = Field(default=1.0, gt=0, description="How often every tag is polled")
    poll_timeout_s: float = Field(default=2.0, gt=0, description="Timeout of one poll request")
    stale_after_polls: int = Field(default=3, ge=1, description="Polls without a new observation before Uncertain")
    endpoint: str = Field(default="opc.tcp://0.0.0.0:4840/freeopcua/server/", description="Endpoint to listen on")
    public_hostname: str = Field(
        default_factory=socket.gethostname, description="Host name clients use (the Pi's); in the certificate"
    )
    namespace_uri: str = Field(default="urn:plantmon:plant", description="Namespace of the Plant nodes")
    dev_mode: bool = Field(default=False, description="Also offer SecurityPolicy None and anonymous access")
    cert_dir: Path = Field(default=Path("certs/server"), description="Server certificate and key (generated once)")
    history_window_s: float = Field(default=900.0, gt=0, description="Recent history kept in memory per tag")
    history_max_values_per_read: int = Field(
        default=10000, ge=1, description="Values per node in one HistoryRead answer before a continuation point"
    )
    db: HistoryDatabase | None = Field(
        default=None, description="Database of older history (OPC_SERVER_DB__HOST ...); none = recent window only"
    )
    trusted_client_certs_dir: Path | None = Field(
        default=None,
        description="Folder of trusted client certificates (*.der, *.pem); when set, other clients are refused",
    )
    sensors_ca_file: Path | None = Field(
        default=None, description="CA certificate (PEM) that signed the DMZ's TLS certificate, for an https:// URL"
    )
    operator_user: str = Field(default="operator", description="Read-only operator account")
    operator_password: SecretStr | None = None
    service_user: str = Field(default="plantmon", description="Account of the scraper and the alert worker")
    service_password: SecretStr | None = None

    @field_validator("operator_password", "service_password")
    @classmethod
    def _no_placeholder(cls, value: SecretStr | None) -> SecretStr | None:
        return require_secret("OPC_SERVER_*_PASSWORD", value)

    @field_validator("trusted_client_certs_dir", "sensors_ca_file", "db", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # ``NAME=`` in an env file means "not set", never the current folder.
        return None if value == "" else value

    @model_validator(mode="after")
    def _secure_needs_users(self) -> OpcServerSettings:
        if not self.dev_mode and not (self.operator_password or self.service_password):
            raise ValueError(
                "no OPC UA user has a password: set OPC_SERVER_SERVICE_PASSWORD (and OPC_SERVER_OPERATOR_PASSWORD), "
                "or OPC_SERVER_DEV_MODE=true for an insecure development server"
            )
        return self

    @property
    def application_uri(self) -> str:
        return f"urn:{self.public_hostname}:plantmon:opc-server"

    def users(self) -> dict[str, str]:
        """username -> password for every configured account."""
        accounts = {}
        if self.operator_password:
            accounts[self.operator_user] = self.operator_password.get_secret_value()
        if self.service_password:
            accounts[self.service_user] = self.service_password.get_secret_value()
        return accounts
