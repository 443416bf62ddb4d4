"""DAPO dynamic sampling: the filter, overlong shaping, refill sizing, and the multi-round control
flow driven by a scripted stand-in for the shared loop (no model)."""
from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import allocators
from allocators.base import FollowUpContext, PromptInfo, PromptStats, Rollout, Setting, StepBudget
from allocators.dapo import (VERIFIER_REWARD_FLAG, mixed_groups, overlong_penalty, refill_size,
                             resolve_cache_len)


from tests.scripted_loop import Loop, ScriptedPool  # noqa: E402


def half_mixed(pid: int, i: int) -> float:
    """Even prompts give mixed groups (alternating rewards), odd prompts are always solved."""
    return float(i % 2) if pid % 2 == 0 else 1.0


def setting(m=8, g=8, b=1.0, max_len=128):
    return Setting(prompts_per_step=m, group_size=g, budget_fraction=b, max_response_tokens=max_len,
                   steps=10, seed=0, pool_size=0)


def dapo(**options):
    return allocators.get("dapo")(setting(), **options)


# -- the filter -------------------------------------------------------------------------------
def test_mixed_groups_hand_cases():
    groups = [np.array([0.0, 1.0]), np.array([1.0, 1.0, 1.0]), np.array([0.0, 0.0]),
              np.array([0.5, 0.5 + 1e-7]), np.array([0.5, 0.5 + 1e-3]), np.array([1.0]),
              np.array([])]
    assert mixed_groups(groups).tolist() == [True, False, False, False, True, False, False]
    assert mixed_groups(groups, tol=1e-2).tolist() == [True, False, False, False, False, False,
                                                       False]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.floats(-2, 2), min_size=0, max_size=6), min_size=0, max_size=8),
       st.sampled_from([0.0, 1e-6, 0.1]))
def test_mixed_groups_is_spread_above_tolerance(groups, tol):
    arrays = [np.array(g, dtype=np.float64) for g in groups]
    expected = [len(a) > 0 and float(a.max() - a.min()) > tol for a in arrays]
    assert mixed_groups(arrays, tol).tolist() == expected


# -- overlong shaping ---------------------------------------------------------------------------
def test_overlong_penalty_values():
    # L_max = 128, L_cache = round(128/6) = 21: free up to 107 tokens, then -1/21 per token
    assert resolve_cache_len(128, 1 / 6, None) == 21
    assert resolve_cache_len(3072, 1 / 6, None) == 512
    assert resolve_cache_len(128, 1 / 6, 40) == 40
    assert resolve_cache_len(128, 1 / 6, 500) == 128
    assert overlong_penalty(50, 128, 21) == 0.0
    assert overlong_penalty(107, 128, 21) == 0.0
    assert overlong_penalty(108, 128, 21) == pytest.approx(-1 / 21)
    assert overlong_penalty(118, 128, 21) == pytest.approx(-11 / 21)
    assert overlong_penalty(128, 128, 21) == pytest.approx(-1.0)
    assert overlong_penalty(200, 128, 21) == -1.0
    np.testing.assert_allclose(overlong_penalty(np.array([0, 108, 128]), 128, 21),
                               [0.0, -1 / 21, -1.0])
    with pytest.raises(ValueError):
        overlong_penalty(10, 128, 0)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 4096), st.integers(0, 5000), st.floats(0.01, 1.0))
def test_overlong_penalty_bounded_and_monotone(max_len, length, fraction):
    cache = resolve_cache_len(max_len, fraction, None)
    assert 1 <= cache <= max_len
    here, longer = overlong_penalty(length, max_len, cache), overlong_penalty(length + 1, max_len,
                                                                              cache)
    assert -1.0 <= longer <= here <= 0.0


# -- refill sizing -------------------------------------------------------------------------------
def test_refill_size_hand_cases():
    assert refill_size(4, kept=4, generated=8, cap=24) == 8          # keep rate 1/2 -> 2x
    assert refill_size(3, kept=1, generated=4, cap=24) == 12
    assert refill_size(3, kept=1, generated=4, headroom=1.25, cap=24) == 15
    assert refill_size(3, kept=1, generated=40, cap=24) == 24        # capped
    assert refill_size(30, kept=1, generated=40, cap=24) == 30       # never below the deficit
    assert refill_size(5, kept=0, generated=8, cap=24) == 24         # unknown keep rate -> cap
    assert refill_size(0, kept=3, generated=8, cap=24) == 0


