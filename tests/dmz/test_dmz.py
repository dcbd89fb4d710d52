"""The nginx DMZ in front of a real upstream: allow-list, read-only methods, limits, logs."""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from plantmon_dev.nginx import DmzConfigError, NginxDmz, default_template, render_dmz
from plantmon_dev.procs import free_port
from plantmon_dev.waiting import eventually_sync

from tests.dmz.conftest import EchoUpstream, echo_handler
from tests.plugins.nginx import DmzFactory

ALLOWED_PATHS = [
    "/api/v1/tags",
    "/api/v1/readings",
    "/temperature/upper",
    "/temperature/lower",
    "/rpm",
    "/voltage",
    "/audio/mfcc",
    "/audio/spectrum",
    "/health",
]

COMPOSE_VALUES = {
    "DMZ_LISTEN": "0.0.0.0:8081",
    "SENSORS_UPSTREAM": "sensors:8080",
    "DMZ_ALLOW": "allow 172.16.0.0/12; allow 10.0.0.0/8; allow 192.168.0.0/16;",
    "DMZ_RATE": "50r/s",
    "DMZ_BURST": "100",
    "DMZ_USER": "nginx",
    "DMZ_PREFIX_DIR": "/tmp",
    "DMZ_ACCESS_LOG": "/dev/stdout",
    "DMZ_ERROR_LOG": "stderr",
}


