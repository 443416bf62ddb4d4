"""MoPPS: Thompson selection on hand-made posteriors, the streaming Beta update with decay, and
the allocator in a scripted loop (no model): it spends exactly GRPO's rollouts and learns to pick
prompts whose pass rate is near 0.5."""
from __future__ import annotations

import numpy as np
import pytest

import allocators
from allocators.base import PromptInfo, Setting
from allocators.mopps import beta_update, mopps_select
from tests.scripted_loop import Loop, ScriptedPool


def setting(m=4, g=8, b=1.0, seed=0):
    return Setting(prompts_per_step=m, group_size=g, budget_fraction=b, max_response_tokens=64,
                   steps=10, seed=seed, pool_size=0)


def test_topk_picks_draws_nearest_the_target():
    # near-point-mass posteriors: draws sit at the means 0.05, 0.45, 0.6, 0.95, 0.52
    means = np.array([0.05, 0.45, 0.6, 0.95, 0.52])
    alpha, beta = means * 1e6, (1 - means) * 1e6
    chosen, theta = mopps_select(alpha, beta, 3, np.random.default_rng(0))
    assert np.allclose(theta, means, atol=1e-2)
    assert chosen.tolist() == [4, 1, 2]           # |0.02|, |0.05|, |0.1| from 0.5, nearest first


def test_threshold_band_and_its_fallback():
    means = np.array([0.05, 0.45, 0.6, 0.95, 0.52])
    alpha, beta = means * 1e6, (1 - means) * 1e6
    chosen, _ = mopps_select(alpha, beta, 2, np.random.default_rng(1), strategy="threshold")
    assert set(chosen.tolist()) <= {1, 2, 4}       # only draws inside [0.3, 0.7]
    # four wanted, three inside: the fourth is the nearest outside (0.95 is 0.25 away, 0.05 0.25;
    # 0.05 -> distance 0.25, 0.95 -> 0.25: tie, the stable order keeps index 0)
    chosen, _ = mopps_select(alpha, beta, 4, np.random.default_rng(1), strategy="threshold")
    assert sorted(chosen.tolist()) == [0, 1, 2, 4]


def test_selection_is_a_subset_of_the_right_size_and_seeded():
    rng_a, rng_b = np.random.default_rng(7), np.random.default_rng(7)
    a = np.full(50, 1.0)
    for strategy in ("topk", "threshold", "uniform"):
        x, _ = mopps_select(a, a, 10, rng_a, strategy=strategy)
        y, _ = mopps_select(a, a, 10, rng_b, strategy=strategy)
        assert x.tolist() == y.tolist() and len(set(x.tolist())) == 10
    with pytest.raises(ValueError):
        mopps_select(a, a, 51, rng_a)


def test_beta_update_by_hand():
    # no decay: counts add up
    assert beta_update(1.0, 1.0, 3, 8) == (4.0, 6.0)
    # decay 0.5 toward the Beta(1, 1) prior: 0.5*5 + 0.5*1 + 2 = 5, 0.5*3 + 0.5*1 + 6 = 8
    a, b = beta_update(5.0, 3.0, 2, 8, decay=0.5)
    assert (a, b) == (5.0, 8.0)


def pass_rate(pid: int) -> float:
    return (0.0, 1.0, 0.5, 0.125)[pid % 4]


def test_in_a_loop_spends_grpo_rollouts_and_prefers_mixed_prompts():
    alloc = allocators.get("mopps")(setting(m=4), candidate_ratio=4)
    pool = ScriptedPool(64)
    alloc.attach_pool([PromptInfo(pid=i, text="", token_ids=()) for i in range(64)])
    assert alloc.candidates_per_step() == 16
    # deterministic rewards with the prompt's pass rate: i-th rollout correct iff i < 8 * p
    loop = Loop(alloc, pool, lambda pid, i: float(i < 8 * pass_rate(pid)))
    picked = []
    for step in range(40):
        rows, groups, rounds = loop.step(step)
        assert rounds == 1 and len(rows) == 4 * 8 and len(groups) == 4
        picked += [g[0].pid % 4 for g in groups]
    late = np.bincount(picked[-80:], minlength=4)
    # the p = 0.5 class dominates once posteriors have mass; always-0 / always-1 prompts fade out
    assert late[2] > late[0] + late[1]
    assert alloc.alpha and all(a >= 1.0 for a in alloc.alpha.values())


def test_options_validated():
    with pytest.raises(ValueError):
        allocators.get("mopps")(setting(), strategy="nope")
    with pytest.raises(ValueError):
        allocators.get("mopps")(setting(), nonsense=1)
