"""The sensor service's settings (env prefix ``SENSORS_``)."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from plantmon_common.settings import ServiceSettings, require_secret
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from plantmon_sensors.simulator.faults import parse_fault_spec


class SensorSettings(ServiceSettings):
    """Everything the sensor service reads from the environment."""

    model_config = SettingsConfigDict(env_prefix="SENSORS_", extra="ignore", env_nested_delimiter="__")

    http_port: int = Field(default=8080, ge=0, le=65535, description="Port of the sensor API (with /health, /metrics)")
    mode: Literal["sim", "hardware"] = Field(default="sim", description="sim: the plant simulator; hardware: drivers")
    seed: int = Field(default=42, description="Seed of the simulator's random generators")
    temperature_interval_s: float = Field(default=0.5, gt=0, le=3600, description="Thermocouple sample interval")
    rpm_interval_s: float = Field(default=0.5, gt=0, le=3600, description="Shaft speed sample interval")
    voltage_interval_s: float = Field(default=0.5, gt=0, le=3600, description="Supply voltage sample interval")
    audio_interval_s: float = Field(default=1.0, gt=0, le=3600, description="Audio feature sample interval")
    faults: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Faults active at start (sim): comma separated or a JSON list, e.g. "
        "'overheating,sensor_stopped:rpm'",
    )
    admin_token: SecretStr | None = Field(
        default=None, description="Bearer token of /admin (fault injection); unset disables /admin"
    )

    @field_validator("faults", mode="before")
    @classmethod
    def _split_faults(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("faults")
    @classmethod
    def _known_faults(cls, value: list[str]) -> list[str]:
        for spec in value:
            parse_fault_spec(spec)
        return value

    @field_validator("admin_token")
    @classmethod
    def _no_placeholder(cls, value: SecretStr | None) -> SecretStr | None:
        return require_secret("SENSORS_ADMIN_TOKEN", value)

    def interval_for(self, kind: str) -> float:
        """The sample interval of a sensor kind (``temperature``, ``rpm``, ``voltage``, ``audio``)."""
        value: float = getattr(self, f"{kind}_interval_s")
        return value
