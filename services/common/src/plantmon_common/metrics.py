"""Prometheus helpers: a registry per service (a fresh one per test) and the ASGI ``/metrics`` app."""

from __future__ import annotations

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Info,
    make_asgi_app,
)
from prometheus_client.registry import Collector

from plantmon_common import __version__


def new_registry(service: str, with_process: bool = True) -> CollectorRegistry:
    """A registry holding the process, platform and GC collectors and a build-info metric."""
    registry = CollectorRegistry(auto_describe=True)
    if with_process:
        collector: Collector
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            registry.register(collector)
    Info("plantmon_build", "Build information of this service", registry=registry).info(
        {"service": service, "version": __version__}
    )
    return registry


__all__ = ["CollectorRegistry", "make_asgi_app", "new_registry"]
