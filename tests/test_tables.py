"""Tables of a sweep directory: t-intervals by hand, paired Δ, speed-ups, cost-to-target on
constructed curves (reached, reached late, never), every standard table and plot.

Run directories are constructed directly (config.json, eval.jsonl, metrics.jsonl, summary.json),
which is much faster than training and lets each number be known in advance.
"""
import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from bench import tables
from bench.tables import (cost_table, default_target, first_reach, speedup, t_interval,
                          write_tables)

T975 = {1: 12.706204736, 2: 4.302652730, 3: 3.182446305}    # t_{0.975, df}, from tables

BUCKETS = ("easy", "hard")


# ------------------------------------------------------------------------------ fake sweeps
def write_run(sweep: Path, method: str, budget: float, seed: int, *, final: float,
              curve=None, initial: float = 0.2, seconds: float = 10.0, steps: int = 4,
              preset: str = "smoke", tokens_per_step: int = 1000, rollouts_per_step: int = 64,
              effective=None, counts=None, group_size: int = 8) -> Path:
    """A finished run directory.  ``curve`` = mean@k at evaluations 0, 2, 4, ... steps (default:
    initial then final at the last step); cumulative costs grow linearly with the step."""
    run_dir = sweep / f"{method}__b{budget:g}__s{seed}"
    run_dir.mkdir(parents=True)
    curve = list(curve) if curve is not None else [initial, final]
    eval_steps = np.linspace(0, steps, len(curve)).round().astype(int)
    config = {"run": {"method": method, "budget": budget, "seed": seed,
                      "preset": {"name": preset, "group_size": group_size, "steps": steps},
                      "method_options": {}, "length_options": {}, "embedding": "hashed"},
              "commit": "test"}
    (run_dir / "config.json").write_text(json.dumps(config))
    evals = [{"step": int(s), "cum_tokens": int(s) * tokens_per_step,
              "cum_rollouts": int(s) * rollouts_per_step,
              "cum_train_seconds": round(seconds * s / steps, 4), "mean_at_k": acc,
              "greedy": acc, "k": 2,
              "buckets": {b: acc + (0.1 if b == "easy" else -0.1) for b in BUCKETS}}
             for s, acc in zip(eval_steps, curve)]
    (run_dir / "eval.jsonl").write_text("".join(json.dumps(e) + "\n" for e in evals))
    effective = effective if effective is not None else [0.5] * steps
    counts = counts if counts is not None else [[8] * 8] * steps
    metrics = [{"step": s, "effective_ratio": effective[s], "zero_variance_groups": 2,
                "groups_trained": 8, "rounds": 1, "rollouts": rollouts_per_step,
                "tokens": tokens_per_step, "counts": counts[s]} for s in range(steps)]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    summary = {"method": method, "budget": budget, "seed": seed, "preset": preset,
               "steps": steps, "final_accuracy": final, "final_greedy": final,
               "initial_accuracy": initial, "initial_greedy": initial,
               "final_buckets": evals[-1]["buckets"], "tokens": steps * tokens_per_step,
               "rollouts": steps * rollouts_per_step, "planned_tokens": 0.0,
               "planned_rollouts": 0, "zero_variance_fraction": 0.25,
               "no_gradient_fraction": 0.0, "effective_ratio": float(np.mean(effective)),
               "mean_rounds": 1.0, "count_mean": 8.0, "count_std": 0.0,
               "stopped_fraction": 0.0, "aborted_fraction": 0.0, "eps_kept_fraction": 0.0,
               "verifier_timeouts": 0, "verifier_failures": 0, "nan_skipped": 0,
               "timing": {"train_seconds": seconds, "generate": seconds * 0.7,
                          "reward": seconds * 0.1, "logprob": 0.0, "update": seconds * 0.2,
                          "allocate": 0.0, "other": 0.0, "evaluate": 1.0}}
    (run_dir / "summary.json").write_text(json.dumps(summary))
    return run_dir


