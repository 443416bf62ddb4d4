"""``qwen_math``: real-model presets on MATH (a local Hugging Face model directory, local JSONL
data read by ``trainer.data``: MATH or GSM8K schema, math-verify rewards); no task mix, no warm
start.

Their paths come from environment variables, read when this module is imported, with defaults
relative to the working directory:

* ``ALLOCBENCH_MODELS`` (default ``models``): holds ``Qwen3-1.7B-Base/`` and ``Qwen3-0.6B-Base/``;
* ``ALLOCBENCH_DATA`` (default ``data``): holds ``math_train.jsonl`` (DUET trains on 7,497
  cleaned MATH training problems, ``math_train_clean.jsonl``; any MATH-schema file works) and
  ``math500.jsonl`` (MATH-500, as in ``../shared/data``).

The gate has not been run on these (it needs a GPU); its seed count is the default 3.
"""
from __future__ import annotations

import os

from trainer.config import Preset
from trainer.testbeds import Testbed, register

_MODELS = os.environ.get("ALLOCBENCH_MODELS", "models")
_DATA = os.environ.get("ALLOCBENCH_DATA", "data")

register(Testbed("qwen_math", "Qwen3 base models on MATH (GPU)", presets=(
    # DUET's GRPO reference config (docs/ALGORITHMS.md §GRPO): Qwen3-1.7B-Base on MATH, 128
    # prompts x 8, 3,072-token responses, AdamW 3e-6 cosine with 10% warm-up, low-variance KL
    # 0.001, clip 0.2/0.2 (clip_c 3), token-mean, grad clip 1, one optimizer step per training
    # step, T = 0.9 / top-p 0.95, Mean@4 on MATH-500 every 30 steps; 4 epochs of 7,497 problems
    # = 232 steps.  bf16 compute over float32 master weights (verl's FSDP mixed precision).
    Preset("qwen3-1.7b-math", "DUET's GRPO reference: Qwen3-1.7B-Base on MATH, 128 x 8, "
           "3,072 tokens, vLLM rollouts, one GPU",
           warm_start=None, model_dir=f"{_MODELS}/Qwen3-1.7B-Base",
           train_data=f"{_DATA}/math_train.jsonl", eval_data=(f"{_DATA}/math500.jsonl",),
           prompts_per_step=128, group_size=8, steps=232, max_new_tokens=3072,
           max_prompt_tokens=512, temperature=0.9, top_p=0.95, lr=3e-6, warmup_steps=23,
           schedule="cosine", updates_per_step=1, grad_clip=1.0, clip_low=0.2, clip_high=0.2,
           dual_clip=3.0, kl_coef=0.001, normalize_std=True, eval_every=30, eval_samples=4,
           eval_temperature=0.9, checkpoint_every=10, verifier_workers=8, verifier_timeout=10.0,
           threads=8, device="cuda", dtype="bfloat16", engine="vllm", micro_batch_rows=16,
           engine_options={"gpu_memory_utilization": 0.35}),
    # A single-GPU real-model preset that the hf engine can carry: a smaller model, batch and
    # response length, MATH-500's first 100 problems as the held-out set.
    Preset("qwen3-0.6b-math", "Qwen3-0.6B-Base on MATH, 32 x 8, 1,024 tokens, hf engine, "
           "one GPU",
           warm_start=None, model_dir=f"{_MODELS}/Qwen3-0.6B-Base",
           train_data=f"{_DATA}/math_train.jsonl", eval_data=(f"{_DATA}/math500.jsonl",),
           eval_limit=100, prompts_per_step=32, group_size=8, steps=100, max_new_tokens=1024,
           max_prompt_tokens=512, temperature=0.9, top_p=0.95, lr=3e-6, warmup_steps=10,
           schedule="cosine", kl_coef=0.001, eval_every=20, eval_samples=4, eval_temperature=0.9,
           checkpoint_every=10, verifier_workers=8, verifier_timeout=10.0, threads=8,
           device="cuda", dtype="bfloat16", engine="hf", micro_batch_rows=32,
           engine_options={"max_batch_rows": 128}),
)))
