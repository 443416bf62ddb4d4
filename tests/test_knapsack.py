"""Knapsack-RL: exactness of the greedy solver, the allocation rules of docs/ALGORITHMS.md §Knapsack-RL, the
allocator's estimates.  Brute force and the DP are the references."""
from __future__ import annotations

import itertools
import math
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import allocators
from allocators.base import PromptInfo, PromptStats, Rollout, Setting, StepBudget
from allocators.knapsack import (KnapsackRL, _extra_by_dp, _extra_by_greedy, _increment_ladder,
                                 _value_ladder, knapsack_counts, knapsack_counts_dp,
                                 knapsack_value, spread_evenly, take_largest)
from tests.scripted_loop import Loop, ScriptedPool

open_rates = st.floats(min_value=1e-6, max_value=1 - 1e-6, allow_nan=False)
grid_rates = st.sampled_from([k / 16 for k in range(1, 16)])


def brute_force_extra(p, weight, width, n_min):
    """Best sum of v_i(k_i) over every k with sum k = weight, by enumeration."""
    values = _value_ladder(np.asarray(p, dtype=np.float64), width, n_min)
    best = -math.inf
    for ks in itertools.product(range(width + 1), repeat=len(p)):
        if sum(ks) == weight:
            best = max(best, sum(values[i, k] for i, k in enumerate(ks)))
    return best


def value_of(p, extra, n_min):
    return knapsack_value(np.asarray(p), np.asarray(extra), n_min)


# ------------------------------------------------------------------------------ value model
def test_value_matches_hand_computation():
    # p = 1/2, n_min = 2, k = 1: (1 - 1/8 - 1/8) * (1/2)(1/4) = 3/32
    assert knapsack_value([0.5], [1]) == pytest.approx(3 / 32, rel=1e-14)
    # k = 2: (1 - 1/16 - 1/16) / 8 = 7/64
    assert knapsack_value([0.5], [2]) == pytest.approx(7 / 64, rel=1e-14)
    assert knapsack_value([0.5], [0]) == 0.0


@settings(max_examples=100, deadline=None)
@given(p=open_rates, n_min=st.integers(1, 6), width=st.integers(1, 40))
def test_increments_fall_and_sum_to_values(p, n_min, width):
    ladder = _increment_ladder(np.array([p]), width, n_min)[:, 0]
    assert np.all(np.diff(ladder) <= 0.0), "v must be concave, the 0 -> 1 step included"
    values = _value_ladder(np.array([p]), width, n_min)[0, 1:]
    np.testing.assert_allclose(np.cumsum(ladder), values, rtol=1e-9, atol=1e-300)


def test_greedy_is_not_exact_without_a_minimum_group():
    # n_min = 0 at p = 1/2: v(1) = 0 < v(2) - v(1), so increments rise and greedy would fail;
    # the solver refuses it rather than return a wrong answer.
    values = _value_ladder(np.array([0.5]), 2, 0)[0]
    assert values[1] - values[0] < values[2] - values[1]
    with pytest.raises(ValueError, match="n_min"):
        knapsack_counts([0.5, 0.5], [True, True], 4, n_min=0)


# ------------------------------------------------------------------------------ exact solver
@settings(max_examples=80, deadline=None)
@given(p=st.lists(st.one_of(open_rates, grid_rates), min_size=1, max_size=3),
       width=st.integers(1, 4), n_min=st.integers(1, 3), data=st.data())
def test_greedy_matches_brute_force(p, width, n_min, data):
    weight = data.draw(st.integers(0, len(p) * width))
    extra = _extra_by_greedy(np.array(p), weight, width, n_min)
    assert extra.sum() == weight and extra.min() >= 0 and extra.max() <= width
    assert value_of(p, extra, n_min) == pytest.approx(brute_force_extra(p, weight, width, n_min),
                                                      rel=1e-12, abs=1e-300)


@settings(max_examples=60, deadline=None)
@given(p=st.lists(st.one_of(open_rates, grid_rates), min_size=1, max_size=12),
       width=st.integers(1, 20), data=st.data())
def test_greedy_matches_dp(p, width, data):
    weight = data.draw(st.integers(0, len(p) * width))
    greedy = _extra_by_greedy(np.array(p), weight, width, 2)
    dp = _extra_by_dp(np.array(p), weight, width, 2)
    assert greedy.sum() == dp.sum() == weight
    assert value_of(p, greedy, 2) == pytest.approx(value_of(p, dp, 2), rel=1e-12, abs=1e-300)


