"""One child process of the local stack, run the same way for nginx, Prometheus, Grafana and the services.

:class:`ManagedProcess` starts a command in a process group of its own (``start_new_session``),
its output appended to a log file; waits until the caller's readiness check passes, failing at
once with the log's tail when the child exits first; and stops the *whole group*: SIGTERM to the
group (or to the leader alone where the leader stops the rest itself, as ``dockerd`` does), a
bounded wait until no member is left, then SIGKILL to whatever is. So an nginx worker, a Grafana
plugin or a service's own helper process never outlives a stop.

:meth:`ManagedProcess.supervise`, called periodically (``task up`` does once a second), restarts a
child that died, as compose's restart policy would, but with a growing, jittered delay
(:class:`plantmon_common.backoff.ExponentialBackoff`, ``initial_s`` up to ``max_s``) and one log
line per exit. A child that ran for ``stable_s`` before dying starts the schedule afresh; one that
dies again after ``max_restarts`` restarts in a row without such a run is left stopped in the
state ``crash-looping``, said once, loudly, instead of being restarted forever.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

import httpx
from plantmon_common.backoff import ExponentialBackoff

from plantmon_dev.waiting import eventually_sync

logger = logging.getLogger(__name__)


class ProcessState(enum.StrEnum):
    STOPPED = "stopped"
    RUNNING = "running"
    RESTARTING = "restarting"  # died; waiting out its backoff before the next start
    CRASH_LOOPING = "crash-looping"  # died too often in a row; not restarted again


@dataclass(frozen=True)
class RestartPolicy:
    """How :meth:`ManagedProcess.supervise` restarts a child that died."""

    initial_s: float = 1.0
    max_s: float = 30.0
    max_restarts: int = 5  # restarts in a row, without a run of ``stable_s`` between them; the next exit is final
    stable_s: float = 60.0


def group_members(pgid: int) -> list[int]:
    """The live (not zombie) processes of process group ``pgid``, from ``/proc``."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        # pid (comm) state ppid pgrp ...; comm may hold spaces and parentheses.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 2 and fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


