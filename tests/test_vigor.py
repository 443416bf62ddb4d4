"""VIGOR: the variance ranking on hand-computed groups; in a scripted loop the step's total is
exactly M*m0*(1 + T*alpha*gamma), the boosted groups are the highest-variance ones and each
prompt trains on all its rows; in the real loop every row is charged."""
import pytest

import allocators
from allocators.base import Setting
from allocators.vigor import vigor_boost
from tests.scripted_loop import Loop, ScriptedPool


def setting(m=8, g=8, b=1.0):
    return Setting(prompts_per_step=m, group_size=g, budget_fraction=b, max_response_tokens=64,
                   steps=10, seed=0, pool_size=0)


def test_boost_takes_the_highest_variance_fraction_ties_in_order():
    groups = [[1, 0, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0], [0, 0, 0, 0]]  # var .25 0 .1875 0
    assert vigor_boost(groups, 0.5) == [0, 2]
    assert vigor_boost(groups, 0.75) == [0, 2, 1]                       # round(3) = 3, tie: 1
    assert vigor_boost([[0, 0], [1, 1], [1, 0]], 1.0) == [2, 0, 1]
    assert vigor_boost([[1, 0]] * 5, 0.5) == [0, 1, 2]                 # round_half_up(2.5)


def mixed_first_half(pid, i):
    """Prompts 0..3 of each 8 are mixed (every other row right), 4..7 never right."""
    return float(pid % 8 < 4 and i % 2 == 0)


@pytest.mark.parametrize("b, total, sizes", [(1.0, 64, [12] * 4 + [4] * 4),
                                            (0.5, 32, [6] * 4 + [2] * 4)])
def test_default_budget_is_uniform_grpos_and_the_mixed_groups_get_the_boost(b, total, sizes):
    alloc = allocators.get("vigor")(setting(b=b))
    rows, groups, rounds = Loop(alloc, ScriptedPool(100), mixed_first_half).step(0)
    assert rounds == 2 and len(rows) == total == round(b * 8 * 8)
    assert [len(g) for g in groups] == sizes                            # candidate order
    assert [g[0].pid for g in groups] == list(range(8))
    assert all(len({r.pid for r in g}) == 1 for g in groups)            # one prompt per group
    assert alloc.step_metrics["boosted"] == 4


def test_step_total_is_m0_plus_rounds_times_boosts():
    # T = 2, alpha = 0.5, gamma = 2: m0 = round(8/3) = 3, each round 4 groups get 6 more
    alloc = allocators.get("vigor")(setting(), rounds=2)
    rows, groups, rounds = Loop(alloc, ScriptedPool(100), mixed_first_half).step(0)
    assert (alloc.m0, alloc.extra, rounds) == (3, 6, 3)
    assert len(rows) == 8 * 3 + 2 * 4 * 6 == alloc.step_metrics["planned_rollouts"]
    # alpha = 0.25, gamma = 4 (alpha*gamma = 1): still 8M
    alloc = allocators.get("vigor")(setting(), fraction=0.25, multiplier=4.0)
    rows, _, _ = Loop(alloc, ScriptedPool(100), mixed_first_half).step(0)
    assert (alloc.m0, alloc.extra) == (4, 16) and len(rows) == 64
    # no follow-up round: uniform GRPO's group
    alloc = allocators.get("vigor")(setting(), rounds=0)
    rows, groups, rounds = Loop(alloc, ScriptedPool(100), mixed_first_half).step(0)
    assert rounds == 1 and [len(g) for g in groups] == [8] * 8


def test_second_round_re_ranks_on_every_row_so_far():
    # prompt 0 draws 1000, prompt 1 1100, prompt 2 0000 in every round; one boost of 4 a round
    def reward(pid, i):
        return {0: float(i == 0), 1: float(i < 2), 2: 0.0}.get(pid % 8, 0.0)
    alloc = allocators.get("vigor")(setting(m=3), rounds=2, initial=4, fraction=1 / 3,
                                    multiplier=1.0)
    loop = Loop(alloc, ScriptedPool(100), reward)
    rows, groups, _ = loop.step(0)
    # round 1: var(1000)=.1875 < var(1100)=.25 -> prompt 1 gets 4 more (1100 again): 11001100
    # round 2: prompt 1 var .25 still beats prompt 0's .1875 -> prompt 1 again
    assert [len(g) for g in groups] == [4, 12, 4]


@pytest.mark.slow
def test_vigor_in_the_real_loop_charges_every_row(smoke_preset, tmp_path):
    from bench.presets import with_overrides
    from trainer.loop import Run, RunSpec
    from trainer.rundir import read_jsonl
    preset = with_overrides(smoke_preset, steps=2, eval_every=100)
    summary = Run(RunSpec("vigor", 1.0, 0, preset), tmp_path / "vigor",
                  log=lambda *a: None).execute()
    metrics = read_jsonl(tmp_path / "vigor" / "metrics.jsonl")
    m_g = preset.prompts_per_step * preset.group_size
    for m in metrics:
        assert m["rollouts"] == m_g and m["rounds"] == 2
        assert sorted(m["group_sizes"]) == [4] * 4 + [12] * 4
    assert summary["rollouts"] == len(metrics) * m_g
