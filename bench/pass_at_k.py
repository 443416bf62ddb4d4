"""pass@k tables: the final evaluation's pass@k per method and budget, and the headline's companion.

Every run's ``eval.jsonl`` records carry ``pass_at_k`` (``trainer.evaluate``: the unbiased
estimator of Chen et al. 2021 from the evaluation's own samples, k in 1, 4, 8 where the preset's
``eval_samples`` allows).  ``bench.tables.sweep.curve_columns`` turns the last evaluation's values into
the summary columns ``final_pass_at_K``; a sweep whose runs predate pass@k has none, and these
tables are then left out.

* :func:`pass_at_k_budget_table`: rows = methods, columns = budget fractions, one table per k,
  cell = final pass@k (± 95% t over seeds), the budget tables' layout.
* :func:`companion_table`: the headline's companion — GRPO's final pass@k at every budget and k,
  then each method's paired Δ vs GRPO at the same budget and seed (mean ± 95% t, pairs), rows in
  the headline's order.  HORA's and Knapsack-RL's claims are about pass@k at k > 1, which the
  curve-average headline (mean@k) does not show.
"""
from __future__ import annotations

import pandas as pd

from bench.stats import t_interval
from bench.tables.builders import _budget_cells
from bench.tables.cells import (INTERVAL_NOTE, MISSING, Table, blabel, budgets_of, cell_runs, fmt,
                                is_control, method_order, row_label, signed)
from bench.tables.registry import standard
from bench.tables.speedup import paired_differences
from bench.tables.sweep import PASS_PREFIX as PREFIX


def ks_of(df: pd.DataFrame) -> list[int]:
    """The k values some run of the sweep reports, ascending."""
    return sorted(int(c[len(PREFIX):]) for c in df.columns if c.startswith(PREFIX))


def pass_at_k_budget_table(df: pd.DataFrame, k: int) -> Table:
    return _budget_cells(df, f"{PREFIX}{k}", f"held-out pass@{k} at the last evaluation "
                         f"(unbiased estimator, Chen et al. 2021, from the evaluation's samples)",
                         f"budget_pass_at_{k}", f"Budget table: final held-out pass@{k}")


def companion_table(df: pd.DataFrame) -> Table | None:
    ks = ks_of(df)
    if "grpo" not in set(df["method"]) or not ks:
        return None
    budgets = budgets_of(df)
    columns = [(b, k) for b in budgets for k in ks]
    grpo_row = {"method": "grpo (final pass@k)"}
    for b, k in columns:
        cell = cell_runs(df, "grpo", b)[f"{PREFIX}{k}"].dropna()
        grpo_row[f"{blabel(b)} pass@{k}"] = (f"{fmt(*t_interval(cell))} (n={len(cell)})"
                                             if len(cell) else MISSING)
    display, data = [grpo_row], []
    for method in [m for m in method_order(df["method"]) if m != "grpo"]:
        row = {"method": row_label(method)}
        for b, k in columns:
            column = f"{PREFIX}{k}"
            if column not in df or cell_runs(df, method, b)[column].isna().all():
                row[f"{blabel(b)} pass@{k}"] = MISSING
                continue
            diffs = paired_differences(df, method, b, "grpo", b, column=column)
            diffs = diffs[~pd.isna(diffs)]
            mean, half = t_interval(diffs)
            row[f"{blabel(b)} pass@{k}"] = signed(mean, half, len(diffs))
            if len(diffs):
                data.append({"method": method, "budget": b, "k": k, "control": is_control(method),
                             "pairs": len(diffs), "delta_mean": mean, "delta_ci95": half})
        display.append(row)
    return Table("headline_pass_at_k", "Headline companion: Δ final pass@k vs GRPO at the same "
                 "budget", pd.DataFrame(display), pd.DataFrame(data),
                 f"First row: GRPO's final held-out pass@k, {INTERVAL_NOTE}. Other rows: Δ = the "
                 f"run's final pass@k − GRPO's at the same budget and seed, mean ± 95% t interval "
                 f"over the n paired seeds. pass@k: the unbiased estimator 1 − C(n−c, k)/C(n, k) "
                 f"(Chen et al. 2021) from the evaluation's n samples per problem (no extra "
                 f"generation); k > n is not reported.")


# the companion right after the headline (order 0), the pass@k budget tables after the final one
standard("headline_pass_at_k", 0.5)(lambda ctx: companion_table(ctx.summaries))
standard("budget_pass_at_k", 2.5)(lambda ctx: [pass_at_k_budget_table(ctx.summaries, k)
                                             for k in ks_of(ctx.summaries)])