def fake_sweep(sweep: Path, preset: str = "smoke") -> Path:
    """grpo / knapsack / duet at b = 1 and 0.5, three seeds, with known numbers."""
    finals = {("grpo", 1.0): [0.2, 0.3, 0.4], ("grpo", 0.5): [0.2, 0.25, 0.3],
              ("knapsack", 1.0): [0.25, 0.33, 0.47], ("knapsack", 0.5): [0.3, 0.3, 0.3],
              ("duet", 1.0): [0.5, 0.5, 0.5], ("duet", 0.5): [0.4, 0.45, 0.5]}
    for (method, budget), values in finals.items():
        for seed, final in enumerate(values):
            seconds = {"grpo": 10.0, "knapsack": 8.0, "duet": 5.0}[method] * budget
            write_run(sweep, method, budget, seed, final=final, seconds=seconds, preset=preset,
                      curve=[0.2, (0.2 + final) / 2, final],
                      tokens_per_step=int(1000 * budget), rollouts_per_step=int(64 * budget),
                      effective=[0.3, 0.4, 0.5, 0.6] if method == "knapsack" else [0.3] * 4,
                      counts=[[8] * 8, [4, 12] * 4, [2, 14] * 4, [1, 15] * 4]
                      if method == "duet" else None)
    return sweep


# ------------------------------------------------------------------------------ intervals
def test_t_interval_by_hand():
    mean, half = t_interval([0.1, 0.2, 0.4])
    s = math.sqrt(((0.1 - 0.7 / 3) ** 2 + (0.2 - 0.7 / 3) ** 2 + (0.4 - 0.7 / 3) ** 2) / 2)
    assert mean == pytest.approx(0.7 / 3)
    assert half == pytest.approx(T975[2] * s / math.sqrt(3), rel=1e-6)
    assert half == pytest.approx(0.379460, abs=1e-5)
    assert t_interval([0.3])[0] == 0.3 and math.isnan(t_interval([0.3])[1])
    assert all(math.isnan(v) for v in t_interval([]))


def test_speedup_is_a_ratio_of_means_with_a_delta_method_interval():
    ratio, half = speedup([10.0, 12.0], [5.0, 5.0])
    assert ratio == pytest.approx(11.0 / 5.0)
    se_ref = np.std([10.0, 12.0], ddof=1) / math.sqrt(2) / 11.0
    assert half == pytest.approx(ratio * se_ref * T975[1])
    assert math.isnan(speedup([10.0], [5.0])[1])


def test_budget_and_paired_delta_tables(tmp_path):
    df = tables.load_summaries(fake_sweep(tmp_path))
    final = tables.final_budget_table(df).display.set_index("method")
    assert list(final.columns) == ["b=1", "b=0.5"]
    assert final.loc["grpo", "b=1"] == f"0.300 ± {T975[2] * 0.1 / math.sqrt(3):.3f}"
    assert final.loc["duet", "b=1"] == "0.500 ± 0.000"
    # headline: curve (0.2, (0.2 + f) / 2, f) at steps 0, 2, 4 averages (0.2 + 3 f) / 4 after
    # step 0; GRPO b=1's finals 0.2, 0.3, 0.4 give 0.2, 0.275, 0.35 (s = 0.075)
    budget = tables.budget_table(df).display.set_index("method")
    assert budget.loc["grpo", "b=1"] == f"0.275 ± {T975[2] * 0.075 / math.sqrt(3):.3f}"
    assert tables.method_order(df["method"])[0] == "grpo"
    delta = tables.delta_table(df, against_full=False)
    rows = delta.display.set_index("method")
    # knapsack - grpo final per seed: 0.05, 0.03, 0.07; on the curve average 3/4 of that
    # each cell names its own MDE: (t_0.975 + t_0.8, 2 dof) · 0.015 / sqrt(3)
    knapsack_mde = (T975[2] + sps.t.ppf(0.8, 2)) * 0.015 / math.sqrt(3)
    assert rows.loc["knapsack", "b=1"] == \
        f"+0.037 ± {T975[2] * 0.015 / math.sqrt(3):.3f} (n=3, P=1.00, MDE {knapsack_mde:.3f})"
    assert "grpo" not in rows.index
    data = delta.data.set_index(["method", "budget"])
    assert data.loc[("knapsack", 1.0), "delta_final_mean"] == pytest.approx(0.05)
    assert data.loc[("knapsack", 1.0), "delta_sd"] == pytest.approx(0.015)
    assert data.loc[("knapsack", 1.0), "mde"] == pytest.approx(knapsack_mde)
    assert "Minimum detectable effect at 80% power" in delta.extra[0]
    full = tables.delta_table(df, against_full=True).display.set_index("method")
    assert full.loc["grpo", "b=1"] == "—"
    # duet b=0.5 finals 0.4, 0.45, 0.5 vs grpo b=1's 0.2, 0.3, 0.4: 3/4 of 0.15 on the curve
    assert full.loc["duet", "b=0.5"].startswith("+0.112")   # 0.1125 in binary floats rounds down


