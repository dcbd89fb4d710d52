"""What an OPC UA client service connects to and as whom (nested in each service's settings)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr

__all__ = ["OpcUaClientSettings", "SecurityMode"]

SecurityMode = Literal["SignAndEncrypt", "Sign", "None"]


class OpcUaClientSettings(BaseModel):
    """How a service connects to the plant's OPC UA server (nested in its own settings)."""

    url: str = Field(default="opc.tcp://127.0.0.1:4840/freeopcua/server/", description="Endpoint URL")
    security: SecurityMode = Field(default="SignAndEncrypt", description="Message security mode")
    username: str | None = Field(default=None, description="OPC UA user (service account)")
    password: SecretStr | None = Field(default=None, description="Password of that user")
    cert_dir: Path = Field(default=Path("certs/client"), description="Where this client's certificate lives")
    application_uri: str = Field(default="urn:plantmon:client", description="ApplicationUri of this client")
    hostname: str = Field(default_factory=socket.gethostname, description="Host name in the certificate")
    timeout_s: float = Field(default=10.0, gt=0, description="Per-request timeout")
    publishing_interval_ms: float = Field(default=250.0, gt=0, description="Subscription publishing interval")
    sampling_interval_ms: float = Field(default=0.0, ge=0, description="0 = as fast as the server changes")
    queue_size: int = Field(default=100, ge=1, description="Server-side queue per monitored item")
    deadband_abs: float | None = Field(default=None, ge=0, description="Optional absolute deadband")
    publish_requests: int = Field(
        default=1,
        ge=1,
        le=10,
        description="Publish requests kept in flight (more than one lets the server send while the client decodes)",
    )
    reconnect_initial_s: float = Field(default=0.5, gt=0)
    reconnect_max_s: float = Field(default=10.0, gt=0)
    rebrowse_interval_s: float = Field(default=10.0, gt=0, description="How often new tags are looked for")
    watchdog_interval_s: float = Field(default=1.0, gt=0, description="How often the connection is probed")
