"""Controls: exact solvers against brute force, registry marking, and the loop's unbilled hook."""
import itertools

import numpy as np
import pytest

import allocators
from allocators.base import PromptInfo, PromptStats, Setting, StepBudget
from allocators.controls import anti_oracle_counts, expected_signal_groups, oracle_counts


def brute_force(p, total, n_min, n_max):
    best_hi, best_lo = -np.inf, np.inf
    for counts in itertools.product(range(n_min, n_max + 1), repeat=len(p)):
        if sum(counts) != total:
            continue
        value = expected_signal_groups(p, counts)
        best_hi, best_lo = max(best_hi, value), min(best_lo, value)
    return best_hi, best_lo


@pytest.mark.parametrize("case", range(60))
def test_solvers_match_brute_force(case):
    rng = np.random.default_rng(case)
    m = int(rng.integers(1, 5))
    n_min = int(rng.integers(1, 3))
    n_max = n_min + int(rng.integers(0, 6))
    total = int(rng.integers(m * n_min, m * n_max + 1))
    # pass rates on the 16-sample grid the loop produces, 0 and 1 included
    p = rng.integers(0, 17, size=m) / 16
    hi, lo = brute_force(p, total, n_min, n_max)
    for solver, best in ((oracle_counts, hi), (anti_oracle_counts, lo)):
        counts = solver(p, total, n_min=n_min, n_max=n_max)
        assert counts.sum() == total
        assert counts.min() >= n_min and counts.max() <= n_max
        assert expected_signal_groups(p, counts) == pytest.approx(best, abs=1e-12)


@pytest.mark.parametrize("case", range(60))
def test_skipping_oracle_matches_brute_force(case):
    rng = np.random.default_rng(1000 + case)
    m = int(rng.integers(1, 6))
    n_max = int(rng.integers(1, 7))
    total = int(rng.integers(0, m * n_max + 1))
    p = rng.integers(0, 17, size=m) / 16
    hi, _ = brute_force(p, total, 0, n_max)
    counts = oracle_counts(p, total, n_min=0, n_max=n_max)
    assert counts.sum() == total and counts.min() >= 0 and counts.max() <= n_max
    assert expected_signal_groups(p, counts) == pytest.approx(hi, abs=1e-12)


def test_skipping_oracle_hand_computed():
    # never solved / always solved prompts get nothing once a prompt can be skipped
    assert oracle_counts([0.0, 0.5, 1.0], 9, n_min=0, n_max=9).tolist() == [0, 9, 0]
    # 3 rollouts on two p = 0.5 prompts: (3, 0) yields 1 - 2/8 = 0.75, (2, 1) only 0.5 (a lone
    # rollout has no partner), which is where a greedy over increments goes wrong
    counts = oracle_counts([0.5, 0.5], 3, n_min=0, n_max=3)
    assert sorted(counts.tolist()) == [0, 3]
    assert expected_signal_groups([0.5, 0.5], counts) == pytest.approx(0.75)
    assert expected_signal_groups([0.5, 0.3], [0, 1]) == 0.0
    with pytest.raises(ValueError, match="1 <= n_min"):
        anti_oracle_counts([0.5, 0.5], 3, n_min=0, n_max=3)


def test_oracle_skips_by_default_and_anti_oracle_keeps_knapsack_bounds():
    setting = Setting(prompts_per_step=4, group_size=8, budget_fraction=0.5,
                      max_response_tokens=16, steps=2, seed=0)
    oracle = allocators.get("oracle")(setting)
    anti = allocators.get("anti-oracle")(setting)
    assert (oracle.n_min, anti.n_min) == (0, 2)
    assert allocators.get("oracle")(setting, n_min=2).n_min == 2


