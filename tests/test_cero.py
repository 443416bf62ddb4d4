"""CERO: the Bernoulli value and the saturating utility on hand-computed inputs, the per-step
solver against brute force, the spend bounds, and the run's total: budget moves between steps
and the steps' rollouts sum to T*C exactly, resumed == uninterrupted."""
from __future__ import annotations

import itertools
import math
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import allocators
from allocators.base import Setting
from allocators.cero import (bernoulli_value, cero_spend, price_for, spend_bounds,
                             utility_increments)
from allocators.hora import concave_counts
from tests.scripted_loop import Loop, ScriptedPool


def setting(m=4, g=8, b=1.0, steps=6):
    return Setting(prompts_per_step=m, group_size=g, budget_fraction=b, max_response_tokens=16,
                   steps=steps, seed=0)


def utility(value, n, tau):
    return value * (1.0 - np.exp(-np.asarray(n, dtype=float) / tau))


def test_value_and_increments_on_hand_computed_inputs():
    assert bernoulli_value(1, 1) == pytest.approx(1 / 6)          # E[p(1-p)] under U(0, 1)
    assert bernoulli_value(2, 3) == pytest.approx(6 / 30)         # ab / ((a+b)(a+b+1))
    # u(N) = v (1 - e^(-N/tau)); increment k from N: v e^(-(N+k)/tau) (1 - e^(-1/tau))
    d = utility_increments([0.2], [3.0], 2.0, 1, 2)[:, 0]
    assert d == pytest.approx([0.2 * (math.exp(-2.0) - math.exp(-2.5)),
                               0.2 * (math.exp(-2.5) - math.exp(-3.0))])


@settings(max_examples=60, deadline=None)
@given(prompts=st.lists(st.tuples(st.floats(0.01, 0.25), st.integers(0, 30)), min_size=1,
                        max_size=4),
       tau=st.floats(1.0, 16.0), n_min=st.integers(0, 2), width=st.integers(1, 4), data=st.data())
def test_step_solver_matches_brute_force(prompts, tau, n_min, width, data):
    value, cumulative = (np.array(x, dtype=float) for x in zip(*prompts))
    spend = data.draw(st.integers(len(prompts) * n_min, len(prompts) * (n_min + width)))
    ladder = utility_increments(value, cumulative, tau, n_min, width)
    counts = concave_counts(ladder, n_min, spend)
    assert counts.sum() == spend and counts.min() >= n_min and counts.max() <= n_min + width

    def gain(x):
        return float(np.sum(utility(value, cumulative + x, tau) - utility(value, cumulative, tau)))

    best = max(gain(np.array(x)) for x in itertools.product(range(n_min, n_min + width + 1),
                                                             repeat=len(prompts))
               if sum(x) == spend)
    assert gain(counts) == pytest.approx(best, rel=1e-12, abs=1e-15)


def test_spend_at_a_price_and_the_price_that_buys_a_spend():
    ladder = np.array([[0.5, 0.3], [0.2, 0.1]])             # (k, prompt)
    assert cero_spend(ladder, 0.25, 2, 2, 0, 100) == 4 + 2      # 0.5 and 0.3 are worth it
    assert cero_spend(ladder, 0.25, 2, 2, 0, 5) == 5            # clipped to hi
    assert cero_spend(ladder, 0.9, 2, 2, 5, 8) == 5             # clipped to lo
    assert price_for(ladder, 3) == pytest.approx(0.15)          # between 0.2 and 0.1
    assert cero_spend(ladder, price_for(ladder, 3), 2, 2, 0, 100) == 4 + 3


def test_spend_bounds_keep_later_steps_feasible():
    # 3 steps of 4 prompts x [2, 10], 96 left: this step may spend 96 - 2*40 = 16 .. 96 - 16
    assert spend_bounds(96, 3, 4, 2, 10, 1000) == (16, 40)
    # a step cap of 35 binds later steps too: at least 96 - 2*35 = 26 now
    assert spend_bounds(96, 3, 4, 2, 10, 35) == (26, 35)
    assert spend_bounds(23, 1, 4, 2, 10, 30) == (23, 23)       # the last step: all that is left
    with pytest.raises(ValueError, match="no feasible spend"):
        spend_bounds(7, 1, 4, 2, 10, 30)


def scripted(alloc, pool=8):
    # prompts below 4 always solved (value falls as evidence piles up), the rest mixed
    return Loop(alloc, ScriptedPool(pool), lambda pid, i: 1.0 if pid < 4 else float(i % 2))


def test_budget_moves_between_steps_and_the_run_total_is_exact():
    s = setting(steps=6)
    alloc = allocators.get("cero")(s)
    loop = scripted(alloc)
    spends = []
    for step in range(s.steps):
        rows, groups, _ = loop.step(step)
        spends.append(len(rows))
        assert 4 * 2 <= len(rows) <= min(4 * alloc.n_max, alloc.step_cap)
    assert sum(spends) == s.steps * s.rollouts_per_step               # T * C exactly
    assert len(set(spends)) > 1, "the price must move budget between steps"
    assert spends[0] == s.rollouts_per_step                           # step 0 calibrates mu_0
    assert alloc.remaining == 0


def test_resumed_equals_uninterrupted():
    s = setting(steps=5)
    first = allocators.get("cero")(s)
    loop = scripted(first)
    for step in range(2):
        loop.step(step)
    resumed = pickle.loads(pickle.dumps(first))
    stats_copy = pickle.loads(pickle.dumps(loop.stats))
    other = scripted(resumed)
    other.stats, other.pool.cursor, other.next_group = stats_copy, loop.pool.cursor, loop.next_group
    for step in range(2, 5):
        a, _, _ = loop.step(step)
        b, _, _ = other.step(step)
        assert [(r.pid, r.reward) for r in a] == [(r.pid, r.reward) for r in b]
    assert first.remaining == resumed.remaining == 0


def test_bad_settings_fail_at_construction():
    with pytest.raises(ValueError, match="below"):
        allocators.get("cero")(setting(g=1), n_min=2)
    with pytest.raises(Exception, match="max_step_ratio"):
        allocators.get("cero")(setting(), max_step_ratio=0.5)
