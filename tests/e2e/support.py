"""The end-to-end suites' stack: the same :class:`plantmon_dev.stack.Stack` as ``task up``, on free ports."""

from __future__ import annotations

import tempfile
from pathlib import Path

from plantmon_dev.stack import REPO_ROOT, Ports, Stack


def new_stack(**kwargs: object) -> Stack:
    data_dir = Path(tempfile.mkdtemp(prefix="plantmon-e2e-"))
    # The sensor tests' cache (numba's kernels, the audio feature tables librosa builds): a warm one
    # spares each stack's sensor service the child process that builds the tables.
    kwargs.setdefault("numba_cache_dir", REPO_ROOT / ".data" / "test-cache" / "numba")
    return Stack(data_dir, ports=Ports.free(), poll_interval_s=0.5, **kwargs)  # type: ignore[arg-type]
