"""CoBA-RL: the capability schedule, the heap greedy and its vectorised equal, the DP
objective, the allocator and its Table 3 variants."""
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
from allocators.coba import (CoBA, CoBAFixedExploit, CoBAFixedExplore, CoBALinear,
                             beta_preference, coba_counts, coba_counts_dp, coba_counts_heap,
                             coba_shape, coba_value)


def logit(x):
    return math.log(x / (1.0 - x))


# ------------------------------------------------------------------------------ schedule
@pytest.mark.parametrize("mapped, alpha", [(0.0675, 2.54), (0.3125, 4.50), (0.6575, 7.26)])
def test_placeholders_reproduce_figure_4(mapped, alpha):
    # below 0.5 the mapped rate is a sigmoid of the mean failure rate: invert it
    mean_fail = mapped if mapped > 0.5 else 0.5 + logit(mapped) / 10.0
    a, b = coba_shape([mean_fail])
    assert a == pytest.approx(alpha, abs=1e-9) and b == pytest.approx(11.0 - alpha, abs=1e-9)


@pytest.mark.parametrize("mapped, alpha", [(0.07, 2.54), (0.31, 4.50), (0.66, 7.26)])
def test_two_decimal_placeholders_are_within_rounding(mapped, alpha):
    mean_fail = mapped if mapped > 0.5 else 0.5 + logit(mapped) / 10.0
    assert coba_shape([mean_fail])[0] == pytest.approx(alpha, abs=0.03)


def test_schedule_window_clip_and_continuity():
    # only the last `window` steps count
    assert coba_shape([0.0] * 5 + [0.8] * 10) == coba_shape([0.8])
    assert coba_shape([0.0] * 5 + [0.8] * 10, window=15)[0] < coba_shape([0.8])[0]
    # 2 + 8 * 0.95 = 9.6 is clipped to alpha_max = 9, beta = 2
    assert coba_shape([0.95]) == (9.0, 2.0)
    # sigmoid(0) = 0.5 = the identity branch at F = 0.5: no jump
    below = coba_shape([0.5 - 1e-9])[0]
    assert below == pytest.approx(coba_shape([0.5])[0], abs=1e-6) == pytest.approx(6.0)
    assert coba_shape([0.5 + 1e-9])[0] == pytest.approx(6.0, abs=1e-6)
    # more failures -> more exploitation (larger alpha), monotone
    alphas = [coba_shape([f])[0] for f in np.linspace(0, 1, 21)]
    assert all(x <= y for x, y in zip(alphas, alphas[1:]))
    with pytest.raises(ValueError):
        coba_shape([])


# ------------------------------------------------------------------------------ value model
def test_gain_matches_hand_computation():
    # Beta(2, 2) density at 1/2 is 6 * 1/4 = 1.5; k = 1/4 at tau = 1
    assert beta_preference([0.5], 2.0, 2.0)[0] == pytest.approx(1.5)
    assert beta_preference([0.0, 1.0], 0.5, 0.5).tolist() == [0.0, 0.0]
    v2 = coba_value([2], [0.5], alpha=2.0, beta=2.0)
    v3 = coba_value([3], [0.5], alpha=2.0, beta=2.0)
    assert v3 - v2 == pytest.approx(1.5 * (1 - math.exp(-0.25)) * math.exp(-0.5), rel=1e-12)


# ------------------------------------------------------------------------------ solvers
rates = st.one_of(st.sampled_from([0.0, 1.0, 0.5, 0.25, 0.75, 1 / 16, 15 / 16]),
                  st.floats(min_value=0.0, max_value=1.0, allow_nan=False))
shapes = st.tuples(st.floats(0.5, 12.0), st.floats(0.5, 12.0))


@st.composite
def instances(draw, max_prompts=40, max_high=40):
    p = draw(st.lists(rates, min_size=1, max_size=max_prompts))
    n_low = draw(st.integers(0, 4))
    n_high = draw(st.integers(n_low, max_high))
    total = draw(st.integers(len(p) * n_low, len(p) * n_high))
    alpha, beta = draw(shapes)
    tau = draw(st.sampled_from([0.25, 1.0, 4.0]))
    return np.array(p), total, dict(alpha=alpha, beta=beta, tau=tau, n_low=n_low, n_high=n_high)


