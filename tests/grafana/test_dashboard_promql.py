"""Every Prometheus panel query of the dashboards is valid PromQL: a real Prometheus (Debian's,
on the project's configuration) evaluates each one, with Grafana's interval variables expanded."""

from __future__ import annotations

import httpx
from plantmon_dev.prometheus import LocalPrometheus

from tests.grafana.grafana_queries import dashboards, panels

PROMETHEUS_UID = "plantmon-prometheus"
# What Grafana substitutes before sending (a 15 s scrape interval datasource, a 1 h range).
BUILTINS = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}


def prometheus_exprs() -> list[tuple[str, str]]:
    found = []
    for uid, board in dashboards().items():
        for panel in panels(board):
            for target in panel.get("targets", []):
                source = target.get("datasource") or panel.get("datasource") or {}
                if source.get("uid") == PROMETHEUS_UID:
                    found.append((f"{uid}/{panel['title']}", target["expr"]))
    return found


def test_every_prometheus_panel_query_is_accepted_by_a_real_prometheus() -> None:
    exprs = prometheus_exprs()
    assert len(exprs) >= 8
    with LocalPrometheus({}) as prometheus:
        for name, expr in exprs:
            for variable, value in BUILTINS.items():
                expr = expr.replace(variable, value)
            response = httpx.get(f"{prometheus.url}/api/v1/query", params={"query": expr}, timeout=10)
            assert response.status_code == 200, f"{name}: {expr}: {response.text}"
            assert response.json()["status"] == "success", name


def test_a_broken_expression_is_rejected_by_the_same_check() -> None:
    with LocalPrometheus({}) as prometheus:
        response = httpx.get(f"{prometheus.url}/api/v1/query", params={"query": "sum(rate(up[1m])"}, timeout=10)
    assert response.status_code == 400
