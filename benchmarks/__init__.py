"""Benchmarks of the pipeline and its parts; `emotion-pipeline bench` runs them from a source checkout."""
