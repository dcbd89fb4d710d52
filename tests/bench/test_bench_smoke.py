"""Each benchmark's ``--smoke`` run completes and reports success (figures go to docs/benchmarks.md)."""

from __future__ import annotations

import importlib


def run_smoke(name: str) -> int:
    bench = importlib.import_module(f"bench.{name}")
    result: int = bench.main(["--smoke"])
    return result


def test_stack_memory() -> None:
    assert run_smoke("stack_memory") == 0


def test_sensors_audio() -> None:
    assert run_smoke("sensors_audio") == 0


def test_sensors_api() -> None:
    assert run_smoke("sensors_api") == 0


def test_opc_server_startup() -> None:
    assert run_smoke("opc_server_startup") == 0


def test_opc_server_throughput() -> None:
    assert run_smoke("opc_server_throughput") == 0


def test_alerts_latency() -> None:
    assert run_smoke("alerts_latency") == 0


def test_alerts_anomaly() -> None:
    assert run_smoke("alerts_anomaly") == 0


def test_scraper_throughput() -> None:
    assert run_smoke("scraper_throughput") == 0


def test_health_server() -> None:
    assert run_smoke("health_server") == 0
