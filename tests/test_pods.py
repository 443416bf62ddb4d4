"""PODS: max-variance down-sampling against brute force over every subset, hand-computed cases,
and the allocator in a scripted loop (no model): it generates n, trains m, charges all n."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

import allocators
from allocators.base import Setting
from allocators.pods import pods_select
from tests.scripted_loop import Loop, ScriptedPool


def setting(m=4, g=8, b=1.0, seed=0):
    return Setting(prompts_per_step=m, group_size=g, budget_fraction=b, max_response_tokens=64,
                   steps=10, seed=seed, pool_size=0)


def test_binary_rewards_by_hand():
    # 3 correct of 8, keep 4: two correct + two wrong (variance 0.25)
    r = [0, 1, 0, 0, 1, 0, 1, 0]
    idx = pods_select(r, 4)
    assert sorted(np.asarray(r)[idx].tolist()) == [0, 0, 1, 1]
    # 1 correct of 8, keep 4: the one correct row is always kept
    r = [0, 0, 0, 0, 0, 1, 0, 0]
    assert 5 in pods_select(r, 4).tolist()
    # all equal: any subset, here the first m (smallest k, stable order)
    assert pods_select([1, 1, 1, 1], 2).tolist() == [0, 1]
    assert pods_select([0.3, 0.1, 0.9], 3).tolist() == [0, 1, 2]


def test_continuous_rewards_by_hand():
    # [0, 0.1, 0.5, 0.9, 1.0], m = 2: the extremes 0 and 1 (variance 0.25)
    assert pods_select([0.5, 1.0, 0.0, 0.1, 0.9], 2).tolist() == [1, 2]
    # m = 3 from [0, 0, 10]: {0, 0, 10} beats anything else
    assert pods_select([0, 10, 0, 1], 3).tolist() == [0, 1, 2]


@pytest.mark.parametrize("seed", range(40))
def test_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 10))
    m = int(rng.integers(1, n + 1))
    r = rng.integers(0, 2, n).astype(float) if seed % 2 else np.round(rng.random(n), 2)
    best = max(np.var(r[list(s)]) for s in itertools.combinations(range(n), m))
    idx = pods_select(r, m)
    assert len(set(idx.tolist())) == m
    assert np.var(r[idx]) == pytest.approx(best, abs=1e-12)


def test_in_a_loop_trains_m_of_n_and_keeps_the_signal():
    alloc = allocators.get("pods")(setting(m=4), keep_fraction=0.5)     # the earlier m = n/2
    assert (alloc.n, alloc.m) == (8, 4)
    loop = Loop(alloc, ScriptedPool(100), lambda pid, i: float(i < pid % 8))
    rows, groups, rounds = loop.step(0)
    assert rounds == 1 and len(rows) == 4 * 8            # every generated row is in the step
    for g in groups:
        assert len(g) == 4
        correct = g[0].pid % 8               # rows 0..correct-1 of 8 are right
        # as balanced as the group allows: 2 right + 2 wrong unless one kind is short
        assert sum(r.reward for r in g) == min(correct, max(2, 4 - (8 - correct)))
    # 0 < p < 1 groups stay mixed after selection
    assert alloc.step_metrics["mixed_groups_after_selection"] == alloc.step_metrics["mixed_groups"]
    assert alloc.step_metrics["rows_not_trained"] == 16


def test_released_ratio_is_the_default_and_half_an_option():
    pods = allocators.get("pods")
    assert (lambda a: (a.n, a.m))(pods(setting())) == (8, 2)                   # m = n/4
    assert (lambda a: a.m)(pods(setting(), rollouts_per_prompt=64)) == 16       # GSM8K 64 -> 16
    assert (lambda a: a.m)(pods(setting(), rollouts_per_prompt=32)) == 8        # MATH 32 -> 8
    assert (lambda a: (a.n, a.m))(pods(setting(), keep_fraction=0.5)) == (8, 4)


def test_budget_scaling_and_overrides():
    assert (lambda a: (a.n, a.m))(allocators.get("pods")(setting(b=0.5))) == (4, 2)
    a = allocators.get("pods")(setting(), rollouts_per_prompt=32, train_per_prompt=8)
    assert (a.n, a.m) == (32, 8)
    with pytest.raises(ValueError):
        allocators.get("pods")(setting(b=0.125))           # n = 1 < m = 2
    with pytest.raises(ValueError):
        allocators.get("pods")(setting(), rule="max_reward")


def test_random_rule_is_seeded_and_sized():
    out = []
    for _ in range(2):
        alloc = allocators.get("pods")(setting(), rule="random")
        # row i has i + 1 tokens, so a row's length names it
        loop = Loop(alloc, ScriptedPool(100), lambda pid, i: float(i % 3 == 0),
                    length=lambda pid, i: i + 1)
        _, groups, _ = loop.step(0)
        out.append([[r.n_tokens for r in g] for g in groups])
        assert all(len(g) == 2 for g in groups)                          # m = 8/4
    assert out[0] == out[1]
