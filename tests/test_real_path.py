"""The real-model path on CPU: a tiny random Qwen3 saved to disk, reloaded offline through a
real-style preset (model_dir + JSONL data + math-verify rewards), trained with the shared loop."""
import json
import os

import numpy as np
import pytest
import torch

from bench.presets import PRESETS, with_overrides
from trainer.config import Architecture, Preset
from trainer.data import PROMPT_SUFFIX
from trainer.engine import HFEngine, RowSpec
from trainer.loop import Run, RunError, RunSpec, validate_spec
from trainer.policy import build_model, build_tokenizer, load_policy, save_policy
from trainer.rundir import read_json, read_jsonl
from trainer.verifier import MATH_VERIFY

# about 80k parameters; max_positions covers the ~90-character prompts plus the response
TINY = Architecture(hidden=64, layers=2, heads=2, kv_heads=1, intermediate=128, max_positions=256)


@pytest.fixture(scope="module")
def tiny_qwen3(tmp_path_factory):
    """A random Qwen3 with a locally built tokenizer, saved as a Hugging Face directory."""
    folder = tmp_path_factory.mktemp("tiny-qwen3")
    tokenizer = build_tokenizer()
    model = build_model(tokenizer, TINY, seed=5)
    save_policy(model, tokenizer, folder / "model")
    return folder / "model"