@settings(max_examples=80, deadline=None)
@given(st.integers(0, 500), st.integers(0, 500), st.integers(0, 500), st.integers(1, 2000))
def test_refill_size_bounds(deficit, kept, extra, cap):
    generated = kept + extra
    size = refill_size(deficit, kept, generated, cap=cap)
    if deficit <= 0:
        assert size == 0
        return
    assert deficit <= size <= max(cap, deficit)
    if kept > 0:
        assert size == min(max(math.ceil(deficit * generated / kept), deficit), max(cap, deficit))


# -- the step -----------------------------------------------------------------------------------
def test_refills_until_m_mixed_groups():
    loop = Loop(dapo(refill_headroom=1.0), ScriptedPool(1000), half_mixed)
    rows, groups, rounds = loop.step(0)
    # round 0: 8 candidates -> 4 mixed; keep rate 1/2 -> refill 8 -> 4 more mixed; full after 2
    assert rounds == 2
    assert len(rows) == 16 * 8
    assert len(groups) == 8
    assert all(len(g) == 8 and len({r.reward for r in g}) == 2 for g in groups)
    assert [g[0].pid for g in groups] == list(range(0, 16, 2))
    # default headroom 1.25: refill ceil(4 * 2 * 1.25) = 10 candidates, 5 mixed, 4 of them train
    loop = Loop(dapo(), ScriptedPool(1000), half_mixed)
    rows, groups, rounds = loop.step(0)
    assert rounds == 2 and len(rows) == 18 * 8
    assert [g[0].pid for g in groups] == list(range(0, 16, 2))


def test_keeps_first_m_mixed_in_generation_order():
    # all prompts mixed except the first 3 (solved): round 0 gives 5 mixed, refill of
    # ceil(3 * 8/5) = 5 gives 5 more mixed, only the first 3 of them train
    loop = Loop(dapo(refill_headroom=1.0), ScriptedPool(1000),
                lambda pid, i: 1.0 if pid < 3 else float(i % 2))
    rows, groups, rounds = loop.step(0)
    assert rounds == 2 and len(rows) == 13 * 8
    assert [g[0].pid for g in groups] == [3, 4, 5, 6, 7, 8, 9, 10]


def test_stops_at_round_limit_and_trains_on_what_exists():
    one_in_eight = lambda pid, i: float(i % 2) if pid == 0 else 0.0
    alloc = dapo(max_rounds=3)
    loop = Loop(alloc, ScriptedPool(10_000), one_in_eight)
    rows, groups, rounds = loop.step(0)
    # round 0: 8 prompts, 1 mixed; then 2 refills of the cap 3*8 = 24 (keep rate 1/8 -> 56 > 24)
    assert rounds == 3
    assert len(rows) == (8 + 24 + 24) * 8
    assert [g[0].pid for g in groups] == [0]
    # the loop's own limit also stops it
    loop = Loop(dapo(), ScriptedPool(10_000), lambda pid, i: 0.0, max_rounds=4)
    assert loop.step(0)[2] == 4


def test_fixed_refill_batch_draws_full_batches():
    alloc = dapo(oversample=3.0, refill_batch="fixed")
    assert alloc.candidates_per_step() == 24
    loop = Loop(alloc, ScriptedPool(10_000), lambda pid, i: float(i % 2) if pid % 8 == 0 else 1.0)
    rows, groups, rounds = loop.step(0)
    # 3 mixed per 24 candidates -> rounds of 24 until 8 mixed: 3 rounds, 9 mixed, 8 kept
    assert rounds == 3 and len(rows) == 72 * 8 and len(groups) == 8


def test_no_refill_is_duets_comparator():
    loop = Loop(dapo(refill=False), ScriptedPool(1000), half_mixed)
    rows, groups, rounds = loop.step(0)
    assert rounds == 1 and len(groups) == 8          # zero-variance groups stay, no gradient
    assert sum(len({r.reward for r in g}) == 1 for g in groups) == 4


