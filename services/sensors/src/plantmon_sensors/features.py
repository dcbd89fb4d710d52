"""Audio features: spectrum bands in dB, 13 MFCC and the RMS level, librosa's analysis in numpy.

Everything audio-specific lives here. The microphone driver and the simulator's synthesised sound
both go through :meth:`FeatureExtractor.extract`, so the simulator exercises the same code path
as the hardware.

The analysis is librosa's, step for step, and the tests check it against librosa itself
(``librosa.stft``, ``librosa.feature.melspectrogram``, ``librosa.power_to_db``,
``librosa.feature.mfcc``, ``librosa.feature.rms`` on the same signals):

- Power spectrogram: frames of ``n_fft`` samples every ``hop_length`` (no centring, as
  ``librosa.stft(center=False)``), a periodic Hann window, ``numpy.fft.rfft``; scaled so that a
  full-scale sine puts 0 dB into the band that holds its frequency (the window's equivalent noise
  bandwidth is compensated).
- Spectrum bands: ``n_bands`` rectangular bands between ``fmin`` and ``fmax`` (default 0 Hz to
  Nyquist), laid out on the (HTK) mel scale as ``librosa.mel_frequencies(htk=True)``, linearly, or
  logarithmically (``band_layout``); each band's level is the sum of its bins' power averaged over
  the frames, in dB re full scale, floored at -120 dB.
- MFCC: ``n_mels`` Slaney mel filters, the log-mel spectrogram as ``librosa.power_to_db`` (80 dB
  dynamic range), the orthonormal DCT-II as ``librosa.feature.mfcc``, averaged over the frames.
- RMS level: ``librosa.feature.rms`` over the frames, combined into one level in dBFS (a
  full-scale square wave is 0 dBFS).

The two constant tables, the mel filter bank and the DCT matrix, are librosa's and scipy's own
(:mod:`plantmon_sensors.librosa_tables`). Importing librosa loads numba and LLVM, about 150 MB a
process never gives back, and compiles librosa's kernels on a first run; so the service never
imports it. At start-up (:meth:`FeatureExtractor.start_warm_up`, a background thread) it loads the
tables of its configuration from the cache folder, or, the first time, has a short-lived child
process build them with librosa (numba's cache in ``NUMBA_CACHE_DIR`` makes later builds fast) and
keeps them there. Until then the audio tags are ``uncertain`` ("warming up"); no request and no
sampling tick waits. The per-window work is a few numpy operations (about half a millisecond per
0.5 s window), run in a thread of the service.

Offline users (the anomaly replay, tests) may call :meth:`FeatureExtractor.extract` without a
warm-up: the tables are then computed in their own process with librosa.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from plantmon_common.backoff import ExponentialBackoff

from plantmon_sensors.catalog import N_BANDS, N_MFCC

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
BandLayout = Literal["mel", "linear", "log"]

FLOOR_DB = -120.0
TOP_DB = 80.0
AMIN = 1e-12  # power_to_db's floor on the mel power
_FULL_SCALE_SINE_POWER = 0.5


@dataclass(frozen=True, slots=True)
class FeatureConfig:
    """The analysis parameters (``SENSORS_AUDIO__*``)."""

    sample_rate: int = 16_000
    n_fft: int = 1024
    hop_length: int = 512
    n_mels: int = 40
    n_bands: int = N_BANDS
    n_mfcc: int = N_MFCC
    band_layout: BandLayout = "mel"
    fmin_hz: float = 0.0
    fmax_hz: float | None = None

    @property
    def band_top_hz(self) -> float:
        return self.fmax_hz if self.fmax_hz is not None else self.sample_rate / 2.0


@dataclass(frozen=True, slots=True)
class AudioFeatures:
    """What one audio buffer yields."""

    spectrum_db: tuple[float, ...]
    mfcc: tuple[float, ...]
    level_dbfs: float

    def channels(self) -> dict[str, float]:
        """The channel mapping the catalog's audio tags pick from."""
        out = {f"band_{i}": v for i, v in enumerate(self.spectrum_db)}
        out.update({f"mfcc_{i}": v for i, v in enumerate(self.mfcc)})
        out["level_dbfs"] = self.level_dbfs
        return out


