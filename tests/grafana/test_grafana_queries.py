"""The model of Grafana's query expansion gives what Grafana's PostgreSQL datasource sends
(interval rounding, TimescaleDB macros, variable quoting), and refuses what it does not model."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.grafana.grafana_queries import QueryContext, Variable, calculate_interval, format_interval, grafana_sql

END = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("span", "points", "minimum", "expected"),
    [
        (timedelta(hours=1), 1500, "1s", "2s"),
        (timedelta(hours=6), 1500, "1s", "15s"),
        (timedelta(days=30), 1500, "1s", "30m"),
        (timedelta(days=730), 1500, "1s", "12h"),
        (timedelta(minutes=5), 1500, "1s", "1s"),  # 200 ms is below the datasource's min interval
        (timedelta(days=7), 1000, "1s", "10m"),
    ],
)
def test_interval_is_rounded_like_grafana(span: timedelta, points: int, minimum: str, expected: str) -> None:
    assert format_interval(calculate_interval(END - span, END, points, minimum)) == expected


def ctx(span: timedelta = timedelta(hours=1)) -> QueryContext:
    return QueryContext(END - span, END, 1500, "1s")


def test_time_macros_expand_as_with_the_timescaledb_option() -> None:
    sql = "SELECT $__timeGroupAlias(s.time, $__interval), $__interval_ms FROM samples s WHERE $__timeFilter(s.time)"
    assert grafana_sql(sql, ctx(), {}) == (
        "SELECT time_bucket('2.000s',s.time) AS \"time\", 2000 FROM samples s "
        "WHERE s.time BETWEEN '2026-11-23T11:00:00Z' AND '2026-11-23T12:00:00Z'"
    )


def test_time_group_followed_by_a_comma_gets_the_time_alias_as_in_grafana() -> None:
    assert grafana_sql("SELECT $__timeGroup(t, 5m), v", ctx(), {}) == "SELECT time_bucket('300.000s',t) AS \"time\", v"
    assert grafana_sql("GROUP BY $__timeGroup(t, 1h)", ctx(), {}) == "GROUP BY time_bucket('3600.000s',t)"


def test_variables_are_quoted_like_the_postgres_datasource_does() -> None:
    multi = Variable("tag", ("a", "o'b"), multi=True)
    single = Variable("url", ("http://x:9103",), multi=False)
    assert grafana_sql("IN ($tag) '${url}'", ctx(), {"tag": multi, "url": single}) == "IN ('a','o''b') 'http://x:9103'"


def test_an_unknown_macro_or_variable_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown macro"):
        grafana_sql("SELECT $__timeSomething(t)", ctx(), {})
    with pytest.raises(ValueError, match="not expanded"):
        grafana_sql("SELECT 1 WHERE x IN ($undefined)", ctx(), {})
