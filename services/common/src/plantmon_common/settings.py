"""The settings base: one pydantic-settings class per service, one env prefix each.

Secrets have no defaults; :func:`require_secret` refuses the placeholder values that
``.env.template`` ships, so a copied template never yields a working password.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDERS = frozenset({"", "changeme", "change-me", "change_me", "password", "admin", "secret"})


class PlaceholderSecretError(ValueError):
    """A secret still holds a placeholder from the template."""


def require_secret(name: str, value: SecretStr | None) -> SecretStr | None:
    """Return ``value`` unless it is a placeholder; ``None`` stays ``None`` (feature off)."""
    if value is None:
        return None
    raw = value.get_secret_value()
    if raw.strip().lower() in PLACEHOLDERS or raw.upper().startswith("CHANGE_ME"):
        raise PlaceholderSecretError(f"{name} is a placeholder ({raw!r}); set a real secret in the environment or .env")
    return value


class ServiceSettings(BaseSettings):
    """What every service has: logging and its HTTP port for ``/health`` and ``/metrics``."""

    # An empty variable means "not set": compose passes every optional setting as ${VAR:-}, and
    # the service's own default must apply then, not a parse error or an empty value.
    # hide_input_in_errors: a refused setting is reported without the values around it (secrets).
    model_config = SettingsConfigDict(
        extra="ignore", env_nested_delimiter="__", env_ignore_empty=True, hide_input_in_errors=True
    )

    log_level: str = Field(default="INFO", description="Python log level")
    log_format: Literal["json", "text"] = Field(default="json", description="json for machines, text for people")
    http_host: str = Field(default="0.0.0.0", description="Address of the /health and /metrics server")
    http_port: int = Field(default=8000, ge=0, le=65535, description="Port of the /health and /metrics server")


class DatabaseSettings(BaseSettings):
    """libpq's own variables (``PGHOST`` ...), so psql and the services read the same ones."""

    model_config = SettingsConfigDict(extra="ignore", env_prefix="PG", hide_input_in_errors=True)

    host: str = "127.0.0.1"
    port: int = 5432
    database: str = "plantmon"
    user: str
    password: SecretStr | None = None
    connect_timeout: int = 5

    def conninfo(self) -> str:
        """A libpq connection string (the password travels as a parameter, never in logs)."""
        from psycopg.conninfo import make_conninfo

        return make_conninfo(
            host=self.host,
            port=self.port,
            dbname=self.database,
            user=self.user,
            password=self.password.get_secret_value() if self.password else None,
            connect_timeout=self.connect_timeout,
            application_name="plantmon",
        )