def test_greedy_matches_dp_on_a_realistic_batch():
    rng = np.random.default_rng(7)
    p = rng.integers(1, 16, size=60) / 16
    for weight in (0, 1, 37, 400, 60 * 30):
        greedy = _extra_by_greedy(p, weight, 30, 2)
        dp = _extra_by_dp(p, weight, 30, 2)
        assert value_of(p, greedy, 2) == pytest.approx(value_of(p, dp, 2), rel=1e-12)


def test_take_largest_breaks_ties_by_index():
    mask = take_largest(np.array([1.0, 3.0, 2.0, 3.0, 2.0, 2.0]), 4)
    assert mask.tolist() == [False, True, True, True, True, False]
    assert take_largest(np.array([1.0, 2.0]), 0).sum() == 0
    assert take_largest(np.array([1.0, 2.0]), 5).all()


def test_equal_prompts_share_extra_rollouts_evenly():
    counts = knapsack_counts([0.5] * 3, [True] * 3, 6 + 4, allow_fallback=False)
    assert counts.tolist() == [4, 3, 3]


# ------------------------------------------------------------------------------ allocation rules
def test_cold_prompts_get_the_default():
    assert knapsack_counts([0.0] * 4, [False] * 4, 32).tolist() == [8, 8, 8, 8]
    # more budget than the cold defaults need and no effective prompt: most even split
    assert knapsack_counts([0.0] * 4, [False] * 4, 34).tolist() == [9, 9, 8, 8]


def test_no_effective_prompt_sends_the_rest_to_unsolved_ones():
    counts = knapsack_counts([0.0, 1.0, 0.0, 1.0], [True] * 4, 16)
    assert counts.tolist() == [6, 2, 6, 2]


def test_no_effective_and_no_unsolved_prompt_resets_to_uniform():
    # the code's "uniform N for all": at total = M N every prompt gets N again
    assert knapsack_counts([1.0, 1.0, 1.0], [True] * 3, 24).tolist() == [8, 8, 8]
    # a cold prompt reads p = 0 in the released code, so it takes the rest instead
    counts = knapsack_counts([1.0, 1.0, 0.3], [True, True, False], 24)
    assert counts.tolist() == [2, 2, 20]
    harness = knapsack_counts([1.0, 1.0, 0.3], [True, True, False], 24, cold_joins_unsolved=False)
    assert harness.tolist() == [8, 8, 8]


def test_fallback_sends_the_surplus_to_unsolved_prompts():
    # p = 1/2: cost ln(0.1)/ln(0.5) = 3.32 -> estimate 3 < R = 18, surplus 15 to the p = 0 prompt
    counts = knapsack_counts([0.5, 0.0, 1.0], [True] * 3, 24)
    assert counts.tolist() == [5, 17, 2]
    without = knapsack_counts([0.5, 0.0, 1.0], [True] * 3, 24, allow_fallback=False)
    assert without.tolist() == [20, 2, 2]


def test_fallback_without_unsolved_prompts_uses_all_non_effective_ones():
    counts = knapsack_counts([0.5, 1.0, 0.2], [True, True, False], 2 + 2 + 8 + 9,
                             cold_joins_unsolved=False)
    # R = 9, estimate 3: surplus 6 split over the p = 1 and the cold prompt
    assert counts.tolist() == [5, 5, 11]
    # released: the cold prompt counts as p = 0, so the whole surplus goes to it
    assert knapsack_counts([0.5, 1.0, 0.2], [True, True, False],
                           2 + 2 + 8 + 9).tolist() == [5, 2, 14]


def test_cold_joins_unsolved_reproduces_the_codes_candidate_set():
    p, valid = [0.5, 0.0, 0.7], [True, True, False]
    spec = knapsack_counts(p, valid, 2 + 2 + 8 + 10, cold_joins_unsolved=False)
    code = knapsack_counts(p, valid, 2 + 2 + 8 + 10)
    assert spec.tolist() == [5, 9, 8] and code.tolist() == [5, 6, 11]


def test_every_prompt_effective_skips_the_fallback():
    counts = knapsack_counts([0.5, 0.5], [True, True], 40)
    assert counts.tolist() == [20, 20]


def test_knapsack_prefers_the_larger_increment():
    # d_1 = 3pq * p q^2: p = 1/2 gives 3/32 = 0.09375, p = 1/3 gives 8/81 = 0.0988
    counts = knapsack_counts([0.5, 1 / 3], [True, True], 5, allow_fallback=False)
    assert counts.tolist() == [2, 3]


def test_budget_beyond_the_effective_caps_goes_to_non_effective_prompts():
    # n_max = 4: the effective prompt saturates, the rest lands on the p = 0 prompt
    counts = knapsack_counts([0.5, 0.0], [True, True], 8, n_max=4)
    assert counts.tolist() == [4, 4]


