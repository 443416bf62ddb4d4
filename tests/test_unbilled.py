"""The controls' pass-rate estimates on the real loop (smoke policy, real engine and verifier):
never charged, never trained on, never in the prompt statistics or a cost/speed table; and the
oracle's plans beat uniform's, which beat the anti-oracle's, in expected signal groups."""
import numpy as np
import pytest

from allocators.base import StepBudget
from allocators.controls import expected_signal_groups
from bench import tables
from bench.presets import with_overrides
from trainer.loop import Run, RunSpec


def test_unbilled_rollouts_are_counted_apart_and_never_trained_on(tmp_path, smoke_preset):
    preset = with_overrides(smoke_preset, steps=2, eval_every=2, checkpoint_every=2)
    run = Run(RunSpec("oracle", 0.5, 0, preset), tmp_path / "oracle__b0.5__s0", log=lambda *a: None)
    trained, generated = [], []
    update, generate = run._update, run._sample

    def spy_update(groups, step):
        trained.append([r for g in groups for r in g])
        return update(groups, step)

    def spy_generate(requests, step, round_index, budget):
        rows = generate(requests, step, round_index, budget)
        generated.append(rows)
        return rows

    run._update, run._sample = spy_update, spy_generate
    summary = run.execute()
    metrics = run.metrics
    c, m = run.setting.rollouts_per_step, run.setting.prompts_per_step
    assert [len(rows) for rows in trained] == [c, c]           # exactly the budget trains
    for rows, record in zip(trained, metrics):
        assert record["rollouts"] == sum(record["counts"]) == c
        assert record["tokens"] == sum(r.n_tokens for r in rows)
        assert record["unbilled"]["rollouts"] == 16 * m
    # the trained rows are the rows the step generated (generation streams), nothing else
    for rows, made in zip(trained, generated):
        assert {id(r) for r in rows} == {id(r) for r in made}
    assert summary["rollouts"] == 2 * c
    assert summary["tokens"] == sum(rec["tokens"] for rec in metrics)
    assert summary["unbilled_rollouts"] == 2 * 16 * m and summary["unbilled_tokens"] > 0
    assert run.evals[-1]["cum_tokens"] == summary["tokens"]
    assert sum(run.stats.n_samples(pid) for pid in run.stats.visits) == 2 * c
    timing = summary["timing"]
    assert timing["unbilled"] > 0
    phases = [k for k in run.ledger.cumulative_seconds if k != "evaluate"]
    assert timing["train_seconds"] == pytest.approx(sum(timing[k] for k in phases), abs=0.01)
    # the tables read billed numbers only
    df = tables.load_summaries(tmp_path)
    speed = tables.speed_table(df).display.iloc[0]
    assert speed["tokens"] == f"{summary['tokens']:,}" and speed["rollouts"] == f"{2 * c:,}"
    cost = tables.cost_table(df, tables.load_curves(tmp_path), target=0.0).data.iloc[0]
    assert cost["tokens_mean"] == 0.0       # reached at step 0, before any (billed) token


def test_oracle_beats_uniform_beats_anti_oracle_in_expected_signal_groups(tmp_path, smoke_preset):
    """Plans from 16-sample estimates, judged on 48 fresh rollouts per prompt (another stream):
    a deterministic quantity, not an accuracy."""
    import allocators
    preset = with_overrides(smoke_preset, steps=1)
    run = Run(RunSpec("oracle", 0.5, 0, preset), tmp_path / "r", log=lambda *a: None)
    run.setup()
    setting = run.setting
    budget = StepBudget(setting.rollouts_per_step, 0.0, 8.0)
    totals = {"oracle": 0.0, "grpo": 0.0, "anti-oracle": 0.0}
    for step in range(3):
        candidates = [run.pool[i] for i in run.sampler.draw(setting.prompts_per_step)]
        estimate = run._estimate(step, candidates)
        held = {}
        for k in range(3):       # 3 x 16 rollouts from streams the plans never saw
            for pid, p in run._estimate(1_000 + 10 * step + k, candidates).items():
                held[pid] = held.get(pid, 0.0) + p / 3
        p_judge = np.array([held[c.pid] for c in candidates])
        for name in totals:
            allocator = allocators.get(name)(setting)
            run.stats.record_estimates(step, estimate)
            counts = [r.n for r in allocator.plan(step, candidates, run.stats, budget)]
            assert sum(counts) == setting.rollouts_per_step
            totals[name] += expected_signal_groups(p_judge, counts)
    run.verifier.close()
    assert totals["oracle"] > totals["grpo"] > totals["anti-oracle"], totals
