"""The headline table: one row per method, what a reader of a sweep wants first.

Rows: GRPO's own curve average at every budget (the reference level), then the controls, then
the contenders sorted by their Δ at the largest budget they ran (best first; a method with no
paired seed there sorts last).  Cells: the paired Δ vs GRPO at the same budget and seed
(:func:`bench.tables.delta_stats`, the Δ table's numbers) with its 95% t interval, the pairs and
the cell's own minimum detectable effect; the last column is the method's cumulative tokens over
GRPO's at the same budget and seed, the mean of those per-seed ratios (one per budget).

The README's headline is this table, pasted by ``python -m bench.report DIR --readme README.md``
between the two marker lines :func:`markers` names for the sweep's preset (:func:`paste_into`),
so that every number there is a cell of the committed sweep's files.  The markers carry the
preset's name because a README with more than one testbed holds one headline per testbed, and a
sweep must replace its own testbed's table, never another's.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from bench.stats import t_interval
from bench.tables.cells import (HEADLINE, INTERVAL_NOTE, MISSING, Table, blabel, budgets_of,
                                cell_runs, fmt, is_control, row_label, signed)
from bench.tables.registry import standard
from bench.tables.speedup import delta_stats
from bench.tables.sweep import SweepError
from trainer.rundir import atomic_write_text

def markers(preset: str) -> tuple[str, str]:
    """The two lines between which a README holds ``preset``'s headline table."""
    return (f"<!-- headline table ({preset}): python -m bench.report DIR --readme README.md "
            f"writes below -->", f"<!-- end of headline table ({preset}) -->")


def token_ratio(df: pd.DataFrame, method: str, budget: float) -> tuple[float, int]:
    """(mean over seeds of tokens(method) / tokens(GRPO), same budget and seed; pairs)."""
    runs = cell_runs(df, method, budget).set_index("seed")["tokens"]
    grpo = cell_runs(df, "grpo", budget).set_index("seed")["tokens"]
    seeds = sorted(set(runs.index) & set(grpo.index))
    ratios = [runs[s] / grpo[s] for s in seeds if grpo[s] > 0]
    return (float(np.mean(ratios)) if ratios else float("nan")), len(ratios)


def _ratio_text(value: float) -> str:
    if np.isnan(value):
        return MISSING
    return f"{value:.2f}" if value < 2 else f"{value:.1f}"


def headline_table(df: pd.DataFrame) -> Table | None:
    if "grpo" not in set(df["method"]):
        return None
    budgets = budgets_of(df)
    stats = {(m, b): delta_stats(df, m, b, b) for m in set(df["method"]) - {"grpo"}
             for b in budgets}

    def sort_key(method):
        ran = [b for b in budgets if stats[method, b].pairs]
        lead = -stats[method, ran[0]].mean if ran else np.inf
        return (not is_control(method), lead, method)

    tokens_title = "tokens vs GRPO (" + " / ".join(blabel(b) for b in budgets) + ")"
    grpo_row = {"method": "grpo (curve average)"}
    for b in budgets:
        cell = cell_runs(df, "grpo", b)[HEADLINE].dropna()
        mean, half = t_interval(cell)
        grpo_row[blabel(b)] = f"{fmt(mean, half)} (n={len(cell)})" if len(cell) else MISSING
    grpo_row[tokens_title] = " / ".join("1" for _ in budgets)
    display, data = [grpo_row], []
    for method in sorted(set(df["method"]) - {"grpo"}, key=sort_key):
        row = {"method": row_label(method)}
        ratios = []
        for b in budgets:
            s = stats[method, b]
            row[blabel(b)] = signed(s.mean, s.half, s.pairs, detectable=s.mde)
            ratio, ratio_pairs = token_ratio(df, method, b)
            ratios.append(_ratio_text(ratio))
            if s.pairs:
                data.append({"method": method, "budget": b, "control": is_control(method),
                             "pairs": s.pairs, "delta_mean": s.mean, "delta_ci95": s.half,
                             "mde": s.mde, "token_ratio": ratio, "token_pairs": ratio_pairs})
        row[tokens_title] = " / ".join(ratios)
        display.append(row)
    return Table("headline", "Headline (per step): Δ curve average vs GRPO at the same budget",
                 pd.DataFrame(display), pd.DataFrame(data),
                 f"First row: GRPO's curve-average held-out accuracy, {INTERVAL_NOTE}. Other "
                 f"rows: Δ = the run's curve average − GRPO's at the same budget and seed, mean "
                 f"± 95% t interval over the n paired seeds, MDE = the smallest true Δ those "
                 f"seeds detect with 80% power (an MDE above the effect you care about means "
                 f"the cell cannot rule it out); controls first, then by Δ at the largest "
                 f"budget. Tokens vs GRPO: the run's cumulative tokens over GRPO's at the same "
                 f"budget and seed, mean over seeds.")


standard("headline", 0)(lambda ctx: headline_table(ctx.summaries))


def marker_span(path: Path, preset: str) -> tuple[str, int, int]:
    """(the README's text, where ``preset``'s begin marker starts, where its end marker starts);
    a missing file or marker is a :class:`SweepError`, checked before a report is built."""
    path = Path(path)
    if not path.is_file():
        raise SweepError(f"{path} does not exist")
    begin, end_line = markers(preset)
    text = path.read_text(encoding="utf-8")
    start, end = text.find(begin), text.find(end_line)
    if start < 0 or end < start:
        raise SweepError(f"{path} has no headline markers for {preset!r}: put the line "
                         f"{begin!r} and, below it, {end_line!r} where the table goes")
    return text, start + len(begin), end


def paste_into(path: Path, table: Table, preset: str) -> None:
    """Replace the lines between ``preset``'s two :func:`markers` in ``path`` with the table's
    rows and note (its ``###`` title is left out: the README has its own heading)."""
    text, start, end = marker_span(path, preset)
    body = table.markdown().split("\n", 2)[2].strip("\n")
    atomic_write_text(path, text[:start] + "\n" + body + "\n" + text[end:])
