"""GRESO: skip probability, adaptation of the keep bases, streak bookkeeping, epoch counting, and
the skip-then-refill control flow driven by a scripted stand-in for the shared loop (no model)."""
from __future__ import annotations

import copy
import math
import pickle

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import allocators
from allocators.base import FollowUpContext, PromptInfo, PromptStats, Rollout, Setting, StepBudget
from allocators.greso import (ALL_CORRECT, ALL_WRONG, MIXED, EpochTracker, extend_streak,
                              greso_adapt, greso_skip_probability, visit_kind)


from tests.scripted_loop import Loop, ScriptedPool  # noqa: E402


def setting(m=8, g=8, b=1.0, seed=0):
    return Setting(prompts_per_step=m, group_size=g, budget_fraction=b, max_response_tokens=64,
                   steps=10, seed=seed, pool_size=0)


def greso(m=8, **options):
    return allocators.get("greso")(setting(m=m), **options)


# -- pure functions -------------------------------------------------------------------------------
def test_skip_probability_after_streaks():
    assert greso_skip_probability(0, 0.5) == 0.0
    assert greso_skip_probability(1, 0.5) == pytest.approx(0.5)
    assert greso_skip_probability(3, 0.5) == pytest.approx(0.875)
    assert greso_skip_probability(2, 0.9) == pytest.approx(0.19)
    assert greso_skip_probability(7, 0.5) == pytest.approx(0.99)     # 0.5^7 < 0.01 keep floor
    assert greso_skip_probability(100, 0.95) == pytest.approx(0.99)
    with pytest.raises(ValueError):
        greso_skip_probability(-1, 0.5)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 60), st.floats(0.05, 0.95))
def test_skip_probability_bounded_and_growing(streak, p):
    here, next_ = greso_skip_probability(streak, p), greso_skip_probability(streak + 1, p)
    assert 0.0 <= here <= next_ <= 0.99 + 1e-12


def test_adapt_moves_toward_targets():
    # targets: easy 0.25/3 = 0.0833, hard 2*0.25/3 = 0.1667
    assert greso_adapt(0.5, 0.5, 0.10, 0.10) == pytest.approx((0.49, 0.51))
    assert greso_adapt(0.5, 0.5, 0.05, 0.30) == pytest.approx((0.51, 0.49))
    assert greso_adapt(0.5, 0.5, 0.25 / 3, 0.5 / 3) == pytest.approx((0.49, 0.49))   # >= target
    assert greso_adapt(0.5, 0.5, 0.2, 0.2, target=0.9) == pytest.approx((0.51, 0.51))
    assert greso_adapt(0.5, 0.5, 0.2, 0.2, step=0.1) == pytest.approx((0.4, 0.4))


def test_adapt_clamps():
    assert greso_adapt(0.05, 0.951, 1.0, 0.0) == pytest.approx((0.05, 0.95))
    assert greso_adapt(0.955, 0.052, 0.0, 1.0) == pytest.approx((0.95, 0.05))
    assert greso_adapt(0.5, 0.5, 1.0, 1.0, lo=0.495) == pytest.approx((0.495, 0.495))


def test_visit_kind_and_streaks():
    assert visit_kind(np.array([1.0, 1.0])) == ALL_CORRECT
    assert visit_kind(np.array([0.0, 0.0, 0.0])) == ALL_WRONG
    assert visit_kind(np.array([1.0, 0.0])) == MIXED
    assert visit_kind(np.array([0.99, 1.0])) == MIXED              # exact test, not mean >= 0.98
    streak = 0
    for kind, expected in [(ALL_CORRECT, 1), (ALL_CORRECT, 2), (ALL_WRONG, -1), (ALL_WRONG, -2),
                           (ALL_WRONG, -3), (MIXED, 0), (ALL_CORRECT, 1)]:
        streak = extend_streak(streak, kind)
        assert streak == expected


def test_epoch_tracker_counts_repeats():
    tracker = EpochTracker()
    starts = [tracker.advance(pid) for pid in [3, 1, 2, 0, 2, 3, 0, 1, 1]]
    assert starts == [False, False, False, False, True, False, False, False, True]
    assert tracker.epoch == 2


# -- the step ------------------------------------------------------------------------------------
def test_skips_follow_streaks_and_the_seeded_generator():
    size = 64
    alloc = greso(m=size)
    loop = Loop(alloc, ScriptedPool(size), lambda pid, i: 1.0 if pid < 32 else float(i % 2),
                max_rounds=1)
    rows, groups, rounds = loop.step(0)          # epoch 0: no history, nothing skipped
    assert len({r.group for r in rows[: size * 8]}) == size
    assert alloc.streaks == {pid: (1 if pid < 32 else 0) for pid in range(size)}
    # epoch 1: easy prompts (streak 1) skipped with probability 0.5, the rest never
    expected_draws = copy.deepcopy(alloc.rng).random(size)
    budget = StepBudget(rollouts=size * 8, tokens=0.0, mean_length=4.0)
    requests = alloc.plan(1, loop.pool.draw(size), loop.stats, budget)
    expected = [pid for pid in range(size) if pid >= 32 or expected_draws[pid] >= 0.5]
    assert [r.pid for r in requests] == expected
    assert 0 < alloc.step_metrics["skipped_easy"] < 32
    assert alloc.step_metrics["skipped_hard"] == 0