class ManagedProcess:
    """``command`` as a child in its own process group, logging to ``log``; see the module docstring."""

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        log: Path,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        stop_timeout: float = 10.0,
        term_group: bool = True,
        restart: RestartPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        random: Callable[[], float] | None = None,
    ) -> None:
        self.name = name
        self.command = list(command)
        self.log = log
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.stop_timeout = stop_timeout
        self.term_group = term_group
        self.policy = restart or RestartPolicy()
        self._clock = clock
        self._backoff = ExponentialBackoff(self.policy.initial_s, self.policy.max_s)
        if random is not None:
            self._backoff = ExponentialBackoff(self.policy.initial_s, self.policy.max_s, random=random)
        self.proc: subprocess.Popen[bytes] | None = None
        self.state = ProcessState.STOPPED
        self.restarts = 0  # starts after the first one
        self.crashes_in_a_row = 0
        self.restart_delays: deque[float] = deque(maxlen=50)  # the waits before the latest restarts
        self._started_at = 0.0
        self._restart_at = 0.0

    # -- state ---------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        """The pid of the running child (the group's leader), None when it is not running."""
        return self.proc.pid if self.proc is not None and self.running else None

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode if self.proc is not None else None

    def tail(self, chars: int = 2000) -> str:
        """The end of the log (what a failed start or a crash said)."""
        if not self.log.exists():
            return ""
        return self.log.read_text(errors="replace")[-chars:]

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        """Start the child (no wait; see :meth:`wait_ready`)."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.command,
                env=self.env,
                cwd=self.cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.state = ProcessState.RUNNING
        self._started_at = self._clock()

    def wait_ready(self, ready: Callable[[], object], timeout: float, what: str, interval: float = 0.2) -> None:
        """Wait (bounded) until ``ready()`` is truthy; :class:`RuntimeError` with the log's tail if the
        child exits first, :class:`TimeoutError` naming ``what`` if it takes longer than ``timeout``."""

        def check() -> object:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.returncode} before {what}: {self.tail()}")
            return ready()

        eventually_sync(check, timeout=timeout, interval=interval, what=f"{self.name}: {what}")

    def stop(self) -> None:
        """Stop the child and every process of its group: SIGTERM, a bounded wait, then SIGKILL."""
        self.state = ProcessState.STOPPED
        proc, self.proc = self.proc, None
        if proc is None:
            return
        pgid = proc.pid  # start_new_session: the leader's pid is the group's id
        if proc.poll() is None and not self.term_group:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        elif proc.poll() is None or group_members(pgid):  # a dead leader's helpers get their SIGTERM too
            _signal_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=self.stop_timeout)
        # The leader is gone (or stuck); its group may not be: give it the rest of the time.
        _group_ended(pgid, max(0.0, deadline - time.monotonic()))
        if proc.poll() is None or group_members(pgid):
            logger.warning("process group did not stop in time; killing it", extra={"child": self.name})
            _signal_group(pgid, signal.SIGKILL)
            proc.wait(timeout=self.stop_timeout)
            _group_ended(pgid, self.stop_timeout)
        logger.info("process stopped", extra={"child": self.name, "returncode": proc.returncode})

    # -- supervision ---------------------------------------------------------------------------
    def supervise(self) -> ProcessState:
        """Restart a child that died, after its backoff; give up once it crash-loops. Returns the state."""
        now = self._clock()
        if self.state is ProcessState.RUNNING and self.proc is not None and self.proc.poll() is not None:
            self._exited(now)
        elif self.state is ProcessState.RESTARTING and now >= self._restart_at:
            self.restarts += 1
            self.start()
            logger.info("process restarted", extra={"child": self.name, "restarts": self.restarts})
        return self.state

    def _exited(self, now: float) -> None:
        assert self.proc is not None
        leftovers = group_members(self.proc.pid)
        if leftovers:  # a dead leader's helpers would hold its ports and files
            _signal_group(self.proc.pid, signal.SIGKILL)
        if now - self._started_at >= self.policy.stable_s:
            self._backoff.reset()
            self.crashes_in_a_row = 0
        self.crashes_in_a_row += 1
        details = {"child": self.name, "code": self.proc.returncode, "tail": self.tail(500)}
        if self.crashes_in_a_row > self.policy.max_restarts:
            self.state = ProcessState.CRASH_LOOPING
            logger.error(
                "process is crash looping; not restarting it again",
                extra={**details, "exits_in_a_row": self.crashes_in_a_row},
            )
            return
        delay = self._backoff.next()
        self.restart_delays.append(delay)
        self._restart_at = now + delay
        self.state = ProcessState.RESTARTING
        logger.error("process exited, restarting it", extra={**details, "restart_in_s": round(delay, 2)})


def _group_ended(pgid: int, timeout: float) -> bool:
    """Wait (bounded) until process group ``pgid`` has no live member; whether it ended in time."""
    try:
        eventually_sync(lambda: not group_members(pgid), timeout=timeout, interval=0.05, what=f"group {pgid} ends")
    except TimeoutError:
        return False
    return True


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def own_or_temporary(folder: Path | None, prefix: str) -> tuple[Path, Path | None]:
    """``folder``, or a new temporary one; the second is what to delete at stop (the temporary one)."""
    if folder is not None:
        return folder, None
    temporary = Path(tempfile.mkdtemp(prefix=prefix))
    return temporary, temporary


def http_ok(url: str) -> bool:
    """Whether ``url`` answers 200 now (a readiness check)."""
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


class StartStop:
    """``with`` starts and always stops, also when the start fails half way (a stop must cope
    with a half-started state)."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class LocalServer(StartStop):
    """What nginx's, Prometheus's and Grafana's runners share: a :class:`ManagedProcess` in
    ``process`` (None while stopped), ``running`` and ``pid`` from it, and a stop that ends its
    process group and deletes ``_scratch``, the temporary work folder made for it (if any)."""

    process: ManagedProcess | None
    _scratch: Path | None = None

    def stop(self) -> None:
        """Stop the child and its whole process group; delete a temporary work folder."""
        if self.process is not None:
            self.process.stop()
            self.process = None
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.running

    @property
    def pid(self) -> int | None:
        """The pid of the running child (the leader of its process group), None when stopped."""
        return self.process.pid if self.process is not None else None