@settings(max_examples=100, deadline=None)
@given(instances())
def test_vectorised_equals_the_literal_heap(instance):
    p, total, options = instance
    fast = coba_counts(p, total, **options)
    heap = coba_counts_heap(p, total, **options)
    assert np.array_equal(fast, heap)
    assert fast.sum() == total
    assert fast.min() >= options["n_low"] and fast.max() <= options["n_high"]


@settings(max_examples=60, deadline=None)
@given(instances(max_prompts=10, max_high=20))
def test_greedy_objective_equals_the_dp(instance):
    p, total, options = instance
    greedy = coba_counts(p, total, **options)
    dp = coba_counts_dp(p, total, **options)
    assert dp.sum() == total and dp.min() >= options["n_low"] and dp.max() <= options["n_high"]
    shape = dict(alpha=options["alpha"], beta=options["beta"], tau=options["tau"])
    assert coba_value(greedy, p, **shape) == pytest.approx(coba_value(dp, p, **shape),
                                                           rel=1e-10, abs=1e-12)


def test_greedy_matches_brute_force_on_tiny_instances():
    rng = np.random.default_rng(3)
    for _ in range(30):
        p = rng.choice([0.0, 0.2, 0.5, 0.7, 0.9, 1.0], size=3)
        n_low, n_high = 1, 5
        total = int(rng.integers(3 * n_low, 3 * n_high + 1))
        shape = dict(alpha=float(rng.uniform(1, 10)), beta=float(rng.uniform(1, 10)), tau=1.0)
        best = max(coba_value(b, p, **shape)
                   for b in itertools.product(range(n_low, n_high + 1), repeat=3)
                   if sum(b) == total)
        greedy = coba_counts(p, total, n_low=n_low, n_high=n_high, **shape)
        assert coba_value(greedy, p, **shape) == pytest.approx(best, rel=1e-12, abs=1e-15)


def test_realistic_batch_heap_vectorised_dp_agree():
    rng = np.random.default_rng(11)
    p = np.concatenate([rng.integers(0, 17, size=48) / 16, [0.0, 1.0]])
    options = dict(alpha=4.5, beta=6.5, tau=1.0, n_low=2, n_high=64)
    fast = coba_counts(p, 50 * 16, **options)
    assert np.array_equal(fast, coba_counts_heap(p, 50 * 16, **options))
    dp = coba_counts_dp(p, 50 * 16, **options)
    assert coba_value(fast, p, alpha=4.5, beta=6.5) == pytest.approx(
        coba_value(dp, p, alpha=4.5, beta=6.5), rel=1e-12)


def test_zero_gain_prompts_wait_then_fill_round_robin():
    options = dict(alpha=2.0, beta=2.0, n_low=2, n_high=4)
    assert coba_counts([0.0, 0.5, 1.0], 12, **options).tolist() == [4, 4, 4]
    assert coba_counts([0.0, 0.5, 1.0], 11, **options).tolist() == [4, 4, 3]
    assert coba_counts([0.0, 0.5, 1.0], 8, **options).tolist() == [2, 4, 2]


def test_equal_prompts_split_evenly_lower_index_first():
    assert coba_counts([0.5] * 3, 10, alpha=2.0, beta=2.0).tolist() == [4, 3, 3]


def test_shape_moves_budget_between_easy_and_hard_prompts():
    p = [0.2, 0.8]
    exploit = coba_counts(p, 40, alpha=10.5, beta=1.5)
    explore = coba_counts(p, 40, alpha=1.5, beta=10.5)
    assert exploit[1] > exploit[0] and explore[0] > explore[1]


def test_infeasible_inputs_fail_loudly():
    with pytest.raises(ValueError, match="below"):
        coba_counts([0.5, 0.5], 3, alpha=2.0, beta=2.0)
    with pytest.raises(ValueError, match="exceeds"):
        coba_counts([0.5, 0.5], 300, alpha=2.0, beta=2.0)
    with pytest.raises(ValueError, match="Beta"):
        coba_counts([0.5], 4, alpha=2.0, beta=-1.0)


# ------------------------------------------------------------------------------ allocators
def setting(prompts=4, group=8, fraction=1.0, steps=11):
    return Setting(prompts_per_step=prompts, group_size=group, budget_fraction=fraction,
                   max_response_tokens=32, steps=steps, seed=0)


