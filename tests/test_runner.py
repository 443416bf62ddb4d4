"""The runner end to end on the smoke preset: determinism, resume, bad input, NaN losses."""
import json
from pathlib import Path

import numpy as np
import pytest

from bench.run import main
from trainer.loop import Run, RunSpec
from trainer.rundir import read_json, read_jsonl

TIMING_KEYS = {"seconds", "cum_seconds", "cum_train_seconds", "timing", "cpu_seconds", "step_seconds",
               "unphased_seconds",
               "cum_train_cpu_seconds"}


def untimed(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in TIMING_KEYS}


def run_smoke(preset, out: Path, method="grpo", budget=1.0, seed=0, progress=None):
    return Run(RunSpec(method, budget, seed, preset), out, log=lambda *a: None,
               progress=progress).execute()


class Killed(Exception):
    pass


def test_same_seed_same_metrics_and_resume_equals_uninterrupted(smoke_preset, tmp_path):
    a = run_smoke(smoke_preset, tmp_path / "a")
    b = run_smoke(smoke_preset, tmp_path / "b")
    assert untimed(a) == untimed(b)
    metrics_a = [untimed(m) for m in read_jsonl(tmp_path / "a" / "metrics.jsonl")]
    assert metrics_a == [untimed(m) for m in read_jsonl(tmp_path / "b" / "metrics.jsonl")]

    def kill_after_third_step(record, last_eval):
        if record["step"] == 2:          # checkpoint_every = 2: killed one step past a checkpoint
            raise Killed()

    with pytest.raises(Killed):
        run_smoke(smoke_preset, tmp_path / "c", progress=kill_after_third_step)
    assert not (tmp_path / "c" / "summary.json").exists()
    resumed = run_smoke(smoke_preset, tmp_path / "c")
    assert untimed(resumed) == untimed(a)
    assert [untimed(m) for m in read_jsonl(tmp_path / "c" / "metrics.jsonl")] == metrics_a
    assert read_jsonl(tmp_path / "c" / "eval.jsonl")[-1]["mean_at_k"] == \
        read_jsonl(tmp_path / "a" / "eval.jsonl")[-1]["mean_at_k"]


def test_different_seeds_differ(smoke_preset, tmp_path):
    a = run_smoke(smoke_preset, tmp_path / "a", seed=0)
    b = run_smoke(smoke_preset, tmp_path / "b", seed=1)
    assert a["tokens"] != b["tokens"]


def test_nan_loss_skips_the_update_counts_it_and_goes_on(smoke_preset, tmp_path, monkeypatch):
    import torch
    import trainer.loop as loop
    real = loop.policy_loss
    calls = {"n": 0}

    def sometimes_nan(*args, **kwargs):
        loss, stats = real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 1:
            return loss * torch.tensor(float("nan")), stats
        return loss, stats

    monkeypatch.setattr(loop, "policy_loss", sometimes_nan)
    summary = run_smoke(smoke_preset, tmp_path / "nan")
    assert summary["nan_skipped"] == 1 and summary["steps"] == smoke_preset.steps
    metrics = read_jsonl(tmp_path / "nan" / "metrics.jsonl")
    assert metrics[0]["nan_skipped"] == 1 and metrics[-1]["nan_skipped"] == 1


def test_runner_writes_tables_and_skips_finished_runs(tmp_path, capsys):
    out = tmp_path / "sweep"
    assert main(["--methods", "grpo", "--budgets", "1.0,0.5", "--preset", "smoke",
                 "--out", str(out)]) == 0
    first = capsys.readouterr().out
    assert "Budget table" in first and "Speed table" in first
    assert (out / "summary.csv").is_file() and (out / "tables.md").is_file()
    summary = read_json(out / "grpo__b0.5__s0" / "summary.json")
    assert summary["rollouts"] == smoke_preset_rollouts(0.5)
    mtime = (out / "grpo__b1__s0" / "summary.json").stat().st_mtime
    assert main(["--methods", "grpo", "--budgets", "1.0", "--preset", "smoke",
                 "--out", str(out)]) == 0
    assert (out / "grpo__b1__s0" / "summary.json").stat().st_mtime == mtime


