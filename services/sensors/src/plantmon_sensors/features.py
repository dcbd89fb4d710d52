"""Audio features with librosa: spectrum bands in dB, 13 MFCC and the RMS level.

Everything audio-specific lives here. The microphone driver and the simulator's synthesised sound
both go through :meth:`FeatureExtractor.extract`, so the simulator exercises the same code path
as the hardware.

- Power spectrogram: ``librosa.stft`` (Hann window, ``n_fft``, ``hop_length``, no centring),
  scaled so that a full-scale sine puts 0 dB into the band that holds its frequency (the window's
  equivalent noise bandwidth is compensated).
- Spectrum bands: ``n_bands`` rectangular bands between ``fmin`` and ``fmax`` (default 0 Hz to
  Nyquist), laid out on the mel scale (``librosa.mel_frequencies``), linearly, or logarithmically
  (``band_layout``); each band's level is the sum of its bins' power averaged over the frames,
  in dB re full scale, floored at -120 dB.
- MFCC: ``librosa.feature.mfcc`` on the log-mel spectrogram (``n_mels`` Slaney filters,
  ``librosa.power_to_db`` with an 80 dB dynamic range), averaged over the frames.
- RMS level: ``librosa.feature.rms`` over the frames, combined into one level in dBFS (a
  full-scale square wave is 0 dBFS).

librosa compiles numba kernels when its modules are first loaded: about 30 s the first time on
this class of machine (minutes when it is busy), a few seconds once numba's on-disk cache is
filled. The service runs the extraction in a worker process (:class:`FeatureWorker`, the default,
``SENSORS_AUDIO__FEATURES_IN=process``): the API process never imports librosa, starts fast and
keeps answering at full speed while the worker compiles. :class:`FeatureExtractor` does the same
in-process (a background warm-up thread; tests and benchmarks use it). Either way no request and
no sampling tick waits on compilation: until the warm-up has finished the audio tags are
``uncertain`` ("warming up"). :func:`configure_numba_cache` points numba's cache at a writable,
persistent folder (``NUMBA_CACHE_DIR``, read when numba is imported).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from plantmon_sensors.catalog import N_BANDS, N_MFCC

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
BandLayout = Literal["mel", "linear", "log"]

FLOOR_DB = -120.0
TOP_DB = 80.0
_FULL_SCALE_SINE_POWER = 0.5

_warm = threading.Event()  # librosa's numba kernels are loaded in this process
_warm_lock = threading.Lock()


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


# -- numba's cache and librosa's warm-up ----------------------------------------------------
def configure_numba_cache(folder: Path) -> Path | None:
    """Point numba's on-disk cache at ``folder`` (created if needed); returns the folder in use.

    numba reads ``NUMBA_CACHE_DIR`` once, when it is imported: after that a different folder cannot
    take effect, which is logged. An unwritable folder is logged and numba runs without a cache.
    """
    if "numba" in sys.modules:
        current = os.environ.get("NUMBA_CACHE_DIR")
        if current != str(folder):
            logger.info("numba already loaded; its cache folder stays", extra={"numba_cache_dir": current})
        return Path(current) if current else None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        logger.warning(
            "numba cache folder is not writable: librosa recompiles at every start",
            extra={"numba_cache_dir": str(folder), "error": str(exc)},
        )
        return None
    os.environ["NUMBA_CACHE_DIR"] = str(folder)
    return folder


def librosa_is_warm() -> bool:
    """True once librosa's kernels are loaded in this process."""
    return _warm.is_set()


def warm_up_librosa() -> float:
    """Load librosa and run every function the extractor uses once (blocking); returns the seconds spent."""
    with _warm_lock:
        if _warm.is_set():
            return 0.0
        started = time.perf_counter()
        rng = np.random.default_rng(0)
        _extract(rng.standard_normal(4096) * 0.1, FeatureConfig())
        _warm.set()
        return time.perf_counter() - started


# -- band layout --------------------------------------------------------------------------
@functools.lru_cache(maxsize=16)
def _edges(sample_rate: int, n_bands: int, layout: BandLayout, fmin: float, fmax: float) -> FloatArray:
    if layout == "mel":
        import librosa

        edges = np.asarray(librosa.mel_frequencies(n_mels=n_bands + 1, fmin=fmin, fmax=fmax, htk=True))
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
def _mel_basis(config: FeatureConfig) -> FloatArray:
    import librosa

    return np.asarray(
        librosa.filters.mel(sr=config.sample_rate, n_fft=config.n_fft, n_mels=config.n_mels, fmax=config.band_top_hz),
        dtype=np.float64,
    )


