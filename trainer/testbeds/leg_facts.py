"""``leg-facts``: the second regime (issue 27) -- reasoning-gym ``leg_counting`` questions whose
difficulty is a handful of animals the warm start half-knows, so that informative groups are
scarce and allocation has room.

Built so that per-step learning is limited by the groups that carry a gradient, not by optimizer
steps (``noisy-chain``'s regime): half the pool never names a hard animal and is solved nearly
always (all-correct groups), a quarter names one and is solved 1-10% of the time (a graded,
hard-but-solvable tail), a quarter names two and is nearly never solved (all-wrong groups).  What
RL learns here is a fact per hard animal, and only from a correct sample of it; a correct sample
transfers to every question naming that animal, held-out ones included.  So an allocation that
finds more first positives on hard questions per token learns faster.  G = 16 (Knapsack-RL's and
CoBA-RL's), so b = 0.25 still leaves 4 rollouts a prompt and the methods freedom above the
2-rollout floor.  ``trainer.legs`` describes the task and its worked solutions.

Gate: stricter than ``noisy-chain``'s (issue 27): learning >= 0.10, budget sensitivity >= 0.06,
headroom (oracle - GRPO) >= 0.04 at b = 0.5 or 0.25, anti-oracle below GRPO; 3 seeds.
"""
from __future__ import annotations

from dataclasses import replace

from trainer.config import Preset, WarmStartConfig
from trainer.mixes import HardFact, LegBucket, LegMix
from trainer.testbeds import Gate, Testbed, register

# Decoys are the leg count of a similar-looking animal (a misconception, not a random slip).
# Every true count and every decoy here is also the count of a common animal no fact touches
# (10 lobster, 8 spider, 6 ant, 4 dog, 2 bird, 0 snake), so a correct sample's products and sums
# are ones the warm start knows: a hard fact is hard only for its leg count.  The rates put a
# one-hard-fact question's pass rate at about 0.01-0.10: at G = 4 (b = 0.25) uniform GRPO rarely
# sees a correct sample there, at G = 16 sometimes.  (Design 1, rates 0.55-0.95 with woodlouse
# and starfish among them: GRPO learnt every learnable fact within a third of T and the oracle
# gained only ~+0.01 at b = 0.5 -- not signal-limited; issue 27's note has the numbers.)
HARD_FACTS = (
    HardFact("crab", 8, 0.99),
    HardFact("shrimp", 6, 0.985),
    HardFact("scorpion", 6, 0.98),
    HardFact("praying mantis", 4, 0.97),
    HardFact("firefly", 4, 0.96),
    HardFact("leech", 2, 0.95),
    HardFact("duck", 4, 0.93),
    HardFact("sheep", 2, 0.90),
)
BUCKETS = (
    LegBucket("e2", 2, 0),      # no hard fact: nearly always solved
    LegBucket("e3", 3, 0),
    LegBucket("h1", 3, 1),      # one: the graded, solvable tail
    LegBucket("h2", 3, 2),      # two: nearly never
)
MIX = LegMix("leg_facts", BUCKETS, HARD_FACTS, max_instances=9, step_error_rate=0.005,
             check_rate=0.5)

WARM_START = WarmStartConfig(task_mix="leg_facts", steps=1000, warmup=100,
                             train_per_bucket=60, eval_per_bucket=80)

STEPS = Preset(
    "leg-facts-steps", "the per-step protocol on leg-facts: a 0.8M Qwen3 policy warm-started on "
    "leg counting with half-known animals, 16 prompts x 16, 60 steps",
    warm_start=WARM_START, task_mix="leg_facts", train_per_bucket=60, eval_per_bucket=80,
    prompts_per_step=16, group_size=16, steps=60, max_new_tokens=72, lr=1e-4, warmup_steps=5,
    updates_per_step=2, eval_every=15, eval_samples=4, checkpoint_every=15, threads=1)

# T = 480k: about 36 GRPO steps at b = 1, where GRPO's held-out accuracy is still rising (design
# 2 at T = 700k: +0.26 over the first 470k tokens, then flat, so "more budget helps" measured
# +0.05 between T/2 and T, below the gate's 0.06; the plateau only diluted every difference).
TOKENS = replace(
    STEPS, name="leg-facts", description="the second regime: leg counting with half-known "
    "animals under the token protocol (16 prompts x 16 per step at b = 1, T = 480k tokens), "
    "evaluated at 6 equal fractions of T", protocol="tokens", token_budget=480_000,
    eval_points=6, step_cap=600, greedy_at="ends")

register(Testbed(
    "leg_facts", "leg counting with half-known animals: informative groups are scarce",
    mix=MIX, presets=(STEPS, TOKENS),
    gate=Gate(seeds=3, learning=0.10, budget_sensitivity=0.06, headroom=0.04,
              negative_control=0.0, headroom_budgets=(0.5, 0.25))))