def test_expectation_cost_changes_the_fallback_estimate():
    # 1/(pq) - 1 = 3 at p = 1/2, estimate 3 as with the probability cost at this p
    assert knapsack_counts([0.5, 0.0], [True] * 2, 20, cost="expectation").tolist() == [5, 15]
    # p = 0.9: probability cost ln(0.1)/ln(0.9) = 21.85, expectation 1/0.09 - 1 = 10.1
    prob = knapsack_counts([0.9, 0.0], [True] * 2, 40)
    expect = knapsack_counts([0.9, 0.0], [True] * 2, 40, cost="expectation")
    assert prob.tolist() == [23, 17] and expect.tolist() == [12, 28]


def test_infeasible_budgets_fail_loudly():
    with pytest.raises(ValueError, match="minimums"):
        knapsack_counts([0.5, 0.5, 0.0], [True, True, False], 11)
    with pytest.raises(ValueError, match="exceeds"):
        knapsack_counts([0.5, 0.5], [True, True], 300)
    with pytest.raises(ValueError, match="pass rates"):
        knapsack_counts([1.5], [True], 4)


def test_spread_evenly_respects_the_cap_and_reports_leftover():
    counts = np.array([2, 2, 9, 2])
    left = spread_evenly(counts, np.array([0, 1, 2]), 20, cap=10)
    assert counts.tolist() == [10, 10, 10, 2] and left == 3


@st.composite
def knapsack_instances(draw):
    prompts = draw(st.integers(1, 24))
    p = draw(st.lists(st.sampled_from([0.0, 1.0, 0.25, 0.5, 1 / 3, 0.9, 0.01]) | open_rates,
                      min_size=prompts, max_size=prompts))
    valid = draw(st.lists(st.booleans(), min_size=prompts, max_size=prompts))
    n_default = draw(st.integers(2, 10))
    n_max = draw(st.integers(n_default, 40))
    floors = [n_default if not v else 2 for v in valid]
    total = draw(st.integers(sum(floors), prompts * n_max))
    return p, valid, total, n_default, n_max, draw(st.booleans())