def write_math_jsonl(path, n, start=0):
    rows = [{"problem": f"What is {a} + {a % 3}?", "answer": str(a + a % 3), "level": 1 + a % 2,
             "subject": "Prealgebra", "unique_id": f"t/{a}.json"} for a in range(start, start + n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def real_preset(model_dir, tmp_path, **overrides) -> Preset:
    fields = dict(warm_start=None, model_dir=str(model_dir),
                  train_data=write_math_jsonl(tmp_path / "train.jsonl", 12),
                  eval_data=(write_math_jsonl(tmp_path / "heldout.jsonl", 4, start=50),),
                  prompts_per_step=4, group_size=4, steps=2, max_new_tokens=16,
                  max_prompt_tokens=200, temperature=0.9, top_p=0.95, kl_coef=0.001,
                  eval_every=2, eval_samples=2, eval_temperature=0.9, checkpoint_every=2,
                  warmup_steps=1, schedule="cosine", lr=1e-3)
    fields.update(overrides)
    return Preset("tiny-real", "a tiny random Qwen3 on MATH-style JSONL", **fields)


def test_tiny_qwen3_reloads_offline_and_the_hf_engine_generates(tiny_qwen3):
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    model, tok = load_policy(tiny_qwen3)
    assert 50_000 < sum(p.numel() for p in model.parameters()) < 150_000
    prompt = tuple(tok(f"What is 2 + 2? {PROMPT_SUFFIX}")["input_ids"])
    gens = HFEngine(model.eval(), tok, max_new_tokens=12, temperature=0.9, top_p=0.95).generate(
        [RowSpec(prompt, seed=s) for s in range(3)])
    assert len(gens) == 3 and len({g.tokens.tobytes() for g in gens}) > 1
    for g in gens:
        assert 1 <= len(g.tokens) <= 12 and g.finish in ("eos", "max_len")
        assert np.isfinite(g.logprobs).all() and (g.logprobs <= 0).all()


def test_two_steps_through_the_real_preset_path_with_math_verify_rewards(tiny_qwen3, tmp_path):
    preset = real_preset(tiny_qwen3, tmp_path)
    run = Run(RunSpec("grpo", 1.0, 0, preset), tmp_path / "run", log=lambda *a: None)
    summary = run.execute()
    assert (tmp_path / "run" / "summary.json").is_file() and summary["steps"] == 2
    assert {t.scorer for t in run.train_tasks} == {MATH_VERIFY}
    assert run.train_tasks[0].prompt == f"What is 0 + 0? {PROMPT_SUFFIX}"
    assert {t.bucket for t in run.train_tasks} == {"level1", "level2"}
    config = read_json(tmp_path / "run" / "config.json")
    assert config["pool_size"] == 12 and config["held_out_size"] == 4
    assert config["run"]["preset"]["eval_data"] == list(preset.eval_data)
    metrics = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [m["rollouts"] for m in metrics] == [16, 16]
    assert all(m["verifier_failures"] == 0 and m["verifier_timeouts"] == 0 for m in metrics)
    # the rewards came from math-verify: the same rollouts re-scored by it in-process agree
    assert set(summary["final_buckets"]) == {"level1", "level2"}
    assert (tmp_path / "run" / "policy" / "config.json").is_file()      # the final policy
    reloaded, _ = load_policy(tmp_path / "run" / "policy")
    for a, b in zip(reloaded.parameters(), run.model.parameters()):
        assert torch.equal(a, b.detach().cpu())


def test_math_verify_scores_the_loops_rollouts(tiny_qwen3, tmp_path, monkeypatch):
    """Every reward the loop records equals math-verify's score of the decoded rollout."""
    import trainer.loop as loop
    from trainer.verifier import score_math_verify
    seen = []
    real_score = loop.VerifierPool.score

    def spy(self, items):
        report = real_score(self, items)
        seen.extend(zip(items, report.rewards.tolist()))
        return report

    monkeypatch.setattr(loop.VerifierPool, "score", spy)
    preset = real_preset(tiny_qwen3, tmp_path, steps=1, eval_every=1, max_new_tokens=24)
    run = Run(RunSpec("grpo", 1.0, 0, preset), tmp_path / "run", log=lambda *a: None)
    run.execute()
    assert len(seen) == 16 + 2 * 4 * 2 + 4 * 2       # rollouts + two evaluations (k=2, greedy)
    assert {scorer for (scorer, _, _), _ in seen} == {MATH_VERIFY}
    for (_, response, gold), reward in seen:
        assert reward == score_math_verify(response, gold)
    # a random policy earns nothing; the same pool scores the right answers 1
    pool = loop.VerifierPool(workers=1)
    try:
        right = real_score(pool, [(t.scorer, f"so \\boxed{{{t.answer}}}", t.gold)
                                  for t in run.train_tasks])
    finally:
        pool.close()
    assert right.rewards.tolist() == [1.0] * len(run.train_tasks)


def test_bf16_compute_keeps_float32_master_weights(tiny_qwen3, tmp_path):
    preset = real_preset(tiny_qwen3, tmp_path, steps=1, eval_every=1, dtype="bfloat16")
    run = Run(RunSpec("grpo", 1.0, 0, preset), tmp_path / "run", log=lambda *a: None)
    run.execute()
    assert run.dtype == torch.bfloat16
    assert {p.dtype for p in run.model.parameters()} == {torch.float32}
    assert {p.dtype for p in run.ref_model.parameters()} == {torch.bfloat16}


def test_missing_model_or_data_is_a_one_line_error(tiny_qwen3, tmp_path):
    good = real_preset(tiny_qwen3, tmp_path)
    cases = [
        (with_overrides(good, model_dir=str(tmp_path / "nope")), "does not exist"),
        (with_overrides(good, train_data=str(tmp_path / "missing.jsonl")), "does not exist"),
        (with_overrides(good, eval_data=()), "no eval_data"),
    ]
    # an unknown engine or dtype is refused where the preset is made, against its declared choices
    from core.options import OptionError
    for field_name, value in (("engine", "tgi"), ("dtype", "int8")):
        with pytest.raises(OptionError) as info:
            with_overrides(good, **{field_name: value})
        assert f"preset.{field_name} = {value!r}" in str(info.value)
        assert "\n" not in str(info.value)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"problem": "p", "answer": "1"}\n{oops\n')
    cases.append((with_overrides(good, eval_data=(str(bad),)), "bad.jsonl:2: invalid JSON"))
    if not torch.cuda.is_available():
        cases.append((with_overrides(good, device="cuda"), "CUDA is not available"))
    try:
        import vllm  # noqa: F401
    except ImportError:
        cases.append((with_overrides(good, engine="vllm", device="cpu"), "needs device 'cuda'"))
    for preset, message in cases:
        with pytest.raises(RunError) as info:
            validate_spec(RunSpec("grpo", 1.0, 0, preset))
        assert message in str(info.value) and "\n" not in str(info.value), str(info.value)


def test_real_presets_mirror_the_reference_config():
    p = PRESETS["qwen3-1.7b-math"]
    assert (p.prompts_per_step, p.group_size, p.max_new_tokens) == (128, 8, 3072)
    assert (p.lr, p.schedule, p.warmup_steps, p.steps) == (3e-6, "cosine", 23, 232)
    assert (p.kl_coef, p.clip_low, p.clip_high, p.dual_clip) == (0.001, 0.2, 0.2, 3.0)
    assert (p.temperature, p.top_p, p.eval_every, p.eval_samples) == (0.9, 0.95, 30, 4)
    assert (p.device, p.dtype, p.engine, p.updates_per_step) == ("cuda", "bfloat16", "vllm", 1)
    assert p.model_dir.endswith("Qwen3-1.7B-Base") and p.eval_data[0].endswith("math500.jsonl")
    small = PRESETS["qwen3-0.6b-math"]
    assert small.engine == "hf" and small.prompts_per_step < p.prompts_per_step
    # the embedded presets are unchanged by the new fields
    for name in ("smoke", "tiny"):
        q = PRESETS[name]
        assert (q.train_data, q.eval_data, q.dtype, q.engine, q.device) == \
            (None, (), "float32", "hf", "cpu")
