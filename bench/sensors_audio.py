"""Audio feature cost: CPU seconds per second of audio at 16 kHz, against a bare FFT of the same audio.

``python -m bench.sensors_audio [--smoke]`` synthesises the simulator's machine sound (the same
buffers the service analyses: 0.5 s windows at 16 kHz), warms the extractor up as the service does
(loads the tables librosa built, or has a child process build them; not counted), then runs the
service's feature extraction (:class:`plantmon_sensors.features.FeatureExtractor`: framing, Hann
window, rfft, 32 bands, 40 mel filters, log, DCT to 13 MFCC, RMS; numpy only) over ``--seconds``
of audio on one thread and reports the thread CPU time per second of audio. Target: under 10 %
of one core. The ceiling measured in the same run is a bare ``numpy.fft.rfft`` of the same
windowed frames (the least any spectral feature must cost). It also reports whether numba was
loaded into the benchmark's process (it must not be: the service runs the same code).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TARGET = 0.10


def _numba_loaded() -> bool:
    return "numba" in sys.modules or "llvmlite" in sys.modules


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench.sensors_audio")
    parser.add_argument("--smoke", action="store_true", help="a short run (for CI)")
    parser.add_argument("--seconds", type=float, default=None, help="seconds of audio to analyse")
    args = parser.parse_args(argv)
    seconds = args.seconds or (10.0 if args.smoke else 120.0)
    loaded_before = _numba_loaded()  # e.g. by a test run in the same process

    from plantmon_sensors.features import FeatureConfig, FeatureExtractor
    from plantmon_sensors.simulator import PlantModel, sound

    config = FeatureConfig()
    cache = Path(tempfile.gettempdir()) / "plantmon-bench-numba-cache"  # shared with bench.stack_memory
    extractor = FeatureExtractor(config, tables_dir=cache / "audio-tables", numba_cache_dir=cache)
    started = time.perf_counter()
    if not extractor.wait_ready(timeout=900):
        print(f"audio features not ready: {extractor.warm_up_error}")
        return 1
    warm_up_s = time.perf_counter() - started
    rng = np.random.default_rng(0)
    model = PlantModel(rng)
    window_s = sound.BUFFER_S
    buffers = [sound.synthesise(model.step(window_s), rng, config.sample_rate, window_s) for _ in range(20)]
    n = round(seconds / window_s)
    extractor.extract(buffers[0])

    cpu0 = time.thread_time()
    for i in range(n):
        extractor.extract(buffers[i % len(buffers)])
    features_cpu = time.thread_time() - cpu0

    window = np.hanning(config.n_fft + 1)[:-1]
    cpu0 = time.thread_time()
    for i in range(n):
        frames = np.lib.stride_tricks.sliding_window_view(buffers[i % len(buffers)], config.n_fft)[:: config.hop_length]
        np.fft.rfft(frames * window, axis=1)
    fft_cpu = time.thread_time() - cpu0

    ratio = features_cpu / seconds
    numba_loaded = _numba_loaded() and not loaded_before  # by the warm-up or the extraction
    print(f"audio analysed:           {seconds:.0f} s at {config.sample_rate} Hz in {n} windows of {window_s} s")
    print(f"warm-up (once):           {warm_up_s:.2f} s, tables {extractor.source} (not counted)")
    status = "loaded by the caller before" if loaded_before else "LOADED" if numba_loaded else "no"
    print(f"numba/LLVM in process:    {status}")
    print(f"features, CPU per window: {features_cpu / n * 1000:.2f} ms")
    print(f"features, CPU / audio:    {ratio * 100:.2f} % of one core (target < {TARGET * 100:.0f} %)")
    print(f"ceiling (bare rfft):      {fft_cpu / seconds * 100:.2f} % of one core")
    print(f"features / bare rfft:     {features_cpu / max(fft_cpu, 1e-9):.1f} x")
    return 0 if ratio < TARGET and not numba_loaded else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
