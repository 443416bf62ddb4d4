"""Writing a sweep's tables: ``summary.csv``, one ``table_<key>.csv`` per table, ``tables.md``."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

import bench.equal_compute  # noqa: F401  (registers the equal-compute tables)
import bench.headline  # noqa: F401  (registers the headline table)
import bench.pass_at_k  # noqa: F401  (registers the pass@k tables, after the headline)
import bench.regime  # noqa: F401  (registers the where-the-budget-went table)
import bench.tables.builders  # noqa: F401  (registers the standard tables)
from bench.tables.cells import Table
from bench.tables.registry import Context, standard_specs
from bench.tables.sweep import load_curves, load_summaries
from trainer.rundir import atomic_write_text


def standard_tables(summaries: pd.DataFrame, curves: pd.DataFrame, sweep_dir: Path,
                    target: float | None) -> list[Table]:
    """The registered standard tables of a sweep, in their order."""
    ctx = Context(Path(sweep_dir), None, summaries, curves, target=target)
    return [t for spec in standard_specs() for t in spec.tables(ctx)]


def write_csvs(sweep_dir: Path, tables: list[Table], prefix: str = "table") -> None:
    for table in tables:
        if table.data is not None and not table.data.empty:
            atomic_write_text(Path(sweep_dir) / f"{prefix}_{table.key}.csv",
                              table.data.to_csv(index=False))


def header(summaries: pd.DataFrame, preset_name: str | None) -> str:
    presets = preset_name or ", ".join(sorted(summaries["preset"].astype(str).unique()))
    seeds = sorted(summaries["seed"].unique())
    return f"# AllocBench results — preset `{presets}`, seeds {', '.join(map(str, seeds))}\n"


def write_tables(sweep_dir: Path, preset_name: str | None = None, target: float | None = None,
                 extra_sections: list[str] | None = None) -> str:
    """Write summary.csv, table_*.csv and tables.md into ``sweep_dir``; return the markdown.

    ``extra_sections`` (already rendered markdown, e.g. paper tables) are appended.
    """
    summaries = load_summaries(sweep_dir)
    if summaries.empty:
        text = "no finished runs\n" + "".join("\n" + s for s in extra_sections or [])
        atomic_write_text(Path(sweep_dir) / "tables.md", text)
        return text
    atomic_write_text(Path(sweep_dir) / "summary.csv", summaries.to_csv(index=False))
    tables = standard_tables(summaries, load_curves(sweep_dir), sweep_dir, target)
    write_csvs(sweep_dir, tables)
    text = "\n".join([header(summaries, preset_name)] + [t.markdown() for t in tables]
                     + list(extra_sections or []))
    atomic_write_text(Path(sweep_dir) / "tables.md", text)
    return text
