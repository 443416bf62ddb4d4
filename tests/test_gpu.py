"""CUDA and vLLM checks of the real-model path; skipped where there is no GPU or no vLLM.

Marked ``gpu`` (needs a CUDA device) and ``vllm`` (needs vLLM, extra ``gpu``); run them with
``python -m pytest -q -m "gpu or vllm" tests/test_gpu.py`` on a GPU machine.
"""
import importlib.util

import numpy as np
import pytest
import torch

from lengthctl.base import RowController
from tests.test_real_path import real_preset
from trainer.data import PROMPT_SUFFIX
from trainer.engine import HFEngine, RowSpec
from trainer.grpo import token_logprobs
from trainer.loop import Run, RunSpec
from trainer.policy import Architecture, build_model, build_tokenizer, load_policy, save_policy

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
needs_vllm = pytest.mark.skipif(importlib.util.find_spec("vllm") is None,
                                reason="vLLM is not installed (extra 'gpu', CUDA only)")
# head_dim 64: a size every vLLM attention backend takes
SMALL = Architecture(hidden=128, layers=2, heads=2, kv_heads=1, intermediate=256,
                     max_positions=512)


@pytest.fixture(scope="module")
def small_qwen3(tmp_path_factory):
    folder = tmp_path_factory.mktemp("small-qwen3") / "model"
    tokenizer = build_tokenizer()
    save_policy(build_model(tokenizer, SMALL, seed=11), tokenizer, folder)
    return folder


def _prompts(tok):
    return [tuple(tok(f"What is {a} + {b}? {PROMPT_SUFFIX}")["input_ids"])
            for a, b in ((1, 2), (35, 94), (7, 8))]


@pytest.mark.gpu
@needs_cuda
def test_real_path_trains_on_cuda_in_bf16_with_float32_master_weights(small_qwen3, tmp_path):
    preset = real_preset(small_qwen3, tmp_path, device="cuda", dtype="bfloat16")
    run = Run(RunSpec("grpo", 1.0, 0, preset), tmp_path / "run", log=lambda *a: None)
    summary = run.execute()
    assert summary["steps"] == 2 and summary["verifier_failures"] == 0
    assert {p.device.type for p in run.model.parameters()} == {"cuda"}
    assert {p.dtype for p in run.model.parameters()} == {torch.float32}


@pytest.mark.gpu
@needs_cuda
def test_hf_engine_logprobs_on_cuda_equal_a_recomputation(small_qwen3):
    model, tok = load_policy(small_qwen3)
    model = model.cuda().eval()
    rows = [RowSpec(p, seed=10 * i + k) for i, p in enumerate(_prompts(tok)) for k in range(3)]
    gens = HFEngine(model, tok, max_new_tokens=24, temperature=0.9).generate(rows)
    for row, gen in zip(rows, gens):
        seq = list(row.prompt_ids) + gen.tokens.tolist()
        ids = torch.tensor([seq], device="cuda")
        with torch.no_grad():
            logp = token_logprobs(model, ids, torch.ones_like(ids), ids[:, 1:], 0.9)
        p = len(row.prompt_ids)
        np.testing.assert_allclose(gen.logprobs, logp[0, p - 1:].cpu().numpy(), atol=1e-4)


class StopAt(RowController):
    """Ends its row at a fixed position with a fixed reason, recording what it was shown."""

    needs_margin = True

    def __init__(self, at: int, reason: str):
        self.at, self.reason, self.margins, self.tails = at, reason, [], []

    def decide(self, t, margin, tail):
        self.margins.append(margin)
        self.tails.append(tail(4))
        return self.reason if t == self.at else None

    @property
    def flags(self):
        return {"asked": len(self.margins)}


@pytest.mark.vllm
@pytest.mark.gpu
@needs_cuda
@needs_vllm
def test_vllm_engine_keeps_the_hf_engine_contract(small_qwen3):
    from trainer.vllm_engine import VLLMEngine
    model, tok = load_policy(small_qwen3)
    model = model.cuda().eval()
    engine = VLLMEngine(small_qwen3, model, tok, max_new_tokens=16, temperature=0.9, top_p=0.95,
                        dtype=torch.float32, gpu_memory_utilization=0.2, enforce_eager=True)
    try:
        prompts = _prompts(tok)
        rows = [RowSpec(prompts[i], seed=100 * i + k) for i, n in enumerate((1, 3, 2))
                for k in range(n)]
        gens = engine.generate(rows)
        assert len(gens) == 6
        for g in gens:
            assert 1 <= len(g.tokens) <= 16 and g.finish in ("eos", "max_len")
            assert np.isfinite(g.logprobs).all() and (g.logprobs <= 0).all()
            if g.finish == "eos":
                assert g.tokens[-1] == tok.eos_token_id
        again = engine.generate(rows)                       # per-row seeds: reproducible
        assert all(np.array_equal(a.tokens, b.tokens) for a, b in zip(gens, again))

        # the stop rule: a controller ends rows through the logits processor
        stop, abort = StopAt(3, "stopped"), StopAt(5, "aborted")
        ruled = engine.generate([RowSpec(prompts[0], 1, stop), RowSpec(prompts[1], 2, abort),
                                 RowSpec(prompts[2], 3)])
        assert ruled[0].finish == "stopped" and len(ruled[0].tokens) == 4
        assert ruled[1].finish == "aborted" and len(ruled[1].tokens) == 6
        for g in ruled[:2]:
            assert g.tokens[-1] == tok.eos_token_id and np.isfinite(g.logprobs[-1])
        assert ruled[0].flags == {"asked": 4} and stop.margins[0] >= 0.0
        assert stop.tails[3] == tok.decode(ruled[0].tokens[:3].tolist(), skip_special_tokens=True)

        # weights pushed from the trainer change what vLLM samples, to what the trainer samples
        engine.temperature = 0.0                             # greedy from here on
        before = engine.generate([RowSpec(p, 0) for p in prompts])
        with torch.no_grad():
            for param in model.parameters():
                param.add_(0.05 * torch.randn_like(param))
        engine.sync_weights(model)
        after = engine.generate([RowSpec(p, 0) for p in prompts])
        hf = HFEngine(model, tok, max_new_tokens=16, temperature=0.0).generate(
            [RowSpec(p, 0) for p in prompts])
        assert any(not np.array_equal(a.tokens, b.tokens) for a, b in zip(before, after))
        for a, b in zip(after, hf):
            assert np.array_equal(a.tokens[:4], b.tokens[:4])
    finally:
        engine.close()


@pytest.mark.vllm
@pytest.mark.gpu
@needs_cuda
@needs_vllm
def test_a_run_with_the_vllm_engine(small_qwen3, tmp_path):
    preset = real_preset(small_qwen3, tmp_path, device="cuda", dtype="bfloat16", engine="vllm",
                         steps=2, engine_options={"gpu_memory_utilization": 0.2,
                                                  "enforce_eager": True})
    summary = Run(RunSpec("grpo", 1.0, 0, preset), tmp_path / "run",
                  log=lambda *a: None).execute()
    assert summary["steps"] == 2 and summary["rollouts"] == 2 * 16
