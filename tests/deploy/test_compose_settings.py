"""What ``.env`` says reaches the services: every setting ``.env.template`` documents for a
service is passed to its container by docker-compose.yaml, and the environment docker-compose
resolves is read by the service's own settings class (an optional setting left empty gives the
service's default; one set in ``.env`` gives that value)."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from plantmon_alerts.settings import AlertSettings
from plantmon_opc_server.settings import OpcServerSettings
from plantmon_scraper.settings import ScraperSettings
from plantmon_sensors.settings import SensorSettings

from tests.deploy.deploy_files import ENV_TEMPLATE, env_file_text, run_compose, template_values

Resolve = Callable[..., dict[str, Any]]

SERVICE_OF_PREFIX = {
    "SENSORS_": "sensors",
    "OPC_SERVER_": "opc_server",
    "SCRAPER_": "opc_scraper",
    "ALERTS_": "alert_worker",
}
SETTINGS_OF_SERVICE: dict[str, type[Any]] = {
    "sensors": SensorSettings,
    "opc_server": OpcServerSettings,
    "opc_scraper": ScraperSettings,
    "alert_worker": AlertSettings,
}
# Documented in .env.template under a service's prefix but, on purpose, not that container's setting.
NOT_PASSED = {
    "SENSORS_UPSTREAM": "nginx's upstream address of the sensor API, passed to nginx",
    "SENSORS_STATE_DIR": "the image's own folder; the local run (./task up) uses it",
    "SENSORS_NUMBA_CACHE_DIR": "compose sets NUMBA_CACHE_DIR to the numba-cache volume instead",
}


def documented() -> dict[str, str]:
    """Every ``PREFIX_NAME`` of ``.env.template``, commented or not, with its service."""
    names: dict[str, str] = {}
    for line in ENV_TEMPLATE.read_text(encoding="utf-8").splitlines():
        match = re.match(r"#?\s*([A-Z][A-Z0-9_]*)=", line)
        if match is None:
            continue
        name = match.group(1)
        for prefix, service in SERVICE_OF_PREFIX.items():
            if name.startswith(prefix):
                names[name] = service
    return names


def test_the_template_documents_settings_of_every_service() -> None:
    assert set(documented().values()) == set(SERVICE_OF_PREFIX.values())
    assert set(NOT_PASSED) <= set(documented())


def test_every_documented_setting_reaches_its_container(resolve: Resolve) -> None:
    services = resolve("base", "fullstack")["services"]
    missing = [
        f"{name} -> {service}"
        for name, service in sorted(documented().items())
        if name not in NOT_PASSED and name not in services[service].get("environment", {})
    ]
    assert not missing, f"documented in .env.template but not passed by docker-compose.yaml: {missing}"


@pytest.fixture
def container_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[dict[str, Any]], None]]:
    """Replace the process environment by a container's resolved one (nothing of the host's leaks in)."""

    def use(environment: dict[str, Any]) -> None:
        for name in list(os.environ):
            monkeypatch.delenv(name)
        for name, value in environment.items():
            monkeypatch.setenv(name, "" if value is None else str(value))

    yield use


@pytest.mark.parametrize("service", sorted(SETTINGS_OF_SERVICE))
def test_each_service_reads_its_resolved_environment_with_defaults_for_empty_settings(
    resolve: Resolve, container_env: Callable[[dict[str, Any]], None], service: str
) -> None:
    environment = resolve("base", "fullstack")["services"][service]["environment"]
    assert any(value in ("", None) for value in environment.values())  # the optional ones are empty
    container_env(environment)
    settings = SETTINGS_OF_SERVICE[service]()
    if service == "sensors":
        assert settings.adc.divider_ratio == 9.333 and settings.drivers == {} and settings.audio.device is None
    if service == "opc_scraper":
        assert settings.opcua.deadband_abs is None and settings.backfill is True
    if service == "opc_server":
        assert settings.trusted_client_certs_dir is None and settings.history_window_s == 900
    if service == "alert_worker":
        assert settings.eventhub_connection_string is None and settings.retention_days == 2557
        assert settings.rules_file.is_file()  # the shipped rules, not Path("") from an empty variable


def test_a_setting_set_in_env_reaches_the_service(
    docker_compose: str, tmp_path: Path, container_env: Callable[[dict[str, Any]], None]
) -> None:
    values = template_values() | {
        "SENSORS_ADC__DIVIDER_RATIO": "5.5",
        "SENSORS_DRIVERS": "audio=sim",
        "SENSORS_THERMOCOUPLE__CHIP_SELECT": '{"temperature_upper": 1, "temperature_lower": 0}',
        "OPC_SERVER_HISTORY_WINDOW_S": "600",
        "SCRAPER_OPCUA__DEADBAND_ABS": "0.5",
        "ALERTS_RETENTION_DAYS": "30",
    }
    env_file = tmp_path / "custom.env"
    env_file.write_text(env_file_text(values), encoding="utf-8")
    result = run_compose(docker_compose, env_file, (), "fullstack", "config")
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    container_env(services["sensors"]["environment"])
    sensors = SensorSettings()
    assert sensors.adc.divider_ratio == 5.5 and sensors.drivers == {"audio": "sim"}
    assert sensors.thermocouple.chip_select == {"temperature_upper": 1, "temperature_lower": 0}
    container_env(services["opc_server"]["environment"])
    assert OpcServerSettings().history_window_s == 600
    container_env(services["opc_scraper"]["environment"])
    assert ScraperSettings().opcua.deadband_abs == 0.5
    container_env(services["alert_worker"]["environment"])
    assert AlertSettings().retention_days == 30
