"""Benchmarks and the eval, outside the package that ships to the Space: `python -m benchmarks.bench`
(app vs raw, CPU modes, cold start, memory), `python -m benchmarks.bench_cpu` (the CPU modes alone) and
`python -m benchmarks.eval` (answer quality)."""
