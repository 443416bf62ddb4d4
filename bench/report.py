"""``python -m bench.report DIR``: rebuild every table and plot of a sweep directory from its
files, without running anything.

``bench.run`` calls :func:`build` at the end of a sweep, so a report of an unchanged directory
writes byte-identical ``tables.md``, ``summary.csv`` and ``table_*.csv`` / ``paper_*.csv``
(the PNGs are redrawn from the same numbers).  The sweep-level options that shape the tables —
the cost-to-target ``--target`` and which paper tables (``--table``) were asked for — are kept in
``sweep.json`` beside the run directories, so the report needs no flags to reproduce the run's
output; ``--target`` here overrides the stored target for this report only.

``--readme PATH`` also pastes the headline table (:mod:`bench.equal_compute`'s for a
token-protocol sweep, :mod:`bench.headline`'s per-step one otherwise) into ``PATH`` between
its marker lines, so that a README's headline is the committed sweep's cells, not hand-copied.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from bench import headline, paper_tables, plots
from bench.sweepdir import UsageError, locked, parse_target
from bench.tables import (SweepError, finished_runs, load_curves, load_steps, load_summaries,
                          write_csvs, write_tables)
from trainer.rundir import atomic_write_json, read_json

SWEEP_FILE = "sweep.json"


def read_sweep_file(sweep_dir: Path) -> dict:
    path = Path(sweep_dir) / SWEEP_FILE
    if not path.is_file():
        return {}
    try:
        data = read_json(path)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SweepError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise SweepError(f"{path} must hold a JSON object")
    unknown = [t for t in data.get("paper_tables", []) if t not in paper_tables.PAPER_TABLES]
    if unknown:
        raise SweepError(f"{path} names unknown paper table(s) {unknown}")
    return data


def update_sweep_file(sweep_dir: Path, *, table: str | None = None,
                      target: float | None = None) -> dict:
    """Record this invocation's table options; paper tables accumulate (a directory can serve
    several tables, since runs are shared); the target is this invocation's (None: the default)."""
    data = read_sweep_file(sweep_dir)
    tables = set(data.get("paper_tables", []))
    if table is not None:
        tables.add(table)
    data["paper_tables"] = sorted(tables)
    data["target"] = target
    atomic_write_json(Path(sweep_dir) / SWEEP_FILE, data)
    return data


@dataclass
class Report:
    text: str                                   # the whole tables.md
    paper: dict[str, str] = field(default_factory=dict)   # paper table name -> its markdown
    plots: list[str] = field(default_factory=list)


def preset_of(summaries) -> str:
    return ", ".join(sorted(summaries["preset"].astype(str).unique())) if not summaries.empty \
        else "(no runs)"


def build(sweep_dir: Path, *, target: float | None = None, with_plots: bool = True) -> Report:
    """Every table (tables.md + CSVs) and, unless ``with_plots`` is false, every plot."""
    sweep_dir = Path(sweep_dir)
    options = read_sweep_file(sweep_dir)
    target = options.get("target") if target is None else target
    summaries, curves, steps = (load_summaries(sweep_dir), load_curves(sweep_dir),
                                load_steps(sweep_dir))
    ctx = paper_tables.Context(sweep_dir, preset_of(summaries), summaries, curves, steps, target)
    paper, sections, figures = {}, [], []
    for name in options.get("paper_tables", []):
        tables = paper_tables.render(name, ctx)
        write_csvs(sweep_dir, tables, prefix="paper")
        paper[name] = "\n".join(t.markdown() for t in tables)
        sections.append(f"## Paper table `{name}`\n\n{paper[name]}")
        spec = paper_tables.get_table(name)
        if spec.figure is not None and with_plots and not summaries.empty:
            figures.append(plots.save(spec.figure(ctx), sweep_dir / f"paper_{name}.png"))
    text = write_tables(sweep_dir, target=target, extra_sections=sections)
    written = []
    if with_plots:
        from bench.equal_compute import load_budget_runs
        from bench.family_plots import write_budget_plots
        written = plots.write_plots(sweep_dir, summaries, curves, steps,
                                    target=_plot_target(summaries, target)) + figures \
            + write_budget_plots(sweep_dir, load_budget_runs(sweep_dir))
    return Report(text, paper, written)


