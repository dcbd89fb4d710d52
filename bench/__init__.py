"""Benchmarks: each module runs in full with ``python -m bench.<name>`` and briefly with ``--smoke``.

Every benchmark prints its figures and the ratio against a ceiling measured in the same run;
full-run results are recorded in docs/benchmarks.md.
"""
