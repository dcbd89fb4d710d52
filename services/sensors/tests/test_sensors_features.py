"""Audio features: where a tone's energy lands, levels, and what a worn bearing sounds like."""

from __future__ import annotations

import numpy as np
import pytest
from plantmon_sensors.catalog import N_BANDS, N_MFCC
from plantmon_sensors.features import FeatureConfig, FeatureExtractor, band_edges, band_of, extract_features
from plantmon_sensors.simulator import PlantModel, sound

SR = 16_000


def tone(freq: float, amplitude: float = 1.0, seconds: float = 0.5) -> np.ndarray:
    t = np.arange(int(SR * seconds)) / SR
    return amplitude * np.sin(2 * np.pi * freq * t)


@pytest.mark.parametrize("freq", [300.0, 1000.0, 2500.0, 6000.0])
def test_a_tone_lands_in_its_band(freq: float) -> None:
    features = extract_features(tone(freq) + 1e-4 * np.random.default_rng(0).standard_normal(SR // 2), SR)
    bands = np.array(features.spectrum_db)
    band = band_of(freq, SR)
    assert band_edges(SR)[band] <= freq < band_edges(SR)[band + 1]
    assert int(np.argmax(bands)) == band
    assert bands[band] == pytest.approx(0.0, abs=1.0)  # a full-scale sine is 0 dB in its band
    assert bands[band] - np.median(bands) > 40


def test_levels_and_shapes() -> None:
    features = extract_features(tone(1000.0, amplitude=0.1), SR)
    assert len(features.spectrum_db) == N_BANDS and len(features.mfcc) == N_MFCC
    assert features.level_dbfs == pytest.approx(-23.0, abs=0.1)  # 0.1 amplitude sine: -20 dB - 3 dB
    silence = extract_features(np.zeros(SR // 2), SR)
    assert silence.level_dbfs == -120.0
    assert min(silence.spectrum_db) == -120.0


def test_bearing_wear_raises_the_high_bands() -> None:
    healthy_model = PlantModel(np.random.default_rng(0))
    worn_state = healthy_model.state.__class__(**{**_asdict(healthy_model.state), "wear": 1.0})
    rng = np.random.default_rng(0)
    healthy = np.array(extract_features(sound.synthesise(healthy_model.state, rng), SR).spectrum_db)
    worn = np.array(extract_features(sound.synthesise(worn_state, rng), SR).spectrum_db)
    high = [band_of(f, SR) for f in (3500.0, 4500.0, 5500.0, 6500.0)]
    low = [band_of(f, SR) for f in (25.0, 200.0)]
    assert all(worn[b] - healthy[b] > 20 for b in high)
    assert all(abs(worn[b] - healthy[b]) < 3 for b in low)


def test_shaft_harmonic_follows_speed() -> None:
    state = PlantModel(np.random.default_rng(0)).state
    bands = np.array(extract_features(sound.synthesise(state, np.random.default_rng(1)), SR).spectrum_db)
    blade_pass = 8 * state.speed_rpm / 60
    assert bands[band_of(blade_pass, SR)] > np.median(bands) + 20


def _asdict(state: object) -> dict[str, float]:
    return {name: getattr(state, name) for name in state.__slots__}  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("layout", "sample_rate", "freq"),
    [("linear", 16_000, 3000.0), ("log", 16_000, 150.0), ("log", 16_000, 5000.0), ("mel", 44_100, 12_000.0)],
)
def test_a_tone_lands_in_its_band_with_other_layouts_and_rates(layout: str, sample_rate: int, freq: float) -> None:
    config = FeatureConfig(sample_rate=sample_rate, band_layout=layout, n_fft=2048, hop_length=1024)  # type: ignore[arg-type]
    t = np.arange(sample_rate // 2) / sample_rate
    signal = np.sin(2 * np.pi * freq * t) + 1e-4 * np.random.default_rng(0).standard_normal(t.size)
    bands = np.array(FeatureExtractor(config).extract(signal).spectrum_db)
    band = band_of(freq, sample_rate, config=config)
    edges = band_edges(sample_rate, config=config)
    assert edges[band] <= freq < edges[band + 1] and edges[-1] == sample_rate / 2
    assert int(np.argmax(bands)) == band and bands[band] == pytest.approx(0.0, abs=1.0)