def test_trace_records_every_generated_group_not_just_trained():
    alloc = greso()
    loop = Loop(alloc, ScriptedPool(1000), lambda pid, i: 0.0 if pid % 2 else float(i % 2))
    rows, groups, _ = loop.step(0)
    assert all(len({r.reward for r in g}) == 2 for g in groups)
    generated = {r.pid for r in rows}
    assert set(alloc.streaks) == generated
    assert all(alloc.streaks[pid] == (-1 if pid % 2 else 0) for pid in generated)
    assert loop.stats.n_visits(1) == 1            # the shared store records dropped groups too


def test_refill_applies_skip_rule_to_new_candidates():
    size = 40
    alloc = greso(m=8)
    reward = lambda pid, i: 1.0 if pid % 2 else float(i % 2)
    pool = ScriptedPool(size)
    loop = Loop(alloc, pool, reward)
    for step in range(5):                          # 5 steps x 16 prompts = 2 epochs of history
        loop.step(step)
    assert alloc.epochs.epoch >= 1
    refill_drawn = refill_generated = 0
    for step in range(5, 12):
        streak_before = dict(alloc.streaks)
        first = pool.cursor
        rows, groups, rounds = loop.step(step)
        drawn = [(first + i) % size for i in range(pool.cursor - first)]
        skipped = list(drawn)
        for pid in (g[0].pid for g in _groups(rows)):
            skipped.remove(pid)
        assert len(groups) == 8
        assert all(streak_before[pid] > 0 for pid in skipped)
        assert alloc.step_metrics["skipped_easy"] == len(skipped)
        refill_drawn += len(drawn) - 8
        refill_generated += len({r.group for r in rows if r.round >= 1})
    assert refill_generated < refill_drawn         # refill candidates were skipped too


def _groups(rows):
    seen = {}
    for r in rows:
        seen.setdefault(r.group, []).append(r)
    return list(seen.values())


def test_adaptation_only_from_second_epoch():
    size = 16
    alloc = greso(m=size)
    loop = Loop(alloc, ScriptedPool(size), lambda pid, i: 1.0 if pid < 8 else float(i % 2),
                max_rounds=1)
    loop.step(0)                                   # epoch 0 (ratio easy 0.5 >= target)
    assert (alloc.p_easy, alloc.p_hard) == (0.5, 0.5)
    loop.step(1)                                   # epoch 1: easy ratio > 1/12 -> p_easy down
    assert alloc.epochs.epoch == 1
    assert alloc.p_easy == pytest.approx(0.49)
    assert alloc.p_hard == pytest.approx(0.51)    # no all-wrong groups: below 1/6 -> up
    assert alloc.step_metrics["p_easy"] == pytest.approx(0.49)


def test_no_adaptation_when_nothing_generated():
    alloc = greso(m=4)
    alloc.epochs.epoch = 3
    alloc.select(0, [])
    assert (alloc.p_easy, alloc.p_hard) == (0.5, 0.5)


def test_draw_limit_bounds_a_refill_round():
    alloc = greso(m=4, draw_limit=2.0)
    alloc.streaks = {pid: 40 for pid in range(1000)}      # everything skipped with prob 0.99
    budget = StepBudget(rollouts=32, tokens=0.0, mean_length=4.0)
    pool = ScriptedPool(1000)
    drawn = []
    ctx = FollowUpContext(lambda k: drawn.append(k) or pool.draw(k), PromptStats(), budget, 10)
    alloc.plan(0, pool.draw(4), PromptStats(), budget)
    alloc.follow_up(0, 1, [], ctx)
    assert sum(drawn) <= 2 * 12                           # wanted = cap 3*4 with no keep rate yet


def test_options_validated():
    with pytest.raises(ValueError):
        greso(nonsense=True)
    with pytest.raises(ValueError):
        greso(p_min=0.9, p_max=0.1)
    with pytest.raises(ValueError, match=r"greso.p_min = 'x': expected a number in \(0, 1\]"):
        greso(p_min="x")
    assert greso(refill_headroom=2).opts.refill_headroom == 2.0    # a DAPO option, as a float


def test_pickle_round_trip_mid_run():
    alloc = greso(m=8)
    loop = Loop(alloc, ScriptedPool(24), lambda pid, i: 1.0 if pid % 3 else float(i % 2))
    for step in range(4):
        loop.step(step)
    clone = pickle.loads(pickle.dumps(alloc))
    assert clone.streaks == alloc.streaks and clone.p_easy == alloc.p_easy
    budget = StepBudget(rollouts=64, tokens=0.0, mean_length=4.0)
    cands = ScriptedPool(24).draw(8)
    assert ([r.pid for r in clone.plan(4, cands, PromptStats(), budget)]
            == [r.pid for r in alloc.plan(4, cands, PromptStats(), budget)])


def test_round_zero_candidates_follow_the_admission_rate():
    alloc = greso(m=10, draw_limit=4.0)
    assert alloc.candidates_per_step() == 10
    alloc.admit_rate = 0.5
    assert alloc.candidates_per_step() == 20
    alloc.admit_rate = 0.01
    assert alloc.candidates_per_step() == 40                  # at most draw_limit x the batch
    alloc.attach_pool([PromptInfo(pid=i, text="", token_ids=()) for i in range(30)])
    assert alloc.candidates_per_step() == 30                  # never more than one pool epoch
    # measured over a step: half the candidates are easy with a long streak -> ~half admitted
    alloc = greso(m=16)
    alloc.streaks = {pid: 40 for pid in range(0, 1000, 2)}
    loop = Loop(alloc, ScriptedPool(1000), lambda pid, i: float(i % 2))
    loop.step(0)
    metrics = alloc.step_metrics
    assert alloc.admit_rate == metrics["admitted"] / metrics["considered"]
    assert 0.4 < alloc.admit_rate < 0.6
    assert alloc.candidates_per_step() == math.ceil(16 / alloc.admit_rate)
