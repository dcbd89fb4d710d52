"""The local stack's process base: restarts with growing delays, a crash loop that stops, and a stop that
ends the whole process group (grandchildren too)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from plantmon_dev.managed import ManagedProcess, ProcessState, RestartPolicy, group_members
from plantmon_dev.waiting import eventually_sync

DIES = [sys.executable, "-c", "raise SystemExit(3)"]


class Clock:
    """Supervision's clock, moved by the test: no wall-clock waits between restarts."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def dying(tmp_path: Path, clock: Clock) -> Iterator[Callable[..., ManagedProcess]]:
    """Start a child that exits at once (code 3), supervised on ``clock``; every one is stopped after."""
    started: list[ManagedProcess] = []

    def start(random: float = 0.0, **policy: Any) -> ManagedProcess:
        restart = RestartPolicy(**policy)
        child = ManagedProcess("dies", DIES, tmp_path / "dies.log", restart=restart, clock=clock, random=lambda: random)
        started.append(child)
        child.start()
        return child

    yield start
    for child in started:
        child.stop()
        assert child.state is ProcessState.STOPPED


def exited(child: ManagedProcess) -> bool:
    return child.proc is not None and child.proc.poll() is not None


def dies_and_is_restarted(child: ManagedProcess, clock: Clock) -> None:
    """Wait for the child's exit, let supervision see it, move the clock past its delay, restart it."""
    eventually_sync(lambda: exited(child), timeout=30, what="the child exits")
    assert child.supervise() is ProcessState.RESTARTING
    clock.now += child.restart_delays[-1]
    assert child.supervise() is ProcessState.RUNNING


def test_a_child_that_dies_is_restarted_after_growing_delays(
    dying: Callable[..., ManagedProcess], clock: Clock
) -> None:
    child = dying(random=0.0, initial_s=1.0, max_s=8.0, max_restarts=10, stable_s=60.0)
    for restarts in range(5):
        eventually_sync(lambda: exited(child), timeout=30, what="the child exits")
        assert child.supervise() is ProcessState.RESTARTING
        assert child.restarts == restarts
        clock.now += child.restart_delays[-1] - 0.01
        assert child.supervise() is ProcessState.RESTARTING, "not restarted before its delay"
        clock.now += 0.01
        assert child.supervise() is ProcessState.RUNNING
        assert child.restarts == restarts + 1
    assert list(child.restart_delays) == [1.0, 2.0, 4.0, 8.0, 8.0]


def test_the_delays_are_jittered_within_the_schedule(dying: Callable[..., ManagedProcess], clock: Clock) -> None:
    child = dying(random=0.999, initial_s=1.0, max_s=4.0, max_restarts=10)
    for _ in range(3):
        dies_and_is_restarted(child, clock)
    assert list(child.restart_delays) == pytest.approx([0.5, 1.0, 2.0], abs=0.01)


def test_a_run_of_stable_s_starts_the_schedule_afresh(dying: Callable[..., ManagedProcess], clock: Clock) -> None:
    child = dying(random=0.0, initial_s=1.0, max_s=8.0, max_restarts=2, stable_s=60.0)
    for _ in range(2):
        dies_and_is_restarted(child, clock)
    eventually_sync(lambda: exited(child), timeout=30, what="the child exits")
    clock.now += 60.0  # it "ran" a minute this time
    assert child.supervise() is ProcessState.RESTARTING
    assert list(child.restart_delays) == [1.0, 2.0, 1.0]
    assert child.crashes_in_a_row == 1


def test_a_crash_looping_child_is_left_stopped_and_says_so(
    dying: Callable[..., ManagedProcess], clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    child = dying(random=0.0, initial_s=0.5, max_s=2.0, max_restarts=3)
    for _ in range(3):
        dies_and_is_restarted(child, clock)
    eventually_sync(lambda: exited(child), timeout=30, what="the child exits a fourth time")
    assert child.supervise() is ProcessState.CRASH_LOOPING
    assert child.restarts == 3
    assert child.returncode == 3
    clock.now += 3600
    assert child.supervise() is ProcessState.CRASH_LOOPING, "never restarted again"
    assert child.restarts == 3
    assert "crash looping" in caplog.text
    assert caplog.text.count("process exited, restarting it") == 3


GRANDPARENT = """
import subprocess, sys, time
deaf = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
grandchild = subprocess.Popen([sys.executable, "-c", deaf])
print(grandchild.pid, flush=True)
time.sleep(600)
"""


def pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_stop_ends_grandchildren_too_even_one_that_ignores_sigterm(tmp_path: Path) -> None:
    log = tmp_path / "tree.log"
    child = ManagedProcess("tree", [sys.executable, "-c", GRANDPARENT], log, stop_timeout=2.0)
    child.start()
    try:
        eventually_sync(lambda: log.read_text().strip(), timeout=30, what="the grandchild's pid in the log")
        parent, grandchild = child.pid, int(log.read_text().split()[0])
        assert parent is not None
        assert os.getpgid(grandchild) == parent, "the grandchild is in the child's group"
        assert sorted(group_members(parent)) == sorted([parent, grandchild])
    finally:
        child.stop()
    assert not pid_alive(parent)
    assert not pid_alive(grandchild)
    assert group_members(parent) == []


def test_stop_ends_the_group_of_a_leader_that_already_died(tmp_path: Path) -> None:
    log = tmp_path / "orphan.log"
    script = GRANDPARENT.replace("time.sleep(600)\n", "", 1).replace("\ntime.sleep(600)", "")
    child = ManagedProcess("orphan", [sys.executable, "-c", script], log, stop_timeout=2.0)
    child.start()
    eventually_sync(
        lambda: exited(child) and log.read_text().strip(), timeout=30, what="the leader exits, its grandchild printed"
    )
    grandchild = int(log.read_text().split()[0])
    assert pid_alive(grandchild)
    child.stop()
    assert not pid_alive(grandchild)


def test_stop_terms_the_helpers_of_a_leader_that_already_died_before_killing_them(tmp_path: Path) -> None:
    """A dead leader's helper that obeys SIGTERM gets the chance to stop cleanly (it says so)."""
    log, said = tmp_path / "orphan.log", tmp_path / "said"
    polite = (
        "import signal, sys, time\n"
        f"def bye(*_): open({str(said)!r}, 'w').write('terminated'); sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, bye)\n"
        "print('ready', flush=True)\n"
        "time.sleep(600)\n"
    )
    script = (
        "import subprocess, sys\n"
        f"helper = subprocess.Popen([sys.executable, '-c', {polite!r}])\n"
        "print(helper.pid, flush=True)\n"
    )
    child = ManagedProcess("orphan", [sys.executable, "-c", script], log, stop_timeout=30.0)
    child.start()
    eventually_sync(
        lambda: exited(child) and "ready" in log.read_text(), timeout=30, what="the leader exits, its helper is ready"
    )
    helper = int(log.read_text().split()[0])
    child.stop()
    assert not pid_alive(helper)
    assert said.read_text() == "terminated"  # SIGTERM, not the SIGKILL after the bounded wait


def test_wait_ready_fails_at_once_with_the_log_when_the_child_exits(tmp_path: Path) -> None:
    command = [sys.executable, "-c", "print('bad config line 3'); raise SystemExit(1)"]
    child = ManagedProcess("bad", command, tmp_path / "bad.log")
    child.start()
    try:
        with pytest.raises(RuntimeError, match="bad exited with 1 before it listens: bad config line 3"):
            child.wait_ready(lambda: False, 30, "it listens")
    finally:
        child.stop()
