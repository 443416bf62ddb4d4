"""The token-budget protocol on real smoke runs: every run spends T (± one step's overshoot),
evaluates where its charge first reaches the same fractions of T, schedules its learning rate on
the fraction spent, and shares the step-0 evaluation of its seed."""
import json
from pathlib import Path

import numpy as np
import pytest

from bench.presets import get_preset, with_overrides
from bench.run import main
from trainer.budget import BudgetClock
from trainer.loop import Run, RunSpec
from trainer.rundir import read_json, read_jsonl

T, K = 4000, 2


@pytest.fixture(scope="module")
def token_runs(tmp_path_factory):
    """GRPO at b = 1 and 0.5, seed 0, in one sweep directory (about 2 and 4 smoke steps)."""
    preset = with_overrides(get_preset("smoke"), protocol="tokens", token_budget=T,
                            eval_points=K, greedy_at="ends")
    out = tmp_path_factory.mktemp("token-sweep")
    logs = []
    for budget in (1.0, 0.5):
        Run(RunSpec("grpo", budget, 0, preset), out / f"grpo__b{budget:g}__s0",
            log=logs.append).execute()
    return preset, out, logs


def run_files(out: Path, budget: float):
    run = out / f"grpo__b{budget:g}__s0"
    return (read_json(run / "summary.json"), read_jsonl(run / "eval.jsonl"),
            read_jsonl(run / "metrics.jsonl"))


@pytest.mark.parametrize("budget", [1.0, 0.5])
def test_a_run_spends_T_within_one_steps_overshoot(token_runs, budget):
    _, out, _ = token_runs
    summary, _, metrics = run_files(out, budget)
    spent = sum(m["tokens"] for m in metrics)
    assert summary["budget_spent"] == spent and summary["budget_reached"]
    assert T <= spent < T + metrics[-1]["tokens"]        # stopped at the first step past T
    assert summary["budget_overshoot"] == spent - T


def test_every_run_evaluates_where_it_first_reaches_the_same_fractions(token_runs):
    _, out, _ = token_runs
    points = {}
    for budget in (1.0, 0.5):
        _, evals, metrics = run_files(out, budget)
        cumulative = np.cumsum([m["tokens"] for m in metrics])
        points[budget] = [e["budget_point"] for e in evals[1:]]
        for e in evals[1:]:
            target = e["budget_point"] * T / K
            assert e["budget_target"] == target
            after = cumulative[e["step"] - 1]
            before = cumulative[e["step"] - 2] if e["step"] >= 2 else 0
            assert before < target <= after == e["cum_tokens"]   # first step to reach it
            assert e["overshoot"] == after - target
        # greedy decoding only at step 0 and the end (greedy_at = "ends")
        assert evals[0]["greedy"] is not None and evals[-1]["greedy"] is not None
        assert all(e["greedy"] is None for e in evals[1:-1])
    assert points[1.0] == points[0.5] == list(range(1, K + 1))
    # b = 0.5 took about twice the steps for the same budget
    assert len(run_files(out, 0.5)[2]) > len(run_files(out, 1.0)[2])


def test_the_learning_rate_follows_the_fraction_of_T_spent(token_runs):
    preset, out, _ = token_runs
    clock = BudgetClock(T, "tokens", K, preset.step_cap, preset.warmup_steps / preset.steps,
                        preset.schedule)
    first = {}
    for budget in (1.0, 0.5):
        _, _, metrics = run_files(out, budget)
        spent = np.cumsum([m["tokens"] for m in metrics])
        for m, s in zip(metrics, spent):
            assert m["lr"] == pytest.approx(preset.lr * min(1.0, s / (T * clock.warmup)))
        first[budget] = metrics[0]["lr"]
    # the half-budget run warms up over the same tokens, i.e. over more of its steps
    assert first[0.5] < first[1.0]


def test_the_step0_evaluation_is_computed_once_per_seed(token_runs):
    _, out, logs = token_runs
    initial = [run_files(out, b)[1][0] for b in (1.0, 0.5)]
    assert initial[0] == initial[1]
    assert len(list((out / "initial-evals").glob("*.json"))) == 1
    assert sum("step-0 evaluation shared" in line for line in logs) == 1


def test_a_per_step_config_is_what_the_committed_per_step_runs_recorded():
    committed = Path(__file__).resolve().parents[1] / "results" / "noisy-chain-sweep" / \
        "grpo__b1__s0" / "config.json"
    if not committed.is_file():
        pytest.skip("the committed per-step sweep is not in this checkout")
    old = json.loads(committed.read_text())["run"]["preset"]
    now = get_preset("noisy-chain-steps").to_dict()
    assert "protocol" not in now and "token_budget" not in now
    ignore = ("name", "description")
    assert {k: v for k, v in now.items() if k not in ignore} == \
        {k: v for k, v in old.items() if k not in ignore}


def test_token_protocol_usage_errors_exit_2_before_any_work(tmp_path, capsys):
    out = tmp_path / "sweep"
    assert main(["--methods", "grpo", "--steps", "3", "--out", str(out)]) == 2
    assert "token protocol" in capsys.readouterr().err
    assert main(["--methods", "grpo", "--seeds", "0,1", "--tune-seeds", "1,9",
                 "--out", str(out)]) == 2
    assert "--tune-seeds [1] are also in --seeds" in capsys.readouterr().err
    assert main(["--preset", "smoke", "--methods", "grpo", "--set", "preset.protocol=tokens",
                 "--out", str(out)]) == 2
    assert "sets no token_budget" in capsys.readouterr().err
    assert not out.exists()


def test_a_run_whose_method_stops_spending_ends_short_after_the_starved_limit(tmp_path,
                                                                              monkeypatch):
    """A method with nothing left to spend on (Pilot-Commit once its evictions empty the pool)
    ends its run short of T after STARVED_STEPS idle steps, not at the step cap."""
    from allocators.uniform import UniformGRPO
    from trainer.loop import STARVED_STEPS
    original = UniformGRPO.plan
    monkeypatch.setattr(UniformGRPO, "plan", lambda self, step, candidates, stats, budget:
                        original(self, step, candidates, stats, budget) if step == 0 else [])
    preset = with_overrides(get_preset("smoke"), protocol="tokens", token_budget=T,
                            eval_points=K, greedy_at="ends", step_cap=200)
    logs = []
    summary = Run(RunSpec("grpo", 1.0, 0, preset), tmp_path / "run", log=logs.append).execute()
    metrics = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert summary["steps"] == 1 + STARVED_STEPS < preset.step_cap
    assert [m["tokens"] > 0 for m in metrics] == [True] + [False] * STARVED_STEPS
    assert summary["idle_steps_at_end"] == STARVED_STEPS and not summary["budget_reached"]
    assert any("charged nothing" in line for line in logs)
