"""The nginx DMZ, locally: render ``nginx/dmz.conf.template`` and run nginx in the foreground.

The template is a complete ``nginx.conf`` with ``${NAME}`` placeholders (envsubst style, so the
official nginx image renders the same file in compose). Here it is rendered in Python, written
into a prefix folder of ours and run as a child process with that prefix and config; the system's
nginx service and its files are never touched.

As root, nginx's master keeps root and the workers run as ``nobody nogroup`` (the ``user``
directive). The workers need nothing from the prefix but the temp folders, which the master
creates and hands to them; the prefix is still made world-readable so a look inside works.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import pwd
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plantmon_dev.managed import LocalServer, ManagedProcess, own_or_temporary
from plantmon_dev.procs import free_port, is_root, port_open, repo_root

logger = logging.getLogger(__name__)

PLACEHOLDER = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")
WORKER_USER_AS_ROOT = "nobody nogroup"
LOOPBACK_NETWORKS = ("127.0.0.1/32", "::1/128")


class DmzConfigError(ValueError):
    """The template cannot be rendered (a missing or invalid value) or nginx rejects the result."""


def default_template() -> Path:
    return repo_root() / "nginx" / "dmz.conf.template"


def nginx_binary() -> Path:
    """``NGINX_BIN``, else ``nginx`` on PATH, else Debian's ``/usr/sbin/nginx``."""
    if env := os.environ.get("NGINX_BIN"):
        return Path(env)
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if found:
        return Path(found)
    raise FileNotFoundError("nginx not found: apt-get install nginx-light, or set NGINX_BIN")


def allow_directives(networks: str | Sequence[str]) -> str:
    """``allow ...;`` directives for client networks given as a list or a comma/space separated string.

    A string that already holds directives (``allow 10.0.0.0/8; allow ...;``) is checked and
    returned as is, which is the form compose passes to the official image's envsubst.
    """
    if isinstance(networks, str):
        text = networks.strip()
        if text.startswith("allow "):
            items = [part.strip() for part in text.split(";") if part.strip()]
            for item in items:
                keyword, _, network = item.partition(" ")
                if keyword != "allow":
                    raise DmzConfigError(f"DMZ_ALLOW may only hold allow directives, got {item!r}")
                _check_network(network.strip())
            return " ".join(f"{item};" for item in items)
        networks = [part for part in re.split(r"[,\s]+", text) if part]
    if not networks:
        raise DmzConfigError("DMZ_ALLOW is empty: name at least one client network (everything else is denied)")
    return " ".join(f"allow {_check_network(network)};" for network in networks)


def _check_network(network: str) -> str:
    try:
        return str(ipaddress.ip_network(network, strict=False))
    except ValueError as exc:
        raise DmzConfigError(f"not a client address or network for DMZ_ALLOW: {network!r}") from exc


def template_placeholders(text: str) -> set[str]:
    """The ``${NAME}`` placeholders a template uses."""
    return set(PLACEHOLDER.findall(text))


def render_dmz(template: Path, values: Mapping[str, str]) -> str:
    """Render ``template``: every ``${NAME}`` is replaced by ``values[NAME]``.

    Fails with :class:`DmzConfigError` naming every placeholder without a value. ``DMZ_ALLOW``
    may be a list of networks (``"127.0.0.1 10.0.0.0/8"``) or ``allow`` directives.
    """
    text = template.read_text(encoding="utf-8")
    missing = sorted(template_placeholders(text) - values.keys())
    if missing:
        raise DmzConfigError(f"no value for placeholder(s) {', '.join(missing)} in {template}")
    resolved = dict(values)
    if "DMZ_ALLOW" in resolved:
        resolved["DMZ_ALLOW"] = allow_directives(resolved["DMZ_ALLOW"])
    for name, value in resolved.items():
        if "\n" in value or "${" in value:
            raise DmzConfigError(f"value of {name} must be one line without placeholders: {value!r}")
    return PLACEHOLDER.sub(lambda match: resolved[match.group(1)], text)


def with_tls(config: str, listen: str, cert: Path, key: Path) -> str:
    """The rendered config with its one ``listen`` switched to TLS (``ssl``, TLS 1.2/1.3 only).

    TLS between the OPC UA server and the DMZ is optional, so it is applied to the rendered text
    rather than being a placeholder every deployment must set.
    """
    plain = f"listen {listen};"
    if config.count(plain) != 1:
        raise DmzConfigError(f"expected exactly one '{plain}' in the rendered config")
    return config.replace(
        plain,
        f"listen {listen} ssl;\n"
        f"        ssl_certificate {cert};\n"
        f"        ssl_certificate_key {key};\n"
        "        ssl_protocols TLSv1.2 TLSv1.3;\n"
        "        ssl_session_cache shared:dmz_tls:1m;",
    )