def smoke_preset_rollouts(budget):
    from bench.presets import get_preset
    p = get_preset("smoke")
    return round(budget * p.group_size) * p.prompts_per_step * p.steps


def _error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert "Traceback" not in err[0]
    return err[0]


def test_bad_input_gives_one_line_errors(tmp_path, capsys):
    smoke = ["--preset", "smoke", "--out", str(tmp_path / "o")]
    assert "unknown method 'nope'" in _error(capsys, ["--methods", "nope", *smoke])
    assert "unknown preset" in _error(capsys, ["--methods", "grpo", "--preset", "huge"])
    assert "outside (0, 1]" in _error(capsys, ["--methods", "grpo", "--budgets", "1.5", *smoke])
    assert "fewer than the 8 prompts" in _error(capsys, ["--methods", "grpo", "--budgets", "0.05",
                                                         *smoke])
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{not json")
    assert "not valid JSON" in _error(capsys, ["--methods", "grpo", "--config", str(bad_json),
                                               *smoke])
    missing = tmp_path / "missing.json"
    missing.write_text(json.dumps({"preset": {"model_dir": str(tmp_path / "no-such-model")}}))
    assert "does not exist" in _error(capsys, ["--methods", "grpo", "--config", str(missing),
                                               *smoke])
    corrupt_dir = tmp_path / "corrupt-model"
    corrupt_dir.mkdir()
    (corrupt_dir / "config.json").write_text("{]")
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text(json.dumps({"preset": {"model_dir": str(corrupt_dir)}}))
    assert "cannot load model" in _error(capsys, ["--methods", "grpo", "--config", str(corrupt),
                                                  *smoke])


def test_out_dir_with_a_different_config_is_refused_and_kept(tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["--methods", "grpo", "--budgets", "1.0", "--preset", "smoke", "--steps", "2",
                 "--out", str(out)]) == 0
    capsys.readouterr()
    before = (out / "grpo__b1__s0" / "summary.json").read_text()
    assert "different config" in _error(capsys, ["--methods", "grpo", "--budgets", "1.0",
                                                 "--preset", "smoke", "--out", str(out)])
    assert (out / "grpo__b1__s0" / "summary.json").read_text() == before


@pytest.fixture
def engine_counts(monkeypatch):
    """Rows and tokens each run's rollout engine actually returned, by run directory name,
    counted outside the ledger (evaluation has its own engine and is not counted)."""
    counts: dict[str, list[int]] = {}
    real = Run._make_engine

    def counting(self):
        engine = real(self)
        generate = engine.generate

        def counted(specs):
            generations = generate(specs)
            tally = counts.setdefault(self.dir.name, [0, 0])
            tally[0] += len(generations)
            tally[1] += sum(len(g.tokens) for g in generations)
            return generations

        engine.generate = counted
        return engine

    monkeypatch.setattr(Run, "_make_engine", counting)
    return counts


def test_every_method_charges_every_generated_token_on_smoke(tmp_path, capsys, engine_counts):
    import allocators
    out = tmp_path / "all"
    assert main(["--methods", "all", "--budgets", "1.0", "--preset", "smoke", "--executor",
                 "serial", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for method in allocators.main_methods():
        run = f"{method}__b1__s0"
        summary = read_json(out / run / "summary.json")
        assert summary["steps"] == 4
        assert [summary["rollouts"], summary["tokens"]] == engine_counts[run], method
        assert f"| {method} " in printed
    # Pilot-Commit's stale pilot rows get their old log-probs recomputed with the current policy
    # (its release), charged to the logprob phase; steps without stale rows charge nothing there
    metrics = read_jsonl(out / "pilot-commit__b1__s0" / "metrics.jsonl")
    stale = [m["method"]["stale_rows"] > 0 for m in metrics]
    assert any(stale), "the smoke run commits a pilot of an earlier step"
    assert [m["seconds"]["logprob"] > 0 for m in metrics] == stale


def test_the_ledger_charges_every_round_including_dropped_groups(smoke_preset, tmp_path,
                                                                  engine_counts):
    summary = run_smoke(smoke_preset, tmp_path / "dapo", method="dapo")
    metrics = read_jsonl(tmp_path / "dapo" / "metrics.jsonl")
    assert [summary["rollouts"], summary["tokens"]] == engine_counts["dapo"]
    assert [sum(m["rollouts"] for m in metrics), sum(m["tokens"] for m in metrics)] == \
        engine_counts["dapo"]
    # a step that needed no refill had M mixed groups at once; any all-equal group means a refill
    for m in metrics:
        if m["rounds"] == 1:
            assert m["groups_generated"] == m["groups_trained"] == smoke_preset.prompts_per_step
            assert m["zero_variance_groups"] == 0
    refilled = [m for m in metrics if m["rounds"] > 1]
    # 32 groups of 8 with all-equal rewards in none would need every prompt's pass rate far from
    # 0 and 1, which no 0.1M policy on this task mix has, however it was built
    assert refilled, "no step refilled: every one of the 32 groups had mixed rewards"
    for m in refilled:
        # groups generated but not trained were still generated and charged
        assert m["groups_generated"] > m["groups_trained"]
        assert m["rollouts"] > sum(m["group_sizes"])


def test_grad_norm_is_over_every_optimizer_step_and_a_nan_norm_is_skipped(smoke_preset,
                                                                          tmp_path,
                                                                          monkeypatch):
    import torch
    import trainer.loop as loop
    from bench.presets import with_overrides
    preset = with_overrides(smoke_preset, updates_per_step=3, steps=2)
    real = torch.nn.utils.clip_grad_norm_
    norms: list[float] = []

    def recorded(parameters, max_norm):
        norm = real(parameters, max_norm)
        if len(norms) == 1:                   # the second optimizer step of step 0
            norm = torch.tensor(float("nan"))
        norms.append(float(norm))
        return norm

    monkeypatch.setattr(loop.torch.nn.utils, "clip_grad_norm_", recorded)
    run_smoke(preset, tmp_path / "norms")
    metrics = read_jsonl(tmp_path / "norms" / "metrics.jsonl")
    assert len(norms) == 6 and np.isnan(norms[1])
    finite = [norms[0], norms[2]], norms[3:]
    for m, step_norms in zip(metrics, finite):
        assert m["grad_norm"] == pytest.approx(np.mean(step_norms))
        assert m["grad_norm_max"] == pytest.approx(max(step_norms))
    assert [m["nan_skipped"] for m in metrics] == [1, 1]
    assert np.isnan(metrics[0]["loss"]) and not np.isnan(metrics[1]["loss"])


def test_the_length_controllers_row_weight_multiplies_the_rollout_weight_capped(
        smoke_preset, tmp_path, monkeypatch):
    import lengthctl.duet
    from bench.presets import with_overrides
    preset = with_overrides(smoke_preset, steps=1, max_rollout_weight=50.0)
    # every fifth row reweighted by its (batched) stop rule; the cap must bind on the large ones
    monkeypatch.setattr(lengthctl.duet.DuetBatch, "weight",
                        lambda batch, i: 80.0 if batch.controllers[i]._seed % 5 == 0 else 3.0)
    trained = []
    real = Run._update

    def capture(self, groups, step):
        trained.extend((r.weight, r.flags) for g in groups for r in g)
        return real(self, groups, step)

    monkeypatch.setattr(Run, "_update", capture)
    run_smoke(preset, tmp_path / "weights", method="duet-abort")
    weights = sorted({w for w, _ in trained})
    assert weights == [3.0, 50.0]
    assert all("weight_multiplier" not in flags and "stop_phase" in flags for _, flags in trained)
    metrics = read_jsonl(tmp_path / "weights" / "metrics.jsonl")
    assert "eps_kept" not in metrics[0] and set(metrics[0]["length"]) >= {"eps_kept", "k1", "k2"}


def test_all_stands_beside_other_method_names():
    import allocators
    from bench.run import UsageError, resolve_methods
    contenders = allocators.main_methods()
    assert resolve_methods("all") == contenders
    assert resolve_methods("all,oracle,anti-oracle") == contenders + ["oracle", "anti-oracle"]
    assert resolve_methods("oracle,all,grpo") == ["oracle"] + contenders   # each once, in order
    with pytest.raises(UsageError):
        resolve_methods("all,no-such-method")
