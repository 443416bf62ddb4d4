"""The calibration gate on hand-made sweep directories with known numbers: one that passes, one
that fails each criterion; the CLI's exit codes on them; diagnostics read from the run files."""
import json
import math

import pytest

from bench import calibrate
from bench.presets import get_preset
from tests.test_tables import T975, write_run
from trainer.loop import RunSpec

# curve averages per seed (each run's curve is (initial, v, v) at steps 0, 2, 4: average v)
PASSING = {("grpo", 1.0): [0.35, 0.36, 0.37], ("grpo", 0.5): [0.30, 0.32, 0.31],
           ("oracle", 0.5): [0.34, 0.35, 0.36], ("anti-oracle", 0.5): [0.25, 0.26, 0.27]}
FAILING = {
    # GRPO gains 0.08, 0.09, 0.10 over an initial 0.27: mean 0.09 < 0.10
    "learning": {"initial": 0.27},
    # b=1 - b=0.5 per seed: -0.01, +0.04, 0.00 (interval spans 0)
    "budget sensitivity": {("grpo", 0.5): [0.36, 0.32, 0.37],
                           ("oracle", 0.5): [0.40, 0.36, 0.41],
                           ("anti-oracle", 0.5): [0.31, 0.27, 0.32]},
    # oracle - GRPO: +0.01, -0.01, +0.02
    "headroom": {("oracle", 0.5): [0.31, 0.31, 0.33]},
    # GRPO - anti-oracle: -0.01, +0.02, +0.00
    "negative control": {("anti-oracle", 0.5): [0.31, 0.30, 0.31]},
}


def make_sweep(path, changes=None, spec_configs=False):
    changes = dict(changes or {})
    initial = changes.pop("initial", 0.2)
    cells = {**PASSING, **changes}
    preset = get_preset("smoke")
    for (method, budget), values in cells.items():
        for seed, v in enumerate(values):
            run_dir = write_run(path, method, budget, seed, final=v, curve=[initial, v, v],
                                initial=initial)
            config = json.loads((run_dir / "config.json").read_text())
            config["pool_size"] = 160
            config["run"]["preset"]["prompts_per_step"] = 8
            if spec_configs:       # exactly what bench.calibrate would have run: reused as is
                config["run"] = RunSpec(method, budget, seed, preset).config()
            summary = json.loads((run_dir / "summary.json").read_text())
            summary.update(length_sd_ratio=0.2, truncation_by_bucket={"easy": 0.0, "hard": 0.1})
            (run_dir / "summary.json").write_text(json.dumps(summary))
            (run_dir / "config.json").write_text(json.dumps(config))
    return path


def results(path):
    gate, diags, text = calibrate.judge(path)
    return {c.name: c for c in gate}, {d.name: d for d in diags}, text


def test_passing_sweep_passes_every_criterion(tmp_path):
    gate, diags, text = results(make_sweep(tmp_path / "ok"))
    assert all(c.passed for c in gate.values())
    learning = gate["learning"]
    assert learning.mean == pytest.approx(0.16) and learning.n == 3
    budget = gate["budget sensitivity"]        # diffs 0.05, 0.04, 0.06
    assert budget.mean == pytest.approx(0.05)
    assert budget.half == pytest.approx(T975[2] * 0.01 / math.sqrt(3))
    assert "**PASS" in text
    assert (tmp_path / "ok" / "calibration.md").read_text() == text
    assert "headroom" in (tmp_path / "ok" / "calibration.csv").read_text()
    # diagnostics from the run files: zero-variance 0.25 (off 0.3-0.7), epochs 4 * 8 / 160
    assert diags["zero-variance groups (GRPO b=1)"].in_range is False
    assert diags["pool epochs (GRPO b=1)"].value == pytest.approx(0.2)
    assert diags["within-prompt length SD / mean (GRPO b=1)"].in_range is True
    # the hardest bucket is the one with the lowest step-0 accuracy ("hard"): 0.1 truncated
    assert diags["truncation, hardest bucket (GRPO b=1)"].value == pytest.approx(0.1)
    assert diags["tokens cut by DUET's stop rule (b=1)"].in_range is None     # not run


