"""The Prometheus configuration and rules, checked by promtool, and a real local Prometheus."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from plantmon_dev.procs import free_port
from plantmon_dev.prometheus import (
    LocalPrometheus,
    PrometheusConfigError,
    default_config,
    default_rules_dir,
    promtool_binary,
    promtool_check_config,
    render_local_config,
)
from prometheus_client import CollectorRegistry, Gauge, start_http_server

SERVICE_JOBS = {
    "sensors": "sensors:8080",
    "opc_server": "opc_server:9101",
    "opc_scraper": "opc_scraper:9102",
    "alert_worker": "alert_worker:9103",
}
EXPORTER_JOBS = {
    "node-exporter": "node-exporter:9100",
    "cadvisor": "cadvisor:8080",
    "postgres-exporter": "postgres-exporter:9187",
    "prometheus": "localhost:9090",
}
STACK_ALERTS = {
    "TargetDown",
    "ScraperLagging",
    "ScraperSpoolGrowing",
    "AlertOutboxGrowing",
    "DatabaseDown",
    "DiskFilling",
    "ClockNotSynchronised",
}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(promtool_binary()), *args], capture_output=True, text=True, check=False)


def scrape_configs() -> dict[str, dict[str, Any]]:
    config = yaml.safe_load(default_config().read_text())
    return {job["job_name"]: job for job in config["scrape_configs"]}


# --- the compose configuration ------------------------------------------------------------------


def test_compose_config_passes_promtool_check_config() -> None:
    result = promtool("check", "config", str(default_config()))

    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_config_scrapes_services_every_second_and_exporters_every_15s() -> None:
    jobs = scrape_configs()
    config = yaml.safe_load(default_config().read_text())

    assert set(jobs) == set(SERVICE_JOBS) | set(EXPORTER_JOBS)
    for name, target in {**SERVICE_JOBS, **EXPORTER_JOBS}.items():
        assert [static["targets"] for static in jobs[name]["static_configs"]] == [[target]]
    for name in SERVICE_JOBS:
        assert jobs[name]["scrape_interval"] == "1s"
    for name in EXPORTER_JOBS:
        assert jobs[name].get("scrape_interval", config["global"]["scrape_interval"]) == "15s"
    assert "nginx" not in " ".join(jobs)


def test_stack_rules_pass_promtool_check_rules() -> None:
    result = promtool("check", "rules", str(default_rules_dir() / "stack.yml"))

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(STACK_ALERTS)} rules found" in result.stdout


def test_stack_rules_define_every_stack_alert() -> None:
    groups = yaml.safe_load((default_rules_dir() / "stack.yml").read_text())["groups"]

    assert {rule["alert"] for group in groups for rule in group["rules"]} == STACK_ALERTS


def test_stack_rule_unit_tests_pass() -> None:
    result = promtool("test", "rules", str(default_rules_dir() / "stack_test.yml"))

    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_stack_alert_has_a_rule_unit_test() -> None:
    tests = yaml.safe_load((default_rules_dir() / "stack_test.yml").read_text())["tests"]
    tested = {case["alertname"] for test in tests for case in test["alert_rule_test"] if case["exp_alerts"]}

    assert tested == STACK_ALERTS


# --- the local rendering --------------------------------------------------------------------------


def test_local_config_keeps_given_jobs_with_local_targets_and_drops_the_rest(tmp_path: Path) -> None:
    text = render_local_config({"sensors": "127.0.0.1:18080", "opc_server": "127.0.0.1:19101"}, default_rules_dir())
    config = yaml.safe_load(text)

    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"sensors", "opc_server"}
    assert jobs["sensors"]["static_configs"][0]["targets"] == ["127.0.0.1:18080"]
    assert jobs["sensors"]["scrape_interval"] == "1s"
    assert config["rule_files"] == [str(default_rules_dir().resolve() / "stack.yml")]

    path = tmp_path / "prometheus.yml"
    path.write_text(text)
    promtool_check_config(path)


def test_local_config_refuses_a_job_the_project_does_not_have() -> None:
    with pytest.raises(PrometheusConfigError, match="no scrape job dmz"):
        render_local_config({"dmz": "127.0.0.1:8081"}, default_rules_dir())


def test_local_config_refuses_a_target_that_is_not_host_and_port() -> None:
    with pytest.raises(PrometheusConfigError, match="host:port"):
        render_local_config({"sensors": "http://127.0.0.1:8080/metrics"}, default_rules_dir())


# --- a real Prometheus ----------------------------------------------------------------------------


@pytest.fixture
def metrics_endpoint() -> Iterator[int]:
    """A real /metrics endpoint (prometheus_client) on a free port, with a plantmon metric."""
    registry = CollectorRegistry()
    Gauge("plantmon_scraper_lag_seconds", "Age of the newest written sample", registry=registry).set(0.5)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    yield port
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_local_prometheus_scrapes_a_service_until_it_is_up(metrics_endpoint: int) -> None:
    with LocalPrometheus({"opc_scraper": f"127.0.0.1:{metrics_endpoint}"}) as prometheus:
        prometheus.wait_until_up("opc_scraper", timeout=60)

        lag = prometheus.query('plantmon_scraper_lag_seconds{job="opc_scraper"}')
        assert [float(sample["value"][1]) for sample in lag] == [0.5]
        assert lag[0]["metric"]["tier"] == "service"
        rule_groups = prometheus.rules()
        assert {rule["name"] for group in rule_groups for rule in group["rules"]} == STACK_ALERTS


def test_local_prometheus_reports_a_target_without_a_server_as_down() -> None:
    with LocalPrometheus({"sensors": f"127.0.0.1:{free_port()}"}) as prometheus:
        prometheus.wait_for_scrape("sensors", timeout=30)

        assert prometheus.up()["sensors"] == 0.0


def test_local_prometheus_workdir_is_deleted_after_stop(metrics_endpoint: int) -> None:
    with LocalPrometheus({"sensors": f"127.0.0.1:{metrics_endpoint}"}) as prometheus:
        workdir = prometheus.dir
        assert (workdir / "prometheus.yml").exists()
    assert not workdir.exists()
