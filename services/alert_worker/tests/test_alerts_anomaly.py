"""The anomaly model on the sensors service's plant simulator: trained on one seed, judged on another.

Time is the simulator's: no sleeps. The plant is replayed offline (bench.anomaly_replay)
and the scores go through the real engine with an ``anomaly`` rule, as in the worker.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from plantmon_alerts.anomaly import AnomalyModel, ModelStore
from plantmon_alerts.engine import Cleared, Engine, Raised
from plantmon_alerts.rules import AnomalyRule, parse_rules
from plantmon_common.opcua import Sample

from bench.anomaly_replay import Episode, Replay, simulate

SEED_A, SEED_B = 101, 202
T0 = datetime(2026, 3, 1, tzinfo=UTC)
RAMP_S = 7200.0  # the bearing goes from healthy to fully worn in two hours
ONSET_S = 1800.0
BEARING_BANDS = [f"Plant/Audio/Spectrum/Band_{i}" for i in range(21, 31)]  # 3-7 kHz

RULE = {
    "name": "plant_anomaly",
    "kind": "anomaly",
    "tags": "Plant/*",
    "threshold": 0.7,
    "hysteresis": 0.3,
    "for": 10,
    "severity": 4,
    "message": "score {measured:.2f}",
}


@pytest.fixture(scope="module")
def healthy_a() -> Replay:
    return simulate(SEED_A, 2 * 3600)


@pytest.fixture(scope="module")
def model_a(healthy_a: Replay) -> AnomalyModel:
    return AnomalyModel.fit(
        healthy_a.vectors,
        healthy_a.features,
        rule="plant_anomaly",
        version=1,
        trained_at=T0,
        window=(T0 - timedelta(hours=2), T0),
        cadence_s=10.0,
    )


@pytest.fixture(scope="module")
def faulty_b() -> Replay:
    """Seed B: half an hour of healthy plant, then a bearing starting to wear (ramped), for 15 minutes."""
    return simulate(SEED_B, ONSET_S + 900, episodes=[Episode(ONSET_S, 900)], wear_ramp_s=RAMP_S)


def alerts(model: AnomalyModel, replay: Replay) -> list[object]:
    [rule] = parse_rules({"rules": [RULE]})
    assert isinstance(rule, AnomalyRule)
    engine = Engine([rule])
    scores = model.score(replay.vectors)
    out: list[object] = []
    for t, score in zip(replay.times, scores, strict=True):
        out += engine.feed(Sample(rule.score_path, float(score), 0, T0 + timedelta(seconds=float(t))))
    return out


def test_the_bearing_fault_ramps_up_from_inside_the_healthy_noise(healthy_a: Replay, faulty_b: Replay) -> None:
    healthy = np.mean([healthy_a.column(b) for b in BEARING_BANDS], axis=0)
    level = np.mean([faulty_b.column(b) for b in BEARING_BANDS], axis=0)
    times = faulty_b.times
    first = int(np.searchsorted(times, ONSET_S, side="right"))  # the first vector after the onset
    high = healthy.max()
    # 10 s and 20 s after the onset every bearing band is still inside its healthy range...
    for band in BEARING_BANDS:
        column = healthy_a.column(band)
        for k in (first, first + 1):
            assert column.min() <= faulty_b.column(band)[k] <= column.max(), (band, k)
    assert faulty_b.wear[first + 1] < 0.003
    # ... and ten minutes later far outside it (several dB), with the wear still growing.
    later = int(np.searchsorted(times, ONSET_S + 600))
    assert level[later] > high + 3.0
    assert 0.05 < faulty_b.wear[later] < 0.1
    # Without a ramp, the simulator's fault jumps: most of the wear within 10 seconds.
    jump = simulate(SEED_B, 40, episodes=[Episode(5, 60)], wear_ramp_s=0.0)
    assert jump.wear[1] > 0.3


def test_model_trained_on_seed_a_flags_the_bearing_fault_on_seed_b_within_60_s(
    model_a: AnomalyModel, faulty_b: Replay
) -> None:
    transitions = alerts(model_a, faulty_b)
    raised = [t for t in transitions if isinstance(t, Raised)]
    assert len(raised) == 1, [(t.at, t.value) for t in raised]
    delay = (raised[0].at - (T0 + timedelta(seconds=ONSET_S))).total_seconds()
    assert 0 < delay <= 60
    assert not [t for t in transitions if isinstance(t, Cleared)]  # the fault keeps it open


def test_model_trained_on_seed_a_does_not_flag_healthy_seed_b(model_a: AnomalyModel, faulty_b: Replay) -> None:
    healthy_b = faulty_b.times <= ONSET_S
    scores = model_a.score(faulty_b.vectors[healthy_b])
    # Unseen healthy data scores a little above the training window (median 0 there), but rarely
    # above the rule's threshold and never for the rule's 10 s.
    assert np.median(scores) < 0.5 and np.mean(scores > 1.0) < 0.02
    before = Replay(
        faulty_b.times[healthy_b], faulty_b.vectors[healthy_b], faulty_b.features, faulty_b.wear[healthy_b], ()
    )
    assert alerts(model_a, before) == []


def test_model_is_saved_and_loaded_with_its_version_and_metadata(
    model_a: AnomalyModel, healthy_a: Replay, tmp_path: Path
) -> None:
    store = ModelStore(tmp_path, "plant_anomaly")
    assert store.latest() is None and store.next_version() == 1
    path = store.save(model_a)
    assert path.name == "model-v000001.joblib"
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["version"] == 1 and meta["rule"] == "plant_anomaly"
    assert meta["trained_at"] == T0.isoformat()
    assert meta["window_start"] == (T0 - timedelta(hours=2)).isoformat() and meta["window_end"] == T0.isoformat()
    assert meta["features"] == list(healthy_a.features) and meta["vectors"] == len(healthy_a.vectors)
    assert meta["algorithm"] == "gaussian_mixture"
    loaded = store.latest()
    assert loaded is not None and loaded.version == 1 and loaded.features == model_a.features
    np.testing.assert_allclose(loaded.score(healthy_a.vectors[:50]), model_a.score(healthy_a.vectors[:50]))

    second = AnomalyModel.fit(
        healthy_a.vectors[:500],
        healthy_a.features,
        rule="plant_anomaly",
        version=store.next_version(),
        trained_at=T0 + timedelta(days=1),
        window=(T0, T0 + timedelta(days=1)),
        cadence_s=10.0,
    )
    store.save(second)
    assert store.versions() == [1, 2]
    newest = store.latest()
    assert newest is not None and newest.version == 2 and newest.metadata.vectors == 500
    # A damaged newest file is skipped: the previous version is used.
    store.path_of(2).write_bytes(b"not a model")
    fallback = store.latest()
    assert fallback is not None and fallback.version == 1


def test_only_the_newest_versions_are_kept(model_a: AnomalyModel, tmp_path: Path) -> None:
    store = ModelStore(tmp_path, "plant_anomaly")
    for version in range(1, 8):
        store.save(
            AnomalyModel(
                type(model_a.metadata)(
                    **{**model_a.metadata.to_json(), "features": model_a.features, "version": version}
                ),
                model_a.scaler,
                model_a.mixture,
                model_a.center,
                model_a.scale,
            )
        )
    assert store.versions() == [3, 4, 5, 6, 7]
