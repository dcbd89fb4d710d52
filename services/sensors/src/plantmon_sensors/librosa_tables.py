"""The audio analysis's constant tables, built by librosa and scipy, in a process of their own.

The per-window analysis (:mod:`plantmon_sensors.features`) is numpy only; what it multiplies by
comes from the reference libraries, once per configuration:

- ``mel_basis``: ``librosa.filters.mel(sr, n_fft, n_mels, fmax)`` (Slaney mel scale and area
  normalisation, librosa's defaults; float32 as librosa returns it, stored as float64);
- ``dct``: the first ``n_mfcc`` rows of the orthonormal DCT-II matrix,
  ``scipy.fft.dct(eye(n_mels), type=2, norm="ortho", axis=0)`` (what ``librosa.feature.mfcc``
  applies to the log-mel spectrogram).

Importing librosa loads numba and LLVM (about 150 MB of RSS a process never gives back) and, the
first time on a machine, compiles librosa's kernels into numba's cache (``NUMBA_CACHE_DIR``). So
the service never imports librosa itself: it runs this module as a short-lived child,
``python -m plantmon_sensors.librosa_tables --out FILE.npz --sample-rate ... --n-fft ...
--n-mels ... --n-mfcc ... --fmax ...``, which writes the tables atomically and exits.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt

logger = logging.getLogger(__name__)

TABLE_NAMES = ("mel_basis", "dct")


def compute_tables(
    sample_rate: int, n_fft: int, n_mels: int, n_mfcc: int, fmax: float
) -> dict[str, npt.NDArray[np.float64]]:
    """The tables of one configuration, computed in this process (imports librosa, hence numba)."""
    import librosa
    import scipy.fft

    mel_basis = np.asarray(librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmax=fmax), np.float64)
    dct = np.asarray(scipy.fft.dct(np.eye(n_mels), type=2, norm="ortho", axis=0)[:n_mfcc], np.float64)
    return {"mel_basis": mel_basis, "dct": dct}


def write_tables(path: Path, tables: dict[str, npt.NDArray[np.float64]]) -> None:
    """Write ``tables`` to ``path`` (``.npz``) atomically: a reader sees the whole file or none."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    with partial.open("wb") as out:
        np.savez(out, **tables)  # type: ignore[arg-type]
    os.replace(partial, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m plantmon_sensors.librosa_tables", description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--sample-rate", type=int, required=True)
    parser.add_argument("--n-fft", type=int, required=True)
    parser.add_argument("--n-mels", type=int, required=True)
    parser.add_argument("--n-mfcc", type=int, required=True)
    parser.add_argument("--fmax", type=float, required=True)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    tables = compute_tables(args.sample_rate, args.n_fft, args.n_mels, args.n_mfcc, args.fmax)
    write_tables(args.out, tables)
    print(f"tables written to {args.out} in {time.perf_counter() - started:.2f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