@settings(max_examples=100, deadline=None)
@given(knapsack_instances())
def test_counts_sum_exactly_and_respect_bounds(instance):
    p, valid, total, n_default, n_max, cold_joins = instance
    counts = knapsack_counts(p, valid, total, n_default=n_default, n_max=n_max,
                             cold_joins_unsolved=cold_joins)
    assert counts.sum() == total
    assert counts.max() <= n_max
    floors = np.where(np.asarray(valid), 2, n_default)
    # a reset to the even split (no effective, no unsolved prompt) may lower cold prompts
    assert np.all(counts >= np.minimum(floors, total // len(p)))


@settings(max_examples=50, deadline=None)
@given(knapsack_instances())
def test_greedy_and_dp_allocations_have_equal_value(instance):
    p, valid, total, n_default, n_max, _ = instance
    greedy = knapsack_counts(p, valid, total, n_default=n_default, n_max=n_max)
    dp = knapsack_counts_dp(p, valid, total, n_default=n_default, n_max=n_max)
    pa, va = np.asarray(p), np.asarray(valid)
    effective = va & (pa > 0) & (pa < 1)
    assert np.array_equal(greedy[~effective], dp[~effective])
    assert value_of(pa[effective], greedy[effective] - 2, 2) == pytest.approx(
        value_of(pa[effective], dp[effective] - 2, 2), rel=1e-12, abs=1e-300)


# ------------------------------------------------------------------------------ the allocator
def setting(prompts=4, group=8, fraction=1.0):
    return Setting(prompts_per_step=prompts, group_size=group, budget_fraction=fraction,
                   max_response_tokens=32, steps=10, seed=0)


def candidates(pids):
    return [PromptInfo(pid=i, text=f"q{i}", token_ids=(i,)) for i in pids]


def visit(stats, step, pid, rewards):
    rows = [Rollout(pid=pid, group=pid, tag="main", step=step, round=0,
                    tokens=np.zeros(3, dtype=np.int64), logprobs=np.zeros(3, dtype=np.float32),
                    finish="eos", reward=float(r)) for r in rewards]
    stats.update(step, [rows])


def budget(s):
    return StepBudget(rollouts=s.rollouts_per_step, tokens=0.0, mean_length=1.0)


def test_registered_and_scaled_defaults():
    assert allocators.get("knapsack") is KnapsackRL
    alloc = KnapsackRL(setting(prompts=4, group=8))
    options = alloc.resolved_options()
    assert options["n_default"] == 8 and options["n_max"] == 32 - 3 * 2
    assert options["min_buffer_length"] == 8 and options["reward_buffer_length"] == 16
    big = KnapsackRL(setting(prompts=256, group=8)).resolved_options()
    assert big["n_max"] == 128
    half = KnapsackRL(setting(prompts=5, group=5, fraction=0.5)).resolved_options()
    assert half["n_default"] == round(0.5 * 5 * 5) // 5 == 2
    # §Scaling rule: valid after one visit at this budget, robust window of two visits
    assert half["min_buffer_length"] == 2 and half["reward_buffer_length"] == 4
    assert options["adv_clip"] == 5.0 and alloc.advantage_options() == {"clip": 5.0}
    assert KnapsackRL(setting(), adv_clip=None).advantage_options() == {"clip": None}
    with pytest.raises(ValueError, match="adv_clip"):
        KnapsackRL(setting(), adv_clip=0.0)


def test_infeasible_setting_fails_at_construction():
    with pytest.raises(ValueError, match="below"):
        KnapsackRL(setting(prompts=4, group=8, fraction=0.2))   # C = 6 < 4 x 2


def test_estimates_follow_the_released_rules():
    alloc = KnapsackRL(setting(prompts=4, group=4))   # min buffer 4, reward buffer 8
    stats = PromptStats()
    visit(stats, 0, 0, [1, 0, 0])                                     # 3 samples: cold
    visit(stats, 0, 1, [1, 1, 0, 0])                                  # 4 samples: p = 1/2
    visit(stats, 0, 2, [0] * 8)
    visit(stats, 1, 2, [1, 1, 0, 0])                                  # short visit: last 8
    visit(stats, 0, 3, [0, 0, 0, 0, 0, 0, 0, 0, 1, 1])                # full visit of >= 8
    assert alloc.estimate(0, stats) == (False, 0.0)
    assert alloc.estimate(1, stats) == (True, 0.5)
    assert alloc.estimate(2, stats) == (True, 0.25)
    assert alloc.estimate(3, stats) == (True, 0.2)
    last = KnapsackRL(setting(prompts=4, group=4), estimator="last_visit")
    assert last.estimate(2, stats) == (True, 0.5)


def test_plan_sums_to_the_budget_and_pickles():
    s = setting(prompts=6, group=8)
    alloc = pickle.loads(pickle.dumps(KnapsackRL(s)))
    stats = PromptStats()
    for pid, rewards in enumerate([[1] * 8, [0] * 8, [1, 0] * 4, [1] + [0] * 7, [1] * 7 + [0]]):
        visit(stats, 0, pid, rewards)
    requests = alloc.plan(1, candidates(range(6)), stats, budget(s))
    counts = {r.pid: r.n for r in requests}
    assert sum(counts.values()) == s.rollouts_per_step
    assert counts[5] == 8                       # never seen: cold default
    assert counts[0] == 2                       # solved
    assert counts[2] > 2 and counts[3] > 2 and counts[4] > 2
    with pytest.raises(ValueError, match="unknown option"):
        KnapsackRL(s, bogus=1)


def _half_budget_run(steps, **options):
    """Knapsack-RL at b = 0.5 in the scripted loop, every prompt revisited each step.

    Pass rates 0, 1/4, 1/2, 3/4, 1 by pid: the i-th rollout of prompt ``pid`` succeeds iff
    ``i % 4 < pid % 5`` (all succeed at pid % 5 = 4).
    """
    alloc = KnapsackRL(setting(prompts=10, group=8, fraction=0.5), **options)
    loop = Loop(alloc, ScriptedPool(10),
                reward=lambda pid, i: float(pid % 5 == 4 or i % 4 < pid % 5))
    plans = []
    for step in range(steps):
        loop.step(step)
        plans.append([r.n for r in loop.first_requests])
    return plans


def test_half_budget_departs_from_uniform_on_the_second_visit():
    # C = 40 over 10 prompts: the first visit is 4 rollouts each; with validity scaled to one
    # visit's worth (4) the second visit is already a knapsack plan
    first, second = _half_budget_run(2)
    assert first == [4] * 10
    assert sum(second) == 40 and len(set(second)) > 1
    assert second[0] == 2 and second[4] == 2              # p = 0 / p = 1 -> n_zero / n_one
    assert min(second[1], second[2], second[3]) > 2       # solvable prompts get the extra
    # the unscaled rule (valid at G = 8 rewards) keeps the second visit uniform
    assert _half_budget_run(2, min_buffer_length=8)[1] == [4] * 10
