"""Benchmarks of the app and the model, outside the package that ships to the Space: `python -m benchmarks.bench`
(app vs raw, CPU modes, cold start, memory) and `python -m benchmarks.bench_cpu` (the CPU modes alone)."""