# -- extraction ---------------------------------------------------------------------------
def _to_db(power: FloatArray) -> FloatArray:
    ratio = np.maximum(power / _FULL_SCALE_SINE_POWER, 10.0 ** (FLOOR_DB / 10.0))
    return np.asarray(10.0 * np.log10(ratio), dtype=np.float64)


def _extract(buffer: FloatArray, config: FeatureConfig) -> AudioFeatures:
    import librosa

    signal = np.asarray(buffer, dtype=np.float64)
    if signal.size < config.n_fft:
        signal = np.pad(signal, (0, config.n_fft - signal.size))
    spectrum = librosa.stft(signal, n_fft=config.n_fft, hop_length=config.hop_length, window="hann", center=False)
    window = np.hanning(config.n_fft + 1)[:-1]  # librosa's periodic Hann
    power = np.abs(spectrum) ** 2 * (2.0 / (config.n_fft * np.sum(window**2)))  # bins x frames
    power[0] /= 2.0
    if config.n_fft % 2 == 0:
        power[-1] /= 2.0
    bands = _to_db(_band_matrix(config) @ power.mean(axis=1))
    mel = _mel_basis(config) @ power
    log_mel = librosa.power_to_db(mel, ref=_FULL_SCALE_SINE_POWER, amin=1e-12, top_db=TOP_DB)
    mfcc = librosa.feature.mfcc(S=log_mel, n_mfcc=config.n_mfcc).mean(axis=1)
    rms_frames = librosa.feature.rms(y=signal, frame_length=config.n_fft, hop_length=config.hop_length, center=False)
    rms = float(np.sqrt(np.mean(np.square(rms_frames))))
    level = max(FLOOR_DB, 20.0 * float(np.log10(rms))) if rms > 0 else FLOOR_DB
    return AudioFeatures(
        spectrum_db=tuple(float(v) for v in bands),
        mfcc=tuple(float(v) for v in mfcc),
        level_dbfs=level,
    )


