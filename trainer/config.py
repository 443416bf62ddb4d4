"""The loop's configuration types: what a run of the shared GRPO loop is configured by.

:class:`Preset` fixes everything but the method, budget fraction and seed (policy, data,
optimizer, evaluation, accounting), so that every method of a comparison runs on the same
footing; :class:`WarmStartConfig` and :class:`Architecture` describe the embedded policy that a
preset without a model directory starts from.  The named presets are declared by their testbeds
(``trainer/testbeds/``) and collected by ``bench.presets``.

Torch-free on purpose: a sweep planner, a config validator or a notebook can read and build
configurations without loading torch.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields

from core.options import option
from trainer.budget import BUDGET_UNITS, PROTOCOLS, TOKEN_FIELDS
from trainer.mixes import get_mix, mix_names


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
    task_mix: str = "chain_sum"          # trainer.mixes.get_mix: the worked solutions it learns

    def key(self) -> str:
        data = asdict(self)
        if data["task_mix"] == "chain_sum":
            # the field came after the first warm starts shipped; leaving its original value
            # out of the hash keeps their keys (and the shipped copies and caches) valid
            del data["task_mix"]
        else:
            # the mix's definition (buckets, error rates, check rate), not only its name, so
            # that editing a mix cannot reuse a warm start trained on the old one
            data["task_mix"] = asdict(get_mix(self.task_mix))
        text = json.dumps(data, sort_keys=True)
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
    model_dir: str | None = option(None, "a Hugging Face model directory to load instead of "
                                   "the embedded policy (wins if set)")
    # the testbeds (trainer.testbeds) declare the mixes and import this module, so the choices
    # are read when a value is checked, not when this class is defined
    task_mix: str = option("chain_sum", "embedded tasks: the task mix (declared by a testbed, "
                           "trainer/testbeds/); must equal the warm start's", choices=mix_names)
    train_per_bucket: int = option(400, "embedded tasks: training prompts per difficulty "
                                   "bucket", ge=1, le=1_000_000)
    eval_per_bucket: int = option(50, "embedded tasks: held-out prompts per bucket", ge=1,
                                  le=100_000)
    # the pool is the regime (how many of a step's prompts are already solved); the held-out set
    # stays balanced, so a bucket weighted up in training is not also weighted up in the score
    pool_weights: tuple[int, ...] = option((), "embedded tasks: training prompts of bucket i = "
                                           "train_per_bucket x weight i, in the mix's bucket "
                                           "order; empty = 1 each (the held-out set stays "
                                           "eval_per_bucket per bucket)")
    prompts_per_step: int = option(32, "M, prompts per training step", ge=1, le=65_536)
    group_size: int = option(8, "G, rollouts per prompt of uniform GRPO at budget 1", ge=1,
                             le=1024)
    steps: int = option(80, "training steps", ge=1, le=1_000_000)
    max_new_tokens: int = option(48, "L_max, the longest response", ge=1, le=131_072)
    temperature: float = option(1.0, "rollout sampling temperature", gt=0, le=10)
    top_p: float = option(1.0, "rollout nucleus sampling", gt=0, le=1)
    lr: float = option(5e-5, "AdamW learning rate", gt=0, le=1)
    warmup_steps: int = option(10, "linear learning-rate warm-up steps", ge=0, le=1_000_000)
    schedule: str = option("constant", "learning-rate schedule after warm-up",
                           choices=("constant", "cosine"))
    updates_per_step: int = option(1, "optimizer steps per training step, fixed", ge=1, le=1024)
    micro_batch_rows: int = option(512, "rows per forward/backward inside an update", ge=1,
                                   le=1_000_000)
    grad_clip: float = option(1.0, "gradient-norm clip", gt=0, le=1e6)
    clip_low: float = option(0.2, "PPO ratio clip below 1", ge=0, lt=1)
    clip_high: float = option(0.2, "PPO ratio clip above 1", ge=0, le=10)
    dual_clip: float = option(3.0, "dual-clip constant c of negative advantages", gt=1, le=1000)
    kl_coef: float = option(0.0, "low-variance KL penalty to the initial policy", ge=0, le=1000)
    normalize_std: bool = option(True, "divide group advantages by their standard deviation")
    eval_every: int = option(10, "steps between held-out evaluations", ge=1, le=1_000_000)
    eval_samples: int = option(4, "k of mean@k", ge=1, le=1024)
    eval_temperature: float = option(1.0, "evaluation sampling temperature", gt=0, le=10)
    checkpoint_every: int = option(10, "steps between checkpoints", ge=1, le=1_000_000)
    # --- the token-budget protocol (trainer.budget); per-step presets leave these out ---
    protocol: str = option("steps", "steps: train `steps` steps, evaluate every `eval_every`; "
                           "tokens: train until `token_budget` is spent, evaluate at "
                           "`eval_points` equal fractions of it (trainer.budget)",
                           choices=PROTOCOLS)
    token_budget: float | None = option(None, "token protocol: T, the generation budget of "
                                        "every run, in budget_unit", gt=0, le=1e15)
    budget_unit: str = option("tokens", "token protocol: what T counts (charged tokens, or "
                              "rollouts for the rollout-count papers)", choices=BUDGET_UNITS)
    eval_points: int = option(6, "token protocol: K, evaluations at j T / K (j = 1..K) besides "
                              "step 0", ge=2, le=1000)
    greedy_at: str = option("every", "evaluations that also decode greedily (pass@1): every "
                            "one, or 'ends' (step 0 and the last; the others record null)",
                            choices=("every", "ends"))
    step_cap: int = option(2000, "token protocol: a guard; a run stops here even if T is not "
                           "spent (its summary says how much was)", ge=1,
                           le=1_000_000)
    max_rounds: int = option(10, "most generation rounds per step (multi-round methods)", ge=1,
                             le=1000)
    verifier_workers: int = option(1, "verifier worker processes", ge=1, le=1024)
    verifier_timeout: float = option(5.0, "seconds per verifier call before it scores 0", gt=0,
                                     le=3600)
    max_rollout_weight: float = option(1000.0, "cap of a rollout's advantage weight", gt=0, le=1e9)
    score_truncated: bool = option(False, "score responses cut at max_new_tokens (false: they "
                                   "score 0)")
    threads: int = option(2, "torch CPU threads per run", ge=1, le=1024)
    device: str = option("cpu", "torch device (cpu, cuda, cuda:N)")
    # --- real-model fields (defaults keep the embedded presets as they were) ---
    train_data: str | None = option(None, "MATH/GSM8K JSONL training file; null = embedded "
                                    "chain_sum")
    eval_data: tuple[str, ...] = option((), "held-out JSONL files (needed with train_data)")
    train_limit: int | None = option(None, "first N training problems; null = all", ge=1,
                                     le=100_000_000)
    eval_limit: int | None = option(None, "first N problems of each held-out file; null = all",
                                    ge=1, le=100_000_000)
    max_prompt_tokens: int | None = option(None, "longer training prompts are dropped (verl); "
                                           "null = keep all", ge=1, le=1_048_576)
    dtype: str = option("float32", "compute dtype", choices=("float32", "bfloat16", "float16"))
    engine: str = option("hf", "rollout engine", choices=("hf", "vllm"))
    engine_options: dict = option(help="engine keyword arguments", default_factory=dict)

    def to_dict(self) -> dict:
        # tuples become lists so that the dict equals its own JSON round trip (config.json)
        data = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
        # fields added after the first results (the token protocol's, pool_weights) are left out
        # at their defaults, so that a config made before they existed is still recognised (and
        # resumed) as the same run
        defaults = {f.name: f.default for f in fields(self)}
        for key in ("protocol", "greedy_at", "pool_weights", *TOKEN_FIELDS):
            if getattr(self, key) == defaults[key]:
                del data[key]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "Preset":
        """The inverse of :meth:`to_dict` (a run's config.json); unknown keys are ignored so
        that a run written by a newer checkout still loads."""
        data = dict(data)
        if data.get("warm_start") is not None:
            data["warm_start"] = WarmStartConfig.from_dict(data["warm_start"])
        for key in ("eval_data", "pool_weights"):
            data[key] = tuple(data.get(key) or ())
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
