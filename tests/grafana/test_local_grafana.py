"""The local run's Grafana configuration (``plantmon_dev.grafana``), rendered without the binary:
the project's provisioning with local addresses, its own port and folders, anonymous access off,
the admin password from the stack's secrets; and a clear message when Grafana is not installed."""

from __future__ import annotations

import configparser
import json
from pathlib import Path

import pytest
import yaml
from plantmon_dev.grafana import (
    HOW_TO_INSTALL,
    GrafanaNotInstalled,
    LocalGrafana,
    default_dashboards,
    default_provisioning,
    grafana_command,
)
from plantmon_dev.stack import Ports, Stack


def local(tmp_path: Path) -> LocalGrafana:
    return LocalGrafana(
        workdir=tmp_path / "grafana",
        admin_password="admin-secret-x1",
        postgres="127.0.0.1:55432",
        reader_password="reader-secret-x2",
        prometheus_url="http://127.0.0.1:9190",
        alerts_url="http://127.0.0.1:9103",
        port=3300,
    )


def test_ini_has_its_own_port_and_folders_and_no_anonymous_access(tmp_path: Path) -> None:
    grafana = local(tmp_path)
    ini = configparser.ConfigParser()
    ini.read(grafana.write_config())
    assert ini["server"]["http_port"] == "3300" and ini["server"]["http_addr"] == "127.0.0.1"
    assert ini["auth.anonymous"]["enabled"] == "false"
    assert ini["analytics"]["reporting_enabled"] == "false"
    for key in ("data", "logs", "plugins", "provisioning"):
        assert Path(ini["paths"][key]).is_dir() and Path(ini["paths"][key]).is_relative_to(grafana.workdir), key
    assert "admin-secret" not in grafana.ini_path.read_text(), "the password goes through the environment"
    environment = grafana.environment()
    assert environment["GF_SECURITY_ADMIN_PASSWORD"] == "admin-secret-x1"
    assert environment["GF_AUTH_ANONYMOUS_ENABLED"] == "false"


def test_datasources_point_at_the_local_services_and_keep_the_password_in_the_environment(tmp_path: Path) -> None:
    grafana = local(tmp_path)
    grafana.write_config()
    (rendered,) = (grafana.workdir / "provisioning" / "datasources").glob("*.yaml")
    (source,) = (default_provisioning() / "datasources").glob("*.yaml")
    local_sources = {ds["uid"]: ds for ds in yaml.safe_load(rendered.read_text())["datasources"]}
    project_sources = {ds["uid"]: ds for ds in yaml.safe_load(source.read_text())["datasources"]}
    assert set(local_sources) == set(project_sources)
    postgres, prometheus = local_sources["plantmon-timescaledb"], local_sources["plantmon-prometheus"]
    assert postgres["url"] == "127.0.0.1:55432" and prometheus["url"] == "http://127.0.0.1:9190"
    assert postgres["user"] == "plantmon_reader" and postgres["jsonData"]["timescaledb"] is True
    assert postgres["secureJsonData"]["password"] == "$DB_READER_PASSWORD"
    assert postgres["jsonData"]["database"] == "$PGDATABASE"
    assert {"DB_READER_PASSWORD": "reader-secret-x2", "PGDATABASE": "plantmon"}.items() <= grafana.environment().items()
    for uid, datasource in local_sources.items():  # nothing but the addresses differs
        assert {k: v for k, v in datasource.items() if k != "url"} == {
            k: v for k, v in project_sources[uid].items() if k != "url"
        }


def test_every_project_dashboard_is_provisioned_with_the_local_alert_worker_address(tmp_path: Path) -> None:
    grafana = local(tmp_path)
    grafana.write_config()
    (provider_file,) = (grafana.workdir / "provisioning" / "dashboards").glob("*.yaml")
    (provider,) = yaml.safe_load(provider_file.read_text())["providers"]
    folder = Path(provider["options"]["path"])
    assert folder == grafana.workdir / "dashboards"
    assert sorted(p.name for p in folder.glob("*.json")) == sorted(p.name for p in default_dashboards().glob("*.json"))
    for path in folder.glob("*.json"):
        board = json.loads(path.read_text())
        original = json.loads((default_dashboards() / path.name).read_text())
        assert board["panels"] == original["panels"]
        for variable in board["templating"]["list"]:
            if variable["name"] == "alerts_url":
                assert variable["query"] == variable["current"]["value"] == "http://127.0.0.1:9103"


def without_grafana(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("GRAFANA_BIN", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))


def test_a_missing_grafana_binary_says_how_to_get_one(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    without_grafana(monkeypatch, tmp_path)
    with pytest.raises(GrafanaNotInstalled) as raised:
        grafana_command()
    assert str(raised.value) == HOW_TO_INSTALL
    assert "https://apt.grafana.com" in HOW_TO_INSTALL and "GRAFANA_BIN" in HOW_TO_INSTALL


def test_the_stack_runs_without_grafana_when_it_is_missing_and_says_why(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    without_grafana(monkeypatch, tmp_path)
    stack = Stack(tmp_path / "data", ports=Ports.free())
    assert stack.grafana_wanted() is False
    assert stack.grafana_missing == HOW_TO_INSTALL
    assert HOW_TO_INSTALL in stack.banner()
    assert stack.secrets["GF_SECURITY_ADMIN_PASSWORD"], "a generated admin password in secrets.env"
    assert "GF_SECURITY_ADMIN_PASSWORD=" in (tmp_path / "data" / "secrets.env").read_text()
    insisting = Stack(tmp_path / "data", ports=Ports.free(), with_grafana=True)
    with pytest.raises(RuntimeError, match="Grafana is not installed"):
        insisting.grafana_wanted()


def test_the_stack_points_its_grafana_at_its_own_ports(tmp_path: Path) -> None:
    stack = Stack(tmp_path / "data", ports=Ports.free())
    grafana = stack.local_grafana()
    assert grafana.port == stack.ports.grafana
    assert grafana.postgres == f"127.0.0.1:{stack.ports.postgres}"
    assert grafana.prometheus_url == f"http://127.0.0.1:{stack.ports.prometheus}"
    assert grafana.alerts_url == f"http://127.0.0.1:{stack.ports.alerts_http}"
    assert grafana.admin_password == stack.secrets["GF_SECURITY_ADMIN_PASSWORD"]
    assert grafana.workdir == stack.data_dir / "grafana"