class FeatureExtractor:
    """Computes :class:`AudioFeatures` with one configuration; ready once librosa is warm."""

    def __init__(self, config: FeatureConfig | None = None) -> None:
        self.config = config or FeatureConfig()
        self._thread: threading.Thread | None = None
        self.warm_up_error: str | None = None

    @property
    def ready(self) -> bool:
        return _warm.is_set()

    def start_warm_up(self) -> None:
        """Warm librosa up in a background thread (at once ready when already warm in this process)."""
        if self.ready or (self._thread is not None and self._thread.is_alive()):
            return
        self._thread = threading.Thread(target=self._warm_up, name="librosa-warm-up", daemon=True)
        self._thread.start()

    def _warm_up(self) -> None:
        logger.info("audio features warming up (librosa loads its numba kernels)")
        try:
            seconds = warm_up_librosa()
            self.extract(np.zeros(self.config.n_fft))  # this configuration's filter banks
        except Exception as exc:  # reported on the audio tags, never a crash
            self.warm_up_error = f"audio features unavailable: {type(exc).__name__}: {exc}"
            logger.exception("audio feature warm-up failed")
            return
        logger.info("audio features ready", extra={"warm_up_s": round(seconds, 2)})

    def close(self) -> None:
        """Nothing to release: the warm-up thread is a daemon."""

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until warm (tests, benchmarks); the service never calls this."""
        if self._thread is None and not self.ready:
            self.start_warm_up()
        return _warm.wait(timeout)

    def extract(self, buffer: FloatArray) -> AudioFeatures:
        """Spectrum bands, MFCC and RMS level of one mono buffer in [-1, 1]."""
        return _extract(buffer, self.config)


def extract_features(buffer: FloatArray, sample_rate: int, **config: Any) -> AudioFeatures:
    """Features of one buffer with the default configuration at ``sample_rate`` (blocking warm-up)."""
    return _extract(buffer, FeatureConfig(sample_rate=sample_rate, **config))


# -- the feature worker process ----------------------------------------------------------------
def _worker_main(conn: Any, config: FeatureConfig, numba_cache_dir: str | None) -> None:
    """Body of the feature worker: warm librosa up, say so, then answer one buffer at a time."""
    if numba_cache_dir:
        os.environ["NUMBA_CACHE_DIR"] = numba_cache_dir
    try:
        seconds = warm_up_librosa()
        _extract(np.zeros(config.n_fft), config)
        conn.send(("ready", seconds))
    except Exception as exc:  # reported on the audio tags by the service
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    while True:
        try:
            buffer = conn.recv()
        except (EOFError, OSError):
            return
        if buffer is None:
            return
        try:
            conn.send(("ok", _extract(buffer, config)))
        except Exception as exc:
            conn.send(("error", f"{type(exc).__name__}: {exc}"))


class FeatureWorker:
    """The same extraction in a child process, so librosa and numba never run in the service's own.

    numba's first compilation takes tens of seconds of CPU and holds the GIL for long stretches;
    in a thread of the service it would slow every request meanwhile. In a child process the API
    process never imports librosa: it starts fast, and the worker's warm-up costs requests nothing
    but a share of the CPU. Buffers go over a pipe (a 0.5 s window at 16 kHz is 64 KB); a worker
    that dies is started again on the next read. The worker is spawned (not forked: the service has
    threads), so like any spawning program a script embedding the service needs an
    ``if __name__ == "__main__":`` guard; ``plantmon-sensors`` and ``python -m plantmon_sensors`` have one.
    """

    REPLY_TIMEOUT_S = 30.0

    def __init__(self, config: FeatureConfig | None = None, numba_cache_dir: Path | None = None) -> None:
        self.config = config or FeatureConfig()
        self.numba_cache_dir = numba_cache_dir
        self.warm_up_error: str | None = None
        self._ready = False
        self._lock = threading.Lock()
        self._process: Any = None
        self._conn: Any = None
        self._started = 0.0

    def start_warm_up(self) -> None:
        """Start the worker (it warms up on its own); returns at once."""
        import multiprocessing

        with self._lock:
            if self._process is not None and self._process.is_alive():
                return
            context = multiprocessing.get_context("spawn")  # no fork of a threaded process
            self._conn, child = context.Pipe()
            cache = str(self.numba_cache_dir) if self.numba_cache_dir else os.environ.get("NUMBA_CACHE_DIR")
            self._process = context.Process(
                target=_worker_main, args=(child, self.config, cache), name="plantmon-audio-features", daemon=True
            )
            self._process.start()
            child.close()
            self._ready, self.warm_up_error, self._started = False, None, time.perf_counter()
        logger.info("audio feature worker started; warming up", extra={"pid": self._process.pid})

    @property
    def ready(self) -> bool:
        if self._ready:
            return True
        if not self._lock.acquire(blocking=False):
            return False
        try:
            if self._conn is None:
                return False
            if self._conn.poll():
                kind, value = self._conn.recv()
                if kind == "ready":
                    self._ready = True
                    logger.info(
                        "audio features ready",
                        extra={"warm_up_s": round(time.perf_counter() - self._started, 2), "worker_s": value},
                    )
                else:
                    self.warm_up_error = f"audio features unavailable: {value}"
                    logger.error("audio feature worker failed", extra={"error": value})
            elif not self._process.is_alive():
                self.warm_up_error = f"audio feature worker exited ({self._process.exitcode})"
            return self._ready
        except (EOFError, OSError):
            self.warm_up_error = "audio feature worker exited"
            return False
        finally:
            self._lock.release()

    def extract(self, buffer: FloatArray) -> AudioFeatures:
        """Blocking: one buffer through the worker (call it from a thread)."""
        from plantmon_sensors.drivers import NoResponseError

        died: Exception | None = None
        with self._lock:
            try:
                self._conn.send(np.asarray(buffer, dtype=np.float64))
                if not self._conn.poll(self.REPLY_TIMEOUT_S):
                    raise NoResponseError("no response (audio feature worker)")
                kind, value = self._conn.recv()
            except (EOFError, OSError) as exc:
                self._ready, died = False, exc
        if died is not None:
            logger.warning("audio feature worker died; restarting it", extra={"error": str(died)})
            self.start_warm_up()
            raise NoResponseError("no response (audio feature worker died; restarting)") from died
        if kind != "ok":
            raise RuntimeError(value)
        result: AudioFeatures = value
        return result

    def close(self) -> None:
        with self._lock:
            process, conn, self._process, self._conn = self._process, self._conn, None, None
        if process is None:
            return
        with contextlib.suppress(OSError):  # the worker may be gone already
            conn.send(None)
        process.join(timeout=2)
        if process.is_alive():  # still compiling: nothing to lose
            process.terminate()
            process.join(timeout=5)
        conn.close()
