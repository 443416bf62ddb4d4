"""Named run presets: the embedded CPU defaults (``smoke`` for tests, ``tiny`` for the main job)
and real-model presets (``qwen3-1.7b-math``, ``qwen3-0.6b-math``).

A preset fixes everything but the method, budget fraction and seed, so that every method of a
comparison runs on the same policy, data, optimizer, evaluation and accounting.

Real presets load a local Hugging Face model directory and local JSONL data (``trainer.data``:
MATH or GSM8K schema, math-verify rewards).  Their paths come from environment variables, read
when this module is imported, with defaults relative to the working directory:

* ``ALLOCBENCH_MODELS`` (default ``models``): holds ``Qwen3-1.7B-Base/`` and ``Qwen3-0.6B-Base/``;
* ``ALLOCBENCH_DATA`` (default ``data``): holds ``math_train.jsonl`` (DUET trains on 7,497
  cleaned MATH training problems, ``math_train_clean.jsonl``; any MATH-schema file works) and
  ``math500.jsonl`` (MATH-500, as in ``../shared/data``).

Any field can also be overridden per sweep with ``--config`` (``{"preset": {"model_dir": ...}}``)
or ``--set preset.FIELD=VALUE``; each field declares its type and range (``option``), checked
before any work (:mod:`bench.overrides`).
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace

from allocators.options import check_values, option
from trainer.policy import Architecture
from trainer.sft import WarmStartConfig


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    warm_start: WarmStartConfig | None          # the embedded policy, built and cached on first use
    model_dir: str | None = option(None, "a Hugging Face model directory to load instead of "
                                   "the embedded policy (wins if set)")
    train_per_bucket: int = option(400, "embedded tasks: training prompts per difficulty "
                                   "bucket", ge=1)
    eval_per_bucket: int = option(50, "embedded tasks: held-out prompts per bucket", ge=1)
    prompts_per_step: int = option(32, "M, prompts per training step", ge=1)
    group_size: int = option(8, "G, rollouts per prompt of uniform GRPO at budget 1", ge=1)
    steps: int = option(80, "training steps", ge=1)
    max_new_tokens: int = option(48, "L_max, the longest response", ge=1)
    temperature: float = option(1.0, "rollout sampling temperature", gt=0)
    top_p: float = option(1.0, "rollout nucleus sampling", gt=0, le=1)
    lr: float = option(5e-5, "AdamW learning rate", gt=0)
    warmup_steps: int = option(10, "linear learning-rate warm-up steps", ge=0)
    schedule: str = option("constant", "learning-rate schedule after warm-up",
                           choices=("constant", "cosine"))
    updates_per_step: int = option(1, "optimizer steps per training step, fixed", ge=1)
    micro_batch_rows: int = option(512, "rows per forward/backward inside an update", ge=1)
    grad_clip: float = option(1.0, "gradient-norm clip", gt=0)
    clip_low: float = option(0.2, "PPO ratio clip below 1", ge=0, lt=1)
    clip_high: float = option(0.2, "PPO ratio clip above 1", ge=0)
    dual_clip: float = option(3.0, "dual-clip constant c of negative advantages", gt=1)
    kl_coef: float = option(0.0, "low-variance KL penalty to the initial policy", ge=0)
    normalize_std: bool = option(True, "divide group advantages by their standard deviation")
    eval_every: int = option(10, "steps between held-out evaluations", ge=1)
    eval_samples: int = option(4, "k of mean@k", ge=1)
    eval_temperature: float = option(1.0, "evaluation sampling temperature", gt=0)
    checkpoint_every: int = option(10, "steps between checkpoints", ge=1)
    max_rounds: int = option(10, "most generation rounds per step (multi-round methods)", ge=1)
    verifier_workers: int = option(1, "verifier worker processes", ge=1)
    verifier_timeout: float = option(5.0, "seconds per verifier call before it scores 0", gt=0)
    max_rollout_weight: float = option(1000.0, "cap of a rollout's advantage weight", gt=0)
    score_truncated: bool = option(False, "score responses cut at max_new_tokens (false: they "
                                   "score 0)")
    threads: int = option(2, "torch CPU threads per run", ge=1)
    device: str = option("cpu", "torch device (cpu, cuda, cuda:N)")
    # --- real-model fields (defaults keep the embedded presets as they were) ---
    train_data: str | None = option(None, "MATH/GSM8K JSONL training file; null = embedded "
                                    "chain_sum")
    eval_data: tuple[str, ...] = option((), "held-out JSONL files (needed with train_data)")
    train_limit: int | None = option(None, "first N training problems; null = all", ge=1)
    eval_limit: int | None = option(None, "first N problems of each held-out file; null = all",
                                    ge=1)
    max_prompt_tokens: int | None = option(None, "longer training prompts are dropped (verl); "
                                           "null = keep all", ge=1)
    dtype: str = option("float32", "compute dtype", choices=("float32", "bfloat16", "float16"))
    engine: str = option("hf", "rollout engine", choices=("hf", "vllm"))
    engine_options: dict = option(help="engine keyword arguments", default_factory=dict)

    def to_dict(self) -> dict:
        # tuples become lists so that the dict equals its own JSON round trip (config.json)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


_MODELS = os.environ.get("ALLOCBENCH_MODELS", "models")
_DATA = os.environ.get("ALLOCBENCH_DATA", "data")
_SMOKE_ARCH = Architecture(hidden=64, layers=2, heads=2, kv_heads=1, intermediate=192)

PRESETS: dict[str, Preset] = {p.name: p for p in [
    Preset("smoke", "seconds-long run for tests: a 0.1M policy, 8 prompts x 8, 4 steps",
           warm_start=WarmStartConfig(arch=_SMOKE_ARCH, steps=500, batch=32, lr=5e-3,
                                      examples_per_bucket=400, train_per_bucket=40,
                                      eval_per_bucket=4),
           train_per_bucket=40, eval_per_bucket=4, prompts_per_step=8, group_size=8, steps=4,
           max_new_tokens=40, eval_every=4, eval_samples=2, checkpoint_every=2, warmup_steps=1),
    Preset("tiny", "the embedded default: a 0.8M Qwen3 policy on chain_sum, 32 prompts x 8, 80 steps",
           warm_start=WarmStartConfig()),
    # DUET's GRPO reference config (ALGORITHMS.md section 1.1): Qwen3-1.7B-Base on MATH, 128
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
]}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    return PRESETS[name]


def with_overrides(preset: Preset, **overrides) -> Preset:
    """``preset`` with ``overrides``, each checked against its field (OptionError otherwise)."""
    return replace(preset, **check_values(Preset, overrides, "preset", "field"))