@dataclass(frozen=True, slots=True)
class Tables:
    """librosa's mel filter bank (``n_mels`` x bins) and scipy's DCT-II matrix (``n_mfcc`` x ``n_mels``)."""

    mel_basis: FloatArray
    dct: FloatArray


# -- band layout ----------------------------------------------------------------------------
def _hz_to_mel_htk(hz: FloatArray | float) -> Any:
    return 2595.0 * np.log10(1.0 + np.asarray(hz) / 700.0)


def _mel_to_hz_htk(mel: FloatArray) -> FloatArray:
    return np.asarray(700.0 * (10.0 ** (mel / 2595.0) - 1.0), dtype=np.float64)


@functools.lru_cache(maxsize=16)
def _edges(sample_rate: int, n_bands: int, layout: BandLayout, fmin: float, fmax: float) -> FloatArray:
    if layout == "mel":  # librosa.mel_frequencies(n_bands + 1, fmin=fmin, fmax=fmax, htk=True)
        edges = _mel_to_hz_htk(np.linspace(_hz_to_mel_htk(fmin), _hz_to_mel_htk(fmax), n_bands + 1))
    elif layout == "linear":
        edges = np.linspace(fmin, fmax, n_bands + 1)
    else:
        edges = np.geomspace(max(fmin, 20.0), fmax, n_bands + 1)
        edges[0] = fmin  # the lowest band reaches down to fmin (0 Hz by default)
    edges = np.asarray(edges, dtype=np.float64)
    edges[0], edges[-1] = fmin, fmax  # exact ends (the mel round trip is off by an ulp)
    edges.setflags(write=False)
    return edges


def band_edges(sample_rate: int, n_bands: int = N_BANDS, config: FeatureConfig | None = None) -> FloatArray:
    """``n_bands + 1`` band edges in Hz; band ``i`` is ``[edges[i], edges[i+1])``."""
    cfg = config or FeatureConfig(sample_rate=sample_rate, n_bands=n_bands)
    return _edges(sample_rate, n_bands, cfg.band_layout, cfg.fmin_hz, cfg.band_top_hz)


def band_of(frequency_hz: float, sample_rate: int, n_bands: int = N_BANDS, config: FeatureConfig | None = None) -> int:
    """The index of the spectrum band that holds ``frequency_hz``."""
    edges = band_edges(sample_rate, n_bands, config)
    return int(np.clip(np.searchsorted(edges, frequency_hz, side="right") - 1, 0, n_bands - 1))


@functools.lru_cache(maxsize=16)
def _band_matrix(config: FeatureConfig) -> FloatArray:
    """0/1 matrix (bands x bins) summing FFT bins into rectangular bands (bins outside are dropped)."""
    freqs = np.fft.rfftfreq(config.n_fft, 1.0 / config.sample_rate)
    edges = band_edges(config.sample_rate, config.n_bands, config)
    idx = np.searchsorted(edges, freqs, side="right") - 1
    idx[freqs == edges[-1]] = config.n_bands - 1  # the top edge (Nyquist) belongs to the last band
    matrix = np.zeros((config.n_bands, freqs.size))
    inside = (idx >= 0) & (idx < config.n_bands)
    matrix[idx[inside], np.arange(freqs.size)[inside]] = 1.0
    return matrix


@functools.lru_cache(maxsize=16)
def _window(n_fft: int) -> FloatArray:
    """librosa's ``get_window("hann", n_fft, fftbins=True)``: the periodic Hann window."""
    return np.asarray(np.hanning(n_fft + 1)[:-1], dtype=np.float64)


# -- the tables: librosa's filter bank, scipy's DCT ---------------------------------------------
def _table_args(config: FeatureConfig) -> dict[str, Any]:
    return {
        "sample_rate": config.sample_rate,
        "n_fft": config.n_fft,
        "n_mels": config.n_mels,
        "n_mfcc": config.n_mfcc,
        "fmax": float(config.band_top_hz),
    }


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def tables_file(config: FeatureConfig, folder: Path) -> Path:
    """Where the tables of ``config`` are kept in ``folder`` (keyed by the parameters and library versions)."""
    key = {**_table_args(config), "librosa": _version("librosa"), "scipy": _version("scipy"), "format": 1}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return folder / f"audio-tables-{digest}.npz"


