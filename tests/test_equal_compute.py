"""The equal-compute statistics on hand-computed curves (AUC over [0, T], paired Δs, the tuned
uniform baseline chosen on held-out seeds) and the ScaleRL fit on curves of known parameters."""
import json
from pathlib import Path

import numpy as np
import pytest

from bench.stats import curve_average_upto
from bench.compute_curves import fit_curve, saturating
from bench.presets import get_preset, with_overrides
from bench.equal_compute import (headline_table, load_budget_runs, power_note, references,
                                 select_tuned, selection_table)
from bench.tables.speedup import DeltaStats
from bench.uniform_grid import UniformConfig, grid

T = 100.0


def write_run(root: Path, method: str, budget: float, seed: int, curve, *, prompts=32,
              group=8, reached=True):
    """A finished token-protocol run whose evaluations are ``curve`` [(tokens, accuracy)]."""
    run = root / f"{method}__b{budget:g}__s{seed}"
    run.mkdir(parents=True)
    preset = {"name": "hand", "prompts_per_step": prompts, "group_size": group}
    (run / "config.json").write_text(json.dumps(
        {"run": {"method": method, "budget": budget, "seed": seed, "preset": preset}}))
    evals = [{"step": i, "cum_tokens": x, "cum_rollouts": i, "mean_at_k": y}
             for i, (x, y) in enumerate(curve)]
    (run / "eval.jsonl").write_text("".join(json.dumps(e) + "\n" for e in evals))
    spent = curve[-1][0]
    (run / "summary.json").write_text(json.dumps(
        {"protocol": "tokens", "budget_total": T, "budget_unit": "tokens",
         "budget_spent": spent, "budget_reached": reached, "final_accuracy": curve[-1][1],
         "timing": {}}))


def grid_run(root: Path, config: UniformConfig, seed: int, curve):
    write_run(root / config.folder, "grpo", config.budget, seed, curve,
              prompts=config.prompts, group=config.group)


def flat(level_mid, level_end, start=0.5):
    """Evaluations at 0, 50 and 100 tokens."""
    return [(0, start), (50, level_mid), (100, level_end)]


def test_auc_over_the_budget_by_hand():
    # trapezoid: ((0.5 + 0.7) / 2 * 50 + (0.7 + 0.9) / 2 * 50) / 100
    assert curve_average_upto([0, 50, 100], [0.5, 0.7, 0.9], T) == pytest.approx(0.70)
    # an overshooting last evaluation (110 tokens) is interpolated at T: 0.7 + 0.2 * 50 / 60
    at_t = 0.7 + 0.2 * 50 / 60
    assert curve_average_upto([0, 50, 110], [0.5, 0.7, 0.9], T) == \
        pytest.approx((0.6 * 50 + (0.7 + at_t) / 2 * 50) / 100)
    # a curve that ends before T has no AUC over [0, T]
    assert np.isnan(curve_average_upto([0, 50, 90], [0.5, 0.7, 0.9], T))


@pytest.fixture
def hand_sweep(tmp_path):
    """Reported seeds 0, 1; selection seeds 7, 8.  On the reported seeds the 64x4 grid point
    would look best (0.95), but on the selection seeds b = 0.5 is best: the tuned baseline must
    be b = 0.5, chosen without looking at seeds 0 and 1."""
    sweep = tmp_path / "sweep"
    for seed, bump in ((0, 0.0), (1, 0.02)):
        write_run(sweep, "grpo", 1.0, seed, flat(0.6 + bump, 0.7 + bump))          # AUC .6 + b
        write_run(sweep, "grpo", 0.5, seed, flat(0.7 + bump, 0.8 + bump))          # AUC .675 + b
        write_run(sweep, "dapo", 1.0, seed, flat(0.65 + bump, 0.9 + bump * 2))
    configs = {c.label: c for c in grid(32, 8)}
    selection_auc = {"32x8, b=1": 0.60, "64x4, b=1": 0.62, "16x16, b=1": 0.58,
                     "32x8, b=0.5": 0.66, "32x8, b=0.25": 0.64}
    for label, config in configs.items():
        for seed, shift in ((7, 0.0), (8, 0.01)):
            # flat after 50 tokens: AUC = (0.5 + 3 mid) / 4
            mid = (4 * (selection_auc[label] + shift) - 0.5) / 3
            grid_run(sweep, config, seed, [(0, 0.5), (50, mid), (100, mid)])
    # the trap: 64x4 at the reported seeds is far better than anything
    for seed in (0, 1):
        grid_run(sweep, configs["64x4, b=1"], seed, flat(0.95, 0.95))
    return sweep