def test_hand_computed_case():
    # p = 0.5 gains 1/2, 1/4, ... per extra rollout; p = 0 and 1 gain nothing
    p = np.array([0.0, 0.5, 1.0])
    assert oracle_counts(p, 9, n_min=2, n_max=5).tolist() == [2, 5, 2]
    anti = anti_oracle_counts(p, 9, n_min=2, n_max=5)
    assert anti[1] == 2 and sorted(anti.tolist()) == [2, 2, 5]
    assert expected_signal_groups(p, [2, 5, 2]) == pytest.approx(1 - 2 * 0.5 ** 5)


def test_bounds_are_enforced():
    with pytest.raises(ValueError, match="below"):
        oracle_counts([0.5, 0.5], 3, n_min=2, n_max=4)
    with pytest.raises(ValueError, match="exceeds"):
        anti_oracle_counts([0.5, 0.5], 9, n_min=2, n_max=4)


def test_controls_are_not_contenders():
    assert {"oracle", "anti-oracle"} <= set(allocators.control_methods())
    assert not {"oracle", "anti-oracle"} & set(allocators.main_methods())
    assert "grpo" in allocators.main_methods()


def test_plan_needs_this_steps_estimates_and_spends_exactly_c():
    setting = Setting(prompts_per_step=4, group_size=8, budget_fraction=0.5,
                      max_response_tokens=16, steps=2, seed=0)
    oracle = allocators.get("oracle")(setting)
    assert oracle.needs().pass_rate_estimates == 16
    assert allocators.get("grpo")(setting).needs().pass_rate_estimates == 0
    candidates = [PromptInfo(pid, "", ()) for pid in (7, 3, 9, 1)]
    budget = StepBudget(rollouts=setting.rollouts_per_step, tokens=0.0, mean_length=4.0)
    with pytest.raises(RuntimeError, match="no pass-rate estimates"):
        oracle.plan(0, candidates, PromptStats(), budget)
    stats = PromptStats()
    stats.record_estimates(0, {7: 0.0, 3: 0.5, 9: 1.0, 1: 0.25})
    requests = oracle.plan(0, candidates, stats, budget)
    assert [r.pid for r in requests] == [7, 3, 9, 1]
    assert sum(r.n for r in requests) == 16
    assert requests[0].n == requests[2].n == 0          # nothing to learn at p = 0 or 1
    bounded = allocators.get("oracle")(setting, n_min=2)
    kept = bounded.plan(0, candidates, stats, budget)
    assert [r.n for r in kept][::2] == [2, 2] and sum(r.n for r in kept) == 16
    with pytest.raises(RuntimeError):                    # stale estimates are refused
        oracle.plan(1, candidates, stats, budget)


def test_screening_oracle_draws_k_m_candidates_and_funds_any_of_them():
    setting = Setting(prompts_per_step=2, group_size=4, budget_fraction=1.0,
                      max_response_tokens=16, steps=2, seed=0)
    assert allocators.get("oracle")(setting).candidates_per_step() == 2
    oracle = allocators.get("oracle")(setting, screen=3)
    assert oracle.candidates_per_step() == 6
    candidates = [PromptInfo(pid, "", ()) for pid in range(6)]
    stats = PromptStats()
    # only the last two drawn are mixed: an unscreened oracle would have seen p = 1, 0
    stats.record_estimates(0, {0: 1.0, 1: 0.0, 2: 1.0, 3: 0.0, 4: 0.5, 5: 0.25})
    budget = StepBudget(rollouts=setting.rollouts_per_step, tokens=0.0, mean_length=4.0)
    counts = [r.n for r in oracle.plan(0, candidates, stats, budget)]
    assert sum(counts) == 8 and counts[:4] == [0, 0, 0, 0]
    # the exact optimum over the two mixed prompts, by brute force
    best = max(((a, 8 - a) for a in range(9)),
               key=lambda c: expected_signal_groups([0.5, 0.25], c))
    assert expected_signal_groups([0.5, 0.25], counts[4:]) == pytest.approx(
        expected_signal_groups([0.5, 0.25], best))
