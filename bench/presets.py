"""Named run presets: the embedded CPU defaults (``smoke`` for tests, ``tiny`` for the main job).

A preset fixes everything but the method, budget fraction and seed, so that every method of a
comparison runs on the same policy, data, optimizer, evaluation and accounting.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from trainer.policy import Architecture
from trainer.sft import WarmStartConfig


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
    lr: float = 1e-4
    warmup_steps: int = 10
    schedule: str = "constant"                  # or "cosine"
    updates_per_step: int = 1                   # optimizer steps per training step, fixed
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
    threads: int = 2
    device: str = "cpu"

    def to_dict(self) -> dict:
        return asdict(self)


_SMOKE_ARCH = Architecture(hidden=64, layers=2, heads=2, kv_heads=1, intermediate=192)

PRESETS: dict[str, Preset] = {p.name: p for p in [
    Preset("smoke", "seconds-long run for tests: a 0.1M policy, 8 prompts x 8, 4 steps",
           warm_start=WarmStartConfig(arch=_SMOKE_ARCH, steps=500, batch=32, lr=5e-3,
                                      examples_per_bucket=400, train_per_bucket=40,
                                      eval_per_bucket=4),
           train_per_bucket=40, eval_per_bucket=4, prompts_per_step=8, group_size=8, steps=4,
           max_new_tokens=40, eval_every=4, eval_samples=2, checkpoint_every=2, warmup_steps=1),
    Preset("tiny", "the embedded default: a ~0.8M Qwen3 policy on chain_sum, 32 prompts x 8",
           warm_start=WarmStartConfig()),
]}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    return PRESETS[name]


def with_overrides(preset: Preset, **overrides) -> Preset:
    return replace(preset, **overrides)
