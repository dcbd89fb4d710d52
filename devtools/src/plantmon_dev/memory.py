"""Memory of the local stack, read from ``/proc`` (Linux): RSS and PSS of every process.

A part of the stack is one or more root processes (PostgreSQL's postmaster, nginx's master, a
service's Python process) and all their descendants (PostgreSQL backends and background workers,
nginx workers). :func:`part_memory` sums them. RSS counts a shared page in every process that maps
it, so the RSS sum over-counts PostgreSQL's shared buffers and shared libraries: it is the
conservative figure the 1 GB budget is checked against. PSS (``/proc/<pid>/smaps_rollup``) splits
each shared page between the processes sharing it; its sum is the memory the stack really takes.

No third-party package: the ``/proc`` files are read directly (``psutil`` would do the same).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

PROC = Path("/proc")


@dataclass(frozen=True)
class PartMemory:
    """Memory of one part of the stack: its processes, their RSS and PSS sums in bytes."""

    name: str
    pids: tuple[int, ...]
    rss_bytes: int
    pss_bytes: int


def _status_kib(pid: int, key: str, proc: Path = PROC) -> int:
    """A ``kB`` field of ``/proc/<pid>/status`` (0 when the process is gone or has none)."""
    try:
        for line in (proc / str(pid) / "status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return 0
    return 0


def rss_bytes(pid: int, proc: Path = PROC) -> int:
    """Resident set size of one process (``VmRSS``), 0 when it is gone."""
    return _status_kib(pid, "VmRSS", proc) * 1024


def pss_bytes(pid: int, proc: Path = PROC) -> int:
    """Proportional set size of one process (``smaps_rollup``), falling back to RSS when unreadable."""
    try:
        for line in (proc / str(pid) / "smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return rss_bytes(pid, proc)
    return rss_bytes(pid, proc)


def parent_map(proc: Path = PROC) -> dict[int, int]:
    """``pid -> parent pid`` of every process visible in ``/proc``."""
    parents: dict[int, int] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        # The command name (field 2) is in parentheses and may hold spaces: split after the last ')'.
        fields = stat[stat.rindex(")") + 2 :].split()
        parents[int(entry.name)] = int(fields[1])
    return parents


def process_tree(roots: Iterable[int], parents: Mapping[int, int] | None = None) -> list[int]:
    """The roots that are alive and every descendant of them, each once, roots first."""
    parents = parent_map() if parents is None else parents
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    found: list[int] = []
    pending = [pid for pid in roots if pid in parents]
    while pending:
        pid = pending.pop(0)
        if pid in found:
            continue
        found.append(pid)
        pending.extend(sorted(children.get(pid, [])))
    return found


def part_memory(name: str, roots: Iterable[int], parents: Mapping[int, int] | None = None) -> PartMemory:
    """RSS and PSS summed over ``roots`` and their descendants."""
    pids = process_tree(roots, parents)
    return PartMemory(name, tuple(pids), sum(rss_bytes(p) for p in pids), sum(pss_bytes(p) for p in pids))


def measure(parts: Mapping[str, Iterable[int]]) -> list[PartMemory]:
    """Memory of each named part (part name -> root pids), from one snapshot of the process table."""
    parents = parent_map()
    measured = [part_memory(name, roots, parents) for name, roots in parts.items()]
    logger.info(
        "stack memory measured",
        extra={
            "rss_mib": round(sum(p.rss_bytes for p in measured) / 2**20, 1),
            "pss_mib": round(sum(p.pss_bytes for p in measured) / 2**20, 1),
            "parts": {p.name: len(p.pids) for p in measured},
        },
    )
    return measured


def format_table(parts: Iterable[PartMemory]) -> str:
    """A Markdown table of the parts and their total (MiB)."""
    rows = list(parts)
    lines = ["| part | processes | RSS (MiB) | PSS (MiB) |", "| --- | ---: | ---: | ---: |"]
    for part in rows:
        rss, pss = part.rss_bytes / 2**20, part.pss_bytes / 2**20
        lines.append(f"| {part.name} | {len(part.pids)} | {rss:.1f} | {pss:.1f} |")
    total_rss = sum(p.rss_bytes for p in rows) / 2**20
    total_pss = sum(p.pss_bytes for p in rows) / 2**20
    lines.append(f"| **total** | {sum(len(p.pids) for p in rows)} | **{total_rss:.1f}** | **{total_pss:.1f}** |")
    return "\n".join(lines)
