"""The loop's configuration types: what a run of the shared GRPO loop is configured by.

:class:`Preset` fixes everything but the method, budget fraction and seed (policy, data,
optimizer, evaluation, accounting), so that every method of a comparison runs on the same
footing; :class:`WarmStartConfig` and :class:`Architecture` describe the embedded policy that a
preset without a model directory starts from.  The named presets (``smoke``, ``tiny``, the
real-model ones) live with the command-line tools in ``bench.presets``; the loop only needs
the types, so nothing under ``trainer/`` imports ``bench``.

Torch-free on purpose: a sweep planner, a config validator or a notebook can read and build
configurations without loading torch.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields


@dataclass(frozen=True)
class Architecture:
    """Size of the embedded Qwen3 policy (about 1M parameters by default)."""

    hidden: int = 128
    layers: int = 4
    heads: int = 4
    kv_heads: int = 2
    intermediate: int = 384
    max_positions: int = 256


@dataclass(frozen=True)
class WarmStartConfig:
    """The supervised warm start of the embedded policy (``trainer.sft``), cached by ``key()``."""

    arch: Architecture = field(default_factory=Architecture)
    steps: int = 500
    batch: int = 64
    lr: float = 3e-3
    warmup: int = 50
    examples_per_bucket: int = 4000
    train_per_bucket: int = 400          # the RL pool sizes, so held-out questions are known
    eval_per_bucket: int = 50
    seed: int = 0
    threads: int = 2

    def key(self) -> str:
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, data: dict) -> "WarmStartConfig":
        data = dict(data)
        if isinstance(data.get("arch"), dict):
            data["arch"] = Architecture(**data["arch"])
        return cls(**data)


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    warm_start: WarmStartConfig | None          # the embedded policy, built and cached on first use
    model_dir: str | None = None                # a model directory to load instead (wins if set)
    train_per_bucket: int = 400
    eval_per_bucket: int = 50
    prompts_per_step: int = 32                  # M
    group_size: int = 8                         # G
    steps: int = 80
    max_new_tokens: int = 48                    # L_max
    temperature: float = 1.0
    top_p: float = 1.0
    lr: float = 5e-5
    warmup_steps: int = 10
    schedule: str = "constant"                  # or "cosine"
    updates_per_step: int = 1                   # optimizer steps per training step, fixed
    micro_batch_rows: int = 512                 # rows per forward/backward inside an update
    grad_clip: float = 1.0
    clip_low: float = 0.2
    clip_high: float = 0.2
    dual_clip: float = 3.0
    kl_coef: float = 0.0
    normalize_std: bool = True
    eval_every: int = 10
    eval_samples: int = 4
    eval_temperature: float = 1.0
    checkpoint_every: int = 10
    max_rounds: int = 10
    verifier_workers: int = 1
    verifier_timeout: float = 5.0
    max_rollout_weight: float = 1000.0
    score_truncated: bool = False               # False: a response cut at max_new_tokens scores 0
    threads: int = 2
    device: str = "cpu"
    # --- real-model fields (defaults keep the embedded presets as they were) ---
    train_data: str | None = None               # MATH/GSM8K JSONL; None = embedded chain_sum
    eval_data: tuple[str, ...] = ()             # held-out JSONL files (needed with train_data)
    train_limit: int | None = None              # first N training problems (None = all)
    eval_limit: int | None = None               # first N problems of each held-out file
    max_prompt_tokens: int | None = None        # longer training prompts are dropped (verl)
    dtype: str = "float32"                      # compute dtype: float32 | bfloat16 | float16
    engine: str = "hf"                          # rollout engine: hf | vllm
    engine_options: dict = field(default_factory=dict)  # engine keyword arguments

    def to_dict(self) -> dict:
        # tuples become lists so that the dict equals its own JSON round trip (config.json)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> "Preset":
        """The inverse of :meth:`to_dict` (a run's config.json); unknown keys are ignored so
        that a run written by a newer checkout still loads."""
        data = dict(data)
        if data.get("warm_start") is not None:
            data["warm_start"] = WarmStartConfig.from_dict(data["warm_start"])
        data["eval_data"] = tuple(data.get("eval_data") or ())
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
