"""Benchmarks and the eval: run from the repository root (python -m benchmarks.eval); never shipped to the Space."""
