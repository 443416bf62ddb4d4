"""bench.regime on hand-made sweeps: the hardest bucket's share and first positives, and the
regime table's normalised scores and rank agreement across two testbeds."""
import json

import numpy as np
import pytest

from bench import regime
from bench.report import build
from bench.tables.cells import row_label
from tests.test_tables import write_run


def _with_buckets(run_dir, per_step):
    """Replace each step's record with one carrying ``by_bucket`` (rows per bucket, solved)."""
    lines = []
    for step, (hard_rows, hard_prompts, hard_solved) in enumerate(per_step):
        lines.append(json.dumps({
            "step": step, "effective_ratio": 0.2 + 0.1 * step, "counts": [],
            "by_bucket": {"easy": {"rows": 10, "tokens": 100, "correct": 9, "prompts": 2,
                                   "solved_prompts": 2},
                          "hard": {"rows": hard_rows, "tokens": 10 * hard_rows, "correct": 1,
                                   "prompts": hard_prompts, "solved_prompts": hard_solved}}}))
    (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return run_dir


def test_run_spend_by_hand(tmp_path):
    run = write_run(tmp_path, "knapsack", 1.0, 0, final=0.5, steps=6)
    # write_run's step-0 buckets: easy = acc + 0.1, hard = acc - 0.1 -> "hard" is the hardest
    _with_buckets(run, [(10, 2, 0), (10, 2, 1), (20, 4, 1), (20, 4, 2), (30, 5, 5), (30, 5, 4)])
    got = regime.run_spend(run)
    assert got["hardest"] == "hard"
    assert got["share"] == pytest.approx(120 / 180)
    assert got["share_early"] == pytest.approx(20 / 40)        # first third = steps 0-1
    assert got["share_late"] == pytest.approx(60 / 80)         # last third = steps 4-5
    assert got["solved_early"] == pytest.approx(np.mean([0 / 2, 1 / 2]))
    assert got["solved_late"] == pytest.approx(np.mean([5 / 5, 4 / 5]))
    assert got["effective_early"] == pytest.approx(0.25)
    assert got["effective_late"] == pytest.approx(0.65)


def test_runs_without_bucket_spend_are_left_out(tmp_path):
    write_run(tmp_path, "grpo", 1.0, 0, final=0.5)                 # an older run's metrics
    assert regime.run_spend(tmp_path / "grpo__b1__s0") is None
    assert regime.load_spend(tmp_path).empty
    assert regime.spend_table(regime.load_spend(tmp_path)) is None


def _testbed(path, deltas, headroom, preset="smoke", screening=None):
    """GRPO at 0.30 + seed noise, the oracle ``headroom`` above it, each method ``deltas[m]``;
    with ``screening``, the screening oracle that far above GRPO too."""
    noise = [0.0, 0.01, -0.01]
    for seed, e in enumerate(noise):
        write_run(path, "grpo", 0.5, seed, final=0.3 + e, curve=[0.2, 0.3 + e, 0.3 + e],
                  preset=preset)
        controls = {"oracle": headroom, **({"screening-oracle": screening} if screening else {})}
        for control, h in controls.items():
            v = 0.3 + e + h
            write_run(path, control, 0.5, seed, final=v, curve=[0.2, v, v], preset=preset)
        for method, d in deltas.items():
            v = 0.3 + e + d + 0.001 * seed
            write_run(path, method, 0.5, seed, final=v, curve=[0.2, v, v], preset=preset)
    return path


def test_each_sweep_divides_by_its_gates_oracle_and_the_regime_table_by_a_shared_one(tmp_path):
    """leg-facts gates the screening oracle (trainer.testbeds): its own tables divide by that;
    a regime table divides every column by one reference every sweep ran, and says which."""
    legs = _testbed(tmp_path / "legs", {"knapsack": 0.02}, 0.0, "leg-facts", screening=0.08)
    chain = _testbed(tmp_path / "chain", {"knapsack": 0.01}, 0.02, "noisy-chain")
    _, _, data, oracle = regime.scores(legs)
    assert oracle == "screening-oracle"
    rows = data.set_index("method")
    assert rows.loc["knapsack", "normalised"] == pytest.approx(0.021 / 0.08)
    assert rows.loc["oracle", "normalised"] == pytest.approx(0.0, abs=1e-12)   # a row now
    assert "The oracle here is `screening-oracle`" in build(legs, with_plots=False).text
    assert regime.scores(chain)[3] == "oracle"          # noisy-chain gates the plain oracle
    # only the plain oracle ran on both: every column divides by it, and the caption says so
    table = regime.regime_table([legs, chain])
    assert "The oracle of every column: `oracle`" in table.note
    cell = table.display.set_index("method").loc[row_label("knapsack"), "leg-facts b=0.5"]
    assert cell == "—"                                  # the plain oracle has none on legs
    # asked for the screening oracle: the sweep that lacks it has no score, and says why
    table = regime.regime_table([legs, chain], oracle="screening-oracle")
    assert table.display.set_index("method").loc[
        row_label("knapsack"), "leg-facts b=0.5"].startswith("+0.26")
    assert table.display.set_index("method").loc[
        row_label("knapsack"), "noisy-chain b=0.5"] == "—"


def test_regime_table_scores_and_rank_agreement(tmp_path):
    a = _testbed(tmp_path / "a", {"knapsack": 0.02, "duet": 0.01, "dapo": -0.01}, 0.04)
    b = _testbed(tmp_path / "b", {"knapsack": 0.01, "duet": 0.02, "dapo": -0.02}, 0.08)
    _, metric, scores, _ = regime.scores(a)
    assert metric == "curve_accuracy"
    k = scores.set_index("method").loc["knapsack"]
    # (0.02 + 0.001) / 0.04 on average: seeds add 0, 0.001, 0.002 to the method only
    assert k["normalised"] == pytest.approx(0.021 / 0.04) and k["pairs"] == 3
    assert k["delta"] == pytest.approx(0.021) and k["headroom"] == pytest.approx(0.04)
    table = regime.regime_table([a, b])
    cells = table.display.set_index("method")
    assert cells.loc[row_label("knapsack"), "smoke (a) b=0.5"].startswith("+0.53")
    assert cells.loc[row_label("knapsack"), "smoke (b) b=0.5"].startswith("+0.14")   # 0.011/0.08
    assert any("Kendall's tau" in line and "+0.33" in line for line in table.extra)
    # only a ran b = 0.25: a column there for a, none for b (dashes would read as lost scores)
    for seed in range(3):
        for method, v in (("grpo", 0.3), ("oracle", 0.34), ("knapsack", 0.32)):
            write_run(a, method, 0.25, seed, final=v, curve=[0.2, v, v])
    columns = list(regime.regime_table([a, b]).display.columns)
    assert "smoke (a) b=0.25" in columns and "smoke (b) b=0.25" not in columns
    assert "smoke (b) b=0.5" in columns


def test_cli_refuses_a_missing_directory(tmp_path, capsys):
    assert regime.main([str(tmp_path / "nope")]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_claims_by_hand(tmp_path):
    hard = {"grpo": [(10, 2, 0)] * 3, "knapsack": [(20, 2, 1)] * 3,
            "coba": [(5, 2, 0), (10, 2, 0), (30, 2, 1)]}
    for seed, e in enumerate([0.0, 0.01, 0.02]):
        for method, per_step in hard.items():
            for b in (1.0, 0.5):
                run = write_run(tmp_path, method, b, seed, final=0.4 + e, steps=3,
                                curve=[0.2, 0.4 + e, 0.4 + e])
                _with_buckets(run, per_step)
        # DUET: +0.01 over GRPO at b=1, +0.03 + seed noise at b=0.5: the gap widens
        for b, d in ((1.0, 0.01), (0.5, 0.03 + e)):
            v = 0.4 + e + d
            write_run(tmp_path, "duet", b, seed, final=v, curve=[0.2, v, v])
    table = regime.claims_table(tmp_path)
    rows = table.display.set_index("claim")
    k = rows.loc["Knapsack-RL gives the hardest bucket more (b=0.5)"]
    # share: knapsack 20/30 vs GRPO 10/20 a step -> +0.167 on every seed (zero spread)
    assert k["measured"].startswith("share +0.167") and k["verdict"].startswith("reproduced")
    duet = rows.loc["DUET's gap over GRPO widens as the budget tightens"]
    assert "tightest − b=1 +0.030" in duet["measured"] and duet["verdict"] == "reproduced"
    coba = rows.loc["CoBA-RL exploits, then explores (b=1)"]
    # each step also draws 10 easy rows: first third 5/15, last third 30/40 -> +0.417 every seed
    assert "+0.417" in coba["measured"] and coba["verdict"] == "reproduced"


def test_no_score_where_the_oracle_has_no_headroom(tmp_path):
    # the oracle 0.01 *below* GRPO: a method 0.02 below would read +2 "oracles" as a ratio
    sweep = _testbed(tmp_path / "a", {"knapsack": -0.02}, -0.01)
    table = regime.normalised_table(*regime.scored_runs(sweep))
    cell = table.display.set_index("method").loc[row_label("knapsack"), "b=0.5"]
    assert cell.startswith("—") and "no headroom" in cell and "-0.010" in cell
    row = table.data.set_index("method").loc["knapsack"]
    assert np.isnan(row["normalised"]) and row["headroom"] == pytest.approx(-0.01)
    table = regime.regime_table([sweep])
    assert table.display.set_index("method").loc[row_label("knapsack"), "smoke b=0.5"] == "—"
    assert "smoke b=0.5: oracle − GRPO -0.010" in table.note
    assert "not detected: no scores" in table.note


def test_the_standard_table_of_a_sweep_is_the_regime_tables_scores(tmp_path):
    sweep = _testbed(tmp_path / "a", {"knapsack": 0.02}, 0.04)
    text = build(sweep, with_plots=False).text
    assert "share of the oracle's headroom captured" in text and "+0.53" in text


def test_a_token_protocol_sweep_is_scored_on_the_auc_over_the_budget(tmp_path):
    from tests.test_equal_compute import flat, write_run as token_run
    for seed in (0, 1):
        token_run(tmp_path, "grpo", 0.5, seed, flat(0.6, 0.7))        # AUC 0.600
        token_run(tmp_path, "oracle", 0.5, seed, flat(0.7, 0.8))      # AUC 0.675
        token_run(tmp_path, "knapsack", 0.5, seed, flat(0.6, 0.85))   # AUC 0.6375
    runs, metric = regime.scored_runs(tmp_path)
    assert metric == "auc"
    row = regime.normalised_table(runs, metric).data.set_index("method").loc["knapsack"]
    # AUCs: 0.0375 / 0.075 = 0.5; the final accuracies would give 0.15 / 0.1 = 1.5
    assert row["normalised"] == pytest.approx(0.5) and row["pairs"] == 2
