"""Training the anomaly model from the database, the retrain schedule, and the live detector."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import psycopg
import pytest
from plantmon_alerts.anomaly import AnomalyRunner, ModelStore, TrainingSet, build_matrix, next_training
from plantmon_alerts.anomaly.training import read_healthy_window
from plantmon_alerts.engine import Engine, Raised
from plantmon_alerts.rules import AnomalyRule, parse_rules
from plantmon_alerts.store import make_pool
from plantmon_common.opcua import Sample
from plantmon_common.settings import DatabaseSettings
from prometheus_client import CollectorRegistry

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
FEATURES = ("Plant/RPM/MainShaft", "Plant/Temperature/Upper", "Plant/Voltage/MainSupply")
BAD = 0x80000000


def rule(**changes: object) -> AnomalyRule:
    base: dict[str, object] = {
        "name": "plant_anomaly",
        "kind": "anomaly",
        "tags": "Plant/*",
        "threshold": 1.0,
        "for": 10,
        "severity": 4,
        "message": "score {measured:.2f}",
        "cadence": 10,
        "train_window": 3600,
        "retrain_every": 86400,
        "min_vectors": 60,
    }
    base.update(changes)
    [parsed] = parse_rules({"rules": [base]})
    assert isinstance(parsed, AnomalyRule)
    return parsed


# -- schedule ----------------------------------------------------------------------------------


def test_retrain_schedule() -> None:
    every, retry = 86400.0, 600.0
    # No model yet: due at once.
    assert next_training(None, None, False, every_s=every, retry_s=retry) is None
    # A model trained at T0: due a day later.
    assert next_training(T0, T0, False, every_s=every, retry_s=retry) == T0 + timedelta(days=1)
    # The last attempt failed (not enough healthy data): retried after retry_s, model or not.
    failed_at = T0 + timedelta(days=1, seconds=5)
    assert next_training(T0, failed_at, True, every_s=every, retry_s=retry) == failed_at + timedelta(seconds=600)
    assert next_training(None, T0, True, every_s=every, retry_s=retry) == T0 + timedelta(seconds=600)


def test_build_matrix_carries_values_forward_briefly_and_drops_incomplete_or_excluded_buckets() -> None:
    rows = [("a", 0, 1.0), ("b", 0, 10.0), ("a", 1, 2.0), ("b", 3, 30.0), ("a", 4, 4.0), ("b", 5, 50.0)]
    # b is missing in buckets 1 and 2 (carried for one bucket only: 1 is kept, 2 is not);
    # a is missing in 3 (carried from 1? no: two buckets back) and 5 (carried from 4).
    vectors, indexes = build_matrix(rows, ("a", "b"), 6, max_gap_buckets=1, excluded=[4])
    assert indexes == [0, 1, 5]
    np.testing.assert_array_equal(vectors, [[1.0, 10.0], [2.0, 10.0], [4.0, 50.0]])


# -- the live detector, with the training window handed in --------------------------------------


class Windows:
    """Training windows of a synthetic healthy plant (three correlated features)."""

    def __init__(self, vectors: int = 400) -> None:
        self.vectors = vectors
        self.calls: list[datetime] = []

    async def __call__(self, r: AnomalyRule, end: datetime) -> TrainingSet:
        self.calls.append(end)
        rng = np.random.default_rng(len(self.calls))
        load = rng.uniform(0.3, 0.9, self.vectors)
        x = np.column_stack([1500 - 60 * load, 60 + 10 * load, 24.2 - 1.5 * load]) + rng.normal(
            0, [2.0, 0.3, 0.02], (self.vectors, 3)
        )
        start = end - timedelta(seconds=r.train_window_s)
        times = [start + timedelta(seconds=10 * (i + 1)) for i in range(self.vectors)]
        return TrainingSet(x, FEATURES, times, start, end)


def feed(runner: AnomalyRunner, at: datetime, rpm: float, temperature: float, volts: float) -> None:
    for path, value in zip(FEATURES, (rpm, temperature, volts), strict=True):
        runner.observe(Sample(path, value, 0, at))


async def test_runner_trains_when_due_scores_on_its_cadence_and_alerts_through_the_engine(tmp_path: Path) -> None:
    r = rule()
    registry = CollectorRegistry()
    windows = Windows()
    runner = AnomalyRunner([r], tmp_path, registry, windows)
    assert runner.tick(T0) == []  # no model yet: no score
    assert await runner.train_due(T0) == 1
    assert ModelStore(tmp_path, r.name).versions() == [1]
    assert registry.get_sample_value("plantmon_alerts_anomaly_model_version", {"rule": r.name}) == 1
    assert await runner.train_due(T0 + timedelta(hours=23)) == 0  # not due again before a day
    engine = Engine([r])
    transitions = []
    scores = []
    for step in range(0, 120):
        now = T0 + timedelta(seconds=step)
        broken = step >= 60  # from 60 s on the temperature no longer follows the load
        feed(runner, now, 1500 - 60 * 0.6, 66.0 + (8.0 if broken else 0.0), 24.2 - 1.5 * 0.6)
        for sample in runner.tick(now):
            scores.append((step, sample.value))
            transitions += engine.feed(sample)
    # One score per cadence (10 s), not per tick.
    assert [s for s, _ in scores] == list(range(0, 120, 10))
    assert all(v is not None and v < 1.0 for s, v in scores if s < 60)
    [raised] = [t for t in transitions if isinstance(t, Raised)]
    assert raised.tag_path == "Plant/Anomaly/plant_anomaly" and raised.at == T0 + timedelta(seconds=70)
    gauge = registry.get_sample_value("plantmon_alerts_anomaly_score", {"rule": r.name})
    assert gauge is not None and gauge == scores[-1][1]
    # A day later: retrained, version 2 in use.
    assert await runner.train_due(T0 + timedelta(days=1)) == 1
    model = runner.detectors[r.name].model
    assert model is not None and model.version == 2
    assert registry.get_sample_value("plantmon_alerts_anomaly_trainings_total", {"rule": r.name, "outcome": "ok"}) == 2


async def test_no_vector_while_a_feature_is_missing_bad_or_old(tmp_path: Path) -> None:
    r = rule(max_feature_age=30)
    runner = AnomalyRunner([r], tmp_path, CollectorRegistry(), Windows())
    await runner.train_due(T0)
    feed(runner, T0, 1464.0, 66.0, 23.3)
    assert len(runner.tick(T0)) == 1
    runner.observe(Sample("Plant/Temperature/Upper", None, BAD, T0 + timedelta(seconds=5)))
    assert runner.tick(T0 + timedelta(seconds=10)) == []  # a bad feature: no vector
    feed(runner, T0 + timedelta(seconds=15), 1464.0, 66.0, 23.3)
    assert len(runner.tick(T0 + timedelta(seconds=20))) == 1
    assert runner.tick(T0 + timedelta(seconds=60)) == []  # 45 s old: too old


async def test_a_failed_training_keeps_the_model_and_is_retried_later(tmp_path: Path) -> None:
    r = rule()
    registry = CollectorRegistry()
    runner = AnomalyRunner([r], tmp_path, registry, Windows(vectors=400), retry_s=600)
    await runner.train_due(T0)
    runner.read_window = Windows(vectors=20)  # fewer than min_vectors (60)
    later = T0 + timedelta(days=1)
    assert await runner.train_due(later) == 0
    detector = runner.detectors[r.name]
    assert detector.model is not None and detector.model.version == 1
    assert registry.get_sample_value("plantmon_alerts_anomaly_trainings_total", {"rule": r.name, "outcome": "failed"})
    assert runner.due(later + timedelta(seconds=599)) == []
    runner.read_window = Windows(vectors=400)
    assert await runner.train_due(later + timedelta(seconds=600)) == 1
    assert detector.model.version == 2


async def test_a_restarted_runner_loads_the_newest_saved_model(tmp_path: Path) -> None:
    r = rule()
    first = AnomalyRunner([r], tmp_path, CollectorRegistry(), Windows())
    await first.train_due(T0)
    await first.train_due(T0 + timedelta(days=1))
    again = AnomalyRunner([r], tmp_path, CollectorRegistry(), read_window=None)
    model = again.detectors[r.name].model
    assert model is not None and model.version == 2
    assert again.due(T0 + timedelta(days=1, hours=1)) == []  # trained a day ago: not due
    # A changed rules file: a removed anomaly rule drops its detector; a new one is added.
    again.set_rules([rule(name="other")])
    assert list(again.detectors) == ["other"] and again.detectors["other"].model is None


# -- from the database, as the worker's role ----------------------------------------------------


@pytest.fixture
def plant_history(superuser_conninfo: str) -> datetime:
    """One hour of three tags every 2 s, a bad stretch, and an alert that was open for 5 minutes."""
    end = T0 + timedelta(hours=1)
    rng = np.random.default_rng(7)
    with psycopg.connect(superuser_conninfo, autocommit=True) as conn:
        ids: dict[str, int] = {}
        for path in (*FEATURES, "Plant/Audio/Level"):
            sensor, _, tag = path.removeprefix("Plant/").partition("/")
            row = conn.execute(
                "INSERT INTO tags (path, sensor, tag) VALUES (%s, %s, %s) RETURNING id", (path, sensor.lower(), tag)
            ).fetchone()
            assert row is not None
            ids[path] = row[0]
        with conn.cursor() as cur, cur.copy("COPY samples (time, tag_id, value, status) FROM STDIN") as copy:
            for second in range(0, 3600, 2):
                at = T0 + timedelta(seconds=second)
                load = 0.6 + 0.2 * np.sin(second / 300)
                values = (1500 - 60 * load, 60 + 10 * load, 24.2 - 1.5 * load)
                for path, value in zip(FEATURES, values, strict=True):
                    noisy = float(value + rng.normal(0, 0.05))
                    bad = path == "Plant/Temperature/Upper" and 1200 <= second < 1500  # 5 minutes bad
                    copy.write_row((at, ids[path], None if bad else noisy, BAD if bad else 0))
        conn.execute(
            "INSERT INTO alerts (rule, tag_path, severity, state, message, raised_at, cleared_at) "
            "VALUES ('x', 'Plant/RPM/MainShaft', 3, 'cleared', 'm', %s, %s)",
            (T0 + timedelta(seconds=2400), T0 + timedelta(seconds=2700)),
        )
    return end


async def test_the_healthy_window_is_read_as_the_alerts_role_without_bad_data_or_alert_periods(
    plant_history: datetime, alerts_db: DatabaseSettings, tmp_path: Path
) -> None:
    r = rule(max_feature_age=20)
    pool = make_pool(alerts_db.conninfo())
    await pool.open(wait=True, timeout=10)
    try:
        data = await read_healthy_window(pool, r, plant_history)
        # Audio/Level has no sample at all: not a feature of this model.
        assert data.features == FEATURES
        assert data.start == T0 and data.end == plant_history
        # 360 buckets of 10 s; left out: the bad temperature (from 1200 s to 1500 s; the value of
        # 1198 s still serves the vector at 1210 s, being 12 s old, not the one at 1220 s) and
        # the alert (2400 s to 2700 s, the buckets at both edges included).
        bad = set(range(121, 150))
        alert = set(range(240, 271))
        assert len(data.vectors) == 360 - len(bad | alert)
        assert all(not (T0 + timedelta(seconds=2410) <= t <= T0 + timedelta(seconds=2700)) for t in data.times)
        assert np.isfinite(data.vectors).all()
        # The runner trains on it through the same pool and saves version 1.
        runner = AnomalyRunner([r], tmp_path, CollectorRegistry(), lambda rr, end: read_healthy_window(pool, rr, end))
        assert await runner.train_due(plant_history) == 1
        model = ModelStore(tmp_path, r.name).latest()
        assert model is not None and model.version == 1 and model.features == FEATURES
        assert model.metadata.vectors == len(data.vectors)
    finally:
        await pool.close()
