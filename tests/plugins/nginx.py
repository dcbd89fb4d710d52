"""pytest fixtures for the real nginx DMZ (Debian's nginx binary, our own prefix, config and ports)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from plantmon_dev.nginx import NginxDmz

DmzFactory = Callable[..., NginxDmz]


@pytest.fixture
def dmz_factory() -> Iterator[DmzFactory]:
    """Start DMZs in front of an upstream port: ``dmz = dmz_factory(upstream_port, rate="5r/s")``.

    Keyword arguments go to :class:`plantmon_dev.nginx.NginxDmz`. Every DMZ started through the
    factory is stopped (and its temporary prefix deleted) when the test ends, whatever happens.
    """
    started: list[NginxDmz] = []

    def start(upstream_port: int, upstream_host: str = "127.0.0.1", **kwargs: Any) -> NginxDmz:
        dmz = NginxDmz(f"{upstream_host}:{upstream_port}", **kwargs)
        started.append(dmz)
        dmz.start()
        return dmz

    yield start
    for dmz in reversed(started):
        dmz.stop()
