"""Synthesised machine sound: shaft harmonics, blade-pass tones, broadband noise, bearing noise.

The buffer depends on the plant state: the harmonics follow the shaft speed and grow with load;
a worn bearing adds band-limited high-frequency noise (3-7 kHz) modulated at the outer-race
defect frequency.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from plantmon_sensors.simulator.plant import PlantState

SAMPLE_RATE = 16_000
BUFFER_S = 0.5
BLADES = 8
BPFO_ORDER = 3.57  # outer-race defect frequency, in shaft orders
BROADBAND_RMS = 0.004
BEARING_BAND_HZ = (3000.0, 7000.0)
BEARING_RMS_WORN = 0.08
BEARING_RMS_HEALTHY = 0.002


def band_noise(rng: np.random.Generator, n: int, sample_rate: int, low: float, high: float) -> npt.NDArray[np.float64]:
    """White noise limited to ``[low, high]`` Hz, scaled to unit RMS."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / sample_rate)
    spectrum[(freqs < low) | (freqs > high)] = 0.0
    noise = np.fft.irfft(spectrum, n)
    rms = float(np.sqrt(np.mean(noise**2))) or 1.0
    return np.asarray(noise / rms, dtype=np.float64)


def synthesise(
    state: PlantState, rng: np.random.Generator, sample_rate: int = SAMPLE_RATE, duration_s: float = BUFFER_S
) -> npt.NDArray[np.float64]:
    """One mono buffer in [-1, 1] for the given plant state."""
    n = int(sample_rate * duration_s)
    t = np.arange(n) / sample_rate
    f0 = state.speed_rpm / 60.0
    loudness = 0.5 + state.load
    signal = np.zeros(n)
    for order, amplitude in ((1, 0.05), (2, 0.025), (3, 0.012), (4, 0.008), (5, 0.005), (6, 0.004)):
        signal += loudness * amplitude * np.sin(2 * np.pi * order * f0 * t + rng.uniform(0, 2 * np.pi))
    for order, amplitude in ((BLADES, 0.03), (2 * BLADES, 0.01)):
        signal += loudness * amplitude * np.sin(2 * np.pi * order * f0 * t + rng.uniform(0, 2 * np.pi))
    signal += BROADBAND_RMS * rng.standard_normal(n)
    bearing_rms = BEARING_RMS_HEALTHY + (BEARING_RMS_WORN - BEARING_RMS_HEALTHY) * state.wear
    modulation = 1.0 + 0.5 * np.sin(2 * np.pi * BPFO_ORDER * f0 * t)
    signal += bearing_rms * modulation * band_noise(rng, n, sample_rate, *BEARING_BAND_HZ)
    return np.asarray(np.clip(signal, -1.0, 1.0), dtype=np.float64)
