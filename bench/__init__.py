"""The bench: runner, presets, tables, plots, benchmarks."""