def test_the_tuned_baseline_is_chosen_on_the_selection_seeds_only(hand_sweep):
    runs = load_budget_runs(hand_sweep)
    selection = select_tuned(runs.runs)
    assert selection.selection_seeds == [7, 8]
    assert selection.chosen == UniformConfig(32, 8, 0.5)
    table = selection_table(runs)
    chosen = [r for r in table.display["configuration (M x G, b)"] if "chosen" in r]
    assert chosen == ["32x8, b=0.5 ← chosen"]
    # margins over the runner-up (b = 0.25: 0.66 - 0.64) and over GRPO b = 1 (0.66 - 0.60)
    assert "over the runner-up (32x8, b=0.25) +0.020" in table.extra[0]
    assert "over GRPO at b = 1 (32x8, b=1) +0.060" in table.extra[0]
    # the reference runs at the reported seeds are the sweep's own GRPO b = 0.5 runs
    grpo, tuned, _ = references(runs)
    assert sorted(tuned["seed"]) == [0, 1] and set(tuned["source"]) == {"sweep"}
    assert sorted(grpo["seed"]) == [0, 1]


def test_headline_deltas_by_hand(hand_sweep):
    table = headline_table(load_budget_runs(hand_sweep))
    data = table.data.set_index(["method", "budget"])
    # AUC of 0.5 -> mid -> end at 0, 50, 100 tokens = ((0.5 + mid) / 2 + (mid + end) / 2) / 2
    # dapo: 0.675 (seed 0), 0.695 (seed 1); grpo b=1: 0.600, 0.615 -> Δ 0.075, 0.080;
    # tuned (the sweep's grpo b=0.5): 0.675, 0.690 -> Δ 0.000, 0.005
    dapo = data.loc[("dapo", 1.0)]
    assert dapo["auc_mean"] == pytest.approx(0.685)
    assert dapo["d_auc_vs_grpo_mean"] == pytest.approx(0.0775)
    assert dapo["d_auc_vs_grpo_pairs"] == 2
    assert dapo["d_auc_vs_tuned_mean"] == pytest.approx(0.0025)
    # acc@T: dapo 0.9, 0.94; grpo b=1 0.7, 0.72 -> 0.2, 0.22; tuned 0.8, 0.82 -> 0.1, 0.12
    assert dapo["d_acc_at_T_vs_grpo_mean"] == pytest.approx(0.21)
    assert dapo["d_acc_at_T_vs_tuned_mean"] == pytest.approx(0.11)
    # the two differences are 0.10 and 0.12: t interval half-width t(0.975, 1) * sd / sqrt(2)
    assert dapo["d_acc_at_T_vs_tuned_ci95"] == pytest.approx(12.706 * 0.0141421 / np.sqrt(2),
                                                             rel=1e-3)
    assert dapo["d_acc_at_T_vs_tuned_p_improve"] == 1.0
    assert "tuned uniform baseline (32x8, b=0.5)" in table.title
    assert table.display["method"].iloc[0] == "grpo"
    # dapo's ΔAUC vs tuned, 0.000 and 0.005 (SD 0.00354): its MDE at 2 seeds is
    # (12.706 + 1.376) 0.00354 / sqrt 2 = 0.035, so the note says 2 seeds are not enough
    assert "Power: ΔAUC vs tuned reaches MDE ≤ 0.02 in 0 of 1 contender cells (n = 2)" \
        in table.note
    assert "(dapo b=1, 0.0035) every cell would need n = 3 seeds" in table.note


def test_the_power_note_counts_cells_and_reads_the_seeds_off_the_noisiest():
    noisy = DeltaStats.of([0.01, 0.02, 0.03])      # SD 0.01: MDE 5.363 * 0.01 / sqrt 3 = 0.031
    quiet = DeltaStats.of([0.0, 0.0, 0.001])       # SD 0.000577: MDE 0.0018
    note = power_note([("knapsack", 0.5, noisy), ("vip", 1.0, quiet)], "tuned")
    assert "reaches MDE ≤ 0.02 in 1 of 2 contender cells (n = 3);" in note
    four = DeltaStats.of([0.0, 0.0, 0.001, 0.0])
    assert "(n = 3-4);" in power_note([("knapsack", 0.5, noisy), ("vip", 1.0, four)], "tuned")
    # 0.01 needs 5 seeds (n = 4: 4.161 * 0.01 / 2 = 0.0208); the median SD 0.00529 needs 3
    assert "(knapsack b=0.5, 0.0100) every cell would need n = 5 seeds" in note
    assert "at the median SD (0.0053) n = 3." in note
    assert "no contender cell" in power_note([], "GRPO b=1")


