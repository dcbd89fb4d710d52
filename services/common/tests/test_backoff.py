"""The one retry schedule: growth, the cap, reset, and the jitter's range (with an injected random)."""

from __future__ import annotations

import random
from typing import Any

import pytest
from plantmon_common.backoff import ExponentialBackoff


def test_without_jitter_the_delays_double_up_to_the_maximum() -> None:
    backoff = ExponentialBackoff(0.5, 10.0, jitter=0.0)
    assert [backoff.next() for _ in range(8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]
    assert backoff.failures == 8


def test_the_multiplier_sets_the_growth() -> None:
    backoff = ExponentialBackoff(1.0, 100.0, multiplier=3.0, jitter=0.0)
    assert [backoff.next() for _ in range(5)] == [1.0, 3.0, 9.0, 27.0, 81.0]


def test_reset_after_a_success_starts_again_at_the_initial_delay() -> None:
    backoff = ExponentialBackoff(0.2, 5.0, random=lambda: 0.0)
    for _ in range(10):
        backoff.next()
    assert backoff.nominal == 5.0
    backoff.reset()
    assert backoff.failures == 0
    assert backoff.next() == 0.2
    assert backoff.next() == 0.4


def test_jitter_takes_a_random_share_of_at_most_jitter_off_each_delay() -> None:
    low = ExponentialBackoff(1.0, 8.0, jitter=0.5, random=lambda: 0.0)
    high = ExponentialBackoff(1.0, 8.0, jitter=0.5, random=lambda: 0.999999)
    middle = ExponentialBackoff(1.0, 8.0, jitter=0.5, random=lambda: 0.5)
    assert [low.next() for _ in range(5)] == [1.0, 2.0, 4.0, 8.0, 8.0]
    assert [high.next() for _ in range(5)] == pytest.approx([0.5, 1.0, 2.0, 4.0, 4.0], rel=1e-5)
    assert [middle.next() for _ in range(5)] == [0.75, 1.5, 3.0, 6.0, 6.0]


@pytest.mark.parametrize("jitter", [0.0, 0.5, 1.0])
def test_every_delay_stays_within_its_bounds(jitter: float) -> None:
    rng = random.Random(13)
    backoff = ExponentialBackoff(0.1, 3.0, jitter=jitter, random=rng.random)
    for _ in range(200):
        nominal = backoff.nominal
        delay = backoff.next()
        assert nominal * (1 - jitter) <= delay <= nominal <= 3.0
        if rng.random() < 0.1:
            backoff.reset()


def test_full_jitter_spreads_over_the_whole_interval() -> None:
    rng = random.Random(7)
    delays = [ExponentialBackoff(4.0, 4.0, jitter=1.0, random=rng.random).next() for _ in range(500)]
    assert min(delays) < 0.2 and max(delays) > 3.8


def test_a_service_that_retried_for_days_stays_at_the_maximum() -> None:
    backoff = ExponentialBackoff(0.5, 10.0, jitter=0.0)
    backoff.failures = 10**6
    assert backoff.next() == 10.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"initial": -1.0, "maximum": 1.0}, "negative"),
        ({"initial": 1.0, "maximum": 2.0, "multiplier": 0.5}, "multiplier"),
        ({"initial": 1.0, "maximum": 2.0, "jitter": 1.5}, "jitter"),
    ],
)
def test_nonsense_settings_are_refused(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ExponentialBackoff(**kwargs)