@pytest.mark.parametrize("criterion", sorted(FAILING))
def test_each_criterion_can_fail_alone(tmp_path, criterion):
    gate, _, text = results(make_sweep(tmp_path / "bad", FAILING[criterion]))
    assert [name for name, c in gate.items() if not c.passed] == [criterion]
    assert f"**FAIL: {criterion}**" in text


def test_one_seed_cannot_pass_an_interval_criterion(tmp_path):
    sweep = make_sweep(tmp_path / "one", {k: v[:1] for k, v in PASSING.items()})
    gate, _, _ = results(sweep)
    assert gate["learning"].passed
    assert not any(gate[n].passed for n in ("budget sensitivity", "headroom", "negative control"))


def test_the_gate_judges_the_seeds_asked_for_not_every_seed_in_the_directory(tmp_path, capsys):
    sweep = make_sweep(tmp_path / "more", spec_configs=True)
    preset = get_preset("smoke")
    for method, budget in PASSING:     # a 4th seed whose oracle loses 0.2: fails headroom
        v = {"oracle": 0.10}.get(method, 0.35)
        run_dir = write_run(sweep, method, budget, 3, final=v, curve=[0.2, v, v])
        config = json.loads((run_dir / "config.json").read_text())
        config["run"] = RunSpec(method, budget, 3, preset).config()
        (run_dir / "config.json").write_text(json.dumps(config))
    args = ["--preset", "smoke", "--executor", "serial", "--no-plots", "--out", str(sweep)]
    assert calibrate.main(args + ["--seeds", "0,1,2"]) == 0
    out = capsys.readouterr().out
    assert "seeds 0, 1, 2\n" in out and "**PASS" in out
    assert "seeds 0, 1, 2\n" in (sweep / "calibration.md").read_text()
    assert calibrate.main(args + ["--seeds", "0,1,2,3"]) == 1
    assert "seeds 0, 1, 2, 3\n" in capsys.readouterr().out
    gate, _, _ = calibrate.judge(sweep)                  # no seeds given: all of them
    assert {c.n for c in gate} == {4}


def test_duet_stop_share_is_read_when_present(tmp_path):
    sweep = make_sweep(tmp_path / "d")
    for seed in range(3):      # GRPO b=1 spends 4,000 tokens; duet-abort 3,000 -> 25% cut
        write_run(sweep, "duet-abort", 1.0, seed, final=0.3, tokens_per_step=750)
    _, diags, _ = results(sweep)
    cut = diags["tokens cut by DUET's stop rule (b=1)"]
    assert cut.value == pytest.approx(0.25) and cut.in_range


def test_cli_exit_codes_on_finished_sweeps(tmp_path, capsys):
    good = make_sweep(tmp_path / "good", spec_configs=True)
    args = ["--preset", "smoke", "--executor", "serial", "--no-plots", "--out"]
    assert calibrate.main(args + [str(good)]) == 0
    assert "**PASS" in capsys.readouterr().out
    bad = make_sweep(tmp_path / "bad", FAILING["headroom"], spec_configs=True)
    assert calibrate.main(args + [str(bad)]) == 1
    assert "FAIL: headroom" in capsys.readouterr().out


