"""Benchmarks (``python -m benchmarks.bench_x`` from the repository root); shared helpers in ``common``."""
