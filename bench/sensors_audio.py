"""Audio feature cost: CPU seconds per second of audio at 16 kHz, against a bare FFT of the same audio.

``python -m bench.sensors_audio [--smoke]`` synthesises the simulator's machine sound (the same
buffers the service analyses: 0.5 s windows at 16 kHz), warms librosa up (not counted), then runs
the service's feature extraction (:class:`plantmon_sensors.features.FeatureExtractor`: STFT,
32 bands, 13 MFCC, RMS) over ``--seconds`` of audio on one thread and reports the thread CPU time
per second of audio. Target: under 10 % of one core. The ceiling measured in the same run is a
bare ``numpy.fft.rfft`` of the same frames (the least any spectral feature must cost).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

TARGET = 0.10


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench.sensors_audio")
    parser.add_argument("--smoke", action="store_true", help="a short run (for CI)")
    parser.add_argument("--seconds", type=float, default=None, help="seconds of audio to analyse")
    args = parser.parse_args(argv)
    seconds = args.seconds or (10.0 if args.smoke else 120.0)

    from plantmon_sensors.features import FeatureConfig, FeatureExtractor
    from plantmon_sensors.simulator import PlantModel, sound

    config = FeatureConfig()
    extractor = FeatureExtractor(config)
    started = time.perf_counter()
    extractor.wait_ready(timeout=600)
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

    window = np.hanning(config.n_fft)
    cpu0 = time.thread_time()
    for i in range(n):
        frames = np.lib.stride_tricks.sliding_window_view(buffers[i % len(buffers)], config.n_fft)[:: config.hop_length]
        np.fft.rfft(frames * window, axis=1)
    fft_cpu = time.thread_time() - cpu0

    ratio = features_cpu / seconds
    print(f"audio analysed:           {seconds:.0f} s at {config.sample_rate} Hz in {n} windows of {window_s} s")
    print(f"librosa warm-up (once):   {warm_up_s:.2f} s (not counted)")
    print(f"features, CPU per window: {features_cpu / n * 1000:.2f} ms")
    print(f"features, CPU / audio:    {ratio * 100:.2f} % of one core (target < {TARGET * 100:.0f} %)")
    print(f"ceiling (bare rfft):      {fft_cpu / seconds * 100:.2f} % of one core")
    print(f"features / bare rfft:     {features_cpu / max(fft_cpu, 1e-9):.1f} x")
    return 0 if ratio < TARGET else 1


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
