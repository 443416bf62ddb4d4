"""Reinforce-Ada: exit rules and down-sampling on hand-computed counts, the multi-round loop with
successive elimination (scripted, no model), every round charged, and the advantage function's
global-statistics baseline."""
from __future__ import annotations

import numpy as np
import pytest

import allocators
from allocators.base import Rollout, Setting
from allocators.reinforce_ada import ada_downsample, ada_finished, ada_select
from tests.scripted_loop import Loop, ScriptedPool


def setting(m=4, g=8, b=1.0, seed=0):
    return Setting(prompts_per_step=m, group_size=g, budget_fraction=b, max_response_tokens=64,
                   steps=10, seed=seed, pool_size=0)


def test_exit_rules():
    assert ada_finished(2, 2, 4) and not ada_finished(1, 7, 4) and not ada_finished(5, 1, 4)
    assert ada_finished(1, 2, 3)                      # floor(3/2) = 1 positive, 2 negatives
    assert ada_finished(1, 0, 4, "positive_focused") and not ada_finished(0, 9, 4,
                                                                          "positive_focused")


def test_downsample_counts_by_hand():
    # finished balanced: 2 + 2
    assert ada_downsample(5, 3, 4, finished=True) == (2, 2)
    # finished positive-focused with 1 positive and 7 negatives: 1 + 3
    assert ada_downsample(1, 7, 4, finished=True, choice="positive_focused") == (1, 3)
    # finished positive-focused, negatives short: 2 + 1, then one more positive
    assert ada_downsample(6, 1, 4, finished=True, choice="positive_focused") == (3, 1)
    # unfinished balanced, all wrong after every round: 4 negatives (a zero-variance group)
    assert ada_downsample(0, 32, 4, finished=False) == (0, 4)
    # unfinished balanced, 1 positive: it is kept, negatives fill the rest
    assert ada_downsample(1, 31, 4, finished=False) == (1, 3)
    # unfinished positive-focused, no positive: target 1 positive, none exists -> negatives fill
    assert ada_downsample(0, 8, 4, finished=False, choice="positive_focused") == (0, 4)
    # unfinished with fewer rows than keep: take them all
    assert ada_downsample(0, 3, 4, finished=False) == (0, 3)


def test_select_takes_the_first_rows_of_each_kind_positives_first():
    assert ada_select([0, 1, 0, 1, 1, 0], 4, finished=True).tolist() == [1, 3, 0, 2]


def test_loop_eliminates_resolved_prompts_and_charges_every_round():
    # pid % 4: 0 mixed (alternating), 1 always right, 2 always wrong, 3 right only on row 13
    def reward(pid, i):
        kind = pid % 4
        return (float(i % 2), 1.0, 0.0, float(i == 13))[kind]

    alloc = allocators.get("reinforce-ada")(setting(m=4))
    assert (alloc.round_repeat, alloc.keep) == (8, 4)
    loop = Loop(alloc, ScriptedPool(100), reward)
    rows, groups, rounds = loop.step(0)
    # round 0: pid 0 finishes (4 right, 4 wrong); 1, 2, 3 stay active; the loop's row counter
    # restarts at i = 0 per request, so pid 3 never sees its row 13: all 4 rounds run
    assert rounds == 4
    assert len(rows) == 8 + 3 * 8 * 4
    sizes = {g[0].pid: len(g) for g in groups}
    assert sizes == {0: 4, 1: 4, 2: 4, 3: 4}
    mixed = next(g for g in groups if g[0].pid == 0)
    assert sorted(r.reward for r in mixed) == [0, 0, 1, 1]
    assert all(len(r.baseline_rewards) == 8 for r in mixed)
    stuck = next(g for g in groups if g[0].pid == 2)
    assert len(stuck[0].baseline_rewards) == 32


def test_global_statistics_baseline_in_the_advantage():
    from trainer.grpo import assign_advantages

    def row(reward, pool=None):
        r = Rollout(pid=0, group=0, tag="ada", step=0, round=0, tokens=np.zeros(3, np.int64),
                    logprobs=np.zeros(3, np.float32), finish="eos", reward=reward)
        if pool is not None:
            r.baseline_rewards = pool
        return r

    pool = (1, 0, 0, 0, 0, 0, 0, 1)                   # 2 right of 8 drawn: mean 0.25
    group = [row(1.0, pool), row(1.0, pool), row(0.0, pool), row(0.0, pool)]
    assign_advantages([group], normalize_std=False)
    assert [r.advantage for r in group] == [0.75, 0.75, -0.25, -0.25]
    std = np.std(pool, ddof=1)
    assign_advantages([group], normalize_std=True)
    assert group[0].advantage == pytest.approx(0.75 / (std + 1e-6))
    local = [row(1.0), row(1.0), row(0.0), row(0.0)]
    assign_advantages([local], normalize_std=False)
    assert [r.advantage for r in local] == [0.5, 0.5, -0.5, -0.5]


def test_options_and_budget_scaling():
    a = allocators.get("reinforce-ada")(setting(b=0.5))
    assert (a.round_repeat, a.keep) == (4, 2)
    a = allocators.get("reinforce-ada")(setting(b=0.25))
    assert (a.round_repeat, a.keep) == (2, 2)
    with pytest.raises(ValueError):
        allocators.get("reinforce-ada")(setting(), choice="greedy")
    a = allocators.get("reinforce-ada")(setting(m=2), global_stat=False)
    _, groups, _ = Loop(a, ScriptedPool(10), lambda pid, i: float(i % 2)).step(0)
    assert all(r.baseline_rewards is None for g in groups for r in g)