def test_cli_bad_input_is_one_line(tmp_path, capsys):
    assert calibrate.main(["--preset", "nope", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown preset") and "\n" not in err
    assert calibrate.main(["--seeds", "a,b", "--out", str(tmp_path)]) == 2
    assert "--seeds must be" in capsys.readouterr().err


def test_cli_refuses_a_directory_another_sweep_holds_and_checks_set(tmp_path, capsys):
    from trainer.dirlock import DirLock
    good = make_sweep(tmp_path / "good", spec_configs=True)
    args = ["--preset", "smoke", "--executor", "serial", "--no-plots", "--out", str(good)]
    with DirLock(good, "sweep directory"):
        assert calibrate.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and "sweep directory" in err
    assert calibrate.main(args + ["--set", "oracle.estimate_rollouts=0"]) == 2
    assert "estimate_rollouts" in capsys.readouterr().err
    assert calibrate.main(args) == 0          # the lock went with its holder


# ------------------------------------------------------------------ the seed count a gate needs
def test_seeds_for_power_on_hand_made_numbers():
    from bench.stats import interval_power, seeds_for_power
    # issue 27's noisy-chain headroom: mean +0.015, paired SD 0.0067 (8 seeds) -> 3 seeds give
    # the interval only a 54% chance to exclude 0, 4 give 83%, 5 give 95%
    assert seeds_for_power(0.015, 0.0067) == 4
    assert interval_power(0.015, 0.0067, 3) == pytest.approx(0.544, abs=0.002)
    assert interval_power(0.015, 0.0067, 5) == pytest.approx(0.955, abs=0.002)
    # the SD the README cited for seeds 0-4 (0.0036): 3 seeds suffice, which is why it looked safe
    assert seeds_for_power(0.015, 0.0036) == 3
    # an effect as large as its SD: 10 seeds (the normal approximation, 7.85 -> 8, undercounts)
    assert seeds_for_power(1.0, 1.0) == 10
    assert seeds_for_power(2.0, 2.0) == 10          # only the ratio matters
    assert seeds_for_power(0.0, 1.0) is None and seeds_for_power(-0.1, 0.01) is None
    assert seeds_for_power(1e-6, 1.0) is None       # would need over 1,000 seeds
    assert seeds_for_power(0.01, 0.0) == 2          # no spread: two seeds make an interval


def test_interval_power_matches_a_simulated_gate():
    """The exact (noncentral t) power against 20,000 simulated gates of normal differences."""
    import numpy as np
    from scipy import stats as sps

    from bench.stats import interval_power
    rng = np.random.default_rng(0)
    for mean, sd, n in [(0.015, 0.0067, 3), (0.015, 0.0067, 5), (1.0, 1.0, 10)]:
        d = rng.normal(mean, sd, size=(20_000, n))
        half = sps.t.ppf(0.975, n - 1) * d.std(axis=1, ddof=1) / np.sqrt(n)
        simulated = float(np.mean(d.mean(axis=1) - half > 0))
        assert simulated == pytest.approx(interval_power(mean, sd, n), abs=0.01)


def test_the_gate_prints_the_seed_count_its_spread_asks_for(tmp_path):
    gate, _, text = results(make_sweep(tmp_path))
    headroom = gate["headroom"]          # oracle - GRPO b=0.5 in PASSING: +0.04, +0.03, +0.05
    diffs = [o - g for o, g in zip(PASSING[("oracle", 0.5)], PASSING[("grpo", 0.5)])]
    from bench.stats import seeds_for_power
    import numpy as np
    assert headroom.sd == pytest.approx(float(np.std(diffs, ddof=1)))
    assert headroom.power_seeds == seeds_for_power(float(np.mean(diffs)), headroom.sd)
    assert gate["learning"].row()["seeds for 80% power"] == "—"
    needed = max(c.power_seeds for c in gate.values() if c.paired)
    assert f"80% power, at the means and paired SDs observed: {needed} seeds" in text
    # smoke's testbed (chain_sum) declares 3 seeds
    assert "gate runs 3 by default" in text


def test_default_seeds_come_from_the_testbed(tmp_path):
    args = calibrate.build_parser().parse_args(["--preset", "noisy-chain", "--out",
                                                str(tmp_path / "nc")])
    specs, _ = calibrate.plan(args)
    assert sorted({s.seed for s in specs}) == [0, 1, 2, 3, 4]
    args = calibrate.build_parser().parse_args(["--preset", "smoke", "--out",
                                                str(tmp_path / "sm")])
    assert sorted({s.seed for s in calibrate.plan(args)[0]}) == [0, 1, 2]


def test_a_testbed_can_ask_a_paired_criterion_for_a_larger_mean(tmp_path):
    from trainer.testbeds import Gate
    from bench.tables import load_summaries
    summaries = load_summaries(make_sweep(tmp_path))
    # headroom in PASSING is oracle - GRPO b=0.5 = +0.04, +0.03, +0.05 (mean +0.04)
    loose = {c.name: c for c in calibrate.criteria(summaries, gate=Gate(headroom=0.04))}
    strict = {c.name: c for c in calibrate.criteria(summaries, gate=Gate(headroom=0.041))}
    assert loose["headroom"].passed and not strict["headroom"].passed
    assert strict["headroom"].threshold == ">= 0.041, interval excl. 0"
    assert not {c.name: c for c in calibrate.criteria(summaries, gate=Gate(learning=0.2))}[
        "learning"].passed


def test_headroom_passes_at_any_budget_the_gate_names_and_shows_the_other(tmp_path):
    from trainer.testbeds import Gate
    from bench.tables import load_summaries
    # at b=0.25 the oracle is +0.05, +0.06, +0.07 above GRPO; at b=0.5 only +0.04 on average
    sweep = make_sweep(tmp_path, {("grpo", 0.25): [0.20, 0.21, 0.22],
                                  ("oracle", 0.25): [0.25, 0.27, 0.29]})
    summaries = load_summaries(sweep)
    both = Gate(headroom=0.05, headroom_budgets=(0.5, 0.25))
    got = {c.name: c for c in calibrate.criteria(summaries, gate=both)}["headroom"]
    assert got.passed and got.mean == pytest.approx(0.06)
    assert got.what.startswith("oracle − GRPO, b=0.25") and "b=0.5: +0.040" in got.what
    only_half = {c.name: c for c in calibrate.criteria(summaries, gate=Gate(headroom=0.05))}
    assert not only_half["headroom"].passed and only_half["headroom"].mean == pytest.approx(0.04)
    # the gate's runs: GRPO and the oracle at each headroom budget, once each
    assert calibrate.gate_runs(both) == [("grpo", 1.0), ("grpo", 0.5), ("oracle", 0.5),
                                         ("anti-oracle", 0.5), ("grpo", 0.25),
                                         ("oracle", 0.25)]
    with pytest.raises(ValueError, match="headroom_budgets"):
        Gate(headroom_budgets=())


def test_a_gate_with_another_oracle_gates_it_and_reports_the_plain_one_beside_it(tmp_path):
    from trainer.testbeds import Gate
    from bench.tables import load_summaries
    sweep = make_sweep(tmp_path, {("grpo", 0.5): [0.20, 0.21, 0.22],
                                  ("oracle", 0.5): [0.19, 0.22, 0.22],
                                  ("screening-oracle", 0.5): [0.26, 0.26, 0.28]})
    gate = Gate(headroom=0.05, oracle="screening-oracle")
    got = {c.name: c for c in calibrate.criteria(load_summaries(sweep), gate=gate)}["headroom"]
    assert got.passed and got.mean == pytest.approx(0.0566666, abs=1e-6)
    assert got.what.startswith("screening-oracle − GRPO, b=0.5")
    assert "not gated, oracle (the step's M candidates) − GRPO: b=0.5: +0.000" in got.what
    assert calibrate.gate_runs(gate) == [("grpo", 1.0), ("grpo", 0.5), ("oracle", 0.5),
                                         ("anti-oracle", 0.5), ("screening-oracle", 0.5)]


def test_leg_facts_gate_runs_at_both_budgets_with_the_screening_oracle(tmp_path):
    args = calibrate.build_parser().parse_args(["--preset", "leg-facts", "--out",
                                                str(tmp_path / "lf")])
    specs, _ = calibrate.plan(args)
    assert sorted({(s.method, s.budget) for s in specs}) == sorted(
        {("grpo", 1.0), ("grpo", 0.5), ("grpo", 0.25), ("oracle", 0.5), ("oracle", 0.25),
         ("screening-oracle", 0.5), ("screening-oracle", 0.25), ("anti-oracle", 0.5)})
    assert sorted({s.seed for s in specs}) == [0, 1, 2, 3, 4]     # Gate(seeds=5), not 3
