"""The coinlake benchmark (docs/BENCHMARKS.md): ``python -m bench``."""
