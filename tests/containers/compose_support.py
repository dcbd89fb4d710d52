"""The compose stack as the container tests drive it: docker-compose 1.29 (the only one installable
here) with the repository's compose files, the simulator override and the CI-only override, on the
engine the tests started. Containers are reached at the addresses the engine gave them on its
bridges (never anything else), or through ``docker exec``."""

from __future__ import annotations

import json
import logging
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from plantmon_dev.docker_engine import DockerEngine
from plantmon_dev.waiting import eventually_sync

from tests.deploy.deploy_files import BASE, EXPECTED_PROFILES, JOBS, REPO, SIM

logger = logging.getLogger(__name__)

CI_OVERRIDE = Path(__file__).resolve().parent / "docker-compose.ci.yaml"
# No stand-in can be built from Debian's packages for these: the tests leave them out.
LEFT_OUT = frozenset({"grafana", "cadvisor"})
# What each profile starts (README's table), less LEFT_OUT.
PROFILE_SERVICES = {profile: services - LEFT_OUT for profile, services in EXPECTED_PROFILES.items()}
# Built by the CI override: the project's images and the stand-ins for third-party ones.
ALL_BUILT = PROFILE_SERVICES["fullstack"]
PROJECT_IMAGES = {
    "migrate": "plantmon/migrate",
    "sensors": "plantmon/sensors",
    "opc_server": "plantmon/opc-server",
    "opc_scraper": "plantmon/scraper",
    "alert_worker": "plantmon/alerts",
}


@dataclass
class Compose:
    """One compose project: ``docker-compose -p <project> --env-file ... -f ... -f ...``."""

    engine: DockerEngine
    project: str
    env_file: Path
    files: Sequence[Path] = (BASE, SIM, CI_OVERRIDE)
    directory: Path = REPO
    env: dict[str, str] = field(default_factory=dict)

    def run(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = ["docker-compose", "--env-file", str(self.env_file), "--project-directory", str(self.directory)]
        command += ["-p", self.project]
        for file in self.files:
            command += ["-f", str(file)]
        command += list(args)
        result = subprocess.run(
            command,
            env={**self.engine.env, "COMPOSE_HTTP_TIMEOUT": "300", **self.env},
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.directory,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stderr[-4000:]}")
        return result

    def up(self, profile: str, services: Sequence[str] | None = None) -> None:
        """One command: ``--profile P up -d`` with the profile's services (less :data:`LEFT_OUT`)."""
        names = sorted(services if services is not None else PROFILE_SERVICES[profile])
        self.run("--profile", profile, "up", "-d", "--no-build", *names, timeout=900)

    def down(self, *, volumes: bool = False) -> None:
        args = ["--profile", "fullstack", "down", "--remove-orphans", "-t", "20"]
        self.run(*args, *(["-v"] if volumes else []), timeout=300)

    def containers(self) -> dict[str, dict[str, Any]]:
        """``docker inspect`` of each of the project's containers, by compose service name."""
        ids = self.engine.docker(
            "ps", "-aq", "--filter", f"label=com.docker.compose.project={self.project}"
        ).stdout.split()
        if not ids:
            return {}
        found: dict[str, dict[str, Any]] = {}
        for item in json.loads(self.engine.docker("inspect", *ids).stdout):
            found[item["Config"]["Labels"]["com.docker.compose.service"]] = item
        return found

    def container(self, service: str) -> dict[str, Any]:
        containers = self.containers()
        assert service in containers, f"no container of {service} in {sorted(containers)}"
        return containers[service]

    def ip(self, service: str, network: str) -> str:
        networks = self.container(service)["NetworkSettings"]["Networks"]
        return str(networks[f"{self.project}_{network}"]["IPAddress"])

    def health(self, service: str) -> str:
        state = self.container(service)["State"]
        return str(state.get("Health", {}).get("Status", state["Status"]))

    def wait_healthy(self, services: Sequence[str], timeout: float = 300) -> None:
        def all_healthy() -> bool:
            states = {name: c["State"] for name, c in self.containers().items() if name in services}
            for name, state in states.items():
                if name in JOBS:
                    if state["Status"] == "exited" and state["ExitCode"] != 0:
                        raise AssertionError(f"{name} exited with {state['ExitCode']}:\n{self.logs(name)}")
                    continue
                if state["Status"] == "exited":
                    raise AssertionError(f"{name} exited with {state['ExitCode']}:\n{self.logs(name)}")
            return set(states) == set(services) and all(
                name in JOBS or state.get("Health", {}).get("Status", "healthy") == "healthy"
                for name, state in states.items()
            )

        def still_unhealthy() -> str:
            report = {name: self.health(name) for name in services if name in self.containers()}
            return f"services {sorted(services)} healthy; now {report}"

        eventually_sync(all_healthy, timeout=timeout, interval=2, what=still_unhealthy)

    def logs(self, service: str, tail: int = 60) -> str:
        return self.run("logs", "--no-color", "--tail", str(tail), service, check=False).stdout

    def exec(self, service: str, *command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        cid = self.container(service)["Id"]
        return self.engine.docker("exec", cid, *command, timeout=timeout, check=False)

    def python(self, service: str, code: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run ``python -c code`` in the service's container (every plantmon image has python)."""
        return self.exec(service, "python", "-c", code, timeout=timeout)

    def published_ports(self) -> dict[str, set[tuple[str, int]]]:
        """Per service: the ``(host address, host port)`` pairs it publishes."""
        published: dict[str, set[tuple[str, int]]] = {}
        for name, item in self.containers().items():
            bindings = item["HostConfig"].get("PortBindings") or {}
            pairs = {(b.get("HostIp") or "0.0.0.0", int(b["HostPort"])) for spec in bindings.values() for b in spec}
            if pairs:
                published[name] = pairs
        return published

    def database(self, user: str, password: str, dbname: str = "plantmon") -> psycopg.Connection[tuple[Any, ...]]:
        """A connection to the db container at its backend address."""
        return psycopg.connect(
            host=self.ip("db", "backend"), port=5432, dbname=dbname, user=user, password=password,
            autocommit=True, connect_timeout=5,
        )  # fmt: skip

    def memory(self) -> dict[str, int]:
        """Bytes of memory each running container uses now (``docker stats``, as cAdvisor counts it)."""
        ids = {item["Id"]: name for name, item in self.containers().items() if item["State"]["Running"]}
        out = self.engine.docker("stats", "--no-stream", "--no-trunc", "--format", "{{json .}}", *ids, timeout=120)
        usage: dict[str, int] = {}
        for line in out.stdout.splitlines():
            row = json.loads(line)
            usage[ids[row["ID"]]] = parse_size(row["MemUsage"].split("/")[0].strip())
        return usage


def parse_size(text: str) -> int:
    """``"123.4MiB"`` -> bytes (docker's human units)."""
    units = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "kB": 10**3, "MB": 10**6, "GB": 10**9}
    for unit in sorted(units, key=len, reverse=True):
        if text.endswith(unit):
            return int(float(text[: -len(unit)]) * units[unit])
    raise ValueError(f"not a size: {text!r}")


def elapsed(since: float) -> str:
    return f"{time.monotonic() - since:.0f} s"
