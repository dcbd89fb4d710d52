"""Audio features with numpy only: spectrum bands in dB, MFCC and the RMS level.

Everything audio-specific lives here, so a librosa-based implementation can replace this module
without touching the sampler: :func:`extract_features` takes a mono buffer in [-1, 1] and returns
:class:`AudioFeatures`.

Scaling: the power spectrum is normalised so that a full-scale sine puts 0 dB into the band that
holds its frequency (the window's equivalent noise bandwidth is compensated). Bands are
rectangular and mel-spaced from 0 Hz to Nyquist; MFCC are the orthonormal DCT-II of the log
mel-filterbank energies (triangular, area-normalised filters), averaged over the frames.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from plantmon_sensors.catalog import N_BANDS, N_MFCC

FloatArray = npt.NDArray[np.float64]

N_FFT = 1024
HOP = 512
N_MELS = 40
FLOOR_DB = -120.0
TOP_DB = 80.0  # MFCC: log-mel energies more than this below the frame's peak are clipped (as librosa does)
_FULL_SCALE_SINE_POWER = 0.5


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


def hz_to_mel(hz: FloatArray | float) -> FloatArray:
    """HTK mel scale."""
    return np.asarray(2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0), dtype=np.float64)


def mel_to_hz(mel: FloatArray | float) -> FloatArray:
    """Inverse of :func:`hz_to_mel`."""
    return np.asarray(700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0), dtype=np.float64)


@functools.lru_cache(maxsize=8)
def band_edges(sample_rate: int, n_bands: int = N_BANDS) -> FloatArray:
    """``n_bands + 1`` mel-spaced edges in Hz from 0 to Nyquist; band ``i`` is ``[edges[i], edges[i+1])``."""
    edges = mel_to_hz(np.linspace(0.0, float(hz_to_mel(sample_rate / 2.0)), n_bands + 1))
    edges.setflags(write=False)
    return edges


def band_of(frequency_hz: float, sample_rate: int, n_bands: int = N_BANDS) -> int:
    """The index of the spectrum band that holds ``frequency_hz``."""
    edges = band_edges(sample_rate, n_bands)
    return int(np.clip(np.searchsorted(edges, frequency_hz, side="right") - 1, 0, n_bands - 1))


@functools.lru_cache(maxsize=8)
def _band_matrix(sample_rate: int, n_fft: int, n_bands: int) -> FloatArray:
    """0/1 matrix (bands x bins) summing FFT bins into rectangular bands."""
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    edges = band_edges(sample_rate, n_bands)
    idx = np.clip(np.searchsorted(edges, freqs, side="right") - 1, 0, n_bands - 1)
    matrix = np.zeros((n_bands, freqs.size))
    matrix[idx, np.arange(freqs.size)] = 1.0
    return matrix


@functools.lru_cache(maxsize=8)
def mel_filterbank(sample_rate: int, n_fft: int = N_FFT, n_mels: int = N_MELS) -> FloatArray:
    """Triangular, area-normalised mel filters (n_mels x bins) from 0 Hz to Nyquist."""
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    points = mel_to_hz(np.linspace(0.0, float(hz_to_mel(sample_rate / 2.0)), n_mels + 2))
    lower, centre, upper = points[:-2, None], points[1:-1, None], points[2:, None]
    rising = (freqs[None, :] - lower) / (centre - lower)
    falling = (upper - freqs[None, :]) / (upper - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= 2.0 / (upper - lower)  # equal area, as librosa's norm="slaney"
    return np.asarray(weights, dtype=np.float64)


@functools.lru_cache(maxsize=4)
def _dct_matrix(n_mfcc: int, n_mels: int) -> FloatArray:
    """Orthonormal DCT-II (n_mfcc x n_mels)."""
    n = np.arange(n_mels)
    k = np.arange(n_mfcc)[:, None]
    matrix = np.cos(np.pi / n_mels * (n + 0.5) * k) * np.sqrt(2.0 / n_mels)
    matrix[0] /= np.sqrt(2.0)
    return np.asarray(matrix, dtype=np.float64)


def power_spectrogram(buffer: FloatArray, n_fft: int = N_FFT, hop: int = HOP) -> FloatArray:
    """One-sided power per bin and frame (frames x bins), scaled so a sine's lobe sums to its mean square."""
    signal = np.asarray(buffer, dtype=np.float64)
    if signal.size < n_fft:
        signal = np.pad(signal, (0, n_fft - signal.size))
    n_frames = 1 + (signal.size - n_fft) // hop
    frames = np.lib.stride_tricks.sliding_window_view(signal, n_fft)[::hop][:n_frames]
    window = np.hanning(n_fft)
    spectrum = np.fft.rfft(frames * window, axis=1)
    power = (np.abs(spectrum) ** 2) * (2.0 / (n_fft * np.sum(window**2)))
    power[:, 0] /= 2.0
    if n_fft % 2 == 0:
        power[:, -1] /= 2.0
    return np.asarray(power, dtype=np.float64)


def _to_db(power: FloatArray) -> FloatArray:
    ratio = np.maximum(power / _FULL_SCALE_SINE_POWER, 10.0 ** (FLOOR_DB / 10.0))
    return np.asarray(10.0 * np.log10(ratio), dtype=np.float64)


def spectrum_bands(power: FloatArray, sample_rate: int, n_bands: int = N_BANDS) -> FloatArray:
    """Band levels in dB re full scale, from a power spectrogram averaged over its frames."""
    n_fft = (power.shape[1] - 1) * 2
    band_power = _band_matrix(sample_rate, n_fft, n_bands) @ power.mean(axis=0)
    return _to_db(band_power)


def mfcc(power: FloatArray, sample_rate: int, n_mfcc: int = N_MFCC, n_mels: int = N_MELS) -> FloatArray:
    """Mel-frequency cepstral coefficients, averaged over the frames."""
    n_fft = (power.shape[1] - 1) * 2
    mel = power @ mel_filterbank(sample_rate, n_fft, n_mels).T  # frames x mels
    log_mel = _to_db(mel)
    log_mel = np.maximum(log_mel, log_mel.max(axis=1, keepdims=True) - TOP_DB)
    coefficients = log_mel @ _dct_matrix(n_mfcc, n_mels).T  # frames x n_mfcc
    return np.asarray(coefficients.mean(axis=0), dtype=np.float64)


def rms_dbfs(buffer: FloatArray) -> float:
    """RMS level in dB re full scale (a full-scale square wave is 0 dBFS), floored at -120."""
    rms = float(np.sqrt(np.mean(np.square(np.asarray(buffer, dtype=np.float64))))) if len(buffer) else 0.0
    return max(FLOOR_DB, 20.0 * np.log10(rms)) if rms > 0 else FLOOR_DB


def extract_features(buffer: FloatArray, sample_rate: int) -> AudioFeatures:
    """Spectrum bands, MFCC and RMS level of one mono buffer in [-1, 1]."""
    power = power_spectrogram(buffer)
    return AudioFeatures(
        spectrum_db=tuple(float(v) for v in spectrum_bands(power, sample_rate)),
        mfcc=tuple(float(v) for v in mfcc(power, sample_rate)),
        level_dbfs=float(rms_dbfs(buffer)),
    )
