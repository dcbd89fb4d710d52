"""docker-compose 1.29 resolves the stack for every profile and override, and the resolved stack
keeps the deployment's promises: profiles, health-gated start order, the DMZ networks, published
entry points only, pinned images, named volumes, rotated logs and the Pi's devices."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.deploy_files import (
    BASE,
    EXPECTED_PROFILES,
    JOBS,
    OVERRIDES,
    PI,
    PROFILES,
    REPO,
    SIM,
    run_compose,
    template_values,
)

Resolve = Callable[..., dict[str, Any]]

REQUIRED_SECRETS = sorted(set(re.findall(r"\$\{(\w+):\?", BASE.read_text(encoding="utf-8"))))


def active(config: dict[str, Any], profile: str) -> set[str]:
    """Services that `--profile <profile>` starts (docker-compose 1.29's `config` lists them all)."""
    return {name for name, svc in config["services"].items() if profile in svc.get("profiles", [])}


def port_mapping(port: str | dict[str, Any]) -> tuple[str, int, int]:
    """``(host address, published, target)`` of a port in either form docker-compose 1.29 prints."""
    if isinstance(port, dict):
        return str(port.get("host_ip", "0.0.0.0")), int(port["published"]), int(port["target"])
    parts = port.split("/")[0].split(":")
    host_ip = parts[0] if len(parts) == 3 else "0.0.0.0"
    return host_ip, int(parts[-2]), int(parts[-1])


def networks_of(service: dict[str, Any]) -> set[str]:
    return set(service.get("networks", {}))


@pytest.mark.parametrize("override", sorted(OVERRIDES))
@pytest.mark.parametrize("profile", PROFILES)
def test_compose_config_resolves_for_every_profile_and_override(resolve: Resolve, profile: str, override: str) -> None:
    config = resolve(override, profile)
    assert active(config, profile) == EXPECTED_PROFILES[profile]


@pytest.mark.parametrize("secret", REQUIRED_SECRETS)
def test_compose_refuses_to_resolve_without_a_required_secret(docker_compose: str, tmp_path: Path, secret: str) -> None:
    values = {name: value for name, value in template_values().items() if name != secret}
    env_file = tmp_path / "missing.env"
    env_file.write_text("\n".join(f"{k}={'x-' + v if 'CHANGE_ME' in v else v}" for k, v in values.items()) + "\n")
    result = run_compose(docker_compose, env_file, (), "fullstack", "config", "-q")
    assert result.returncode != 0
    assert f"Set {secret} in .env" in result.stderr


def test_required_secrets_cover_every_password_and_token() -> None:
    secrets = {name for name in template_values() if name.endswith(("_PASSWORD", "_TOKEN"))}
    assert secrets <= set(REQUIRED_SECRETS) | {"PGPASSWORD"}
    assert {"POSTGRES_PASSWORD", "GF_SECURITY_ADMIN_PASSWORD", "OPC_SERVER_SERVICE_PASSWORD"} <= set(REQUIRED_SECRETS)


@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_starts_what_its_services_depend_on(resolve: Resolve, profile: str) -> None:
    config = resolve("base", profile)
    running = active(config, profile)
    for name in running:
        needed = set(config["services"][name].get("depends_on", {}))
        assert needed <= running, f"{name} in profile {profile} needs {needed - running}"


def test_every_long_running_service_has_a_healthcheck_a_restart_policy_and_rotated_logs(resolve: Resolve) -> None:
    for name, svc in resolve()["services"].items():
        assert svc["logging"]["driver"] == "json-file", name
        assert {"max-size", "max-file"} <= set(svc["logging"]["options"]), name
        if name in JOBS:
            assert svc["restart"] == "no", name
            continue
        assert svc["restart"] == "unless-stopped", name
        assert svc["healthcheck"]["test"], name
        assert not svc["healthcheck"].get("disable", False), name


def test_start_waits_for_healthy_dependencies_and_a_completed_migration(resolve: Resolve) -> None:
    services = resolve()["services"]
    for name, svc in services.items():
        for dependency, rule in svc.get("depends_on", {}).items():
            expected = "service_completed_successfully" if dependency in JOBS else "service_healthy"
            assert rule["condition"] == expected, f"{name} -> {dependency}"
    for writer in ("opc_scraper", "alert_worker", "grafana"):
        assert services[writer]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["migrate"]["depends_on"]["db"]["condition"] == "service_healthy"


def test_only_the_entry_points_publish_ports(resolve: Resolve) -> None:
    published = {
        (name, *port_mapping(port)) for name, svc in resolve()["services"].items() for port in svc.get("ports", [])
    }
    assert published == {
        ("opc_server", "0.0.0.0", 4840, 4840),
        ("grafana", "0.0.0.0", 3000, 3000),
        ("prometheus", "127.0.0.1", 9090, 9090),
        ("alert_worker", "0.0.0.0", 9103, 9103),
    }


def test_the_dmz_networks_keep_the_opc_server_away_from_the_sensors(resolve: Resolve) -> None:
    config = resolve()
    services = config["services"]
    on = {net: {n for n, svc in services.items() if net in networks_of(svc)} for net in config["networks"]}
    assert networks_of(services["sensors"]) == {"sensors_net"}
    assert on["sensors_net"] == {"sensors", "nginx", "prometheus"}
    assert on["dmz_net"] == {"nginx", "opc_server"}
    assert "sensors_net" not in networks_of(services["opc_server"])
    assert {"opc_server", "opc_scraper", "alert_worker", "db", "grafana", "prometheus"} <= on["backend"]
    assert {"prometheus", "opc_server", "opc_scraper", "alert_worker"} <= on["monitoring"]
    for internal in ("sensors_net", "dmz_net", "monitoring"):
        assert config["networks"][internal].get("internal") is True, internal
    assert services["opc_server"]["environment"]["OPC_SERVER_SENSORS_URL"] == "http://nginx:8081"


def test_the_dmz_template_is_rendered_into_nginx_conf_by_the_official_entrypoint(resolve: Resolve) -> None:
    nginx = resolve()["services"]["nginx"]
    assert nginx["image"].startswith("nginx:") and nginx["image"].endswith("-alpine")
    assert nginx["environment"]["NGINX_ENVSUBST_OUTPUT_DIR"] == "/etc/nginx"
    mounts = {volume.split(":")[1]: volume.split(":")[0] for volume in nginx["volumes"]}
    assert mounts["/etc/nginx/templates/nginx.conf.template"] == str(REPO / "nginx" / "dmz.conf.template")
    assert nginx["environment"]["DMZ_LISTEN"].endswith(":8081")
    template = REPO / "nginx" / "dmz.conf.template"
    placeholders = set(re.findall(r"\$\{(\w+)\}", template.read_text(encoding="utf-8")))
    assert placeholders <= set(nginx["environment"]), "template values nginx's environment does not define"


def test_images_are_pinned_and_plantmon_images_are_built_here(resolve: Resolve) -> None:
    for name, svc in resolve()["services"].items():
        image = svc["image"]
        tag = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else ""
        if "build" in svc:
            assert image.startswith("plantmon/"), name
            assert Path(svc["build"]["context"]) == REPO, name
            assert (REPO / svc["build"]["dockerfile"]).is_file(), name
            continue
        assert tag and tag != "latest" and re.search(r"\d+\.\d+", tag), f"{name}: {image} is not pinned"


def test_state_lives_in_named_volumes(resolve: Resolve) -> None:
    config = resolve()
    mounts = {
        name: {v.split(":")[0]: v.split(":")[1] for v in svc.get("volumes", [])}
        for name, svc in config["services"].items()
    }
    expected = {
        "db": ("db-data", "/var/lib/postgresql/data"),
        "grafana": ("grafana-data", "/var/lib/grafana"),
        "prometheus": ("prometheus-data", "/prometheus"),
        "opc_server": ("pki-server", "/var/lib/plantmon/pki/server"),
        "opc_scraper": ("pki-scraper", "/var/lib/plantmon/pki/scraper"),
        "alert_worker": ("pki-alerts", "/var/lib/plantmon/pki/alerts"),
        "sensors": ("numba-cache", "/var/cache/plantmon/numba"),
    }
    for service, (volume, target) in expected.items():
        assert mounts[service][volume] == target, service
    assert mounts["opc_scraper"]["scraper-spool"] == "/var/lib/plantmon/spool"
    assert mounts["alert_worker"]["alerts-state"] == "/var/lib/plantmon/alerts"
    declared = set(config["volumes"])
    assert {"db-data", "grafana-data", "prometheus-data", "scraper-spool", "alerts-state", "numba-cache"} <= declared
    assert config["services"]["sensors"]["environment"]["NUMBA_CACHE_DIR"] == "/var/cache/plantmon/numba"


def test_prometheus_bounds_its_disk_use(resolve: Resolve) -> None:
    command = resolve()["services"]["prometheus"]["command"]
    assert any(re.fullmatch(r"--storage\.tsdb\.retention\.size=\d+[KMGT]?B", arg) for arg in command), command


def test_services_connect_to_the_database_as_their_own_roles(resolve: Resolve) -> None:
    services = resolve()["services"]
    assert services["migrate"]["environment"]["PGUSER"] == "postgres"
    assert services["opc_scraper"]["environment"]["PGUSER"] == "plantmon_writer"
    assert services["alert_worker"]["environment"]["PGUSER"] == "plantmon_alerts"
    assert services["postgres-exporter"]["environment"]["DATA_SOURCE_USER"] == "plantmon_reader"
    values = template_values()
    assert values["DB_WRITER_PASSWORD"] != values["DB_ALERTS_PASSWORD"]


def test_the_base_file_maps_no_devices_and_the_sim_override_runs_the_simulator(resolve: Resolve) -> None:
    for override in ("base", "sim"):
        sensors = resolve(override)["services"]["sensors"]
        assert "devices" not in sensors and "group_add" not in sensors, override
    assert resolve("sim")["services"]["sensors"]["environment"]["SENSORS_MODE"] == "sim"
    devices = [svc.get("devices", []) for name, svc in resolve()["services"].items() if name != "cadvisor"]
    assert devices == [[] for _ in devices], "only the Pi override maps hardware devices"


def test_the_pi_override_maps_the_sensor_devices_with_lgpio(resolve: Resolve) -> None:
    sensors = resolve("pi")["services"]["sensors"]
    mapped = {device.split(":")[0] for device in sensors["devices"]}
    assert {"/dev/spidev0.0", "/dev/spidev0.1", "/dev/gpiochip0", "/dev/i2c-1", "/dev/snd"} <= mapped
    assert all(str(gid).isdigit() for gid in sensors["group_add"]), "numeric gids resolve without /etc/group"
    assert sensors["environment"]["GPIOZERO_PIN_FACTORY"] == "lgpio"
    assert sensors["environment"]["SENSORS_MODE"] == "hardware"
    others = [name for name, svc in resolve("pi")["services"].items() if svc.get("devices") and name != "cadvisor"]
    assert others == ["sensors"]


@pytest.mark.parametrize("path", [BASE, SIM, PI], ids=lambda p: p.name)
def test_compose_files_avoid_syntax_docker_compose_1_29_does_not_know(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert not re.search(r"^[^#\n]*!(reset|override)\b", text, re.MULTILINE), "Compose v2 only tags"
    assert not re.search(r"^(name|include):", text, re.MULTILINE)


def test_prometheus_reaches_every_target_of_its_scrape_configuration(resolve: Resolve) -> None:
    config_file = REPO / "prometheus" / "prometheus.yml"
    scrape = yaml.safe_load(config_file.read_text(encoding="utf-8"))
    services = resolve()["services"]
    prometheus_nets = networks_of(services["prometheus"])
    mounts = {v.split(":")[1]: v.split(":")[0] for v in services["prometheus"]["volumes"]}
    assert mounts["/etc/prometheus"] == str(REPO / "prometheus")
    for job in scrape["scrape_configs"]:
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, port = target.rsplit(":", 1)
                if host == "localhost":
                    continue
                assert host in services, f"{job['job_name']}: no service {host}"
                shared = networks_of(services[host]) & prometheus_nets
                assert shared, f"{job['job_name']}: prometheus shares no network with {host}"
                http_ports = {
                    f"{prefix}_HTTP_PORT": value
                    for prefix in ("SENSORS", "OPC_SERVER", "SCRAPER", "ALERTS")
                    for name, value in services[host].get("environment", {}).items()
                    if name == f"{prefix}_HTTP_PORT"
                }
                for value in http_ports.values():
                    assert str(value) == port, f"{job['job_name']}: {host} serves {value}, scraped on {port}"


def test_dmz_subnet_lies_outside_dockers_default_address_pools() -> None:
    """The engine gives the stack's other networks ranges from its default pools; a fixed DMZ
    subnet inside them can collide with one of those (seen: monitoring got 172.31.0.0/16 while
    the DMZ was 172.31.81.0/24, and `up` failed with "Pool overlaps")."""
    compose_default = re.search(r"\$\{DMZ_SUBNET:-([0-9./]+)\}", BASE.read_text(encoding="utf-8"))
    assert compose_default is not None
    template = template_values()["DMZ_SUBNET"]
    assert compose_default.group(1) == template
    dmz = ipaddress.ip_network(template)
    # dockerd's default-address-pools: 172.17.0.0/16 ... 172.31.0.0/16, then 192.168.0.0/16 in /20s.
    pools = [ipaddress.ip_network(f"172.{second}.0.0/16") for second in range(17, 32)]
    pools.append(ipaddress.ip_network("192.168.0.0/16"))
    assert not any(dmz.overlaps(pool) for pool in pools)
    assert f"allow {template};" == template_values()["DMZ_ALLOW"]