def _check(tables: Tables, config: FeatureConfig) -> Tables:
    bins = config.n_fft // 2 + 1
    if tables.mel_basis.shape != (config.n_mels, bins) or tables.dct.shape != (config.n_mfcc, config.n_mels):
        raise ValueError(f"tables of the wrong shape: {tables.mel_basis.shape}, {tables.dct.shape}")
    if not (np.all(np.isfinite(tables.mel_basis)) and np.all(np.isfinite(tables.dct))):
        raise ValueError("tables hold non-finite values")
    tables.mel_basis.setflags(write=False)
    tables.dct.setflags(write=False)
    return tables


def load_tables(path: Path, config: FeatureConfig) -> Tables | None:
    """The tables in ``path``, or None when it is absent or unusable (then they are built again)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            tables = Tables(np.asarray(data["mel_basis"], np.float64), np.asarray(data["dct"], np.float64))
        return _check(tables, config)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        logger.warning(
            "audio feature tables unusable; building them again", extra={"path": str(path), "error": str(exc)}
        )
        return None


@functools.lru_cache(maxsize=16)
def tables_in_process(config: FeatureConfig) -> Tables:
    """The tables computed in this process (imports librosa, so numba): for offline use and tests."""
    from plantmon_sensors.librosa_tables import compute_tables

    computed = compute_tables(**_table_args(config))
    return _check(Tables(computed["mel_basis"], computed["dct"]), config)


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError:
        return False
    return True


# -- extraction -------------------------------------------------------------------------------
def _to_db(power: FloatArray) -> FloatArray:
    ratio = np.maximum(power / _FULL_SCALE_SINE_POWER, 10.0 ** (FLOOR_DB / 10.0))
    return np.asarray(10.0 * np.log10(ratio), dtype=np.float64)


def power_to_db(power: FloatArray, ref: float = _FULL_SCALE_SINE_POWER) -> FloatArray:
    """``librosa.power_to_db(power, ref=ref, amin=AMIN, top_db=TOP_DB)``."""
    log_spec = 10.0 * np.log10(np.maximum(AMIN, power))
    log_spec -= 10.0 * np.log10(max(AMIN, ref))
    return np.asarray(np.maximum(log_spec, log_spec.max() - TOP_DB), dtype=np.float64)


def power_scale(n_fft: int) -> float:
    """Factor from ``|rfft|**2`` of a Hann-windowed frame to power re a full-scale sine (0.5)."""
    return 2.0 / (n_fft * float(np.sum(_window(n_fft) ** 2)))


def frames_of(buffer: FloatArray, config: FeatureConfig) -> FloatArray:
    """``librosa.util.frame`` as ``librosa.stft(center=False)`` frames: ``frames x n_fft``, every ``hop_length``.

    A buffer shorter than one frame is padded with zeros to one.
    """
    signal = np.asarray(buffer, dtype=np.float64)
    if signal.size < config.n_fft:
        signal = np.pad(signal, (0, config.n_fft - signal.size))
    return np.lib.stride_tricks.sliding_window_view(signal, config.n_fft)[:: config.hop_length]


def power_spectrogram(frames: FloatArray, config: FeatureConfig) -> FloatArray:
    """``|librosa.stft(window="hann", center=False)|**2`` (frames x bins) times :func:`power_scale`."""
    spectrum = np.fft.rfft(frames * _window(config.n_fft), axis=1)
    return np.asarray(np.abs(spectrum) ** 2 * power_scale(config.n_fft), dtype=np.float64)


def mel_spectrogram(power: FloatArray, tables: Tables) -> FloatArray:
    """``librosa.feature.melspectrogram(S=power.T)``, transposed: frames x ``n_mels``."""
    return np.asarray(power @ tables.mel_basis.T, dtype=np.float64)


def mfcc_of(mel: FloatArray, tables: Tables) -> FloatArray:
    """``librosa.feature.mfcc(S=power_to_db(mel))`` (DCT-II, orthonormal), transposed: frames x ``n_mfcc``."""
    return np.asarray(power_to_db(mel) @ tables.dct.T, dtype=np.float64)


def analyse(buffer: FloatArray, config: FeatureConfig, tables: Tables) -> AudioFeatures:
    """Spectrum bands, MFCC and RMS level of one mono buffer in [-1, 1] (numpy only)."""
    frames = frames_of(buffer, config)
    power = power_spectrogram(frames, config)
    # The mel filters have no weight at 0 Hz nor at Nyquist: halving those bins (one-sided
    # spectrum) changes the bands only.
    power[:, 0] /= 2.0
    if config.n_fft % 2 == 0:
        power[:, -1] /= 2.0
    bands = _to_db(_band_matrix(config) @ power.mean(axis=0))
    mfcc = mfcc_of(mel_spectrogram(power, tables), tables).mean(axis=0)
    rms = float(np.sqrt(np.mean(np.square(frames))))  # librosa.feature.rms per frame, combined
    level = max(FLOOR_DB, 20.0 * float(np.log10(rms))) if rms > 0 else FLOOR_DB
    return AudioFeatures(
        spectrum_db=tuple(float(v) for v in bands),
        mfcc=tuple(float(v) for v in mfcc),
        level_dbfs=level,
    )


class FeatureExtractor:
    """Computes :class:`AudioFeatures` with one configuration; ready once its tables are loaded.

    ``tables_dir`` keeps the tables between starts (the service: inside numba's cache folder);
    without one they are built in a temporary folder at every warm-up. ``numba_cache_dir`` is
    handed to the child that builds them; ``python`` is the child's interpreter (default: this one).
    """

    BUILD_TIMEOUT_S = 900.0  # generous: importing librosa on a busy Pi
    RETRY_MIN_S = 30.0  # a failed warm-up is tried again after at most this, doubling up to RETRY_MAX_S (jittered)
    RETRY_MAX_S = 1800.0

    def __init__(
        self,
        config: FeatureConfig | None = None,
        tables_dir: Path | None = None,
        numba_cache_dir: Path | None = None,
        python: str | None = None,
    ) -> None:
        self.config = config or FeatureConfig()
        self.python = python or sys.executable
        self.tables_dir = tables_dir
        self.numba_cache_dir = numba_cache_dir
        self.warm_up_error: str | None = None
        self.tables: Tables | None = None
        self.source: str | None = None  # where the tables came from: their file, or "built: ..."
        self._ready = threading.Event()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._child: subprocess.Popen[str] | None = None
        self._closed = False
        self._retry = ExponentialBackoff(self.RETRY_MIN_S, self.RETRY_MAX_S)
        self._retry_at: float | None = None

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def start_warm_up(self) -> None:
        """Load the kept tables (a small file: ready at once), else have a child build them in the background."""
        with self._lock:
            if self.ready or (self._thread is not None and self._thread.is_alive()):
                return
            if self.tables_dir is not None:
                path = tables_file(self.config, self.tables_dir)
                tables = load_tables(path, self.config)
                if tables is not None:
                    self.tables, self.source, self.warm_up_error = tables, str(path), None
                    self._ready.set()
                    self._done.set()
                    logger.info("audio features ready", extra={"tables": str(path), "warm_up_s": 0.0})
                    return
            self._closed = False
            self._done.clear()
            self._thread = threading.Thread(target=self._warm_up, name="audio-feature-tables", daemon=True)
            self._thread.start()

    def _warm_up(self) -> None:
        started = time.perf_counter()
        try:
            tables, source = self._load_or_build()
            analyse(np.zeros(self.config.n_fft), self.config, tables)  # fails here, not in a request
        except Exception as exc:  # reported on the audio tags, never a crash
            self.warm_up_error = f"audio features unavailable: {type(exc).__name__}: {exc}"
            delay = self._retry.next()
            self._retry_at = time.monotonic() + delay
            logger.error(
                "audio feature warm-up failed",
                extra={"error": self.warm_up_error, "retry_in_s": round(delay, 1)},
            )
        else:
            self.tables, self.source, self.warm_up_error = tables, source, None
            self._ready.set()
            logger.info(
                "audio features ready",
                extra={"tables": source, "warm_up_s": round(time.perf_counter() - started, 2)},
            )
        finally:
            self._done.set()

    def _load_or_build(self) -> tuple[Tables, str]:
        folder = self.tables_dir
        if folder is not None:
            path = tables_file(self.config, folder)
            tables = load_tables(path, self.config)
            if tables is not None:
                return tables, str(path)
            if _writable(folder):
                return self._build(path), f"built: {path}"
            logger.warning(
                "audio feature table folder is not writable: librosa builds the tables at every start",
                extra={"folder": str(folder)},
            )
        with tempfile.TemporaryDirectory(prefix="plantmon-audio-tables-") as scratch:
            return self._build(tables_file(self.config, Path(scratch))), "built: not kept"

    def _build(self, path: Path) -> Tables:
        """Run :mod:`plantmon_sensors.librosa_tables` in a child process to write ``path``; load it."""
        args = _table_args(self.config)
        command = [self.python, "-m", "plantmon_sensors.librosa_tables", "--out", str(path)]
        command += [f"--{name.replace('_', '-')}={value}" for name, value in args.items()]
        env = dict(os.environ)
        cache = self.numba_cache_dir
        if cache is not None and _writable(cache):
            env["NUMBA_CACHE_DIR"] = str(cache)
        elif cache is not None:
            logger.warning(
                "numba cache folder is not writable: librosa compiles from scratch", extra={"folder": str(cache)}
            )
        logger.info(
            "building the audio feature tables with librosa in a child process",
            extra={"out": str(path), "numba_cache_dir": env.get("NUMBA_CACHE_DIR")},
        )
        with self._lock:
            if self._closed:
                raise RuntimeError("closed")
            child = self._child = subprocess.Popen(
                command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
            )
        try:
            _, stderr = child.communicate(timeout=self.BUILD_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            child.kill()
            child.communicate()
            raise RuntimeError(f"librosa did not build the tables within {self.BUILD_TIMEOUT_S:.0f} s") from None
        finally:
            with self._lock:
                self._child = None
        if child.returncode != 0:
            last = (stderr or "").strip().splitlines()[-1:] or [f"exit status {child.returncode}"]
            raise RuntimeError(f"building the tables failed: {last[0]}")
        tables = load_tables(path, self.config)
        if tables is None:
            raise RuntimeError(f"the child wrote no usable tables to {path}")
        return tables

    def retry_if_due(self) -> None:
        """After a failed warm-up, start another once its backoff has passed (the reading path calls this)."""
        if self._retry_at is not None and not self._closed and time.monotonic() >= self._retry_at:
            self._retry_at = None
            logger.info("audio feature warm-up: trying again")
            self.start_warm_up()

    def close(self) -> None:
        """Stop a table build still running (its child process); the warm-up thread is a daemon."""
        with self._lock:
            self._closed = True
            child = self._child
        if child is not None and child.poll() is None:
            child.kill()

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until ready or failed (tests, benchmarks); the service never calls this."""
        if not self.ready and (self._thread is None or not self._thread.is_alive()) and not self._done.is_set():
            self.start_warm_up()
        self._done.wait(timeout)
        return self.ready

    def extract(self, buffer: FloatArray) -> AudioFeatures:
        """Spectrum bands, MFCC and RMS level of one mono buffer in [-1, 1].

        Without a finished warm-up (offline use) the tables are computed in this process.
        """
        tables = self.tables if self.tables is not None else tables_in_process(self.config)
        return analyse(buffer, self.config, tables)


def extract_features(buffer: FloatArray, sample_rate: int, **config: Any) -> AudioFeatures:
    """Features of one buffer with the default configuration at ``sample_rate`` (tables computed in-process)."""
    cfg = FeatureConfig(sample_rate=sample_rate, **config)
    return analyse(buffer, cfg, tables_in_process(cfg))
