"""A PostgreSQL cluster in a folder of ours, from Debian's binaries.

initdb and pg_ctl refuse to run as root; as root the cluster runs as the ``postgres`` user
through ``runuser``. The cluster is persistent when the folder is (``task up`` keeps it in
``.data/pg``) and ephemeral when the folder is a temporary one (the tests).
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from plantmon_dev.procs import chown_tree, free_port, is_root

logger = logging.getLogger(__name__)

RUN_AS = "postgres"


def pg_bindir() -> Path:
    """The newest Debian PostgreSQL ``bin`` folder, or the one ``PG_BINDIR`` names."""
    if env := os.environ.get("PG_BINDIR"):
        return Path(env)
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name))
    if found:
        return Path(found[-1])
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise FileNotFoundError("PostgreSQL server binaries not found: apt-get install postgresql")


@dataclass
class PostgresCluster:
    """A cluster in ``datadir`` listening on 127.0.0.1:``port`` with a superuser password."""

    datadir: Path
    port: int = field(default_factory=free_port)
    superuser: str = "postgres"
    password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    database: str = "plantmon"

    def _cmd(self, *args: str) -> list[str]:
        cmd = [str(pg_bindir() / args[0]), *args[1:]]
        return ["runuser", "-u", RUN_AS, "--", *cmd] if is_root() else cmd

    @property
    def initialised(self) -> bool:
        return (self.datadir / "PG_VERSION").exists()

    def init(self) -> None:
        """initdb once; the superuser password goes in through a file, never a command line."""
        if self.initialised:
            return
        check_traversable(self.datadir.parent)
        self.datadir.mkdir(parents=True, exist_ok=True)
        pwfile = self.datadir.parent / f".{self.datadir.name}.pw"
        pwfile.write_text(self.password)
        pwfile.chmod(0o600)
        if is_root():
            chown_tree(self.datadir, RUN_AS)
            chown_tree(pwfile, RUN_AS)
        try:
            subprocess.run(
                self._cmd(
                    "initdb",
                    "-D",
                    str(self.datadir),
                    "-U",
                    self.superuser,
                    "--pwfile",
                    str(pwfile),
                    "-A",
                    "scram-sha-256",
                    "-E",
                    "UTF8",
                    "--locale=C.UTF-8",
                ),
                check=True,
                capture_output=True,
            )
        finally:
            pwfile.unlink(missing_ok=True)
        with (self.datadir / "postgresql.conf").open("a") as conf:
            conf.write(
                "\n# plantmon: local cluster\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\n"
                "fsync = on\nshared_buffers = 64MB\nmax_connections = 60\n"
            )

    def start(self, timeout: float = 30.0) -> None:
        log = self.datadir.parent / f"{self.datadir.name}.log"
        if is_root():
            log.touch()
            chown_tree(log, RUN_AS)
        subprocess.run(
            self._cmd(
                "pg_ctl",
                "-D",
                str(self.datadir),
                "-l",
                str(log),
                "-o",
                f"-p {self.port}",
                "-w",
                "-t",
                str(int(timeout)),
                "start",
            ),
            check=True,
            capture_output=True,
        )
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.conninfo("postgres"), connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def stop(self, mode: str = "fast") -> None:
        if not (self.datadir / "postmaster.pid").exists():
            return
        subprocess.run(
            self._cmd("pg_ctl", "-D", str(self.datadir), "-m", mode, "-w", "stop"), check=False, capture_output=True
        )

    def conninfo(self, dbname: str | None = None, user: str | None = None, password: str | None = None) -> str:
        return psycopg.conninfo.make_conninfo(
            host="127.0.0.1",
            port=self.port,
            dbname=dbname or self.database,
            user=user or self.superuser,
            password=password if user else self.password,
        )

    def create_database(self, name: str | None = None) -> str:
        name = name or self.database
        with psycopg.connect(self.conninfo("postgres"), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            if not exists:
                conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(name)))
        return name

    def env(self, dbname: str | None = None) -> dict[str, str]:
        """libpq variables for the superuser (migrations, tests)."""
        return {
            "PGHOST": "127.0.0.1",
            "PGPORT": str(self.port),
            "PGDATABASE": dbname or self.database,
            "PGUSER": self.superuser,
            "PGPASSWORD": self.password,
        }


def check_traversable(path: Path) -> None:
    """As root the server runs as ``postgres``, which must be able to reach ``path``."""
    if not is_root():
        return
    for ancestor in [*reversed(path.resolve().parents)]:
        if ancestor.exists() and not os.stat(ancestor).st_mode & 0o001:
            raise PermissionError(
                f"{ancestor} is not searchable by other users, so the {RUN_AS} user cannot reach {path}; "
                f"chmod o+x {ancestor} or keep the data folder elsewhere"
            )


@contextlib.contextmanager
def ephemeral_cluster(parent: Path | None = None) -> Iterator[PostgresCluster]:
    """A fresh cluster that always stops and is deleted afterwards.

    ``parent`` defaults to a new folder in the system temporary directory (pytest's own
    temporary folders are private to root, which the ``postgres`` user cannot enter).
    """
    parent = parent or Path(tempfile.mkdtemp(prefix="plantmon-pg-"))
    parent.mkdir(parents=True, exist_ok=True)
    check_traversable(parent)
    if is_root():
        chown_tree(parent, RUN_AS)
    cluster = PostgresCluster(parent / "pgdata")
    cluster.init()
    cluster.start()
    try:
        cluster.create_database()
        yield cluster
    finally:
        cluster.stop("immediate")
        shutil.rmtree(parent, ignore_errors=True)
