"""MoPPS, PODS, SPEED-RL and Reinforce-Ada in the real loop on the smoke preset (real policy,
reasoning-gym tasks, verifier pool): every generated row is charged, the trained rows are the
method's share of them, and the per-step ledger sums to the run's totals."""
import pytest

from bench.presets import with_overrides
from trainer.loop import Run, RunSpec
from trainer.rundir import read_jsonl

# method -> (rows trained per group, whether a step may charge more than M*G rollouts)
EXPECTED = {"mopps": (8, False), "pods": (2, False), "speed-rl": (8, True),
            "reinforce-ada": (4, True)}


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(EXPECTED))
def test_ledger_charges_every_row_and_trains_the_methods_share(smoke_preset, tmp_path, method):
    preset = with_overrides(smoke_preset, steps=2, eval_every=100)
    summary = Run(RunSpec(method, 1.0, 0, preset), tmp_path / method,
                  log=lambda *a: None).execute()
    metrics = read_jsonl(tmp_path / method / "metrics.jsonl")
    assert summary["steps"] == 2
    assert sum(m["rollouts"] for m in metrics) == summary["rollouts"] == metrics[-1]["cum_rollouts"]
    assert sum(m["tokens"] for m in metrics) == summary["tokens"]
    per_group, overspends = EXPECTED[method]
    m_g = preset.prompts_per_step * preset.group_size
    for m in metrics:
        assert all(size == per_group for size in m["group_sizes"])
        assert m["groups_trained"] <= preset.prompts_per_step
        assert sum(m["group_sizes"]) <= m["rollouts"]
        if not overspends:
            assert m["rollouts"] == m_g and m["rounds"] == 1
    if method == "reinforce-ada":
        # the first round alone is M * round_repeat rows; the smoke policy leaves prompts active
        assert all(m["rollouts"] >= m_g for m in metrics)
        assert any(m["rounds"] > 1 for m in metrics)
    if method == "speed-rl":
        # screening rows of prompts that did not qualify are charged but never trained
        assert summary["rollouts"] > sum(sum(m["group_sizes"]) for m in metrics)


def test_a_speed_rl_step_that_trains_from_its_queue_generates_nothing(smoke_preset, tmp_path):
    """The loop's zero-generation step: a full carried-over queue trains without any rollout."""
    from allocators.base import Request, group_rows
    preset = with_overrides(smoke_preset, steps=2, eval_every=100)
    run = Run(RunSpec("speed-rl", 1.0, 0, preset), tmp_path / "speed", log=lambda *a: None)
    run.setup()
    # groups sampled by the policy (as if completed in an earlier step) fill the queue
    rows = run._sample([Request(pid, 8) for pid in range(preset.prompts_per_step)], 0, 0,
                       run._budget())
    for row, reward in zip(rows, run._score(rows)):
        row.reward = reward
    run.allocator.ready.extend(group_rows(rows))
    assert run.allocator.candidates_per_step() == 0
    record = run.train_step(1)
    assert record["rollouts"] == 0 and record["tokens"] == 0 and record["rounds"] == 1
    assert record["groups_trained"] == preset.prompts_per_step
    assert record["group_sizes"] == [8] * preset.prompts_per_step
    assert len(run.allocator.ready) == 0
