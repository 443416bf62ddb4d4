"""``noisy-chain``: the default testbed (issue 14).  Chain sums of two to five one-digit terms
whose warm-start solutions carry injected step errors, so that the warm start samples correct
answers often but not reliably (``trainer.tasks`` describes the mix).

Built for the regime the methods were designed for: a pool mixing nearly-always, in-between and
nearly-never prompts, a pool of 480 prompts visited 4 times in 60 steps, two optimizer steps per
training step so that the PPO clip acts as a trust region, a length limit that truncates part of
the hardest bucket, and an evaluation of 320 prompts x 8 samples on common sampling seeds.  One
torch thread per run: two runs side by side on two cores beat one run on two threads (README,
"Results we measured"), so ``--jobs`` defaults to 2 there.

Gate: ``results/noisy-chain-calibration``.  It holds at 5 seeds; at 3 it depends on the seeds
(issue 27: seeds 0-2 pass, three other seeds fail on headroom, +0.015 [-0.014, +0.044]; over
those and seeds 0-4 the paired headroom's SD is 0.0067, and at that SD and a mean of +0.015 the
interval excludes 0 with 80% power from 5 seeds), hence ``Gate(seeds=5)``.
"""
from __future__ import annotations

from dataclasses import replace

from trainer.config import Preset, WarmStartConfig
from trainer.mixes import Bucket, TaskMix
from trainer.testbeds import Gate, Testbed, register

# Warm-start pass rates these rates aim at (measured ones in the preset's warmstart.json):
# t2 ~0.97, t3 ~0.7, t4 ~0.35, t5 ~0.1 -- a mix of nearly always, in between and nearly never.
NOISY_BUCKETS = (
    Bucket("t2", 2, 1, 0.02),
    Bucket("t3", 3, 1, 0.15),
    Bucket("t4", 4, 1, 0.30),
    Bucket("t5", 5, 1, 0.45),
)
MIX = TaskMix("noisy_chain", NOISY_BUCKETS, check_rate=0.5, balanced=True)

# 1,000 steps, not 500: at 500 the policy's own sampling slips (~40% of t3/t4 answers) swamped
# the injected error rates it is meant to reproduce
WARM_START = WarmStartConfig(task_mix="noisy_chain", steps=1000, warmup=100,
                             train_per_bucket=120, eval_per_bucket=80)

# The per-step testbed, as the committed per-step sweeps ran it (60 steps, mean@8 every 15
# steps): ``--preset noisy-chain-steps`` reproduces them.
STEPS = Preset(
    "noisy-chain-steps", "the per-step protocol on noisy-chain (the committed per-step sweeps): "
    "a 0.8M Qwen3 policy warm-started on chain sums with injected step errors, 32 prompts x 8, "
    "60 steps", warm_start=WARM_START, task_mix="noisy_chain", train_per_bucket=120,
    eval_per_bucket=80, steps=60, max_new_tokens=60, lr=1e-4, warmup_steps=5,
    updates_per_step=2, eval_every=15, eval_samples=8, checkpoint_every=15, threads=1)

# The token protocol (trainer.budget) on the same testbed: every run spends T = 500,000 charged
# tokens (GRPO at b = 1 spends 498,706 in the per-step preset's 60 steps, seed 0), so the
# schedule's reference is those 60 steps (warm-up over the first 5/60 of T).  Evaluated at 0 and
# at 6 equal fractions of T with mean@4 (greedy pass@1 at step 0 and the end only): the trade
# that keeps the main job within the per-step one's CPU seconds (README, "Equal compute: the
# token protocol").
TOKENS = replace(
    STEPS, name="noisy-chain", description="the embedded default: the noisy-chain testbed "
    "under the token protocol, every run spends T = 500k tokens (32 prompts x 8 per step at "
    "b = 1), evaluated at 6 equal fractions of T", protocol="tokens", token_budget=500_000,
    eval_points=6, step_cap=600, eval_samples=4, greedy_at="ends")

register(Testbed(
    "noisy_chain", "chain sums with injected step errors: the default testbed",
    mix=MIX, presets=(STEPS, TOKENS), gate=Gate(seeds=5)))
