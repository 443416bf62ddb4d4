"""The standard tables every sweep writes (budget, final, Δ, normalised, speed, cost-to-target,
diagnostics, overhead), each registered in :mod:`bench.tables.registry`; the headline table is
:mod:`bench.headline`'s."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from bench.stats import (curve_average_upto, interquartile_mean, mde_note, normalised_score,
                         prob_improvement, t_interval)
from bench.tables.cells import (CURVE_NOTE, HEADLINE, INTERVAL_NOTE, MISSING, NEVER, TOLERANCE,
                                Table, _stat_columns, blabel, budgets_of, cell_runs, fmt,
                                is_control, method_order, row_label, signed)
from bench.tables.clock import PHASE_COLUMNS, clock_note, cpu_clocked, seconds_column
from bench.tables.registry import standard
from bench.tables.speedup import (REFERENCE, SPEEDUP_NOTE, delta_stats, paired_differences,
                                  speedup_of)
from bench.tables.sweep import SweepError


def _budget_cells(df: pd.DataFrame, column: str, what: str, key: str, title: str) -> Table:
    display, data = [], []
    for method in method_order(df["method"]):
        row = {"method": row_label(method)}
        for b in budgets_of(df):
            cell = cell_runs(df, method, b)[column].dropna()
            iqm = interquartile_mean(cell)
            row[blabel(b)] = fmt(*t_interval(cell)) + ("" if np.isnan(iqm)
                                                      else f" (IQM {iqm:.3f})")
            if len(cell):
                data.append({"method": method, "budget": b, "seeds": len(cell),
                             "control": is_control(method), **_stat_columns(column, cell),
                             f"{column}_iqm": iqm})
        display.append(row)
    return Table(key, title, pd.DataFrame(display), pd.DataFrame(data),
                 f"Cells: {what}; {INTERVAL_NOTE}; IQM = interquartile mean (25% trimmed, "
                 f"rliable), shown from 5 seeds. Columns: budget fraction b. Rows marked "
                 f"(control) are the oracle / anti-oracle references, not contenders.")


def budget_table(df: pd.DataFrame) -> Table:
    """Rows = methods, columns = budget fractions, cell = curve-average accuracy (± 95% t)."""
    return _budget_cells(df, HEADLINE, CURVE_NOTE, "budget",
                         "Budget table: curve-average held-out accuracy")


def final_budget_table(df: pd.DataFrame) -> Table:
    """The same layout on the final evaluation alone."""
    return _budget_cells(df, "final_accuracy", "held-out mean@k at the last evaluation",
                         "budget_final", "Budget table: final held-out accuracy")


def delta_table(df: pd.DataFrame, against_full: bool) -> Table | None:
    """Paired Δ curve-average accuracy vs GRPO at the same seed: at the same budget, or at b = 1;
    probability of improvement per cell, the minimum detectable effect in the footer."""
    if "grpo" not in set(df["method"]):
        return None
    display, data, samples = [], [], []
    for method in method_order(df["method"]):
        if method == "grpo" and not against_full:
            continue
        row = {"method": row_label(method)}
        for b in budgets_of(df):
            ref_b = 1.0 if against_full else b
            if method == "grpo" and np.isclose(b, ref_b):
                row[blabel(b)] = MISSING
                continue
            s = delta_stats(df, method, b, ref_b)
            p_improve = prob_improvement(s.diffs)
            row[blabel(b)] = signed(s.mean, s.half, s.pairs, p_improve=p_improve,
                                    detectable=s.mde)
            if s.pairs:
                samples.append(s.diffs)
                final = paired_differences(df, method, b, "grpo", ref_b)
                f_mean, f_half = t_interval(final)
                data.append({"method": method, "budget": b, "reference_budget": ref_b,
                             "control": is_control(method), "pairs": s.pairs,
                             "delta_mean": s.mean, "delta_ci95": s.half,
                             "delta_sd": s.sd, "mde": s.mde,
                             "prob_improvement": p_improve,
                             "delta_final_mean": f_mean, "delta_final_ci95": f_half})
        display.append(row)
    if against_full:
        key, title = "delta_full", "Δ vs full-budget GRPO (paired by seed, curve average)"
        what = "this run's curve average − GRPO at b = 1's, same seed"
    else:
        key, title = "delta", "Δ vs GRPO (paired by seed, same budget, curve average)"
        what = "this run's curve average − GRPO's at the same budget and seed"
    return Table(key, title, pd.DataFrame(display), pd.DataFrame(data),
                 f"Cell: mean of per-seed differences ({what}) ± 95% Student-t interval of those "
                 f"differences; n = seeds paired; P = probability of improvement (share of seed "
                 f"pairs where this run is higher, ties ½); MDE = the smallest true difference this "
                 f"cell's seeds detect with 80% power (paired t, from its own SD). Positive = "
                 f"better than GRPO. The "
                 f"final-accuracy differences are in the CSV (delta_final_*).",
                 [mde_note(samples)])


METRIC_NAMES = {HEADLINE: "curve average", "auc": "AUC over [0, T]"}


def normalised_table(df: pd.DataFrame, column: str = HEADLINE,
                     oracle: str = "oracle") -> Table | None:
    """Share of the oracle's headroom each method captures, at every budget where the oracle ran:
    (method − GRPO) / (oracle − GRPO) on ``column`` (the curve average per step; under the token
    protocol ``bench.regime`` passes the AUC over [0, T]), paired by seed, bootstrap interval.  A
    run without a value there (a token-protocol run short of T) has no pair.  ``oracle`` names
    the control that is the upper reference (``bench.regime`` passes the testbed's gate oracle,
    ``screening-oracle`` on ``leg-facts``); the other controls are rows like any method.

    Where the oracle's headroom over those seeds is not detected (mean not above 0, or its paired
    95% t interval reaching 0: :func:`bench.stats.headroom_detected`) the ratio has no meaning
    (``noisy-chain`` at b = 1 under the token protocol: the oracle is *behind* GRPO, and a
    method 0.09 below GRPO read +12.6 "oracles"; ``leg-facts``' plain oracle at b = 0.5, +0.003
    over GRPO, turned DAPO's −0.057 into "−20 oracles"), so the cell says so and gives the headroom with
    its interval instead of a score."""
    if oracle not in set(df["method"]) or "grpo" not in set(df["method"]):
        return None
    budgets = [b for b in budgets_of(df) if not cell_runs(df, oracle, b).empty
               and not cell_runs(df, "grpo", b).empty]
    display, data = [], []
    for method in method_order(df["method"]):
        if method in ("grpo", oracle):
            continue
        row = {"method": row_label(method)}
        for b in budgets:
            a, o, g = (cell_runs(df, m, b).set_index("seed")[column].dropna()
                       for m in (method, oracle, "grpo"))
            seeds = sorted(set(a.index) & set(o.index) & set(g.index))
            if not seeds:
                row[blabel(b)] = MISSING
                continue
            deltas, headroom = [a[s] - g[s] for s in seeds], [o[s] - g[s] for s in seeds]
            headroom_half = t_interval(headroom)[1]
            score, low, high = normalised_score(deltas, headroom)    # nan: no headroom
            interval = f" [{low:+.2f}, {high:+.2f}]" if not np.isnan(low) else ""
            row[blabel(b)] = (f"{score:+.2f}{interval} (n={len(seeds)})" if not np.isnan(score)
                              else f"{MISSING} (no headroom: {oracle} − GRPO "
                                   f"{signed(np.mean(headroom), headroom_half, len(seeds))})")
            data.append({"method": method, "budget": b, "pairs": len(seeds),
                         "normalised": score, "ci95_low": low, "ci95_high": high,
                         "delta": float(np.mean(deltas)), "headroom": float(np.mean(headroom)),
                         "headroom_ci95": headroom_half,
                         "oracle": oracle})
        display.append(row)
    return Table("normalised", "Normalised score: share of the oracle's headroom captured",
                 pd.DataFrame(display), pd.DataFrame(data),
                 f"The oracle here is `{oracle}`. "
                 f"Cell: mean(method − GRPO) / mean({oracle} − GRPO) on the {METRIC_NAMES.get(column, column)}, "
                 "over the seeds with all three runs at that budget; 0 = GRPO, 1 = the oracle, "
                 "< 0 = worse than GRPO; [..] = 95% paired percentile bootstrap over seeds "
                 "(scipy.stats.bootstrap, rough with 3 seeds). Only budgets where the oracle ran; "
                 "'no headroom' = the oracle is not detectably above GRPO there (its mean Δ ± "
                 "95% t interval does not lie above 0), so no share of its headroom is defined.")


def speed_table(df: pd.DataFrame) -> Table:
    """Rows = method x budget: tokens, rollouts, seconds by phase, speed-up vs GRPO at b = 1."""
    display, data = [], []
    # a phase no run spent time in is not a measured column of this sweep
    phases = [p for p in PHASE_COLUMNS if seconds_column(df, p) in df
              and df[seconds_column(df, p)].fillna(0).abs().sum() > 0]
    for method in method_order(df["method"]):
        for b in budgets_of(df[df["method"] == method]):
            cell = cell_runs(df, method, b)
            row = {"method": row_label(method), "budget": f"{b:g}", "seeds": len(cell),
                   "tokens": fmt(*t_interval(cell["tokens"]), digits=0, thousands=True),
                   "rollouts": fmt(*t_interval(cell["rollouts"]), digits=0, thousands=True)}
            numbers = {"method": method, "budget": b, "seeds": len(cell),
                       **_stat_columns("tokens", cell["tokens"]),
                       **_stat_columns("rollouts", cell["rollouts"])}
            for phase in phases:
                values = cell[seconds_column(df, phase)]
                row[f"{phase} s"] = fmt(*t_interval(values), digits=1)
                numbers.update(_stat_columns(f"{phase}_seconds", values))
            train = cell[seconds_column(df, "train_seconds")]
            row["train s"] = fmt(*t_interval(train), digits=1)
            numbers.update(_stat_columns("train_seconds", train))
            mean, half = speedup_of(df, method, b)
            row["speed-up"] = MISSING if np.isnan(mean) else fmt(mean, half, digits=2) + "×"
            numbers.update(speedup_mean=mean, speedup_ci95=half)
            display.append(row)
            data.append(numbers)
    return Table("speed", "Speed table: cumulative cost of each run", pd.DataFrame(display),
                 pd.DataFrame(data),
                 f"Cells: {INTERVAL_NOTE}. {clock_note(df)}; phases no run spent time in are "
                 f"left out; train s = every phase but evaluation; {SPEEDUP_NOTE}.")


# ------------------------------------------------------------------------------ cost-to-target
COST_COLUMNS = (("cum_tokens", "tokens"), ("cum_rollouts", "rollouts"),
                ("cum_train_seconds", "seconds"))


def default_target(summaries: pd.DataFrame) -> float:
    """GRPO at b = 1's mean over its last three evaluations, mean over its seeds (one noisy final
    point is a target only some seeds of GRPO itself reach); nan when that run is absent."""
    ref = cell_runs(summaries, *REFERENCE)["last3_accuracy"] if not summaries.empty else []
    return float(np.mean(ref)) if len(ref) else float("nan")


def token_grid_averages(curves: pd.DataFrame) -> tuple[dict, float]:
    """Each run's accuracy averaged over the common cumulative-token range ``[0, T]``, ``T`` the
    smallest final cumulative token count of the runs (:func:`bench.stats.curve_average_upto`):
    ``({(method, budget, seed): value}, T)``."""
    if curves.empty:
        return {}, float("nan")
    keys = ["method", "budget", "seed"]
    upto = float(curves.groupby(keys)["cum_tokens"].max().min())
    if not upto > 0:
        return {}, float("nan")
    return {key: curve_average_upto(run["cum_tokens"], run["mean_at_k"], upto)
            for key, run in curves.groupby(keys)}, upto


def first_reach(curve: pd.DataFrame, target: float) -> dict | None:
    """The costs at the first evaluation (step order) with mean_at_k ≥ target; None if never."""
    curve = curve.sort_values("step", kind="stable")
    hits = curve[curve["mean_at_k"] >= target - TOLERANCE]
    if hits.empty:
        return None
    first = hits.iloc[0]
    return {"step": int(first["step"]), **{name: float(first[col]) for col, name in COST_COLUMNS}}


def reach_costs(curves: pd.DataFrame, method: str, budget: float, target: float) -> tuple[list, int]:
    """(first-reach costs of the seeds that reached the target, number of seeds)."""
    cell = cell_runs(curves, method, budget)
    reached, seeds = [], sorted(cell["seed"].unique())
    for seed in seeds:
        hit = first_reach(cell[cell["seed"] == seed], target)
        if hit is not None:
            reached.append(hit)
    return reached, len(seeds)


def cost_cell(reached: list, n: int, name: str, digits: int = 0) -> tuple[str, float, float]:
    """Display string, mean and half-width of one cost over the seeds that reached the target."""
    if not reached:
        return NEVER, float("nan"), float("nan")
    mean, half = t_interval([h[name] for h in reached])
    text = fmt(mean, half, digits=digits, thousands=True)
    return (text if len(reached) == n else f"{text} ({len(reached)}/{n})"), mean, half


def ratio_text(reference: float, value: float) -> str:
    if np.isnan(reference) or np.isnan(value) or value <= 0:
        return MISSING
    return f"{reference / value:.2f}×"


def cost_table(summaries: pd.DataFrame, curves: pd.DataFrame, target: float | None) -> Table:
    """Rows = method x budget: cumulative tokens / rollouts / train seconds to first reach the
    target, with ratios vs GRPO at b = 1."""
    explicit = target is not None
    target = default_target(summaries) if target is None else float(target)
    source = "given by --target" if explicit else \
        "GRPO (b = 1)'s mean over its last three evaluations, mean over seeds"
    title = f"Cost-to-target table: target accuracy {target:.3f} ({source})" \
        if not np.isnan(target) else "Cost-to-target table"
    if np.isnan(target):
        return Table("cost", title, pd.DataFrame(), None,
                     "No target: GRPO at b = 1 is not in this sweep; pass --target.")
    if cpu_clocked(summaries) and "cum_train_cpu_seconds" in curves \
            and curves["cum_train_cpu_seconds"].notna().all():
        curves = curves.assign(cum_train_seconds=curves["cum_train_cpu_seconds"])
    grid, upto = token_grid_averages(curves)
    ref_reached, _ = reach_costs(curves, *REFERENCE, target)
    ref_means = {name: (t_interval([h[name] for h in ref_reached])[0] if ref_reached
                        else float("nan")) for _, name in COST_COLUMNS}
    display, data = [], []
    for method in method_order(summaries["method"]):
        for b in budgets_of(summaries[summaries["method"] == method]):
            reached, n = reach_costs(curves, method, b, target)
            row = {"method": row_label(method), "budget": f"{b:g}", "reached": f"{len(reached)}/{n}"}
            numbers = {"method": method, "budget": b, "target": target, "seeds": n,
                       "reached": len(reached)}
            for _, name in COST_COLUMNS:
                digits = 1 if name == "seconds" else 0
                row[f"{name} to target"], mean, half = cost_cell(reached, n, name, digits)
                numbers.update({f"{name}_mean": mean, f"{name}_ci95": half})
            for _, name in COST_COLUMNS:
                mean = numbers[f"{name}_mean"]
                row[f"{name} vs GRPO"] = ratio_text(ref_means[name], mean)
                numbers[f"{name}_vs_grpo"] = (ref_means[name] / mean
                                              if mean and not np.isnan(mean) else float("nan"))
            on_grid = [v for (m, bb, _), v in grid.items() if m == method and np.isclose(bb, b)]
            row["acc on token grid"] = fmt(*t_interval(on_grid))
            numbers.update(_stat_columns("token_grid_accuracy", on_grid), token_grid_upto=upto)
            display.append(row)
            data.append(numbers)
    return Table("cost", title, pd.DataFrame(display), pd.DataFrame(data),
                 "First reach = first evaluation (step 0 included) with held-out mean@k ≥ target; "
                 "the cost is that evaluation's cumulative tokens / rollouts / training seconds, "
                 "not interpolated between evaluations. Cells: mean ± 95% t-interval over the "
                 "seeds that reached the target; (k/n) = only k of n seeds reached it (optimistic: "
                 "the others are left out); never = no seed reached it. vs GRPO = GRPO (b = 1)'s "
                 "mean cost / this row's (> 1: cheaper). acc on token grid = held-out accuracy "
                 f"averaged over the same cumulative-token range [0, {upto:,.0f}] for every row "
                 "(the smallest run's total; linear between evaluations, step 0 at 0 tokens): "
                 "the equal-cost comparison, mean ± 95% t over seeds.")


# ------------------------------------------------------------------------------ diagnostics
DIAGNOSTICS = (("zero_variance_fraction", "zero-var groups"),
               ("effective_ratio", "effective ratio"),
               ("count_mean", "count mean"), ("count_std", "count spread (sd)"),
               ("stopped_fraction", "stopped"), ("aborted_fraction", "aborted"),
               ("eps_kept_fraction", "kept by chance"), ("mean_rounds", "rounds/step"))


def diagnostics_table(df: pd.DataFrame) -> Table:
    """Per method x budget: how each allocator spent its rollouts (summary.json fields)."""
    display, data = [], []
    for method in method_order(df["method"]):
        for b in budgets_of(df[df["method"] == method]):
            cell = cell_runs(df, method, b)
            row = {"method": row_label(method), "budget": f"{b:g}"}
            numbers = {"method": method, "budget": b, "seeds": len(cell)}
            for column, heading in DIAGNOSTICS:
                values = cell[column] if column in cell else []
                row[heading] = fmt(*t_interval(values), digits=2)
                numbers.update(_stat_columns(column, values))
            display.append(row)
            data.append(numbers)
    return Table("diagnostics", "Diagnostics: how each method spent its rollouts",
                 pd.DataFrame(display), pd.DataFrame(data),
                 f"Cells: {INTERVAL_NOTE}. zero-var groups = fraction of trained groups whose "
                 "rewards were all equal (no gradient); effective ratio = fraction of trained "
                 "groups with a non-zero advantage; count mean / sd = first-round rollouts per "
                 "prompt over all steps; stopped / aborted / kept by chance = fractions of "
                 "generated rows ended by DUET's stop rule (kept), aborted (excluded), or kept by "
                 "its ε-chance; rounds/step = generation rounds per training step.")


# ------------------------------------------------------------------------------ overhead
OVERHEAD_FILE = "overhead.csv"


def overhead_from_file(sweep_dir: Path) -> Table | None:
    """The allocator overhead table from ``overhead.csv`` (written by ``python -m bench.overhead
    --out DIR/overhead.md`` or ``bench.run --overhead``), if the sweep has one."""
    from bench.overhead import format_seconds
    path = Path(sweep_dir) / OVERHEAD_FILE
    if not path.is_file():
        return None
    try:
        raw = pd.read_csv(path, index_col=0, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise SweepError(f"{path} is not a readable CSV ({exc})") from None
    rows = []
    for label, values in raw.iterrows():
        row = {"solver": label}
        for column, value in values.items():
            try:
                number = float(value)
            except ValueError:
                row[column] = MISSING
                continue
            row[column] = (f"{number:.0f}x" if number >= 10 else f"{number:.1f}x") \
                if str(label).endswith("(x)") else format_seconds(number)
        rows.append(row)
    return Table("overhead", "Allocator overhead: median solve time per step (CoBA-RL Table 4 "
                 "layout)", pd.DataFrame(rows), None,
                 f"From {OVERHEAD_FILE} (raw seconds there). Columns: M prompts per step, C = 16 M "
                 "rollouts; — = not measured. Paper (CoBA-RL Table 4, M = 512, B_total = 8192): "
                 "DP 115.05 s, heap 0.124 s.")


# ------------------------------------------------------------------------------ the standard list
standard("budget", 1)(lambda ctx: budget_table(ctx.summaries))
standard("final", 2)(lambda ctx: final_budget_table(ctx.summaries))
standard("delta", 3)(lambda ctx: delta_table(ctx.summaries, against_full=False))
standard("delta_full", 4)(lambda ctx: delta_table(ctx.summaries, against_full=True))
standard("speed", 6)(lambda ctx: speed_table(ctx.summaries))
standard("cost", 7)(lambda ctx: cost_table(ctx.summaries, ctx.curves, ctx.target))
standard("diagnostics", 8)(lambda ctx: diagnostics_table(ctx.summaries))
standard("overhead", 9)(lambda ctx: overhead_from_file(ctx.sweep_dir))
