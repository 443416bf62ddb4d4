"""HORA, SARA and CERO in the real loop on the smoke preset (real policy, reasoning-gym tasks,
verifier pool): every generated row is charged, the per-step ledger sums to the run's totals,
and each method's budget rule holds - HORA spends exactly C every step, SARA never more than C
and trains only whole groups, CERO's steps sum to T*C (2 steps: the second spends what the first left)."""
import pytest

from bench.presets import with_overrides
from trainer.loop import Run, RunSpec
from trainer.rundir import read_jsonl


@pytest.mark.slow
@pytest.mark.parametrize("method", ["cero", "hora", "sara"])
def test_budget_rule_holds_in_the_loop(smoke_preset, tmp_path, method):
    preset = with_overrides(smoke_preset, steps=2, eval_every=100)
    summary = Run(RunSpec(method, 1.0, 0, preset), tmp_path / method,
                  log=lambda *a: None).execute()
    metrics = read_jsonl(tmp_path / method / "metrics.jsonl")
    c = preset.prompts_per_step * preset.group_size
    assert summary["steps"] == 2
    assert sum(m["rollouts"] for m in metrics) == summary["rollouts"] == metrics[-1]["cum_rollouts"]
    assert sum(m["tokens"] for m in metrics) == summary["tokens"]
    for m in metrics:
        assert sum(m["group_sizes"]) <= m["rollouts"]
    if method == "hora":
        assert all(m["rollouts"] == c and m["rounds"] == 1 for m in metrics)
    if method == "sara":
        assert all(m["rollouts"] <= c for m in metrics)
        assert all(size == c // preset.prompts_per_step for m in metrics
                   for size in m["group_sizes"])
    if method == "cero":
        assert summary["rollouts"] == 2 * c
        assert metrics[0]["rollouts"] == c