def raw_get(port: int, target: str) -> str:
    """Send a request line exactly as written (httpx would normalise ``..`` away)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: dmz\r\nConnection: close\r\n\r\n".encode())
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode("latin-1")


# --- the template -----------------------------------------------------------------------------


def test_rendered_template_passes_nginx_config_test() -> None:
    dmz = NginxDmz("127.0.0.1:8080")
    try:
        dmz.write_config()
        dmz.check_config()
    finally:
        dmz.stop()


def test_render_for_compose_keeps_nginx_variables_and_uses_given_listen_and_upstream() -> None:
    text = render_dmz(default_template(), COMPOSE_VALUES)

    assert "listen 0.0.0.0:8081;" in text
    assert "server sensors:8080;" in text
    assert "allow 172.16.0.0/12; allow 10.0.0.0/8; allow 192.168.0.0/16;" in text
    assert "limit_req_zone $dmz_limit_key zone=dmz_per_client:1m rate=50r/s;" in text
    assert "$binary_remote_addr" in text and "$request_id" in text
    assert "${" not in text


def test_render_accepts_a_plain_list_of_client_networks() -> None:
    text = render_dmz(default_template(), {**COMPOSE_VALUES, "DMZ_ALLOW": "127.0.0.1, 10.0.0.0/8"})

    assert "allow 127.0.0.1/32; allow 10.0.0.0/8;" in text


def test_render_names_every_missing_placeholder_value() -> None:
    values = {k: v for k, v in COMPOSE_VALUES.items() if k not in {"SENSORS_UPSTREAM", "DMZ_RATE"}}

    with pytest.raises(DmzConfigError, match="DMZ_RATE, SENSORS_UPSTREAM"):
        render_dmz(default_template(), values)


def test_render_refuses_something_that_is_not_a_network_in_the_allow_list() -> None:
    with pytest.raises(DmzConfigError, match="DMZ_ALLOW"):
        render_dmz(default_template(), {**COMPOSE_VALUES, "DMZ_ALLOW": "allow all; deny 1.2.3.4;"})


def test_nginx_config_test_failure_is_reported_with_nginx_message() -> None:
    dmz = NginxDmz("127.0.0.1:8080", rate="fast")
    try:
        dmz.write_config()
        with pytest.raises(DmzConfigError, match="rate"):
            dmz.check_config()
    finally:
        dmz.stop()


def test_temporary_prefix_is_deleted_at_stop(echo_upstream: EchoUpstream) -> None:
    with NginxDmz(f"127.0.0.1:{echo_upstream.port}") as dmz:
        prefix = dmz.prefix_dir
        assert httpx.get(f"{dmz.url}/dmz/health").status_code == 200
    assert not prefix.exists()


def test_kept_prefix_holds_config_and_logs_after_stop(echo_upstream: EchoUpstream, tmp_path: Path) -> None:
    with NginxDmz(f"127.0.0.1:{echo_upstream.port}", prefix=tmp_path / "nginx") as dmz:
        httpx.get(f"{dmz.url}/rpm")
    assert (tmp_path / "nginx" / "nginx.conf").exists()
    assert (tmp_path / "nginx" / "logs" / "access.log").read_text().strip()


# --- behaviour in front of a real upstream ------------------------------------------------------


@pytest.mark.parametrize("path", ALLOWED_PATHS)
def test_allowed_get_paths_pass_through_to_the_upstream(
    dmz_factory: DmzFactory, echo_upstream: EchoUpstream, path: str
) -> None:
    dmz = dmz_factory(echo_upstream.port)

    response = httpx.get(f"{dmz.url}{path}")

    assert response.status_code == 200
    assert response.json()["method"] == "GET"
    assert response.json()["path"] == path


def test_query_string_is_passed_on(dmz_factory: DmzFactory, echo_upstream: EchoUpstream) -> None:
    dmz = dmz_factory(echo_upstream.port)

    response = httpx.get(f"{dmz.url}/api/v1/readings", params={"sensor": "rpm"})

    assert response.json()["path"] == "/api/v1/readings?sensor=rpm"


def test_head_passes_through(dmz_factory: DmzFactory, echo_upstream: EchoUpstream) -> None:
    dmz = dmz_factory(echo_upstream.port)

    response = httpx.head(f"{dmz.url}/rpm")

    assert response.status_code == 200
    assert ("HEAD", "/rpm") in echo_upstream.requests


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_other_methods_are_405_and_never_reach_the_upstream(
    dmz_factory: DmzFactory, echo_upstream: EchoUpstream, method: str
) -> None:
    dmz = dmz_factory(echo_upstream.port)

    response = httpx.request(method, f"{dmz.url}/rpm", content=b"{}" if method in {"POST", "PUT", "PATCH"} else None)

    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD"
    assert response.json() == {"error": "method not allowed"}
    assert echo_upstream.requests == []


@pytest.mark.parametrize("path", ["/admin/faults", "/admin/faults/rpm", "/admin/", "/metrics", "/%61dmin/faults"])
def test_admin_api_and_sensor_metrics_are_refused_and_never_reach_the_upstream(
    dmz_factory: DmzFactory, echo_upstream: EchoUpstream, path: str
) -> None:
    dmz = dmz_factory(echo_upstream.port)

    response = httpx.get(f"{dmz.url}{path}", headers={"Authorization": "Bearer admin-token"})

    assert response.status_code in {403, 404}
    assert echo_upstream.requests == []


@pytest.mark.parametrize("target", ["/rpm/../admin/faults", "/api/v1/../../admin/faults", "/rpm/%2e%2e/admin/faults"])
def test_dot_segments_cannot_smuggle_a_path_past_the_allow_list(
    dmz_factory: DmzFactory, echo_upstream: EchoUpstream, target: str
) -> None:
    dmz = dmz_factory(echo_upstream.port)

    answer = raw_get(dmz.port, target)

    assert answer.split(" ", 2)[1] in {"400", "403", "404"}
    assert echo_upstream.requests == []


def test_an_allowed_path_reached_through_dot_segments_goes_upstream_normalised(
    dmz_factory: DmzFactory, echo_upstream: EchoUpstream
) -> None:
    dmz = dmz_factory(echo_upstream.port)

    answer = raw_get(dmz.port, "/admin/../rpm")

    assert answer.startswith("HTTP/1.1 200")
    assert echo_upstream.requests == [("GET", "/rpm")]


@pytest.mark.parametrize("path", ["/", "/api/v1", "/api/v1/tags/", "/rpm/extra", "/docs", "/openapi.json", "/dmz"])
def test_unknown_paths_are_404(dmz_factory: DmzFactory, echo_upstream: EchoUpstream, path: str) -> None:
    dmz = dmz_factory(echo_upstream.port)

    response = httpx.get(f"{dmz.url}{path}")

    assert response.status_code == 404
    assert response.json() == {"error": "not found"}
    assert echo_upstream.requests == []


def test_credentials_are_not_forwarded(dmz_factory: DmzFactory, echo_upstream: EchoUpstream) -> None:
    dmz = dmz_factory(echo_upstream.port)

    response = httpx.get(f"{dmz.url}/rpm", headers={"Authorization": "Bearer admin-token"})

    assert response.json()["authorization"] is None


def test_burst_above_the_rate_gets_429(dmz_factory: DmzFactory, echo_upstream: EchoUpstream) -> None:
    dmz = dmz_factory(echo_upstream.port, rate="2r/s", burst=3)

    with httpx.Client(base_url=dmz.url) as client:
        statuses = [client.get("/rpm").status_code for _ in range(40)]

    assert statuses[0] == 200
    assert 429 in statuses
    assert set(statuses) <= {200, 429}


def test_dmz_health_is_answered_by_nginx_and_not_rate_limited(dmz_factory: DmzFactory) -> None:
    dmz = dmz_factory(free_port(), rate="1r/s", burst=1)

    with httpx.Client(base_url=dmz.url) as client:
        statuses = {client.get("/dmz/health").status_code for _ in range(20)}

    assert statuses == {200}


def test_server_header_does_not_reveal_the_nginx_version(dmz_factory: DmzFactory, echo_upstream: EchoUpstream) -> None:
    dmz = dmz_factory(echo_upstream.port)

    for path in ["/rpm", "/nope"]:
        response = httpx.get(f"{dmz.url}{path}")
        assert response.headers["server"] == "nginx"
        assert "1." not in response.text


def test_clients_outside_the_allow_list_are_refused(dmz_factory: DmzFactory, echo_upstream: EchoUpstream) -> None:
    dmz = dmz_factory(echo_upstream.port, allow=["10.0.0.0/8"])

    assert httpx.get(f"{dmz.url}/rpm").status_code == 403
    assert echo_upstream.requests == []
    # the container healthcheck (loopback) still sees the DMZ alive
    assert httpx.get(f"{dmz.url}/dmz/health").status_code == 200


def test_access_log_lines_are_json(dmz_factory: DmzFactory, echo_upstream: EchoUpstream) -> None:
    dmz = dmz_factory(echo_upstream.port)
    with httpx.Client(base_url=dmz.url) as client:
        client.get("/rpm", headers={"User-Agent": 'quote " and \\ backslash'})
        client.get("/admin/faults")
        client.post("/rpm")

    def three_lines() -> list[dict[str, Any]] | None:
        entries = dmz.access_log_entries()
        return entries if len(entries) >= 3 else None

    entries = eventually_sync(three_lines, timeout=10, interval=0.05, what="three access log lines")

    assert [(e["method"], e["uri"], e["status"]) for e in entries] == [
        ("GET", "/rpm", 200),
        ("GET", "/admin/faults", 403),
        ("POST", "/rpm", 405),
    ]
    assert entries[0]["user_agent"] == 'quote " and \\ backslash'
    assert entries[0]["upstream_status"] == "200"
    assert all(e["service"] == "dmz" and e["request_id"] for e in entries)


def test_upstream_down_is_a_gateway_error(dmz_factory: DmzFactory) -> None:
    dmz = dmz_factory(free_port())

    response = httpx.get(f"{dmz.url}/api/v1/readings")

    assert response.status_code in {502, 504}
    assert "error" in response.json()


def test_dmz_recovers_when_the_upstream_comes_back(dmz_factory: DmzFactory) -> None:
    port = free_port()
    dmz = dmz_factory(port)
    assert httpx.get(f"{dmz.url}/rpm").status_code in {502, 504}

    server = ThreadingHTTPServer(("127.0.0.1", port), BaseHTTPRequestHandler)
    upstream = EchoUpstream(server)
    server.RequestHandlerClass = echo_handler(upstream)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        eventually_sync(
            lambda: httpx.get(f"{dmz.url}/rpm").status_code == 200, timeout=30, what="200 from the DMZ again"
        )
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_upstream_that_never_answers_is_a_gateway_timeout(dmz_factory: DmzFactory) -> None:
    # Accepts connections (the kernel's backlog) but never answers: nginx's read timeout (5 s) fires.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        dmz = dmz_factory(silent.getsockname()[1])

        response = httpx.get(f"{dmz.url}/rpm", timeout=30)

    assert response.status_code == 504
    assert response.json() == {"error": "sensor API timed out"}


def test_request_body_above_the_size_limit_is_refused(dmz_factory: DmzFactory, echo_upstream: EchoUpstream) -> None:
    dmz = dmz_factory(echo_upstream.port)

    response = httpx.request("GET", f"{dmz.url}/rpm", content=b"x" * 4096)

    assert response.status_code == 413
    assert echo_upstream.requests == []