def test_overlong_shaping_moves_only_returned_rewards():
    length = lambda pid, i: 118 if i == 0 else 10   # row 0 of each group is in the cache zone
    alloc = dapo(overlong=True)
    loop = Loop(alloc, ScriptedPool(1000), half_mixed, length=length)
    rows, groups, _ = loop.step(0)
    shaped = [r for g in groups for r in g]
    first = [r for r in shaped if r.n_tokens == 118]
    assert len(first) == 8
    assert all(r.flags[VERIFIER_REWARD_FLAG] == 0.0 for r in first)
    assert all(r.reward == pytest.approx(-11 / 21) for r in first)
    assert all(r.reward == r.flags[VERIFIER_REWARD_FLAG] for r in shaped if r.n_tokens == 10)
    # unreturned (filtered) rows keep their verifier reward untouched
    returned = {id(r) for r in shaped}
    assert all(VERIFIER_REWARD_FLAG not in r.flags for r in rows if id(r) not in returned)
    again = alloc.select(0, rows)                  # shaping is idempotent
    assert [r.reward for g in again for r in g] == [r.reward for r in shaped]


def test_filter_uses_verifier_reward_not_shaped():
    # every group all-correct; shaping would create spread but the groups must still be dropped
    alloc = dapo(overlong=True, max_rounds=1)
    loop = Loop(alloc, ScriptedPool(100), lambda pid, i: 1.0, length=lambda pid, i: 120 - i)
    assert loop.step(0)[1] == []


def test_rejects_budget_below_two_rollouts():
    with pytest.raises(ValueError):
        allocators.get("dapo")(setting(g=8, b=0.125))
    assert allocators.get("dapo")(setting(g=8, b=0.5)).group_size == 4
    with pytest.raises(ValueError):
        dapo(nonsense=1)


def test_pickle_round_trip_mid_step():
    alloc = dapo(overlong=True)
    loop = Loop(alloc, ScriptedPool(1000), half_mixed)
    loop.step(0)
    budget = StepBudget(rollouts=64, tokens=0.0, mean_length=4.0)
    rows = loop.generate(alloc.plan(1, loop.pool.draw(8), loop.stats, budget), 1, 0)
    clone = pickle.loads(pickle.dumps(alloc))
    ctx = FollowUpContext(ScriptedPool(1000).draw, loop.stats, budget, 10)
    ctx_clone = FollowUpContext(ScriptedPool(1000).draw, loop.stats, budget, 10)
    more, more_clone = alloc.follow_up(1, 1, rows, ctx), clone.follow_up(1, 1, rows, ctx_clone)
    assert [(r.pid, r.n) for r in more] == [(r.pid, r.n) for r in more_clone]
    assert clone.resolved_options() == alloc.resolved_options()


def test_refill_never_looks_at_more_than_one_pool_epoch():
    alloc = dapo(max_rounds=2)
    alloc.attach_pool([PromptInfo(pid=i, text="", token_ids=()) for i in range(20)])
    loop = Loop(alloc, ScriptedPool(20), lambda pid, i: float(i % 2) if pid == 0 else 0.0)
    rows, groups, rounds = loop.step(0)
    # round 0: 8 prompts, 1 mixed -> adaptive refill wants 24 but the pool holds 20
    assert rounds == 2 and len(rows) == (8 + 20) * 8


def test_row_list_copies_and_observe_reset():
    from allocators.dapo import RowCursor
    cursor = RowCursor()
    rows = Loop(dapo(), ScriptedPool(100), half_mixed).generate(
        [allocators.base.Request(pid, 2) for pid in range(3)], 0, 0)
    assert cursor.new_rows(rows[:4]) == (rows[:4], False)
    assert cursor.new_rows(rows) == (rows[4:], False)
    copied = pickle.loads(pickle.dumps(rows))
    assert cursor.new_rows(copied) == (copied, True)          # not an extension: restart
    alloc = dapo()
    loop = Loop(alloc, ScriptedPool(1000), half_mixed)
    rows, groups, _ = loop.step(0)
    assert alloc.step_groups.groups == []                     # observe dropped the step's rows
    alloc.plan(1, [], loop.stats, None)
    alloc.step_groups.update(rows[:16])
    again = alloc.select(0, pickle.loads(pickle.dumps(rows)))  # not an extension: rebuilt
    assert len(alloc.step_groups.groups) == len(rows) // 8
    assert [g[0].pid for g in again] == [g[0].pid for g in groups]
