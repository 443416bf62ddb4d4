"""The headline at equal compute: every run spent the same budget ``T`` (:mod:`trainer.budget`).

Per run, on its accuracy-vs-budget curve (held-out mean@k against cumulative charged tokens, or
rollouts when the preset counts those; the step-0 evaluation at 0, linear between evaluations):

* **AUC** — the area under the curve over [0, T] divided by T, i.e. the mean accuracy over the
  budget (:func:`bench.stats.curve_average_upto`); the step-0 point is included, since at equal
  compute how fast a method leaves it is part of the answer;
* **acc@T** — the accuracy of the final evaluation, made after the first step whose cumulative
  charge reached T (its overshoot is recorded and shown as ``spent / T``).

A run that stopped at the step cap before spending T has neither (nan, shown as "short"): it is
not at equal compute.  The first table gives, per method and budget, the Δ of both numbers
against two references, paired by seed (mean ± 95% t interval, n, P(improvement), MDE): **GRPO
at b = 1** and **the tuned uniform baseline** (:mod:`bench.uniform_grid`), whose configuration
is the grid's best mean AUC on the selection seeds — the grid's seeds that no run of the sweep
uses — and whose own runs at the reported seeds are the reference.  The selection and its margin
(paired by selection seed, against the runner-up and against GRPO at b = 1) are their own table.
The first table's note ends with its power (:func:`power_note`): how many contender cells' ΔAUC
vs the tuned baseline reach MDE <= 0.02 and how many seeds the noisiest would need at its
measured paired SD, so whether a sweep has enough seeds is stated, not assumed.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bench.compute_curves import (MIN_IDENTIFIED_SHARE, MIN_SEEDS_FOR_INTERVAL, RESAMPLES,
                                  fit_cell)
from bench.stats import TARGET_MDE, curve_average_upto, seeds_for_mde, t_interval
from bench.tables.cells import MISSING, Table, fmt, is_control, row_label
from bench.tables.registry import standard
from bench.tables.speedup import DeltaStats
from bench.tables.sweep import SweepError, _read, finished_runs, run_identity
from bench.uniform_grid import GRID_DIR, UniformConfig, config_of_folder
from trainer.rundir import read_json, read_jsonl

UNIT_COLUMNS = {"tokens": "cum_tokens", "rollouts": "cum_rollouts"}


# ------------------------------------------------------------------------------ per run
def run_numbers(evals: list[dict], summary: dict) -> dict:
    """AUC over [0, T], acc@T, spent / T of one token-protocol run."""
    total, unit = float(summary["budget_total"]), summary.get("budget_unit", "tokens")
    column = UNIT_COLUMNS[unit]
    ordered = sorted(evals, key=lambda e: e["step"])
    x = [e[column] for e in ordered]
    y = [e["mean_at_k"] for e in ordered]
    reached = bool(summary.get("budget_reached"))
    return {"auc": curve_average_upto(x, y, total) if reached else float("nan"),
            "acc_at_T": float(y[-1]) if reached else float("nan"),
            "spent_ratio": float(summary["budget_spent"]) / total, "reached": reached,
            "budget_total": total, "budget_unit": unit}


def _load(run_dirs, extra: dict | None = None) -> tuple[list[dict], list[pd.DataFrame]]:
    rows, curves = [], []
    for run_dir in run_dirs:
        summary = _read(run_dir / "summary.json", read_json)
        if summary.get("protocol") != "tokens":
            continue
        evals = _read(run_dir / "eval.jsonl", read_jsonl)
        ident = run_identity(run_dir)
        preset = _read(run_dir / "config.json", read_json)["run"]["preset"]
        row = {**ident, "prompts": preset["prompts_per_step"], **run_numbers(evals, summary),
               "run": run_dir.name, **(extra or {})}
        rows.append(row)
        frame = pd.DataFrame([{k: v for k, v in e.items() if not isinstance(v, dict)}
                              for e in evals])
        for key in ("method", "budget", "seed", "prompts", "group_size"):
            frame[key] = row[key]
        frame["source"] = row["source"]
        curves.append(frame.sort_values("step", kind="stable"))
    return rows, curves


@dataclass
class BudgetRuns:
    """The token-protocol runs of a sweep (``source`` = sweep) and of its uniform grid
    (``source`` = grid), one row each, and every evaluation of them."""

    runs: pd.DataFrame
    curves: pd.DataFrame

    @property
    def empty(self) -> bool:
        return self.runs.empty

    def sweep(self) -> pd.DataFrame:
        return self.runs[self.runs["source"] == "sweep"] if not self.empty else self.runs


def load_budget_runs(sweep_dir: Path) -> BudgetRuns:
    sweep_dir = Path(sweep_dir)
    rows, curves = _load(finished_runs(sweep_dir), {"source": "sweep"})
    for folder in sorted((sweep_dir / GRID_DIR).glob("M*xG*")):
        more, frames = _load(finished_runs(folder), {"source": "grid"})
        rows += more
        curves += frames
    runs = pd.DataFrame(rows)
    if not runs.empty and runs["budget_total"].nunique() > 1:
        raise SweepError(f"{sweep_dir}: runs of different token budgets T "
                         f"({sorted(runs['budget_total'].unique())}) cannot be compared")
    return BudgetRuns(runs, pd.concat(curves, ignore_index=True) if curves else pd.DataFrame())


# ------------------------------------------------------------------------------ references
def config_runs(runs: pd.DataFrame, config: UniformConfig) -> pd.DataFrame:
    """Every run (sweep or grid) of uniform GRPO at ``config``, one per seed (a grid run wins
    over the sweep's own run of the same configuration and seed: they are the same run)."""
    cell = runs[(runs["method"] == "grpo") & (runs["prompts"] == config.prompts)
                & (runs["group_size"] == config.group) & np.isclose(runs["budget"], config.budget)]
    return cell.sort_values("source").drop_duplicates("seed", keep="first")


@dataclass
class Selection:
    """The tuned uniform configuration and how it was chosen."""

    chosen: UniformConfig | None
    selection_seeds: list[int]
    table: pd.DataFrame            # per configuration: seeds, AUC mean / ci, acc@T mean / ci


def grid_configs(runs: pd.DataFrame) -> list[UniformConfig]:
    grid = runs[runs["source"] == "grid"]
    configs = {UniformConfig(int(r.prompts), int(r.group_size), float(r.budget))
               for r in grid.itertuples()}
    return sorted(configs, key=lambda c: (-c.budget, c.group))


def select_tuned(runs: pd.DataFrame) -> Selection:
    """The grid configuration with the best mean AUC over the selection seeds (grid seeds no
    sweep run uses), among those that ran at every selection seed; ties: the earlier in the
    grid's order (b = 1 first, smaller groups first)."""
    reported = set(runs.loc[runs["source"] == "sweep", "seed"])
    grid = runs[runs["source"] == "grid"]
    seeds = sorted(set(grid["seed"]) - reported)
    rows, best, best_auc = [], None, -np.inf
    for config in grid_configs(runs):
        cell = config_runs(runs, config)
        cell = cell[cell["seed"].isin(seeds)]
        complete = len(cell) == len(seeds) and cell["auc"].notna().all()
        auc, auc_half = t_interval(cell["auc"])
        acc, acc_half = t_interval(cell["acc_at_T"])
        rows.append({"config": config.label, "prompts": config.prompts,
                     "group": config.group, "budget": config.budget, "seeds": len(cell),
                     "complete": complete, "auc_mean": auc, "auc_ci95": auc_half,
                     "acc_at_T_mean": acc, "acc_at_T_ci95": acc_half})
        if complete and seeds and auc > best_auc:
            best, best_auc = config, auc
    return Selection(best, seeds, pd.DataFrame(rows))


# ------------------------------------------------------------------------------ Δs
def paired_delta(cell: pd.DataFrame, reference: pd.DataFrame, column: str,
                 seeds=None) -> DeltaStats:
    """``column`` of ``cell`` minus ``reference``'s, seed by seed over the seeds both have
    (restricted to ``seeds`` when given); runs short of T (nan) pair with nothing."""
    a = cell.dropna(subset=[column]).set_index("seed")[column]
    b = reference.dropna(subset=[column]).set_index("seed")[column]
    common = sorted(set(a.index) & set(b.index) & (set(seeds) if seeds is not None
                                                    else set(a.index)))
    return DeltaStats.of([a[s] - b[s] for s in common])


def references(budget_runs: BudgetRuns) -> tuple[pd.DataFrame, pd.DataFrame, Selection]:
    """(GRPO at b = 1's runs of the sweep, the tuned configuration's runs at the reported
    seeds — empty without a grid —, the selection)."""
    runs = budget_runs.runs
    sweep = budget_runs.sweep()
    grpo = sweep[(sweep["method"] == "grpo") & np.isclose(sweep["budget"], 1.0)]
    selection = select_tuned(runs)
    tuned = pd.DataFrame(columns=runs.columns)
    if selection.chosen is not None:
        tuned = config_runs(runs, selection.chosen)
        tuned = tuned[~tuned["seed"].isin(selection.selection_seeds)]
    return grpo, tuned, selection


def headline_table(budget_runs: BudgetRuns) -> Table | None:
    """The first table: per method and budget, Δ AUC and Δ acc@T vs both references."""
    sweep = budget_runs.sweep()
    if sweep.empty:
        return None
    grpo, tuned, selection = references(budget_runs)
    total, unit = float(sweep["budget_total"].iloc[0]), sweep["budget_unit"].iloc[0]
    tuned_name = selection.chosen.label if selection.chosen else "no grid"
    display, data = [], []
    keys = sorted({(m, b) for m, b in zip(sweep["method"], sweep["budget"])},
                  key=lambda k: (k[0] != "grpo", is_control(k[0]), k[0], -k[1]))
    cells = [(row_label(m), m, b, sweep[(sweep["method"] == m) & np.isclose(sweep["budget"], b)])
             for m, b in keys]          # (row label, method in the CSV, budget, runs)
    if not tuned.empty and not (tuned["source"] == "sweep").all():
        # the tuned configuration is not a row of the sweep: it gets its own reference row
        cells.insert(0, (f"tuned uniform ({tuned_name})", "tuned-uniform",
                         selection.chosen.budget, tuned))
    power_ref = "tuned" if not tuned.empty else "grpo"
    contender_deltas = []       # (row label, budget, ΔAUC vs the power reference)
    for label, method, budget, cell in cells:
        auc, auc_half = t_interval(cell["auc"])
        short = int((~cell["reached"].astype(bool)).sum())
        row = {"method": label, "budget": f"{budget:g}",
               "AUC [0,T]": fmt(auc, auc_half) + (f" ({short} short)" if short else ""),
               "spent / T": fmt(*t_interval(cell["spent_ratio"]), digits=3)}
        numbers = {"method": method, "budget": budget, "seeds": len(cell), "short": short,
                   "auc_mean": auc, "auc_ci95": auc_half,
                   "spent_ratio_mean": float(cell["spent_ratio"].mean())}
        for ref_name, ref in (("grpo", grpo), ("tuned", tuned)):
            for column, label in (("auc", "ΔAUC"), ("acc_at_T", "Δacc@T")):
                d = paired_delta(cell, ref, column)
                heading = f"{label} vs {'GRPO b=1' if ref_name == 'grpo' else 'tuned'}"
                row[heading] = d.text()
                numbers.update({f"d_{column}_vs_{ref_name}_mean": d.mean,
                                f"d_{column}_vs_{ref_name}_ci95": d.half,
                                f"d_{column}_vs_{ref_name}_pairs": d.pairs,
                                f"d_{column}_vs_{ref_name}_mde": d.mde,
                                f"d_{column}_vs_{ref_name}_p_improve": d.p_improve})
                if (ref_name, column) == (power_ref, "auc") and method not in \
                        ("grpo", "tuned-uniform") and not is_control(method) and d.pairs >= 2:
                    contender_deltas.append((row["method"], budget, d))
        display.append(row)
        data.append(numbers)
    return Table("equal_compute", f"Headline at equal compute: every run spends T = "
                 f"{total:,.0f} {unit}; Δ vs GRPO at b = 1 and vs the tuned uniform baseline "
                 f"({tuned_name})", pd.DataFrame(display), pd.DataFrame(data),
                 f"AUC [0,T] = held-out mean@k averaged over the cumulative-{unit} range [0, T] "
                 f"(step 0 at 0, linear between the evaluations at 0 and j T / K); acc@T = the "
                 f"final evaluation, after the first step whose charge reached T (spent / T "
                 f"shows the overshoot; 'short' = runs stopped by the step cap before T, left "
                 f"out of every Δ). Δ cells: the run minus the reference at the same seed, mean "
                 f"± 95% t interval over n paired seeds, P = probability of improvement, MDE = "
                 f"the smallest true Δ those seeds detect with 80% power. Tuned = uniform GRPO's "
                 f"best grid configuration by mean AUC on the selection seeds "
                 f"{selection.selection_seeds or MISSING}, which no row here uses (next table). "
                 + power_note(contender_deltas, "tuned" if power_ref == "tuned" else "GRPO b=1"))


def power_note(deltas: list[tuple[str, float, DeltaStats]], reference: str,
               target: float = TARGET_MDE) -> str:
    """Whether the sweep has the seeds to see a ``target``-sized effect on every contender: how
    many contender cells' ΔAUC vs ``reference`` reach MDE <= ``target``, and the seeds the
    noisiest of them (largest paired SD) and the median one would need
    (:func:`bench.stats.seeds_for_mde`) -- read off the measured spread, so a sweep that falls
    short says by how much."""
    if not deltas:
        return f"Power: no contender cell has 2 paired seeds vs {reference}."
    reached = sum(1 for _, _, d in deltas if d.mde <= target)
    label, budget, worst = max(deltas, key=lambda item: item[2].sd)
    median_sd = float(np.median([d.sd for _, _, d in deltas]))
    fewest, most = min(d.pairs for _, _, d in deltas), max(d.pairs for _, _, d in deltas)

    def needed(sd):
        n = seeds_for_mde(sd, target)
        return f"{n}" if n is not None else "more than 1000"
    return (f"Power: ΔAUC vs {reference} reaches MDE ≤ {target:g} in {reached} of {len(deltas)} "
            f"contender cells (n = {fewest if fewest == most else f'{fewest}-{most}'}); "
            f"at the largest paired SD ({label} "
            f"b={budget:g}, {worst.sd:.4f}) every cell would need n = {needed(worst.sd)} seeds, "
            f"at the median SD ({median_sd:.4f}) n = {needed(median_sd)}.")


def selection_table(budget_runs: BudgetRuns) -> Table | None:
    """The tuned uniform baseline's grid on the selection seeds, the choice and its margin."""
    if budget_runs.empty or not (budget_runs.runs["source"] == "grid").any():
        return None
    runs = budget_runs.runs
    selection = select_tuned(runs)
    display = []
    for r in selection.table.itertuples():
        chosen = selection.chosen is not None and r.config == selection.chosen.label
        display.append({"configuration (M x G, b)": r.config + (" ← chosen" if chosen else ""),
                        "seeds": f"{r.seeds}" + ("" if r.complete else " (incomplete)"),
                        "AUC [0,T]": fmt(r.auc_mean, r.auc_ci95),
                        "acc@T": fmt(r.acc_at_T_mean, r.acc_at_T_ci95)})
    extra = []
    if selection.chosen is not None:
        seeds = selection.selection_seeds
        chosen = config_runs(runs, selection.chosen)
        others = [c for c in grid_configs(runs) if c != selection.chosen]
        ranked = sorted(others, key=lambda c: -np.nanmean(
            config_runs(runs, c).set_index("seed")["auc"].reindex(seeds).to_numpy(float))
            if len(config_runs(runs, c)) else np.inf)
        margins = []
        if ranked:
            d = paired_delta(chosen, config_runs(runs, ranked[0]), "auc", seeds)
            margins.append(f"over the runner-up ({ranked[0].label}) {d.text()}")
        reference = UniformConfig(*_preset_shape(runs), 1.0)
        if reference != selection.chosen:
            d = paired_delta(chosen, config_runs(runs, reference), "auc", seeds)
            margins.append(f"over GRPO at b = 1 ({reference.label}) {d.text()}")
        extra.append(f"Margin of the chosen configuration's AUC on the selection seeds "
                     f"{seeds}: " + "; ".join(margins) + ".")
    return Table("tuned_selection", "Tuned uniform baseline: the grid on the selection seeds",
                 pd.DataFrame(display), selection.table,
                 "Uniform GRPO at the same T over the grid (group size at fixed rollouts per "
                 "step; per-step budget b at the preset's G), on seeds that no row of the "
                 "headline uses; chosen = the best mean AUC [0,T] among configurations run at "
                 "every selection seed. Cells: mean ± 95% t interval over those seeds.", extra)


def _preset_shape(runs: pd.DataFrame) -> tuple[int, int]:
    """The preset's (M, G): the shape of the sweep's own runs, else of the grid's b < 1
    configurations (which keep the preset's M x G)."""
    own = runs[runs["source"] == "sweep"]
    if own.empty:
        own = runs[runs["budget"] < 1.0]
    row = own.iloc[0]
    return int(row["prompts"]), int(row["group_size"])


def budget_tables(sweep_dir: Path) -> list[Table]:
    """The equal-compute headline, the tuned baseline's selection and the compute curves (none
    for a per-step sweep): the first tables of a token-protocol sweep."""
    budget_runs = load_budget_runs(sweep_dir)
    tables = [headline_table(budget_runs), selection_table(budget_runs),
              compute_curve_table(budget_runs)]
    return [t for t in tables if t is not None]


def _interval_text(value: float, interval: tuple | None, scale: float = 1.0,
                   digits: int = 3) -> str:
    text = f"{value * scale:.{digits}f}"
    if interval:
        text += f" [{interval[0] * scale:.{digits}f}, {interval[1] * scale:.{digits}f}]"
    return text


def compute_curve_table(budget_runs: BudgetRuns) -> Table | None:
    """Per method and budget (and the tuned uniform baseline), the fitted asymptote, midpoint
    and steepness with bootstrap intervals, or why the fit is not identified."""
    sweep = budget_runs.sweep()
    if sweep.empty:
        return None
    total, unit = float(sweep["budget_total"].iloc[0]), sweep["budget_unit"].iloc[0]
    x = UNIT_COLUMNS[unit]
    curves = budget_runs.curves
    _, tuned, selection = references(budget_runs)
    cells = [(row_label(m), m, b, sweep[(sweep["method"] == m) & np.isclose(sweep["budget"], b)])
             for m, b in sorted({(m, b) for m, b in zip(sweep["method"], sweep["budget"])},
                                key=lambda k: (k[0] != "grpo", k[0], -k[1]))]
    if selection.chosen is not None and not tuned.empty:
        cells.append((f"tuned uniform ({selection.chosen.label})", "grpo",
                      selection.chosen.budget, tuned))
    display, data = [], []
    for label, method, budget, runs in cells:
        ident = ["source", "seed", "method", "budget", "prompts", "group_size"]
        result = fit_cell(curves.merge(runs[ident].drop_duplicates(), on=ident), x, total)
        f = result.fit
        row = {"method": label, "budget": f"{budget:g}", "seeds": result.seeds,
               "R0": f"{f.r0:.3f}"}
        if f.identified:
            row["asymptote A"] = _interval_text(f.asymptote, result.intervals.get("asymptote"))
            row[f"midpoint C_mid (k {unit})"] = _interval_text(
                f.midpoint, result.intervals.get("midpoint"), 1e-3, 0)
            row["steepness B"] = _interval_text(f.steepness, result.intervals.get("steepness"),
                                                digits=2)
        else:
            row["asymptote A"] = f"not identified: {f.reason}"
            row[f"midpoint C_mid (k {unit})"] = row["steepness B"] = "—"
        row["identified (bootstrap)"] = (f"{result.identified_share:.0%}"
                                         if not np.isnan(result.identified_share) else "—")
        display.append(row)
        data.append({"method": label, "budget": budget, "seeds": result.seeds, "r0": f.r0,
                     "asymptote": f.asymptote, "midpoint": f.midpoint,
                     "steepness": f.steepness, "identified": f.identified, "reason": f.reason,
                     "identified_share": result.identified_share,
                     **{f"{k}_{end}": v[i] for k, v in result.intervals.items()
                        for i, end in enumerate(("low", "high"))}})
    return Table("compute_curves", f"Compute curves: ScaleRL's saturating fit of accuracy "
                 f"against cumulative {unit}", pd.DataFrame(display), pd.DataFrame(data),
                 f"R(C) = R0 + (A − R0) / (1 + (C_mid / C)^B) fitted to every evaluation of the "
                 f"cell's seeds (R0 fixed to their mean step-0 accuracy); [low, high] = 95% "
                 f"percentile bootstrap over seeds ({RESAMPLES} resamples, from "
                 f"{MIN_SEEDS_FOR_INTERVAL} seeds, printed when ≥ {MIN_IDENTIFIED_SHARE:.0%} of "
                 f"resamples are identified). Not identified = the data do not determine the "
                 f"parameters, e.g. a curve that never bends within [0, T] (its asymptote is "
                 f"then only a lower bound). Compare A (ceiling) and C_mid / B (how fast) "
                 f"separately.")


# the first tables of a token-protocol sweep (before the per-step headline, order 0)
standard("equal_compute", -1)(lambda ctx: budget_tables(ctx.sweep_dir))

__all__ = ["run_numbers", "load_budget_runs", "select_tuned", "paired_delta",
           "references", "headline_table", "selection_table", "compute_curve_table", "budget_tables",
           "config_of_folder"]
