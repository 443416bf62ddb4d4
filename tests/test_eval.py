"""``python -m bench.eval``: lm-eval, offline, on a run's policy with our own verifiers."""
import json
import logging

import pytest
import torch

from bench.eval import main, process_results
from trainer.data import build_prompt
from trainer.engine import HFEngine, RowSpec
from trainer.loop import RunSpec
from trainer.policy import load_policy
from trainer.rundir import atomic_torch_save, atomic_write_json, read_json
from trainer.verifier import MATH_VERIFY, REASONING_GYM

lm_eval = pytest.importorskip("lm_eval", reason="lm-eval is not installed (extra 'eval')")
logging.getLogger("math_verify").setLevel(logging.ERROR)


@pytest.fixture
def run_dir(smoke_preset, smoke_policy, tmp_path):
    """A smoke run directory as an interrupted run leaves it: config.json and a checkpoint
    (the warm start with one parameter changed), no saved policy."""
    model, _ = smoke_policy
    folder = tmp_path / "grpo__b1__s0"
    folder.mkdir()
    atomic_write_json(folder / "config.json",
                      {"run": RunSpec("grpo", 1.0, 0, smoke_preset).config()})
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["model.norm.weight"] += 0.01
    atomic_torch_save(folder / "checkpoint.pt", {"model": state, "next_step": 2})
    return folder


def greedy_answers_file(policy_dir, path, max_new_tokens) -> float:
    """MATH-schema problems whose gold is what math-verify reads from the policy's own greedy
    answer for every other problem (the rest, and any answer that does not parse, get an answer
    it never gives): lm-eval must report exactly the returned share if it generates greedily
    and scores with math-verify.  The share comes from this policy's own answers, so it holds
    for a warm start built anywhere."""
    from math_verify import parse
    model, tok = load_policy(policy_dir)
    problems = [f"{a} + {b} =" for a in range(1, 9) for b in (3, 5)]
    engine = HFEngine(model.eval(), tok, max_new_tokens=max_new_tokens, temperature=0.0)
    gens = engine.generate([RowSpec(tuple(tok(build_prompt(p))["input_ids"]), 0)
                            for p in problems])
    rows, own = [], 0
    for i, (problem, gen) in enumerate(zip(problems, gens)):
        parsed = parse(tok.decode(gen.tokens, skip_special_tokens=True), parsing_timeout=None)
        if i % 2 == 0 and len(parsed) == 2:
            rows.append({"problem": problem, "answer": parsed[1]})
            own += 1
        else:
            rows.append({"problem": problem, "answer": "987654321"})
    assert own > 0, "none of the policy's greedy answers parses: nothing to check lm-eval against"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return own / len(rows)


def test_lm_eval_scores_the_runs_policy_offline(run_dir, smoke_preset, smoke_policy, capsys):
    assert main([str(run_dir)]) == 0
    policy = run_dir / "policy"
    assert (policy / "config.json").is_file()          # rebuilt from warm start + checkpoint
    model, _ = load_policy(policy)
    assert torch.allclose(model.state_dict()["model.norm.weight"],
                          smoke_policy[0].state_dict()["model.norm.weight"] + 0.01)
    extra = run_dir.parent / "own.jsonl"
    share = greedy_answers_file(policy, extra, smoke_preset.max_new_tokens)
    assert main([str(run_dir), "--tasks", str(extra)]) == 0
    result = read_json(run_dir / "lm_eval.json")
    assert set(result["tasks"]) == {"held_out", "own"}
    held_out = result["tasks"]["held_out"]
    assert held_out["n"] == 16 and held_out["metric"] == "greedy pass@1"
    assert 0.0 <= held_out["acc"] <= 1.0
    assert result["tasks"]["own"]["acc"] == pytest.approx(share)
    out = capsys.readouterr().out
    assert "lm_eval.json" in out and "own" in out


def test_process_results_averages_the_responses_with_the_tasks_scorer():
    doc = {"scorer": MATH_VERIFY, "gold": {"answer": "\\frac{1}{2}"}}
    assert process_results(doc, [["\\boxed{0.5}", "\\boxed{2}", "so \\boxed{\\frac12}",
                                   "none"]]) == {"acc": 0.5}
    assert process_results(doc, ["\\boxed{1/2}"]) == {"acc": 1.0}        # take_first: a string
    rg = {"scorer": REASONING_GYM,
          "gold": {"answer": "16", "metadata": {"source_dataset": "chain_sum"}}}
    assert process_results(rg, [["12+4=16\n\\boxed{16}", "\\boxed{15}"]]) == {"acc": 0.5}


def test_bad_run_directories_are_one_line_errors(tmp_path, run_dir, capsys):
    assert main([str(tmp_path / "nowhere")]) == 2
    assert "not a run directory" in capsys.readouterr().err
    (run_dir / "checkpoint.pt").unlink()
    assert main([str(run_dir)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "neither a saved policy" in err[0]
    assert main([str(run_dir), "--tasks", str(tmp_path / "missing.jsonl")]) == 2
    assert "does not exist" in capsys.readouterr().err