def test_speed_table_has_plain_columns_and_speedups(tmp_path):
    df = tables.load_summaries(fake_sweep(tmp_path))
    speed = tables.speed_table(df).display
    assert list(speed.columns[:3]) == ["method", "budget", "seeds"]
    assert "('grpo'" not in tables.speed_table(df).markdown()
    rows = speed.set_index(["method", "budget"])
    assert rows.loc[("grpo", "1"), "speed-up"] == "1.00×"
    assert rows.loc[("duet", "1"), "speed-up"] == "2.00 ± 0.00×"     # 10 s vs 5 s per run
    assert rows.loc[("grpo", "0.5"), "tokens"] == "2,000 ± 0"


# ------------------------------------------------------------------------------ cost-to-target
def curve(values, every=2, tokens=100):
    import pandas as pd
    return pd.DataFrame({"step": [i * every for i in range(len(values))], "mean_at_k": values,
                         "cum_tokens": [i * tokens for i in range(len(values))],
                         "cum_rollouts": [i * 10 for i in range(len(values))],
                         "cum_train_seconds": [i * 1.5 for i in range(len(values))]})


def test_first_reach_reached_late_never_and_no_interpolation():
    hit = first_reach(curve([0.1, 0.3, 0.6, 0.4, 0.7]), 0.5)
    assert hit == {"step": 4, "tokens": 200.0, "rollouts": 20.0, "seconds": 3.0}
    late = first_reach(curve([0.1, 0.2, 0.3, 0.5]), 0.5)          # equal counts as reached
    assert late["step"] == 6 and late["tokens"] == 300.0
    assert first_reach(curve([0.1, 0.49, 0.499999]), 0.5) is None
    assert first_reach(curve([0.6, 0.1]), 0.5)["tokens"] == 0.0   # the initial policy already


def test_cost_table_aggregates_reaching_seeds_and_marks_never(tmp_path):
    sweep = tmp_path / "s"
    # GRPO reaches 0.5 at step 2 (seed 0), step 4 (seed 1), never (seed 2)
    write_run(sweep, "grpo", 1.0, 0, final=0.6, curve=[0.2, 0.5, 0.6])
    write_run(sweep, "grpo", 1.0, 1, final=0.5, curve=[0.2, 0.4, 0.5])
    write_run(sweep, "grpo", 1.0, 2, final=0.4, curve=[0.2, 0.3, 0.4])
    for seed in range(3):   # knapsack reaches at step 2 in every seed
        write_run(sweep, "knapsack", 1.0, seed, final=0.6, curve=[0.2, 0.55, 0.6])
        write_run(sweep, "duet", 1.0, seed, final=0.3, curve=[0.2, 0.3, 0.3])
    summaries, curves = tables.load_summaries(sweep), tables.load_curves(sweep)
    # default: GRPO's mean over its last three evaluations, mean over seeds
    assert default_target(summaries) == pytest.approx((1.3 + 1.1 + 0.9) / 9)
    assert "last three evaluations" in cost_table(summaries, curves, target=None).title
    table = cost_table(summaries, curves, target=0.5)
    rows = table.display.set_index("method")
    assert "target accuracy 0.500" in table.title
    # grpo: tokens 2000 and 4000 over the two reaching seeds
    half = T975[1] * np.std([2000, 4000], ddof=1) / math.sqrt(2)
    assert rows.loc["grpo", "tokens to target"] == f"3,000 ± {half:,.0f} (2/3)"
    assert rows.loc["grpo", "reached"] == "2/3"
    assert rows.loc["knapsack", "tokens to target"] == "2,000 ± 0"
    assert rows.loc["knapsack", "tokens vs GRPO"] == "1.50×"
    assert rows.loc["duet", "tokens to target"] == "never"
    assert rows.loc["duet", "tokens vs GRPO"] == "—"
    explicit = cost_table(summaries, curves, target=0.58).display.set_index("method")
    assert explicit.loc["knapsack", "reached"] == "3/3"
    assert explicit.loc["grpo", "reached"] == "1/3"
    data = table.data.set_index("method")
    assert data.loc["knapsack", "tokens_vs_grpo"] == pytest.approx(1.5)


