"""Benchmarks and checks of configs, data pipelines, checkpoints and merging."""
