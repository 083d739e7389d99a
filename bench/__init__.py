"""Benchmarks: not tests; each reports ratios measured in one run (docs/benchmarks.md)."""
