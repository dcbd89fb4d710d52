"""Reloading the rules file without a restart: on SIGHUP, or when the file changes.

:class:`RulesWatcher` checks the file's identity (modification time, size, inode) every
``poll_s`` seconds and at once on SIGHUP; when it changed and its content differs from what is
in force, the file is loaded and validated as at start. A valid file is handed to ``apply``
(the worker swaps it into the engine, where unchanged rules keep their open alerts); an invalid
one is refused as a whole: the previous rules stay in force and the reasons are logged once per
version of the file (:class:`~plantmon_alerts.rules.RulesError` names each rule and field).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path

from plantmon_alerts.rules.model import RuleBase, RulesError, load_rules

logger = logging.getLogger(__name__)

DEFAULT_POLL_S = 2.0

_Identity = tuple[int, int, int]


class RulesWatcher:
    """Watches one rules file; ``apply`` receives each new valid set of rules."""

    def __init__(
        self,
        path: Path,
        apply: Callable[[list[RuleBase]], None],
        *,
        poll_s: float = DEFAULT_POLL_S,
        initial: list[RuleBase] | None = None,
    ) -> None:
        self.path = path
        self.apply = apply
        self.poll_s = poll_s
        self.rules: list[RuleBase] = list(initial) if initial is not None else []
        self.reloads = 0
        self.refusals = 0
        self.last_error: RulesError | None = None
        self._identity: _Identity | None = self._stat()
        self._digest: str | None = self._read_digest() if initial is not None else None
        self._hup = asyncio.Event()

    def _stat(self) -> _Identity | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _read_digest(self) -> str | None:
        try:
            return hashlib.sha256(self.path.read_bytes()).hexdigest()
        except OSError:
            return None

    def check(self, *, force: bool = False) -> bool:
        """Reload if the file changed (or ``force``, as on SIGHUP); True when new rules were applied."""
        identity = self._stat()
        if not force and identity == self._identity:
            return False
        self._identity = identity
        digest = self._read_digest()
        if digest is not None and digest == self._digest and self.last_error is None:
            logger.info("rules file unchanged, nothing to reload", extra={"rules_file": str(self.path)})
            return False
        try:
            rules = load_rules(self.path)
        except RulesError as exc:
            self.refusals += 1
            self.last_error = exc
            self._digest = digest
            logger.error(
                "rules reload refused, the previous rules stay in force",
                extra={"rules_file": exc.source, "problems": exc.problems, "rules": [r.name for r in self.rules]},
            )
            return False
        before = {r.name: r for r in self.rules}
        after = {r.name: r for r in rules}
        self.apply(rules)
        self.rules = rules
        self._digest = digest
        self.last_error = None
        self.reloads += 1
        logger.info(
            "rules reloaded",
            extra={
                "rules_file": str(self.path),
                "added": sorted(after.keys() - before.keys()),
                "removed": sorted(before.keys() - after.keys()),
                "changed": sorted(n for n in after.keys() & before.keys() if after[n] != before[n]),
            },
        )
        return True

    def request_reload(self) -> None:
        """What SIGHUP does: reload at once, whatever the file's time stamps say."""
        self._hup.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Poll the file and answer SIGHUP until ``stop``."""
        loop = asyncio.get_running_loop()
        hup_installed = False
        if hasattr(signal, "SIGHUP"):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(signal.SIGHUP, self.request_reload)
                hup_installed = True
        logger.info(
            "watching the rules file",
            extra={"rules_file": str(self.path), "poll_s": self.poll_s, "sighup": hup_installed, "pid": os.getpid()},
        )
        try:
            while not stop.is_set():
                waiters = [asyncio.ensure_future(self._hup.wait()), asyncio.ensure_future(stop.wait())]
                try:
                    await asyncio.wait(waiters, timeout=self.poll_s, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for waiter in waiters:
                        waiter.cancel()
                if stop.is_set():
                    break
                forced = self._hup.is_set()
                self._hup.clear()
                self.check(force=forced)
        finally:
            if hup_installed:
                loop.remove_signal_handler(signal.SIGHUP)
