"""Benchmarks: numbers and ratios against baselines measured in the same run (never in tests)."""
