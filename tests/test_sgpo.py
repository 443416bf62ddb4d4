"""sGPO: buckets from 1/p_hat and the profiling schedule on hand-computed success rates; in a
scripted loop the profiling pass is generated and charged at step 0 but never trained, and the
curriculum runs easy to hard and wraps; in the real loop the profiling rows are billed."""
import numpy as np
import pytest

import allocators
from allocators.base import PromptInfo, Setting
from allocators.sgpo import bucket_sizes, sgpo_schedule
from tests.scripted_loop import Loop, ScriptedPool


def setting(m=4, g=8, b=1.0, pool=0):
    return Setting(prompts_per_step=m, group_size=g, budget_fraction=b, max_response_tokens=64,
                   steps=10, seed=0, pool_size=pool)


def test_bucket_is_the_smallest_size_at_least_one_over_p_hat():
    p_hat = [1.0, 0.875, 0.75, 0.5, 0.375, 0.25, 0.125, 0.0]
    #        1/p: 1    1.14   1.33  2    2.67   4     8      inf
    assert bucket_sizes(p_hat).tolist() == [0, 0, 0, 0, 1, 1, 2, 2]


def test_schedule_by_hand():
    # 20 prompts: 10 never solved, 2 always solved, one at 7/8 (dropped), the rest kept
    p_hat = [0.0] * 10 + [1.0, 1.0, 0.875, 0.75, 0.125, 0.5, 0.25, 0.375, 0.625, 0.5]
    order, index, counts = sgpo_schedule(list(range(20)), p_hat, np.random.default_rng(0))
    assert counts == {"profiled": 20, "dropped_easy": 3, "unsolved": 10, "kept_unsolved": 1,
                      "curriculum": 8}
    rates = [p_hat[pid] for pid in order]
    assert rates == sorted(rates, reverse=True) and rates[-1] == 0.0       # easy -> hard
    assert order[:2] == [13, 18] and set(order[2:4]) == {15, 19}         # 0.75, 0.625, ties
    assert order[-1] < 10                                                  # one of the zeros
    assert index == [0, 0, 0, 0, 1, 1, 2, 2]                               # 1/p buckets


def test_keep_unsolved_share_is_rounded_and_seeded():
    p_hat = [0.0] * 25 + [0.5]
    a = sgpo_schedule(list(range(26)), p_hat, np.random.default_rng(3))
    b = sgpo_schedule(list(range(26)), p_hat, np.random.default_rng(3))
    assert a == b and a[2]["kept_unsolved"] == 3                          # round_half_up(2.5)
    assert sgpo_schedule(list(range(26)), p_hat, np.random.default_rng(3),
                         keep_unsolved=0.0)[0] == [25]


def run_sgpo(m=4, b=1.0, pool=12, steps=3):
    alloc = allocators.get("sgpo")(setting(m=m, b=b, pool=pool))
    alloc.attach_pool([PromptInfo(pid, "", ()) for pid in range(pool)])
    # prompt pid answers i < pid rollouts of 8 right at profiling: p_hat = pid / 8 (>= 8: 1)
    loop = Loop(alloc, ScriptedPool(pool), lambda pid, i: float(i < pid))
    return alloc, loop, [loop.step(s) for s in range(steps)]


def test_profiling_pass_is_charged_at_step_zero_and_never_trained():
    alloc, loop, steps = run_sgpo()
    rows, groups, rounds = steps[0]
    profile = [r for r in rows if r.tag == "profile"]
    assert rounds == 2 and len(profile) == 12 * 8                          # every pool prompt
    assert all(r.tag == "train" for g in groups for r in g)
    # p_hat = pid/8: 7..11 dropped (> 0.75), 0 is the only unsolved and round(0.1) keeps none
    assert alloc.curriculum == [6, 5, 4, 3, 2, 1]
    assert alloc.group_of == [2, 2, 2, 4, 4, 8]        # 1/p: 1.33 1.6 2 | 2.67 4 | 8
    assert [(g[0].pid, len(g)) for g in groups] == [(6, 2), (5, 2), (4, 2), (3, 4)]
    assert len(rows) == 12 * 8 + 2 + 2 + 2 + 4
    # later steps: no profiling, the curriculum continues and wraps to its start
    rows1, groups1, rounds1 = steps[1]
    assert rounds1 == 1 and all(r.tag == "train" for r in rows1)
    assert [(g[0].pid, len(g)) for g in groups1] == [(2, 4), (1, 8), (6, 2), (5, 2)]
    assert alloc.step_metrics["profile_rollouts"] == 0


def test_buckets_scale_with_the_budget_and_bad_buckets_are_refused():
    assert allocators.get("sgpo")(setting(b=0.5)).sizes == [2, 2, 4]
    assert allocators.get("sgpo")(setting(g=16)).sizes == [4, 8, 16]
    with pytest.raises(ValueError, match="ascending"):
        allocators.get("sgpo")(setting(), group_sizes=(4, 2))


def test_a_profile_that_leaves_nothing_is_a_clear_error():
    alloc = allocators.get("sgpo")(setting(pool=4))
    alloc.attach_pool([PromptInfo(pid, "", ()) for pid in range(4)])
    loop = Loop(alloc, ScriptedPool(4), lambda pid, i: 1.0)               # all trivial
    with pytest.raises(ValueError, match="left no prompt"):
        loop.step(0)


@pytest.mark.slow
def test_sgpo_in_the_real_loop_bills_its_profiling_pass(smoke_preset, tmp_path):
    from bench.presets import with_overrides
    from trainer.loop import Run, RunSpec
    from trainer.rundir import read_jsonl
    preset = with_overrides(smoke_preset, steps=2, eval_every=100)
    run = Run(RunSpec("sgpo", 1.0, 0, preset), tmp_path / "sgpo", log=lambda *a: None)
    summary = run.execute()
    metrics = read_jsonl(tmp_path / "sgpo" / "metrics.jsonl")
    pool = summary and len(run.pool)
    assert metrics[0]["rollouts"] == 8 * pool + sum(metrics[0]["group_sizes"])
    assert metrics[0]["method"]["profile_rollouts"] == 8 * pool
    assert metrics[1]["rollouts"] == sum(metrics[1]["group_sizes"])
    assert summary["rollouts"] == sum(m["rollouts"] for m in metrics)
    assert all(size in (2, 4, 8) for m in metrics for size in m["group_sizes"])
    assert all(m["groups_trained"] <= preset.prompts_per_step for m in metrics)
