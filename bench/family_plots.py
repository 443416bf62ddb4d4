"""Plots of a token-protocol sweep that stay readable with twenty methods.

* ``acc_vs_budget_families.png`` — held-out accuracy against the fraction of T spent, one panel
  per method family, GRPO at b = 1 (black) and the tuned uniform baseline (grey, dashed) drawn in
  every panel; within a panel each method has its own tab10 colour and each budget fraction its
  own line style.  Points are the means over seeds at each evaluation fraction (every run is
  evaluated at the same fractions j T / K; x is the mean charge actually spent there).
* ``compute_curve_fits.png`` — one small panel per (method, budget): the points and the fitted
  ScaleRL curve (:mod:`bench.compute_curves`), or "not identified" where the fit is not.

Families (a method missing here is drawn under "other", so a new method is never dropped):
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from bench.compute_curves import fit_cell, saturating
from bench.equal_compute import UNIT_COLUMNS, BudgetRuns, references
from bench.plots import LINESTYLES, new_figure, save
from bench.tables.cells import row_label

FAMILIES = {
    "solver allocation": ("knapsack", "coba", "vip", "duet-alloc", "cero", "hora"),
    "filtering and resampling": ("dapo", "greso", "speed-rl", "reinforce-ada", "pods"),
    "difficulty prediction": ("mopps", "sara"),
    "length control and early stop": ("duet", "duet-abort", "arrol", "pilot-commit"),
    "controls": ("oracle", "anti-oracle"),
}
__doc__ += "".join(f"\n* {name}: {', '.join(methods)}" for name, methods in FAMILIES.items())


def family_of(method: str) -> str:
    return next((name for name, methods in FAMILIES.items() if method in methods), "other")


def mean_curve(curves: pd.DataFrame, x: str, total: float) -> tuple[np.ndarray, np.ndarray]:
    """(spent / T, accuracy) means over seeds at each evaluation fraction (step 0 at 0)."""
    point = curves["budget_point"] if "budget_point" in curves else pd.Series(np.nan,
                                                                               curves.index)
    # step 0 is point 0; an evaluation where the step cap stopped a run short of T comes last
    point = point.astype(float).where(curves["step"] > 0, 0.0).fillna(np.inf)
    points = curves.assign(point=point)
    grouped = points.groupby("point")
    return (grouped[x].mean() / total).to_numpy(), grouped["mean_at_k"].mean().to_numpy()


def _cell(curves: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    ident = ["source", "seed", "method", "budget", "prompts", "group_size"]
    return curves.merge(runs[ident].drop_duplicates(), on=ident)


def family_figure(budget_runs: BudgetRuns):
    sweep = budget_runs.sweep()
    total, unit = float(sweep["budget_total"].iloc[0]), sweep["budget_unit"].iloc[0]
    x = UNIT_COLUMNS[unit]
    grpo, tuned, selection = references(budget_runs)
    methods = sorted(set(sweep["method"]) - {"grpo"})
    families = [f for f in [*FAMILIES, "other"] if any(family_of(m) == f for m in methods)]
    budgets = sorted(sweep["budget"].unique(), reverse=True)
    columns = min(3, max(1, len(families)))
    rows = int(np.ceil(len(families) / columns)) or 1
    fig = new_figure(4.6 * columns, 3.4 * rows)
    axes = np.atleast_1d(fig.subplots(rows, columns, squeeze=False)).ravel()
    from matplotlib import colormaps
    palette = colormaps["tab10"].colors
    for ax, family in zip(axes, families):
        if not grpo.empty:
            ax.plot(*mean_curve(_cell(budget_runs.curves, grpo), x, total), color="black",
                    lw=2, marker="o", ms=3, label="grpo b=1")
        if not tuned.empty:
            ax.plot(*mean_curve(_cell(budget_runs.curves, tuned), x, total), color="grey",
                    lw=2, ls="--", marker="s", ms=3,
                    label=f"tuned uniform ({selection.chosen.label})")
        for i, method in enumerate(m for m in methods if family_of(m) == family):
            for b in budgets:
                cell = sweep[(sweep["method"] == method) & np.isclose(sweep["budget"], b)]
                if cell.empty:
                    continue
                ax.plot(*mean_curve(_cell(budget_runs.curves, cell), x, total),
                        color=palette[i % len(palette)],
                        ls=LINESTYLES[budgets.index(b) % len(LINESTYLES)], marker=".",
                        label=f"{row_label(method)} b={b:g}")
        ax.set_title(family, fontsize=9)
        ax.set_xlabel(f"fraction of T = {total:,.0f} {unit} spent", fontsize=8)
        ax.set_ylabel("held-out mean@k", fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="lower right")
    for ax in axes[len(families):]:
        ax.set_visible(False)
    fig.suptitle("Accuracy at equal compute, by method family (mean over seeds)", fontsize=10)
    return fig


def fits_figure(budget_runs: BudgetRuns):
    sweep = budget_runs.sweep()
    total, unit = float(sweep["budget_total"].iloc[0]), sweep["budget_unit"].iloc[0]
    x = UNIT_COLUMNS[unit]
    cells = sorted({(m, b) for m, b in zip(sweep["method"], sweep["budget"])},
                   key=lambda k: (k[0] != "grpo", k[0], -k[1]))
    columns = min(6, len(cells))
    rows = int(np.ceil(len(cells) / columns))
    fig = new_figure(2.4 * columns, 2.0 * rows)
    axes = np.atleast_1d(fig.subplots(rows, columns, squeeze=False)).ravel()
    grid = np.linspace(0.0, 1.05, 80)
    for ax, (method, b) in zip(axes, cells):
        runs = sweep[(sweep["method"] == method) & np.isclose(sweep["budget"], b)]
        curves = _cell(budget_runs.curves, runs)
        fx, fy = mean_curve(curves, x, total)
        ax.plot(fx, fy, "o", ms=3, color="tab:blue")
        fit = fit_cell(curves, x, total).fit
        if fit.identified:
            ax.plot(grid, saturating(grid * total, fit.r0, fit.asymptote, fit.steepness,
                                     fit.midpoint), color="tab:red", lw=1)
        else:
            ax.text(0.5, 0.08, "not identified", transform=ax.transAxes, ha="center",
                    fontsize=7, color="tab:red")
        ax.set_title(f"{row_label(method)} b={b:g}", fontsize=7)
        ax.tick_params(labelsize=6)
    for ax in axes[len(cells):]:
        ax.set_visible(False)
    fig.suptitle(f"ScaleRL fits over data: accuracy vs fraction of T = {total:,.0f} {unit}",
                 fontsize=9)
    return fig


def write_budget_plots(sweep_dir: Path, budget_runs: BudgetRuns) -> list[str]:
    """The two figures of a token-protocol sweep (none for a per-step one)."""
    if budget_runs.empty or budget_runs.sweep().empty:
        return []
    sweep_dir = Path(sweep_dir)
    return [save(family_figure(budget_runs), sweep_dir / "acc_vs_budget_families.png"),
            save(fits_figure(budget_runs), sweep_dir / "compute_curve_fits.png")]
