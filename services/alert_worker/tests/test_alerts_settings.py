"""Settings: the ALERTS_ prefix, nested OPC UA variables, PG* for the database, refused placeholders."""

from __future__ import annotations

from pathlib import Path

import pytest
from plantmon_alerts.rules import DEFAULT_RULES_FILE
from plantmon_alerts.settings import AlertSettings
from plantmon_common.settings import PlaceholderSecretError
from pydantic import ValidationError


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ALERTS_API_TOKEN", "ALERTS_RULES_FILE", "ALERTS_OPCUA__URL", "ALERTS_HTTP_PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PGHOST", "db.example")
    monkeypatch.setenv("PGUSER", "plantmon_alerts")


def test_defaults_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALERTS_OPCUA__URL", "opc.tcp://opc:4840/freeopcua/server/")
    monkeypatch.setenv("ALERTS_OPCUA__USERNAME", "alerts")
    monkeypatch.setenv("ALERTS_OPCUA__PASSWORD", "a-real-password")
    monkeypatch.setenv("ALERTS_OPCUA__CERT_DIR", "/certs/alerts")
    monkeypatch.setenv("ALERTS_API_TOKEN", "a-real-token")
    settings = AlertSettings()
    assert settings.http_port == 9103 and settings.site == "plant"
    assert settings.rules_file == DEFAULT_RULES_FILE and DEFAULT_RULES_FILE.is_file()
    assert settings.opcua.url == "opc.tcp://opc:4840/freeopcua/server/"
    assert settings.opcua.application_uri == "urn:plantmon:alerts"
    assert settings.opcua.cert_dir == Path("/certs/alerts")
    assert settings.opcua.password is not None and settings.opcua.password.get_secret_value() == "a-real-password"
    assert settings.api_token is not None and settings.api_token.get_secret_value() == "a-real-token"
    assert (settings.database.host, settings.database.user) == ("db.example", "plantmon_alerts")


def test_a_placeholder_api_token_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALERTS_API_TOKEN", "changeme")
    with pytest.raises((ValidationError, PlaceholderSecretError), match="ALERTS_API_TOKEN"):
        AlertSettings()
