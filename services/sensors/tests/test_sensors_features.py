"""Audio features: where a tone's energy lands, levels, what a worn bearing sounds like; the same
values as librosa's own functions; the tables librosa builds in a child process, kept and loaded."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from plantmon_dev.waiting import eventually_sync
from plantmon_sensors.catalog import N_BANDS, N_MFCC
from plantmon_sensors.features import (
    FeatureConfig,
    FeatureExtractor,
    band_edges,
    band_of,
    extract_features,
    frames_of,
    load_tables,
    mel_spectrogram,
    mfcc_of,
    power_scale,
    power_spectrogram,
    power_to_db,
    tables_file,
    tables_in_process,
)
from plantmon_sensors.simulator import PlantModel, sound

from services.sensors.tests.sensors_support import NUMBA_CACHE

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


# -- the same analysis as librosa's own functions ---------------------------------------------
def _librosa_reference(signal: np.ndarray, config: FeatureConfig) -> tuple[np.ndarray, np.ndarray, float]:
    """The features as the service computed them with librosa before (bands, MFCC, level in dBFS)."""
    import librosa

    spectrum = librosa.stft(signal, n_fft=config.n_fft, hop_length=config.hop_length, window="hann", center=False)
    power = np.abs(spectrum) ** 2 * power_scale(config.n_fft)  # bins x frames
    power[0] /= 2.0
    power[-1] /= 2.0
    freqs, edges = np.fft.rfftfreq(config.n_fft, 1 / config.sample_rate), band_edges(config.sample_rate, config=config)
    band_power = np.zeros(config.n_bands)
    for b in range(config.n_bands):  # [low, high), the top edge in the last band; bins outside dropped
        inside = (freqs >= edges[b]) & ((freqs < edges[b + 1]) | ((b == config.n_bands - 1) & (freqs == edges[-1])))
        band_power[b] = power[inside].sum(axis=0).mean()
    bands = 10 * np.log10(np.maximum(band_power / 0.5, 1e-12))
    mel = librosa.feature.melspectrogram(S=power, sr=config.sample_rate, n_mels=config.n_mels, fmax=config.band_top_hz)
    log_mel = librosa.power_to_db(mel, ref=0.5, amin=1e-12, top_db=80.0)
    mfcc = librosa.feature.mfcc(S=log_mel, n_mfcc=config.n_mfcc).mean(axis=1)
    rms = librosa.feature.rms(y=signal, frame_length=config.n_fft, hop_length=config.hop_length, center=False)
    level = max(-120.0, 20 * float(np.log10(np.sqrt(np.mean(np.square(rms)))))) if np.any(rms) else -120.0
    return bands, mfcc, level


def _signals(sample_rate: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    t = np.arange(sample_rate // 2) / sample_rate
    model = PlantModel(np.random.default_rng(0))
    worn = model.state.__class__(**{**_asdict(model.state), "wear": 1.0})
    return {
        "tone and noise": 0.3 * np.sin(2 * np.pi * 1234.5 * t) + 0.01 * rng.standard_normal(t.size),
        "white noise": 0.1 * rng.standard_normal(t.size),
        "machine": sound.synthesise(model.state, rng, sample_rate, 0.5),
        "worn bearing": sound.synthesise(worn, rng, sample_rate, 0.5),
        "silence": np.zeros(t.size),
    }


CONFIGS = {
    "default": FeatureConfig(),
    "44.1 kHz": FeatureConfig(sample_rate=44_100, n_fft=2048, hop_length=1024),
    "log bands, 64 mels": FeatureConfig(band_layout="log", n_mels=64),
    "linear, fmax 6 kHz": FeatureConfig(band_layout="linear", fmax_hz=6000.0, n_fft=512, hop_length=256),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_features_equal_librosas_analysis_of_the_same_signal(name: str) -> None:
    """Same tag values as the librosa pipeline (stft, melspectrogram, power_to_db, mfcc, rms)."""
    config = CONFIGS[name]
    extractor = FeatureExtractor(config)
    for label, signal in _signals(config.sample_rate).items():
        features = extractor.extract(signal)
        bands, mfcc, level = _librosa_reference(signal, config)
        np.testing.assert_allclose(features.spectrum_db, bands, rtol=0, atol=1e-9, err_msg=label)
        np.testing.assert_allclose(features.mfcc, mfcc, rtol=0, atol=1e-9, err_msg=label)
        assert features.level_dbfs == pytest.approx(level, abs=1e-5), label  # librosa's rms is float32


def test_mel_spectrogram_and_mfcc_equal_librosa_feature_functions_from_the_signal() -> None:
    import librosa

    config = FeatureConfig()
    tables = tables_in_process(config)
    signal = _signals(SR)["machine"]
    common: dict[str, Any] = {
        "sr": SR,
        "n_fft": config.n_fft,
        "hop_length": config.hop_length,
        "center": False,
        "n_mels": config.n_mels,
    }
    ours_mel = mel_spectrogram(power_spectrogram(frames_of(signal, config), config), tables)  # frames x mels
    theirs_mel = librosa.feature.melspectrogram(y=signal, fmax=SR / 2, **common) * power_scale(config.n_fft)
    np.testing.assert_allclose(ours_mel, theirs_mel.T, rtol=1e-10)
    ours = mfcc_of(ours_mel, tables)  # power_to_db re a full-scale sine (0.5) of the scaled power
    theirs = librosa.feature.mfcc(y=signal, n_mfcc=N_MFCC, fmax=SR / 2, **common).T  # re 1.0, unscaled
    np.testing.assert_allclose(ours[:, 1:], theirs[:, 1:], rtol=0, atol=1e-8)
    offset = np.sqrt(config.n_mels) * 10 * np.log10(power_scale(config.n_fft) / 0.5)  # c0 only: a constant dB shift
    np.testing.assert_allclose(ours[:, 0], theirs[:, 0] + offset, rtol=0, atol=1e-8)


def test_power_to_db_and_band_edges_equal_librosas() -> None:
    import librosa

    rng = np.random.default_rng(3)
    power = rng.exponential(1e-3, (15, 40)) * np.logspace(-14, 0, 40)  # tiny values: amin and top_db act
    np.testing.assert_allclose(
        power_to_db(power), librosa.power_to_db(power, ref=0.5, amin=1e-12, top_db=80.0), atol=1e-12
    )
    edges = band_edges(SR)
    np.testing.assert_allclose(
        edges, librosa.mel_frequencies(n_mels=N_BANDS + 1, fmin=0.0, fmax=SR / 2, htk=True), rtol=1e-12
    )


# -- the tables: built by librosa in a child, kept, loaded -------------------------------------
def test_the_tables_are_built_by_librosa_in_a_child_process_and_kept(tmp_path: Path, audio_tables: Path) -> None:
    import librosa
    import scipy.fft

    config = FeatureConfig(n_mels=44)  # not the session's: built here
    extractor = FeatureExtractor(config, tables_dir=tmp_path, numba_cache_dir=NUMBA_CACHE)
    assert not extractor.ready
    assert extractor.wait_ready(timeout=600), extractor.warm_up_error
    assert extractor.tables is not None and tables_file(config, tmp_path).is_file()
    expected_mel = librosa.filters.mel(sr=SR, n_fft=config.n_fft, n_mels=44, fmax=SR / 2).astype(np.float64)
    np.testing.assert_array_equal(extractor.tables.mel_basis, expected_mel)
    np.testing.assert_array_equal(
        extractor.tables.dct, scipy.fft.dct(np.eye(44), type=2, norm="ortho", axis=0)[:N_MFCC]
    )
    assert not expected_mel[:, 0].any() and not expected_mel[:, -1].any()  # no weight at 0 Hz nor at Nyquist

    again = FeatureExtractor(config, tables_dir=tmp_path)
    assert again.wait_ready(timeout=30), again.warm_up_error
    assert again.source == str(tables_file(config, tmp_path))  # loaded from the kept file, not built again
    signal = _signals(SR)["machine"]
    assert again.extract(signal) == extractor.extract(signal) == FeatureExtractor(config).extract(signal)


def test_unusable_table_files_are_ignored(tmp_path: Path) -> None:
    config = FeatureConfig()
    path = tables_file(config, tmp_path)
    assert load_tables(path, config) is None  # absent
    path.write_bytes(b"not an npz")
    assert load_tables(path, config) is None
    with path.open("wb") as out:
        np.savez(out, mel_basis=np.zeros((3, 3)), dct=np.zeros((13, 3)))
    assert load_tables(path, config) is None  # wrong shape
    assert tables_file(FeatureConfig(n_mels=41), tmp_path) != path  # one file per configuration


def test_an_unwritable_table_folder_still_gives_features(
    tmp_path: Path, audio_tables: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    extractor = FeatureExtractor(tables_dir=blocker / "tables", numba_cache_dir=NUMBA_CACHE)
    with caplog.at_level(logging.WARNING, logger="plantmon_sensors.features"):
        assert extractor.wait_ready(timeout=600), extractor.warm_up_error
    assert "not writable" in caplog.text
    assert extractor.extract(tone(1000.0)).spectrum_db[band_of(1000.0, SR)] == pytest.approx(0.0, abs=1.0)


async def test_a_failing_table_build_makes_the_audio_tags_bad_with_the_reason(tmp_path: Path) -> None:
    from plantmon_sensors.catalog import SENSOR_BY_ID
    from plantmon_sensors.devices import adapt
    from plantmon_sensors.drivers import SensorError, WarmingUpError
    from plantmon_sensors.simulator import Simulation

    # The system's interpreter has neither librosa nor plantmon: the child fails as a broken install would.
    extractor = FeatureExtractor(tables_dir=tmp_path, python=str(Path(sys.base_prefix) / "bin" / "python3"))
    device = adapt(SENSOR_BY_ID["audio"], Simulation(0).audio("audio"), extractor=extractor)
    with pytest.raises(WarmingUpError):
        await device.read()
    extractor.start_warm_up()
    assert not extractor.wait_ready(timeout=60)
    assert extractor.warm_up_error is not None and "No module named" in extractor.warm_up_error
    with pytest.raises(SensorError, match="audio features unavailable") as raised:
        await device.read()
    assert not isinstance(raised.value, WarmingUpError)  # bad, not "warming up"

    # The cause goes away (the interpreter fixed): a later read, once the backoff has passed, recovers.
    extractor.python = sys.executable
    extractor._retry_at = time.monotonic()  # the backoff (RETRY_MIN_S) has passed
    with pytest.raises(SensorError):
        await device.read()  # still bad; this read starts the retry
    assert extractor.wait_ready(timeout=600), extractor.warm_up_error
    channels = await device.read()
    level = channels["level_dbfs"]
    assert isinstance(level, float) and level > -120.0


def test_closing_stops_a_table_build_still_running(tmp_path: Path) -> None:
    extractor = FeatureExtractor(tables_dir=tmp_path)
    extractor.start_warm_up()
    eventually_sync(
        lambda: extractor._child is not None, timeout=30, interval=0.005, what="the table builder child started"
    )
    child = extractor._child
    assert child is not None
    extractor.close()
    assert not extractor.wait_ready(timeout=30)
    assert child.wait(timeout=10) != 0 and extractor.warm_up_error is not None