def _worker_user() -> str:
    """Root: workers as ``nobody nogroup``; otherwise the invoking user (nginx ignores ``user`` then)."""
    if is_root():
        return WORKER_USER_AS_ROOT
    return pwd.getpwuid(os.geteuid()).pw_name


@dataclass
class NginxDmz(LocalServer):
    """The DMZ in front of ``upstream`` (``host:port``), listening on 127.0.0.1:``port``.

    ``prefix`` holds the rendered ``nginx.conf``, the pid file, temp folders and ``logs/``; a
    temporary one (deleted at stop) when not given, a kept one otherwise (``task up``).
    """

    upstream: str
    port: int = field(default_factory=free_port)
    host: str = "127.0.0.1"
    prefix: Path | None = None
    allow: Sequence[str] = LOOPBACK_NETWORKS
    rate: str = "50r/s"
    burst: int = 100
    template: Path = field(default_factory=default_template)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    process: ManagedProcess | None = field(default=None, init=False, repr=False)
    # The files in the prefix, set from it at construction.
    prefix_dir: Path = field(init=False, repr=False)
    conf_path: Path = field(init=False, repr=False)
    access_log: Path = field(init=False, repr=False)
    error_log: Path = field(init=False, repr=False)
    _scratch: Path | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.prefix_dir, self._scratch = own_or_temporary(self.prefix, "plantmon-nginx-")
        self.prefix = self.prefix_dir
        self.conf_path = self.prefix_dir / "nginx.conf"
        self.access_log, self.error_log = (self.prefix_dir / "logs" / name for name in ("access.log", "error.log"))

    @property
    def url(self) -> str:
        scheme = "https" if self.tls_cert is not None else "http"
        return f"{scheme}://{self.host}:{self.port}"

    def values(self) -> dict[str, str]:
        """The template values for this instance."""
        return {
            "DMZ_LISTEN": f"{self.host}:{self.port}",
            "SENSORS_UPSTREAM": self.upstream,
            "DMZ_ALLOW": allow_directives(list(self.allow)),
            "DMZ_RATE": self.rate,
            "DMZ_BURST": str(self.burst),
            "DMZ_USER": _worker_user(),
            "DMZ_PREFIX_DIR": str(self.prefix_dir),
            "DMZ_ACCESS_LOG": str(self.access_log),
            "DMZ_ERROR_LOG": str(self.error_log),
        }

    def write_config(self) -> Path:
        """Render the template into ``<prefix>/nginx.conf`` and create the folders it names."""
        (self.prefix_dir / "logs").mkdir(parents=True, exist_ok=True)
        text = render_dmz(self.template, self.values())
        if self.tls_cert is not None:
            text = with_tls(text, self.values()["DMZ_LISTEN"], self.tls_cert, self.tls_key or self.tls_cert)
        self.conf_path.write_text(text, encoding="utf-8")
        if is_root():
            # Workers (nobody) must be able to enter the prefix to reach their temp folders.
            self.prefix_dir.chmod(0o755)
        return self.conf_path

    def _cmd(self, *extra: str) -> list[str]:
        return [
            str(nginx_binary()), "-c", str(self.conf_path), "-p", f"{self.prefix_dir}/",
            "-e", str(self.error_log), *extra,
        ]  # fmt: skip

    def check_config(self) -> None:
        """``nginx -t`` on the written config; raises :class:`DmzConfigError` with nginx's words."""
        result = subprocess.run(self._cmd("-t", "-q"), capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise DmzConfigError(f"nginx -t rejected {self.conf_path}: {result.stderr.strip()}")

    def start(self, timeout: float = 15.0) -> None:
        """Write, check and start nginx in the foreground; returns once the port accepts connections."""
        if self.running:
            return
        self.write_config()
        self.check_config()
        self.process = ManagedProcess("nginx", self._cmd("-g", "daemon off;"), self.prefix_dir / "logs" / "nginx.out")
        self.process.start()
        try:
            self.process.wait_ready(lambda: port_open(self.port), timeout, f"it listens on {self.port}", interval=0.1)
        except (RuntimeError, TimeoutError) as exc:
            errors = self.error_log.read_text(errors="replace")[-2000:] if self.error_log.exists() else ""
            self.stop()
            raise RuntimeError(f"nginx DMZ did not start on {self.url}: {exc}; error log: {errors}") from exc
        logger.info("nginx DMZ started", extra={"url": self.url, "upstream": self.upstream, "pid": self.pid})

    def access_log_entries(self) -> list[dict[str, Any]]:
        """The access log, one parsed JSON object per line (raises on a line that is not JSON)."""
        if not self.access_log.exists():
            return []
        lines = self.access_log.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]


@contextlib.contextmanager
def running_dmz(upstream: str, **kwargs: Any) -> Iterator[NginxDmz]:
    """``with running_dmz("127.0.0.1:8080") as dmz:`` – a started DMZ that always stops."""
    dmz = NginxDmz(upstream, **kwargs)
    try:
        dmz.start()
        yield dmz
    finally:
        dmz.stop()