def test_a_run_short_of_the_budget_is_left_out_of_every_delta(tmp_path):
    sweep = tmp_path / "sweep"
    for seed in (0, 1):
        write_run(sweep, "grpo", 1.0, seed, flat(0.6, 0.7))
    write_run(sweep, "vip", 1.0, 0, flat(0.7, 0.8))
    write_run(sweep, "vip", 1.0, 1, [(0, 0.5), (50, 0.9), (80, 0.9)], reached=False)
    table = headline_table(load_budget_runs(sweep))
    row = table.data.set_index("method").loc["vip"]
    assert row["short"] == 1 and row["d_auc_vs_grpo_pairs"] == 1
    assert "(1 short)" in table.display.set_index("method").loc["vip", "AUC [0,T]"]


def test_the_fit_recovers_known_parameters_and_refuses_a_curve_without_a_bend():
    c = np.repeat(np.linspace(0.05, 1.0, 12) * 5e5, 3)
    y = saturating(c, 0.3, 0.8, 1.5, 0.2 * 5e5)
    fit = fit_curve(np.r_[0, c], np.r_[0.3, y], 0.3, 5e5)
    assert fit.identified
    assert fit.asymptote == pytest.approx(0.8, abs=1e-4)
    assert fit.steepness == pytest.approx(1.5, abs=1e-3)
    assert fit.midpoint == pytest.approx(1e5, rel=1e-3)
    # a straight line has no bend within the data: its midpoint lies beyond it
    line = fit_curve(c, 0.3 + 0.2 * c / 5e5, 0.3, 5e5)
    assert not line.identified


def test_calibrate_asks_budget_sensitivity_of_T_under_the_token_protocol(hand_sweep):
    from bench.calibrate import criteria, token_budget_gains
    # grpo b=1: 0.6 -> 0.7 (seed 0) and 0.62 -> 0.72 (seed 1) between T/2 and T
    gains = token_budget_gains(hand_sweep)
    assert gains == pytest.approx([0.1, 0.1])
    assert token_budget_gains(hand_sweep, seeds=[1]) == pytest.approx([0.1])
    sensitivity = criteria(load_budget_runs(hand_sweep).runs.head(0), gains)[1]
    assert sensitivity.name == "budget sensitivity" and sensitivity.n == 2
    assert "at T − at T/2" in sensitivity.what


def test_a_tuned_configuration_outside_the_sweep_is_its_own_reference_row(tmp_path):
    sweep = tmp_path / "sweep"
    for seed in (0, 1):
        write_run(sweep, "grpo", 1.0, seed, flat(0.6, 0.7))
        write_run(sweep, "knapsack", 1.0, seed, flat(0.7, 0.8))
    best = UniformConfig(64, 4, 1.0)
    for config in grid(32, 8):
        level = 0.9 if config == best else 0.6
        for seed in (7,):
            grid_run(sweep, config, seed, flat(level, level))
    for seed in (0, 1):                                  # the chosen one at the reported seeds
        grid_run(sweep, best, seed, flat(0.8, 0.8))
    table = headline_table(load_budget_runs(sweep))
    assert table.display["method"].iloc[0] == "tuned uniform (64x4, b=1)"
    data = table.data.set_index("method")
    # knapsack AUC ((0.5 + 0.7) / 2 + (0.7 + 0.8) / 2) / 2 = 0.675 vs the tuned runs' ((0.5 + 0.8) / 2 + 0.8) / 2 = 0.725
    assert data.loc["knapsack", "d_auc_vs_tuned_mean"] == pytest.approx(0.675 - 0.725)
    assert data.loc["tuned-uniform", "d_auc_vs_grpo_mean"] == pytest.approx(0.725 - 0.6)


@pytest.mark.parametrize("best, expected", [(UniformConfig(16, 4, 1.0), 2),
                                            (UniformConfig(8, 8, 0.5), 0)])
def test_the_sweep_runs_the_chosen_configuration_at_the_reported_seeds(tmp_path, best, expected):
    """bench.run's second phase: after the grid's selection runs, the chosen configuration at
    --seeds, unless the sweep's own GRPO runs are that configuration (no training here)."""
    from bench.run import Plan, tuned_specs
    from bench.uniform_grid import selection_specs
    from trainer.spec import RunSpec
    preset = with_overrides(get_preset("smoke"), protocol="tokens", token_budget=T)
    sweep = tmp_path / "sweep"
    for config in grid(8, 8):
        grid_run(sweep, config, 7, flat(0.9 if config == best else 0.6, 0.7))
    specs = [RunSpec("grpo", b, s, preset) for b in (1.0, 0.5) for s in (0, 1)]
    plan = Plan(preset, specs, [], None, sweep, selection_specs(specs[0], [7]), [0, 1],
                [1.0, 0.5])
    tuned = tuned_specs(plan)
    assert len(tuned) == expected
    for spec, seed in zip(tuned, (0, 1)):
        assert (spec.method, spec.budget, spec.seed) == ("grpo", best.budget, seed)
        assert (spec.preset.prompts_per_step, spec.preset.group_size) == (16, 4)
        assert spec.run_name() == f"uniform-grid/M16xG4/grpo__b1__s{seed}"
