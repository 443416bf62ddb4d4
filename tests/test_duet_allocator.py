"""DUET's allocation: Neyman counts, trim, propensities, thresholds, Welford state, ridge."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import allocators
import lengthctl
from allocators.base import PromptInfo, PromptStats, Rollout, Setting, StepBudget
from allocators.duet import (BAND_MIDPOINT, Duet, DuetAbort, DuetAllocation, Welford,
                             allocation_propensities, counts_at_price, gradient_signal_spread,
                             neyman_bisection, neyman_counts, planned_tokens, stop_thresholds,
                             trim_to_budget)


# ----------------------------------------------------------------------------------------------
# neyman_counts
# ----------------------------------------------------------------------------------------------

def test_neyman_hand_case():
    # L = 1, s = (1, 2, 4), B = 14: the bisection's last midpoint, log lam = -1.50390625,
    # gives s / sqrt(lam) = (2.12, 4.24, 8.48) -> (2, 4, 8), which spends exactly 14.
    counts, propensity = neyman_counts([1.0, 2.0, 4.0], [1.0, 1.0, 1.0], 14.0)
    assert counts.tolist() == [2, 4, 8]
    assert propensity == pytest.approx([2 / (14 / 3), 4 / (14 / 3), 1.0])


def test_rounding_is_half_to_even_as_python_round():
    counts = counts_at_price(1.0, [0.5, 1.5, 2.5, 3.5], [1.0] * 4, n_min=0, n_max=32)
    assert counts.tolist() == [round(0.5), round(1.5), round(2.5), round(3.5)] == [0, 2, 2, 4]


def test_lengths_below_one_count_as_one():
    assert counts_at_price(1.0, [3.0, 3.0], [0.25, 1.0], n_min=1, n_max=32).tolist() == [3, 3]


def test_trim_decrements_the_longest_prompts_first():
    assert trim_to_budget([3, 3, 3], [10, 30, 20], 150).tolist() == [3, 2, 3]
    # 180 -> 150 -> 120 (middle prompt at n_min) -> 100 (next longest)
    assert trim_to_budget([3, 3, 3], [10, 30, 20], 100).tolist() == [3, 1, 2]
    assert trim_to_budget([3, 3, 3], [10, 30, 20], 10).tolist() == [1, 1, 1]
    assert trim_to_budget([2, 2], [10, 10], 30).tolist() == [1, 2]   # ties: lower index first
    # equal lengths, released rule: the lowest index is drained to n_min before the next
    assert trim_to_budget([3, 5, 3], [10, 10, 10], 80).tolist() == [1, 4, 3]
    assert trim_to_budget([3] * 8, [64.0] * 8, 1024).tolist() == [1, 1, 1, 1, 3, 3, 3, 3]
    assert trim_to_budget([2, 5], [10, 10], 1000).tolist() == [2, 5]


def test_planned_tokens_add_in_order_like_the_release():
    rng = np.random.default_rng(0)
    for _ in range(50):
        counts, lengths = rng.integers(1, 33, 200), rng.uniform(1, 4000, 200)
        in_order = 0
        for n, length in zip(counts.tolist(), lengths.tolist()):
            in_order += n * length
        assert planned_tokens(counts, lengths) == in_order
    assert planned_tokens([], []) == 0.0


def test_budget_ties_on_a_cold_batch_follow_the_in_order_sum():
    # 34 cold prompts at L̂ = 119.6, b = 1: B = 34 * 8 * 119.6 rounds to 32531.199999999997,
    # which np.dot reproduces for the all-8 plan, while the in-order sum of 34 terms of 956.8 is
    # 32531.199999999983 < B.  The bisection therefore lowers the price past 8 each; its last
    # midpoint gives 9 each, and the trim drains the first prompts until the in-order sum is
    # <= B exactly: 8 + 8 + 8 + 8 + 3 decrements.  The released code gives the same plan.
    mean_len = np.full(34, 119.6)
    budget = 1.0 * float(34 * 8 * float(np.mean(mean_len)))
    assert float(np.dot(np.full(34, 8), mean_len)) == budget
    assert planned_tokens(np.full(34, 8), mean_len) < budget
    counts, propensity = neyman_counts(np.ones(34), mean_len, budget)
    assert counts.tolist() == [1, 1, 1, 1, 6] + [9] * 29
    one_more = counts + np.eye(34, dtype=int)[4]
    assert planned_tokens(counts, mean_len) <= budget < planned_tokens(one_more, mean_len)
    assert propensity.tolist() == [1.0] * 34


def test_trim_that_levels_equal_prompts_stays_an_option():
    # the larger count goes first, so equal counts level instead of draining
    assert trim_to_budget([3, 5, 3], [10, 10, 10], 80,
                          ties="most_rollouts").tolist() == [2, 3, 3]   # 5,4 then index
    assert trim_to_budget([3] * 8, [64.0] * 8, 1024, ties="most_rollouts").tolist() == [2] * 8
    with pytest.raises(ValueError, match="trim ties"):
        trim_to_budget([3], [1.0], 1.0, ties="largest")


def test_all_cold_batch_follows_the_release():
    # issue 13: M = 128, n_ref = 8, L̂ = 3072, b = 1, every ŝ equal.  The bisection ends at 9
    # each (128 * 9 * 3072 > B = 128 * 8 * 3072); the 128 surplus rollouts are taken 8 at a
    # time from prompts 0..15, which end at n_min = 1; every propensity stays 1.
    s_hat, mean_len = np.ones(128), np.full(128, 3072.0)
    budget = 128 * 8 * 3072.0
    assert neyman_bisection(s_hat, mean_len, budget).tolist() == [9] * 128
    counts, propensity = neyman_counts(s_hat, mean_len, budget)
    assert counts.tolist() == [1] * 16 + [9] * 112
    assert float(np.dot(counts, mean_len)) == budget
    assert propensity.tolist() == [1.0] * 128
    levelled, _ = neyman_counts(s_hat, mean_len, budget, trim_ties="most_rollouts")
    assert levelled.tolist() == [8] * 128


def test_propensities_use_the_counts_before_the_trim():
    # the bisection ends at (2, 3, 3): 20 + 60 + 90 = 170 > 150; the trim takes one rollout from
    # the longest prompt -> (2, 3, 2) = 140.  Propensities keep the pre-trim mean 8/3.
    s_hat, mean_len = [1.0, 2.0, 3.0], [10.0, 20.0, 30.0]
    assert neyman_bisection(s_hat, mean_len, 150.0).tolist() == [2, 3, 3]
    counts, propensity = neyman_counts(s_hat, mean_len, 150.0)
    assert counts.tolist() == [2, 3, 2]
    assert propensity == pytest.approx([0.75, 1.0, 1.0])
    assert allocation_propensities(counts)[0] == pytest.approx(6 / 7)     # what a post-trim
                                                                          # reference would give


def test_propensity_formula_by_hand():
    assert allocation_propensities([1, 2, 6]).tolist() == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert allocation_propensities([1, 1, 40]).tolist() == pytest.approx([0.071428, 0.071428,
                                                                          1.0], rel=1e-4)
    assert allocation_propensities([1, 60, 60]).tolist() == pytest.approx(
        [max(0.05, 1 / (121 / 3)), 1.0, 1.0])
    assert allocation_propensities([1, 300], eps_pre=0.05)[0] == pytest.approx(0.05)
    assert allocation_propensities([0, 1, 0]).tolist() == pytest.approx([0.05, 1.0, 0.05])


@settings(max_examples=100, deadline=None)
@given(prompts=st.integers(1, 80), n_min=st.integers(0, 3), extra=st.integers(0, 40),
       fraction=st.floats(0.0, 1.5), seed=st.integers(0, 2**31 - 1),
       iterations=st.integers(1, 30))
def test_neyman_properties(prompts, n_min, extra, fraction, seed, iterations):
    rng = np.random.default_rng(seed)
    n_max = n_min + extra
    s_hat = rng.gamma(1.0, 2.0, prompts) * (rng.uniform(size=prompts) > 0.2)
    mean_len = rng.uniform(0.5, 500.0, prompts)
    budget = fraction * prompts * 8 * float(mean_len.mean())
    counts, propensity = neyman_counts(s_hat, mean_len, budget, n_min=n_min, n_max=n_max,
                                       iterations=iterations)
    assert counts.dtype.kind == "i" and len(counts) == prompts
    assert counts.min() >= n_min and counts.max() <= n_max
    assert float(np.dot(counts, mean_len)) <= budget + 1e-9 or np.all(counts == n_min)
    before = neyman_bisection(s_hat, mean_len, budget, n_min=n_min, n_max=n_max,
                              iterations=iterations)
    assert np.all(counts <= before)
    expected = np.clip(before / max(1.0, before.mean()), 0.05, 1.0)
    assert propensity == pytest.approx(expected)
    assert propensity.min() >= 0.05 and propensity.max() <= 1.0


def test_larger_spread_gets_more_rollouts_at_equal_length():
    counts, _ = neyman_counts([0.5, 1.0, 2.0, 4.0], [100.0] * 4, 4 * 4 * 100.0)
    assert np.all(np.diff(counts) >= 0) and counts[-1] > counts[0]


def test_cost_weighting_gives_long_prompts_fewer_rollouts():
    counts, _ = neyman_counts([2.0, 2.0], [100.0, 400.0], 1000.0, n_max=64)
    assert counts[0] > counts[1]                      # n ∝ 1 / sqrt(L): ratio 2


def test_bad_inputs_raise():
    with pytest.raises(ValueError):
        neyman_counts([1.0, -1.0], [1.0, 1.0], 10.0)
    with pytest.raises(ValueError):
        neyman_counts([1.0, 1.0], [1.0, 0.0], 10.0)
    with pytest.raises(ValueError):
        neyman_counts([1.0], [1.0, 1.0], 10.0)
    with pytest.raises(ValueError):
        neyman_counts([1.0], [1.0], 10.0, n_min=5, n_max=4)


# ----------------------------------------------------------------------------------------------
# Thresholds, spreads, Welford
# ----------------------------------------------------------------------------------------------

def test_thresholds_map_information_rank_onto_the_band():
    # iota = s^2 / L = (4, 0.25, 1, 4): ordinal ties by position
    tau = stop_thresholds([2.0, 0.5, 1.0, 2.0], [1.0, 1.0, 1.0, 1.0])
    assert tau == pytest.approx([0.5 + 0.49 * 2 / 3, 0.5, 0.5 + 0.49 / 3, 0.99])
    average = stop_thresholds([2.0, 0.5, 1.0, 2.0], [1.0] * 4, ties="average")
    assert average == pytest.approx([0.5 + 0.49 * 2.5 / 3, 0.5, 0.5 + 0.49 / 3,
                                     0.5 + 0.49 * 2.5 / 3])
    assert stop_thresholds([3.0], [10.0]).tolist() == [pytest.approx(BAND_MIDPOINT)]
    # length enters as max(L, 1): L = 0.5 counts as 1, so the two tie and keep their order
    assert stop_thresholds([1.0, 1.0], [0.5, 1.0]).tolist() == pytest.approx([0.5, 0.99])


def test_welford_hand_example():
    state = Welford()
    for value in (1.0, 2.0, 4.0):
        state.add(value)
    assert state.count == 3
    assert state.mean == pytest.approx(7 / 3)
    assert state.m2 == pytest.approx((4 / 3) ** 2 + (1 / 3) ** 2 + (5 / 3) ** 2)


def _row(pid, group, advantage, weight, logprobs, finish="eos", reward=0.0, step=0):
    return Rollout(pid=pid, group=group, tag="main", step=step, round=0,
                   tokens=np.arange(len(logprobs), dtype=np.int64),
                   logprobs=np.asarray(logprobs, dtype=np.float32), finish=finish,
                   reward=reward, weight=weight, advantage=advantage)


def test_gradient_signal_spread_by_hand():
    group = [_row(0, 0, 1.0, 1.0, [-1.0, -1.0]),           # g = 1 * 1 * -2 = -2
             _row(0, 0, -1.0, 2.0, [-1.0, -2.0]),          # g = -1 * 2 * -3 = 6
             _row(0, 0, 1.0, 1.0, [-4.0]),                 # g = -4
             _row(0, 0, 0.0, 1.0, [-9.0], "aborted")]      # excluded
    assert gradient_signal_spread(group) == pytest.approx(np.std([-2.0, 6.0, -4.0]))
    assert gradient_signal_spread(group[:1] + group[3:]) is None


# ----------------------------------------------------------------------------------------------
# The allocators
# ----------------------------------------------------------------------------------------------

def _setting(prompts=8, group=4, fraction=0.5, max_len=64):
    return Setting(prompts_per_step=prompts, group_size=group, budget_fraction=fraction,
                   max_response_tokens=max_len, steps=10, seed=0, pool_size=32)


def _pool(size=32, feature=lambda pid: -1.0 - 0.1 * pid):
    return [PromptInfo(pid=i, text=f"q{i}", token_ids=(i,),
                       features={} if feature(i) is None else
                       {"prompt_logprob_mean": feature(i)})
            for i in range(size)]


def _budget():
    return StepBudget(rollouts=0, tokens=0.0, mean_length=0.0)


def _spread_group(pid, group, spread, length=10, step=0):
    """Two kept rows with g = +-spread (population std = spread) and one aborted row."""
    logprobs = [-1.0] * (length - 1) + [-spread + (length - 1)]     # sum = -spread
    return [_row(pid, group, 1.0, 1.0, logprobs, step=step),
            _row(pid, group, -1.0, 1.0, logprobs, step=step),
            _row(pid, group, 0.0, 1.0, [-1.0] * 3, "aborted", step=step)]


def test_each_variant_runs_under_the_stop_rule_it_names_with_its_planned_thresholds():
    """What the trainer builds for each variant: DUET's controller (K-window M * G) gets each
    request's tau; duet-alloc's rows run to EOS or L_max whatever its requests carry."""
    setting = _setting(prompts=4, group=8, fraction=1.0, max_len=64)
    budget = StepBudget(rollouts=32, tokens=32 * 20.0, mean_length=20.0)
    for name, stops in (("duet-alloc", False), ("duet", True), ("duet-abort", True)):
        method = allocators.get(name)(setting)
        method.attach_pool(_pool())
        controller = lengthctl.get(method.default_length)(64, 0, **method.needs().length_options)
        requests = [r for r in method.plan(0, _pool()[:4], PromptStats(), budget) if r.n > 0]
        rows = [controller.row_controller(0, r.control, seed) for seed, r in enumerate(requests)]
        if not stops:
            assert rows == [None] * len(requests), name
            continue
        assert controller.resolved_options()["window"] == 4 * 8, name
        assert [row.tau for row in rows] == [r.control["tau"] for r in requests], name
        assert all(0.5 <= row.tau <= 0.99 for row in rows), name


def test_defaults_scale_with_the_group_size():
    options = DuetAllocation(_setting(group=8)).resolved_options()
    assert (options["n_ref"], options["n_min"], options["n_max"]) == (8, 1, 32)
    with pytest.raises(ValueError):
        DuetAllocation(_setting(group=4, fraction=0.1))          # b * n_ref < n_min
    with pytest.raises(ValueError):
        DuetAllocation(_setting(), n_max=1)


def test_cold_plan_follows_the_released_trim_and_stays_within_budget():
    setting = _setting(prompts=8, group=4, fraction=0.5, max_len=64)
    duet = DuetAllocation(setting)
    pool = _pool()
    duet.attach_pool(pool)
    requests = duet.plan(0, pool[:8], PromptStats(), _budget())
    # all cold: equal s_hat and L_hat = L_max -> B = 0.5 * 8 * 4 * 64 = 1024 = 16 rollouts; the
    # bisection ends at 3 each (24) and the trim drains prompts 0..3 to 1 (the release's rule)
    assert [r.n for r in requests] == [1, 1, 1, 1, 3, 3, 3, 3]
    levelled = DuetAllocation(setting, trim_ties="most_rollouts")
    levelled.attach_pool(pool)
    assert [r.n for r in levelled.plan(0, pool[:8], PromptStats(), _budget())] == [2] * 8
    assert all(r.weight == 1.0 for r in requests)
    assert sorted(r.control["tau"] for r in requests) == pytest.approx(
        [0.5 + 0.49 * k / 7 for k in range(8)])                # ordinal ties, as released


def test_warm_plan_follows_observed_spreads_and_lengths():
    setting = _setting(prompts=4, group=4, fraction=1.0, max_len=64)
    duet = DuetAllocation(setting)
    pool = _pool()
    duet.attach_pool(pool)
    stats = PromptStats()
    groups = [_spread_group(pid, pid, spread, length=10)
              for pid, spread in zip(range(4), (0.0, 1.0, 2.0, 8.0))]
    stats.update(0, groups)
    duet.observe(0, groups, stats)
    assert duet.spreads[3].mean == pytest.approx(8.0) and duet.spreads[0].mean == 0.0
    requests = duet.plan(1, pool[:4], stats, _budget())
    counts = np.array([r.n for r in requests])
    lengths = np.array([stats.mean_length(pid) for pid in range(4)])
    assert counts.min() >= 1 and counts.max() <= 16
    assert counts @ lengths <= 1.0 * 4 * 4 * lengths.mean() + 1e-9
    assert counts[0] == 1 and counts[3] == counts.max()
    assert np.all(np.diff(counts) >= 0)
    expected_p = allocation_propensities(neyman_bisection(
        [1e-6, 1.0, 2.0, 8.0], lengths, 16 * lengths.mean(), n_max=16))
    assert [r.weight for r in requests] == pytest.approx(list(1.0 / expected_p))
    assert requests[3].control["tau"] == pytest.approx(0.99)
    assert requests[0].control["tau"] == pytest.approx(0.5)


def test_observe_needs_two_kept_rows():
    duet = DuetAllocation(_setting())
    lone = [_row(5, 0, 1.0, 1.0, [-1.0]), _row(5, 0, 0.0, 1.0, [-1.0], "aborted")]
    duet.observe(0, [lone], PromptStats())
    assert 5 not in duet.spreads


def test_unseen_lengths_fall_back_to_the_global_mean_then_the_maximum():
    duet = DuetAllocation(_setting(max_len=64))
    stats = PromptStats()
    assert duet.predicted_length(3, stats) == 64.0
    stats.update(0, [_spread_group(1, 0, 1.0, length=10)])   # two kept rows of 10 tokens
    assert duet.predicted_length(3, stats) == 10.0
    assert duet.predicted_length(1, stats) == 10.0


def test_ridge_cold_start_fits_after_enough_points_and_uses_the_median_for_gaps():
    duet = DuetAllocation(_setting(), ridge_alpha=1e-6, ridge_min_points=8)
    pool = _pool(feature=lambda pid: None if pid == 31 else float(pid))
    duet.attach_pool(pool)
    assert duet.predicted_spread(20) == 1.0                    # nothing fitted: cold_spread
    first = [_spread_group(pid, pid, 2.0 + 3.0 * pid) for pid in range(7)]
    duet.observe(0, first, PromptStats())
    assert duet.ridge_coef is None                             # 7 < ridge_min_points
    duet.observe(1, [_spread_group(7, 0, 2.0 + 3.0 * 7, step=1)], PromptStats())
    intercept, slope = duet.ridge_coef
    assert intercept == pytest.approx(2.0, abs=1e-3) and slope == pytest.approx(3.0, abs=1e-4)
    assert duet.predicted_spread(20) == pytest.approx(62.0, rel=1e-4)     # cold, feature 20
    assert duet.feature_of(31) == pytest.approx(15.0)                     # median of 0..30
    assert duet.predicted_spread(31) == pytest.approx(47.0, rel=1e-4)
    assert duet.predicted_spread(3) == pytest.approx(11.0)                # warm: observed
    constant = DuetAllocation(_setting(), cold_start="constant", cold_spread=0.5)
    constant.attach_pool(pool)
    constant.observe(0, first + [_spread_group(7, 7, 23.0)], PromptStats())
    assert constant.ridge_coef is None and constant.predicted_spread(20) == 0.5


def test_a_spread_floor_below_the_price_bracket_starves_the_cold_batch():
    """Why the cold constant is not sigma_min = 1e-6: the bracket cannot reach it."""
    setting = _setting(prompts=8, group=4, fraction=0.5, max_len=64)
    literal = DuetAllocation(setting, cold_start="constant", cold_spread=1e-6)
    requests = literal.plan(0, _pool()[:8], PromptStats(), _budget())
    assert [r.n for r in requests] == [1] * 8


def test_allocator_pickles_and_plans_identically():
    setting = _setting(prompts=4, group=4, fraction=1.0)
    duet = Duet(setting)
    pool = _pool()
    duet.attach_pool(pool)
    stats = PromptStats()
    groups = [_spread_group(pid, pid, 1.0 + pid) for pid in range(10)]
    stats.update(0, groups)
    duet.observe(0, groups, stats)
    clone = pickle.loads(pickle.dumps(duet))
    assert clone.ridge_coef == duet.ridge_coef and clone.spreads == duet.spreads

    def summary(requests):
        return [(r.pid, r.n, r.weight, r.control) for r in requests]

    assert summary(clone.plan(1, pool[6:10], stats, _budget())) == summary(
        duet.plan(1, pool[6:10], stats, _budget()))


def test_duet_abort_is_uniform_with_the_band_midpoint():
    setting = _setting(prompts=4, group=8, fraction=0.5)
    abort = DuetAbort(setting)
    requests = abort.plan(0, _pool()[:4], PromptStats(), _budget())
    assert [r.n for r in requests] == [4] * 4
    assert all(r.control == {"tau": BAND_MIDPOINT} for r in requests)
    assert all(r.weight == 1.0 for r in requests)
    assert DuetAbort(setting, tau=0.9).resolved_options()["tau"] == 0.9
    with pytest.raises(ValueError):
        DuetAbort(setting, bogus=1)