# ------------------------------------------------------------------------------ everything
def test_write_tables_writes_every_table_and_csv(tmp_path):
    sweep = fake_sweep(tmp_path / "sweep")
    (sweep / "overhead.csv").write_text("solver,\"M=64, C=1024\"\nCoBA-RL heap (Algorithm 1),"
                                        "0.0012\nCoBA-RL DP / heap (x),—\n")
    text = write_tables(sweep)
    for title in ("Budget table", "Budget table: final", "Δ vs GRPO (paired by seed, same budget",
                  "Δ vs full-budget GRPO", "Speed table", "Cost-to-target table",
                  "Diagnostics", "Allocator overhead"):
        assert title in text
    assert "1.20 ms" in text and "95% Student-t" in text
    assert (sweep / "tables.md").read_text() == text
    for key in ("budget", "budget_final", "delta", "delta_full", "speed", "cost", "diagnostics"):
        assert (sweep / f"table_{key}.csv").stat().st_size > 0
    assert (sweep / "summary.csv").is_file()


def test_diagnostics_table(tmp_path):
    df = tables.load_summaries(fake_sweep(tmp_path))
    diag = tables.diagnostics_table(df).display
    assert {"zero-var groups", "effective ratio", "count mean", "count spread (sd)", "stopped",
            "aborted", "kept by chance", "rounds/step"} <= set(diag.columns)


def test_unfinished_runs_are_left_out(tmp_path):
    sweep = fake_sweep(tmp_path)
    (sweep / "grpo__b1__s0" / "summary.json").unlink()
    df = tables.load_summaries(sweep)
    assert len(df) == 17 and len(tables.load_curves(sweep)["seed"].unique()) == 3


def test_plots_are_written(tmp_path):
    from bench import plots
    sweep = fake_sweep(tmp_path)
    summaries, curves, steps = (tables.load_summaries(sweep), tables.load_curves(sweep),
                                tables.load_steps(sweep))
    paths = plots.write_plots(sweep, summaries, curves, steps, target=0.3)
    names = {Path(p).name for p in paths}
    assert names == {"acc_vs_tokens.png", "acc_vs_rollouts.png", "acc_vs_seconds.png",
                     "budget_sweep.png", "rollout_counts.png"}
    for path in paths:
        assert Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    matrix, labels, top = plots.count_matrix(tables.cell_runs(steps, "duet", 1.0), windows=4)
    assert top == 15 and labels == ["0", "1", "2", "3"]
    assert matrix[0, 8] == 1.0 and matrix[1, 4] == matrix[1, 12] == 0.5
    grid, values = plots.interpolated(tables.cell_runs(curves, "grpo", 1.0), "cum_tokens")
    assert values.shape == (3, plots.GRID_POINTS) and grid[-1] == 4000


def test_accuracy_plot_has_one_panel_per_budget_and_one_legend(tmp_path):
    from bench import plots
    curves = tables.load_curves(fake_sweep(tmp_path))
    fig = plots.accuracy_vs_cost(curves, "cum_tokens", target=0.3)
    panels = [ax for ax in fig.axes if ax.get_title().startswith("budget fraction")]
    assert [ax.get_title() for ax in panels] == ["budget fraction b=1", "budget fraction b=0.5"]
    # each panel draws only its own budget: three methods, one line each
    assert [len(ax.get_lines()) - 1 for ax in panels] == [3, 3]      # minus the target line
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    assert len(legends) == 1
    assert [t.get_text() for t in legends[0].get_texts()] == ["grpo", "duet", "knapsack",
                                                              "target 0.300"]
    assert "3 seed(s)" in fig.get_suptitle()
    # on a caller's axes everything stays on that axes, budgets told apart in the labels
    single = plots.accuracy_vs_cost(curves, "cum_tokens", budgets=[1.0])
    assert len(single.axes) == 1 and len(single.axes[0].get_lines()) == 3


def test_standard_plots_leave_ablation_runs_to_their_paper_table(tmp_path):
    from bench import plots
    sweep = fake_sweep(tmp_path)
    write_run(sweep, "coba-fixed-exploit", 1.0, 0, final=0.3)
    summaries = tables.load_summaries(sweep)
    assert "coba-fixed-exploit" in set(summaries["method"])            # the tables keep it
    assert set(plots.without_ablations(summaries)["method"]) == {"grpo", "knapsack", "duet"}
    only_ablation = summaries[summaries["method"] == "coba-fixed-exploit"]
    assert len(plots.without_ablations(only_ablation)) == 1              # nothing else to show
