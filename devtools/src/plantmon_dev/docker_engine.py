"""A Docker engine of our own for the container tests, and the base image they build on.

No image registry is reachable here, and CI's machine has no running engine. This module

* starts Debian's ``dockerd`` (package ``docker.io``) as root on its own socket, data root and exec
  root, with ``--iptables=false --ip-forward=false`` so the machine's own network rules stay as
  they are, waits for it, and stops it by its pid (every container with it);
* builds the one base image everything else starts from, ``plantmon-ci/bookworm-python:3.11``:
  a Debian 12 minbase made by ``debootstrap`` with python3 and venv, ``python`` on PATH as the
  official python image has it, and this machine's CA bundle for pip (the builds reach PyPI
  through a TLS-inspecting proxy). It stands in for ``python:3.11-slim-bookworm`` in CI only; the
  production images keep their own base and never get that bundle.

``PLANTMON_DOCKER_HOST`` names an engine that is already running (a developer's own): then none
is started or stopped. ``PLANTMON_DOCKER_DATA_ROOT`` moves the engine's data root (default
``/var/lib/plantmon-ci/docker``, kept between runs: it is the build cache).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from plantmon_dev.managed import ManagedProcess
from plantmon_dev.procs import is_root

logger = logging.getLogger(__name__)

BASE_IMAGE = "plantmon-ci/bookworm-python:3.11"


def debian_mirror() -> str:
    """``PLANTMON_DEBIAN_MIRROR``, else the Debian archive this machine's apt already uses (the first
    ``URIs:`` of a deb822 source or ``deb`` line that serves a ``bookworm`` suite)."""
    if os.environ.get("PLANTMON_DEBIAN_MIRROR"):
        return os.environ["PLANTMON_DEBIAN_MIRROR"]
    apt = Path("/etc/apt")
    for path in sorted(apt.glob("sources.list.d/*.sources")):
        for stanza in path.read_text(encoding="utf-8", errors="replace").split("\n\n"):
            fields = dict(
                line.split(":", 1) for line in stanza.splitlines() if ":" in line and not line.startswith("#")
            )
            uris = fields.get("URIs", "").split()
            if uris and "bookworm" in fields.get("Suites", "").split() and "deb" in fields.get("Types", "").split():
                return uris[0]
    for path in [apt / "sources.list", *sorted(apt.glob("sources.list.d/*.list"))]:
        if path.exists():
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                words = line.split()
                if len(words) >= 3 and words[0] == "deb" and "bookworm" in words:
                    return next(word for word in words[1:] if "://" in word)
    raise EngineError("no Debian bookworm archive in /etc/apt: set PLANTMON_DEBIAN_MIRROR to one")


HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
DEFAULT_DATA_ROOT = Path(os.environ.get("PLANTMON_DOCKER_DATA_ROOT", "/var/lib/plantmon-ci/docker"))


class EngineError(RuntimeError):
    """The engine cannot be started or does not answer."""


@dataclass
class DockerEngine:
    """``dockerd`` on ``unix://<run_dir>/docker.sock``; :attr:`env` is the environment for clients."""

    data_root: Path = DEFAULT_DATA_ROOT
    run_dir: Path = Path("/run/plantmon-docker")
    host: str = field(default_factory=lambda: os.environ.get("PLANTMON_DOCKER_HOST", ""))
    _dockerd: ManagedProcess | None = None

    @property
    def pidfile(self) -> Path:
        return self.run_dir / "dockerd.pid"

    @property
    def socket(self) -> Path:
        return self.run_dir / "docker.sock"

    @property
    def docker_host(self) -> str:
        return self.host or f"unix://{self.socket}"

    @property
    def env(self) -> dict[str, str]:
        """The caller's environment with ``DOCKER_HOST`` set (compose and the CLI read it)."""
        return {**os.environ, "DOCKER_HOST": self.docker_host}

    def docker(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["docker", *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=check
        )

    def answers(self) -> bool:
        try:
            return self.docker("version", "--format", "{{.Server.Version}}", timeout=10, check=False).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    def start(self) -> None:
        if self.host:
            if not self.answers():
                raise EngineError(f"PLANTMON_DOCKER_HOST={self.host} does not answer")
            return
        if self.answers():
            logger.info("reusing the running engine", extra={"socket": str(self.socket)})
            return
        dockerd = shutil.which("dockerd")
        if dockerd is None:
            raise EngineError("dockerd is not installed: apt-get install docker.io (scripts/bootstrap.sh test does)")
        if not is_root():
            raise EngineError("dockerd needs root here; or set PLANTMON_DOCKER_HOST to a running engine")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.data_root.mkdir(parents=True, exist_ok=True)
        command = [
            dockerd,
            f"--data-root={self.data_root}",
            f"--exec-root={self.run_dir / 'exec'}",
            f"--pidfile={self.pidfile}",
            f"--host=unix://{self.socket}",
            "--iptables=false",
            "--ip-forward=false",
            "--log-level=warn",
        ]
        # SIGTERM to dockerd alone at stop: it stops its containers and its containerd itself;
        # what of its process group is left after the bounded wait is killed.
        self._dockerd = ManagedProcess(
            "dockerd", command, self.run_dir / "dockerd.log", stop_timeout=60, term_group=False
        )
        self._dockerd.start()
        try:
            self._dockerd.wait_ready(self.answers, 60, "it answers on its socket", interval=0.5)
        except RuntimeError as exc:
            raise EngineError(str(exc)) from None
        logger.info("dockerd started", extra={"pid": self._dockerd.pid, "data_root": str(self.data_root)})

    def stop(self) -> None:
        """Stop what :meth:`start` started: SIGTERM (dockerd stops its containers), then SIGKILL."""
        if self._dockerd is not None:
            self._dockerd.stop()
            self._dockerd = None

    def has_image(self, name: str) -> bool:
        return self.docker("image", "inspect", name, check=False).returncode == 0

    def bridge_gateway(self) -> str:
        """The default bridge's address on this machine (what ``host-gateway`` resolves to in a container)."""
        options = self.docker("network", "inspect", "bridge", "--format", "{{json .Options}}").stdout
        name = (json.loads(options) or {}).get("com.docker.network.bridge.name", "docker0")
        addresses = json.loads(
            subprocess.run(
                ["ip", "-j", "-4", "addr", "show", "dev", name], capture_output=True, text=True, check=True
            ).stdout
        )
        return str(addresses[0]["addr_info"][0]["local"])

    def ensure_base_image(self) -> str:
        """:data:`BASE_IMAGE`, made with debootstrap the first time (about a minute)."""
        if self.has_image(BASE_IMAGE):
            return BASE_IMAGE
        debootstrap = shutil.which("debootstrap") or "/usr/sbin/debootstrap"
        if not Path(debootstrap).exists():
            raise EngineError("debootstrap is not installed: apt-get install debootstrap")
        self.data_root.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="plantmon-rootfs-", dir=self.data_root.parent) as tmp:
            rootfs = Path(tmp) / "rootfs"
            started = time.monotonic()
            subprocess.run(
                [
                    debootstrap,
                    "--variant=minbase",
                    "--include=python3,python3-venv,ca-certificates",
                    "bookworm",
                    str(rootfs),
                    debian_mirror(),
                ],
                check=True,
                capture_output=True,
                timeout=900,
            )
            (rootfs / "usr/bin/python").symlink_to("python3")
            _add_python_headers(rootfs)
            if HOST_CA_BUNDLE.exists():
                shutil.copyfile(HOST_CA_BUNDLE, rootfs / "etc/ssl/certs/ca-certificates.crt")
            for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
                for entry in (rootfs / cache).glob("*"):
                    if entry.is_file():
                        entry.unlink()
            tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
            subprocess.run(
                [
                    "docker",
                    "import",
                    "--change",
                    "ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt LANG=C.UTF-8",
                    "--change",
                    'CMD ["python3"]',
                    "-",
                    BASE_IMAGE,
                ],
                stdin=tar.stdout,
                env=self.env,
                check=True,
                capture_output=True,
                timeout=600,
            )
            tar.wait(timeout=60)
            logger.info("base image built", extra={"image": BASE_IMAGE, "seconds": round(time.monotonic() - started)})
        return BASE_IMAGE


def _add_python_headers(rootfs: Path) -> None:
    """Copy the CPython headers (1.4 MB) into the rootfs, as the official slim image has them.

    Source-only distributions (spidev) compile in the builder stage and need ``Python.h``. The
    rootfs's own apt downloads Debian's ``libpython3.11-dev`` (the same build as its python3, from
    its own package lists, whatever distribution the host runs); only its headers are kept, not the
    static library it also carries.
    """
    subprocess.run(
        ["chroot", str(rootfs), "sh", "-c", "cd /tmp && apt-get download libpython3.11-dev"],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (deb,) = (rootfs / "tmp").glob("libpython3.11-dev_*.deb")
    extracted = rootfs / "tmp" / "pydev"
    subprocess.run(["dpkg-deb", "-x", str(deb), str(extracted)], check=True, capture_output=True, timeout=120)
    for include in extracted.glob("usr/include/**/python3.11"):
        if include.is_dir():
            shutil.copytree(include, rootfs / include.relative_to(extracted), dirs_exist_ok=True)
    shutil.rmtree(extracted)
    deb.unlink()
