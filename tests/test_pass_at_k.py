"""pass@k: the unbiased estimator on hand-made samples (and against brute force over subsets),
and its tables from run directories whose evaluations carry it."""
import itertools
import json
import math

import numpy as np
import pytest

from bench.tables import write_tables
from tests.test_tables import write_run
from trainer.evaluate import pass_at_k, pass_at_k_table


def test_pass_at_k_by_hand():
    assert pass_at_k(8, 0, 1) == 0.0 and pass_at_k(8, 0, 8) == 0.0
    assert pass_at_k(8, 8, 1) == 1.0
    assert pass_at_k(8, 1, 1) == pytest.approx(1 / 8)
    assert pass_at_k(8, 1, 4) == pytest.approx(1 - 35 / 70)         # 1 - C(7,4)/C(8,4)
    assert pass_at_k(8, 2, 4) == pytest.approx(1 - 15 / 70)         # 1 - C(6,4)/C(8,4)
    assert pass_at_k(8, 1, 8) == 1.0                                 # n - c < k
    assert pass_at_k(4, 3, 2) == 1.0
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 5)


def test_pass_at_k_matches_the_share_of_k_subsets_holding_a_success():
    for n in range(1, 9):
        for c in range(n + 1):
            correct = [1] * c + [0] * (n - c)
            for k in range(1, n + 1):
                subsets = list(itertools.combinations(correct, k))
                brute = sum(any(s) for s in subsets) / len(subsets)
                assert pass_at_k(n, c, k) == pytest.approx(brute, abs=1e-12), (n, c, k)


def test_pass_at_k_table_from_a_reward_matrix():
    rewards = np.array([[1, 0, 0, 0, 0, 0, 0, 0],
                        [0, 0, 0, 0, 0, 0, 0, 0],
                        [0, 1, 0, 0, 0, 0, 1, 0]], dtype=float)
    table = pass_at_k_table(rewards)
    assert set(table) == {"1", "4", "8"}
    assert table["1"] == pytest.approx((1 / 8 + 0 + 2 / 8) / 3)
    assert table["1"] == pytest.approx(rewards.mean())              # binary: pass@1 = mean@k
    assert table["4"] == pytest.approx((0.5 + 0 + 55 / 70) / 3)
    assert table["8"] == pytest.approx(2 / 3)
    # four samples: k = 8 is not defined; a reward below 1 is not a success
    four = pass_at_k_table(np.array([[1, 0.5, 0, 0], [0, 0, 0, 0]]))
    assert set(four) == {"1", "4"} and four["4"] == pytest.approx(0.5)


def _with_pass_at_k(run_dir, values: dict):
    evals = [json.loads(line) for line in (run_dir / "eval.jsonl").read_text().splitlines()]
    evals[-1]["pass_at_k"] = values
    (run_dir / "eval.jsonl").write_text("".join(json.dumps(e) + "\n" for e in evals))


def test_pass_at_k_tables_and_the_headline_companion(tmp_path):
    sweep = tmp_path / "sweep"
    for seed, (g1, g4, m1, m4) in enumerate([(0.3, 0.5, 0.35, 0.6), (0.4, 0.6, 0.4, 0.7)]):
        _with_pass_at_k(write_run(sweep, "grpo", 1.0, seed, final=g1), {"1": g1, "4": g4})
        _with_pass_at_k(write_run(sweep, "pods", 1.0, seed, final=m1), {"1": m1, "4": m4})
    text = write_tables(sweep)
    assert "Headline companion: Δ final pass@k vs GRPO" in text
    assert "Budget table: final held-out pass@4" in text and "pass@8" not in text
    companion = (sweep / "table_headline_pass_at_k.csv").read_text().splitlines()
    header = companion[0].split(",")
    rows = {(r[header.index("k")]): r for r in (line.split(",") for line in companion[1:])}
    # pods - grpo, paired by seed: pass@1 (+0.05, 0.0) -> +0.025; pass@4 (+0.1, +0.1) -> +0.1
    assert float(rows["1"][header.index("delta_mean")]) == pytest.approx(0.025)
    assert float(rows["4"][header.index("delta_mean")]) == pytest.approx(0.1)
    assert float(rows["4"][header.index("delta_ci95")]) == pytest.approx(0.0, abs=1e-12)
    budget4 = (sweep / "table_budget_pass_at_4.csv").read_text()
    assert "final_pass_at_4_mean" in budget4
    grpo_mean = [line for line in budget4.splitlines() if line.startswith("grpo")][0]
    assert math.isclose(float(grpo_mean.split(",")[4]), 0.55)


def test_sweeps_without_pass_at_k_have_no_pass_at_k_tables(tmp_path):
    sweep = tmp_path / "sweep"
    write_run(sweep, "grpo", 1.0, 0, final=0.3)
    assert "pass@" not in write_tables(sweep)
