"""Settings of the OPC UA server (env prefix ``OPC_SERVER_``)."""

from __future__ import annotations

import socket
from pathlib import Path

from plantmon_common.settings import ServiceSettings, require_secret
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict


class OpcServerSettings(ServiceSettings):
    """Where the sensors are, how often to poll them, and who may connect."""

    model_config = SettingsConfigDict(env_prefix="OPC_SERVER_", extra="ignore")

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
    operator_user: str = Field(default="operator", description="Read-only operator account")
    operator_password: SecretStr | None = None
    service_user: str = Field(default="plantmon", description="Account of the scraper and the alert worker")
    service_password: SecretStr | None = None

    @field_validator("operator_password", "service_password")
    @classmethod
    def _no_placeholder(cls, value: SecretStr | None) -> SecretStr | None:
        return require_secret("OPC_SERVER_*_PASSWORD", value)

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
