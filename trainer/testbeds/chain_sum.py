"""``chain_sum``: exact worked solutions of reasoning-gym chain sums; presets ``smoke`` (tests)
and ``tiny`` (the first embedded default, kept while results made with it are committed).

Measured (issue 14, ``results/tiny-calibration``): little headroom -- the 2-digit buckets never
move under RL, responses have near-constant length -- and the gate fails (learning +0.020).
"""
from __future__ import annotations

from trainer.config import Architecture, Preset, WarmStartConfig
from trainer.mixes import Bucket, TaskMix
from trainer.testbeds import Gate, Testbed, register

# Easy to hard for a ~1M-parameter policy after a few minutes of warm start.
DEFAULT_BUCKETS = (
    Bucket("t2d1", 2, 1),
    Bucket("t3d1", 3, 1),
    Bucket("t2d2", 2, 2),
    Bucket("t3d2", 3, 2),
)
MIX = TaskMix("chain_sum", DEFAULT_BUCKETS)

_SMOKE_ARCH = Architecture(hidden=64, layers=2, heads=2, kv_heads=1, intermediate=192)

register(Testbed(
    "chain_sum", "exact chain sums of one- and two-digit numbers (little headroom)",
    mix=MIX,
    presets=(
        Preset("smoke", "seconds-long run for tests: a 0.1M policy, 8 prompts x 8, 4 steps",
               warm_start=WarmStartConfig(arch=_SMOKE_ARCH, steps=500, batch=32, lr=5e-3,
                                          examples_per_bucket=400, train_per_bucket=40,
                                          eval_per_bucket=4),
               train_per_bucket=40, eval_per_bucket=4, prompts_per_step=8, group_size=8,
               steps=4, max_new_tokens=40, eval_every=4, eval_samples=2, checkpoint_every=2,
               warmup_steps=1),
        Preset("tiny", "the first embedded default (kept for results/tiny-*): a 0.8M Qwen3 "
               "policy on exact chain_sum, 32 prompts x 8, 80 steps",
               warm_start=WarmStartConfig()),
    ),
    # tiny fails the gate at any seed count (its effects are ~0); 3 is the committed run's
    gate=Gate(seeds=3),
))