def _plot_target(summaries, target):
    from bench.tables import default_target
    if target is not None:
        return float(target)
    return default_target(summaries) if not summaries.empty else None


def check_sweep_dir(sweep_dir: Path) -> None:
    """A one-line error unless ``sweep_dir`` looks like a sweep directory."""
    if not sweep_dir.exists():
        raise SweepError(f"{sweep_dir} does not exist")
    if not sweep_dir.is_dir():
        raise SweepError(f"{sweep_dir} is not a directory")
    if not finished_runs(sweep_dir) and not (sweep_dir / SWEEP_FILE).is_file():
        raise SweepError(f"{sweep_dir} is not a sweep directory: no run sub-directory holds a "
                         f"summary.json and there is no {SWEEP_FILE}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.report",
        description="Rebuild tables.md, the CSVs and the plots of a sweep directory written by "
                    "`python -m bench.run`, from its run files alone (nothing is trained).")
    parser.add_argument("sweep_dir", metavar="DIR", type=Path,
                        help="the sweep directory (bench.run's --out)")
    parser.add_argument("--target", type=float, default=None,
                        help="cost-to-target accuracy for this report (default: the one stored "
                             "in DIR/sweep.json, else GRPO at b = 1's mean over its last three "
                             "evaluations, mean over seeds)")
    parser.add_argument("--no-plots", action="store_true", help="write the tables only")
    parser.add_argument("--quiet", action="store_true", help="do not print the tables")
    parser.add_argument("--readme", metavar="PATH", type=Path, default=None,
                        help="also paste the headline table into PATH, replacing what lies "
                             "between the two marker lines of the sweep's preset P ("
                             + " ... ".join(headline.markers("P")) + ")")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        parse_target(args.target)       # 2, -5 and nan were taken as targets
        check_sweep_dir(args.sweep_dir)
    except (UsageError, SweepError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # the sweep directory's lock: tables.md is never written beside a sweep that is running,
    # and a directory that cannot be written is one line, not a traceback
    return locked(args.sweep_dir, lambda: report_sweep(args))


def report_sweep(args) -> int:
    """Write and print the tables of ``args.sweep_dir`` (held locked by :func:`main`)."""
    try:
        preset = None
        if args.readme is not None:
            # checked before the (minutes-long) build: a wrong README path or missing markers
            # is bad input, not a failure after the work
            summaries = load_summaries(args.sweep_dir)
            presets = sorted(set(summaries["preset"].astype(str)))
            if not presets:
                raise SweepError(f"{args.sweep_dir} has no finished run: no headline to paste")
            if len(presets) != 1:
                raise SweepError(f"{args.sweep_dir} holds runs of {len(presets)} presets "
                                 f"({', '.join(presets)}): one headline per testbed")
            preset = presets[0]
            headline.marker_span(args.readme, preset)
        report = build(args.sweep_dir, target=args.target, with_plots=not args.no_plots)
        if preset is not None:
            # a token-protocol sweep pastes its equal-compute headline, a per-step one its own
            from bench.equal_compute import headline_table, load_budget_runs
            budget_runs = load_budget_runs(args.sweep_dir)
            table = headline_table(budget_runs) if not budget_runs.empty else \
                headline.headline_table(summaries)
            if table is None:
                raise SweepError(f"{args.sweep_dir} has no GRPO run: no headline to paste")
            headline.paste_into(args.readme, table, preset)
    except SweepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not args.quiet:
        print(report.text)
    print(f"tables in {args.sweep_dir / 'tables.md'}"
          + (f"; {len(report.plots)} plots" if report.plots else "")
          + (f"; headline pasted into {args.readme}" if args.readme else ""), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
