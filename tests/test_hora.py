"""HORA: the hit utility on hand-computed posteriors, the greedy against brute force, budgets
summing exactly inside the bounds, the posterior read from the prompt statistics."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import allocators
from allocators.base import PromptInfo, PromptStats, Setting, StepBudget
from allocators.hora import hit_increments, hit_utility, hora_counts


def setting(m=4, g=8, b=1.0):
    return Setting(prompts_per_step=m, group_size=g, budget_fraction=b, max_response_tokens=16,
                   steps=3, seed=0)


def test_hit_utility_on_hand_computed_posteriors():
    # uniform prior: P(no hit in n) = int (1-p)^n dp = 1/(n+1)
    assert hit_utility(1, 1, 3) == pytest.approx(3 / 4, rel=1e-12)
    # Beta(2, 1): E[(1-p)^n] = 2 / ((n+1)(n+2)); n = 1 is the posterior mean 2/3
    assert hit_utility(2, 1, 1) == pytest.approx(2 / 3, rel=1e-12)
    assert hit_utility(2, 1, 2) == pytest.approx(5 / 6, rel=1e-12)
    assert hit_utility(3, 5, 0) == pytest.approx(0.0, abs=1e-15)


@settings(max_examples=60, deadline=None)
@given(a=st.floats(0.2, 40), b=st.floats(0.2, 40), start=st.integers(0, 5),
       width=st.integers(1, 20))
def test_increments_are_the_differences_and_fall(a, b, start, width):
    d = hit_increments([a], [b], start, width)[:, 0]
    h = hit_utility(a, b, np.arange(start, start + width + 1))
    np.testing.assert_allclose(d, np.diff(h), rtol=1e-7, atol=1e-13)
    assert np.all(np.diff(d) < 0), "each H_i must be strictly concave"


def brute_force(alpha, beta, total, n_min, n_max):
    best = -np.inf
    for counts in itertools.product(range(n_min, n_max + 1), repeat=len(alpha)):
        if sum(counts) == total:
            best = max(best, float(hit_utility(alpha, beta, counts).sum()))
    return best


@settings(max_examples=60, deadline=None)
@given(post=st.lists(st.tuples(st.integers(1, 12), st.integers(1, 12)), min_size=1, max_size=4),
       n_min=st.integers(1, 2), n_max=st.integers(2, 6), data=st.data())
def test_greedy_matches_brute_force(post, n_min, n_max, data):
    alpha, beta = np.array(post, dtype=float).T
    n_max = max(n_max, n_min)
    total = data.draw(st.integers(len(post) * n_min, len(post) * n_max))
    counts = hora_counts(alpha, beta, total, n_min=n_min, n_max=n_max)
    assert counts.sum() == total and counts.min() >= n_min and counts.max() <= n_max
    assert hit_utility(alpha, beta, counts).sum() == pytest.approx(
        brute_force(alpha, beta, total, n_min, n_max), rel=1e-12)


def test_saturated_prompt_gets_little_unsolved_prompt_gets_more():
    # Beta(9, 1) vs Beta(1, 9), n_min = 1, 6 rollouts.  Increments d(k) = B(a+1, b+k)/B(a, b):
    # saturated 0.9, 9/110, 18/1320, ...; unsolved 0.1, 9/110, 90/1320, 990/17160, ...
    # floors take d(0) of each; the 4 largest of the rest: both 9/110, 90/1320, 990/17160
    assert hora_counts([9, 1], [1, 9], 6, n_min=1, n_max=6).tolist() == [2, 4]


def test_unseen_prompts_get_the_most_even_split():
    assert hora_counts([1] * 4, [1] * 4, 32, n_min=2, n_max=26).tolist() == [8, 8, 8, 8]
    assert hora_counts([1] * 4, [1] * 4, 10, n_min=2, n_max=4).tolist() == [3, 3, 2, 2]


def test_bounds_that_cannot_hold_fail_loudly():
    with pytest.raises(ValueError, match="below"):
        hora_counts([1, 1], [1, 1], 3, n_min=2, n_max=8)
    with pytest.raises(ValueError, match="exceeds"):
        hora_counts([1, 1], [1, 1], 20, n_min=2, n_max=8)


def test_allocator_reads_the_posterior_from_the_prompt_statistics():
    from allocators.base import Rollout
    alloc = allocators.get("hora")(setting(m=2, g=4))          # C = 8, n_max = 6
    stats = PromptStats()

    def group(pid, rewards):
        return [Rollout(pid=pid, group=pid, tag="main", step=0, round=0,
                        tokens=np.zeros(3, np.int64), logprobs=np.zeros(3, np.float32),
                        finish="eos", reward=r) for r in rewards]

    # prompt 0 solved 8/8 -> Beta(9, 1); prompt 1 failed 8/8 -> Beta(1, 9)
    stats.update(0, [group(0, [1.0] * 8), group(1, [0.0] * 8)])
    requests = alloc.plan(1, [PromptInfo(0, "", ()), PromptInfo(1, "", ())], stats,
                          StepBudget(rollouts=8, tokens=0.0, mean_length=3.0))
    expected = hora_counts([9, 1], [1, 9], 8, n_min=2, n_max=6)
    assert [r.n for r in requests] == expected.tolist() and sum(expected) == 8
    assert expected[1] > expected[0]
    assert alloc.resolved_options()["n_max"] == 6