def group(step, pid, rewards):
    return [Rollout(pid=pid, group=pid, tag="main", step=step, round=0,
                    tokens=np.zeros(2, dtype=np.int64), logprobs=np.zeros(2, dtype=np.float32),
                    finish="eos", reward=float(r)) for r in rewards]


def cands(n):
    return [PromptInfo(pid=i, text=f"q{i}", token_ids=(i,)) for i in range(n)]


def budget(s):
    return StepBudget(rollouts=s.rollouts_per_step, tokens=0.0, mean_length=1.0)


def test_registry_names_and_resolved_defaults():
    for name, cls in [("coba", CoBA), ("coba-fixed-exploit", CoBAFixedExploit),
                      ("coba-fixed-explore", CoBAFixedExplore), ("coba-linear", CoBALinear)]:
        assert allocators.get(name) is cls
    options = CoBA(setting(prompts=4, group=8)).resolved_options()
    assert options["n_high"] == 32 - 3 * 2 and options["n_low"] == 2
    assert CoBA(setting(prompts=512, group=16)).resolved_options()["n_high"] == 128
    for key in ("kappa", "gamma", "alpha_min", "alpha_max", "slope", "window", "tau",
                "cold_pass_rate", "solver", "total"):
        assert key in options
    with pytest.raises(ValueError, match="unknown option"):
        CoBA(setting(), bogus=1)


def test_first_step_is_even_and_observe_drives_the_schedule():
    s = setting(prompts=4, group=8)
    alloc = CoBA(s)
    stats = PromptStats()
    counts = [r.n for r in alloc.plan(0, cands(4), stats, budget(s))]
    assert counts == [8, 8, 8, 8]
    groups = [group(0, 0, [1] * 8), group(0, 1, [0] * 8), group(0, 2, [1, 0] * 4),
              group(0, 3, [1, 1, 1, 0, 0, 0, 0, 0])]
    stats.update(0, groups)
    alloc.observe(0, groups, stats)
    assert alloc.fail_history == [pytest.approx(1 - (1 + 0 + 0.5 + 0.375) / 4)]
    assert alloc.cold_estimate() == pytest.approx((1 + 0 + 0.5 + 0.375) / 4)
    alloc = pickle.loads(pickle.dumps(alloc))
    requests = alloc.plan(1, cands(4) + [PromptInfo(pid=4, text="new", token_ids=(4,))], stats,
                          StepBudget(rollouts=40, tokens=0.0, mean_length=1.0))
    counts = {r.pid: r.n for r in requests}
    assert sum(counts.values()) == 40
    assert counts[0] == 2 and counts[1] == 2             # p in {0, 1}: no gain
    assert alloc.last_shape == coba_shape(alloc.fail_history)


def test_fail_history_keeps_the_window():
    alloc = CoBA(setting(), window=3)
    for step in range(6):
        g = [group(step, 0, [1] * step + [0] * (8 - step))]
        alloc.observe(step, g, PromptStats())
    assert alloc.fail_history == pytest.approx([1 - 3 / 8, 1 - 4 / 8, 1 - 5 / 8])


def test_fixed_variants_use_table_3_shapes():
    assert CoBAFixedExploit(setting()).shape_at(5) == (10.5, 1.5)
    assert CoBAFixedExplore(setting()).shape_at(5) == (1.5, 10.5)
    assert CoBAFixedExplore(setting(), fixed_alpha=3.0).shape_at(0) == (3.0, 10.5)


def test_linear_variant_decays_alpha_from_10_to_1():
    alloc = CoBALinear(setting(steps=11))
    assert alloc.shape_at(0) == (10.0, 1.0)
    assert alloc.shape_at(5) == pytest.approx((5.5, 5.5))
    assert alloc.shape_at(10) == pytest.approx((1.0, 10.0))
    assert alloc.shape_at(50) == pytest.approx((1.0, 10.0))
    stairs = CoBALinear(setting(steps=10), decay_stages=4)
    assert [stairs.shape_at(t)[0] for t in (0, 2, 3, 5, 7, 9)] == pytest.approx(
        [10.0, 10.0, 7.0, 4.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="beta"):
        CoBALinear(setting(), kappa=9.0)
