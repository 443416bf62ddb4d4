"""``leg-facts``: the second regime (issue 27) -- reasoning-gym ``leg_counting`` questions whose
difficulty is twenty animals the warm start half-knows, so that most groups carry no gradient
and a step's learning is limited by how many informative prompts it trains on.

Two thirds of the training pool never names a hard animal and is solved nearly always
(all-correct groups); a sixth names one and is solved 8-30% of the time (a graded tail every
estimate can see); a sixth names two and is solved a few percent of the time (mostly all-wrong
groups).  The held-out set has the four buckets in equal parts, so the score weighs them
equally (``Preset.pool_weights`` sets the pool apart from it).  What RL learns here is a fact
per hard animal, from correct samples of it; a correct sample transfers to every question
naming that animal, held-out ones included, and with twenty facts each one is a small share of
the accuracy, so seeds differ by less than a fact's worth.  G = 16 (Knapsack-RL's and
CoBA-RL's), so b = 0.25 still leaves 4 rollouts a prompt and the methods freedom above the
2-rollout floor.  ``trainer.legs`` describes the task and its worked solutions.

What is scarce is informative *prompts*, not rollouts: the plain oracle, which can only
redistribute rollouts among the step's 16 candidates, is level with GRPO here (the gate, seeds
0-2: +0.001 [-0.033, +0.034] at b = 0.5, +0.013 at b = 0.25) -- it makes the few informative
groups bigger -- while an oracle that picks the informative prompts from four times as many
candidates (``screening-oracle``, allocators/controls.py) is well ahead (+0.067 [+0.030,
+0.105] at b = 0.5).  So the gate's oracle here is ``screening-oracle``, and its calibration
reports the plain oracle beside it: on this testbed allocation-only methods have little
headroom to find, and screening methods (DAPO, GRESO, SPEED-RL) have much.

Gate: stricter than ``noisy-chain``'s (issue 27): learning >= 0.10, budget sensitivity >= 0.06,
headroom (screening oracle - GRPO) >= 0.04 at b = 0.5 or 0.25, anti-oracle below GRPO.  It
passes at seeds 0-2 (learning +0.168, budget sensitivity +0.081, headroom +0.067 [+0.030,
+0.105], negative control +0.167) and at seeds 0-4 (headroom +0.052 [+0.022, +0.082]), but seeds
3 and 4 (+0.038, +0.020) showed a paired SD of the headroom of 0.024, not 0.015: at that spread
3 seeds exclude 0 with power 0.51, 5 with 0.80, so the gate runs **5 seeds**, as
``noisy-chain``'s does (results/leg-facts-calibration/calibration.md; the 3-seed pass is
calibration-seeds-0-2.md).  Designs tried (that directory's README): 1, eight facts at
rates 0.55-0.95; 2, eight at 0.90-0.99 (the oracle could not see a fact solved 1-3% of the time,
skipped it, and lost to GRPO); 3b, twenty at 0.86-0.95 (fact discovery by luck again); 3a, this
mix with the pool in equal parts (the screening oracle led by +0.032 at 4 seeds, short of 0.04);
4, this one.
"""
from __future__ import annotations

from dataclasses import replace

from trainer.config import Preset, WarmStartConfig
from trainer.mixes import HardFact, LegBucket, LegMix
from trainer.testbeds import Gate, Testbed, register

# Decoys are the leg count of a similar-looking animal (a misconception, not a random slip).
# Every true count and every decoy here is also the count of a common animal no fact touches
# (10 lobster, 8 spider, 6 ant, 4 dog, 2 bird, 0 snake), so a correct sample's products and sums
# are ones the warm start knows: a hard fact is hard only for its leg count.  Twenty facts, rates
# evenly 0.92 to 0.70: a one-fact question's pass rate is about 0.08-0.30, so 16 estimate
# rollouts see a correct sample of the hardest with probability 0.74 (design 2's 0.01-0.10 were
# invisible to them), while G = 4 or 8 draws miss it often.  The warm start: held-out mean@16
# 0.550 (e2 0.980, e3 0.962, h1 0.193, h2 0.066).
HARD_FACTS = (
    HardFact("crab", 8, 0.92),
    HardFact("shrimp", 6, 0.908),
    HardFact("scorpion", 6, 0.897),
    HardFact("praying mantis", 4, 0.885),
    HardFact("firefly", 4, 0.874),
    HardFact("leech", 2, 0.862),
    HardFact("duck", 4, 0.851),
    HardFact("sheep", 2, 0.839),
    HardFact("jellyfish", 2, 0.827),
    HardFact("flatworm", 2, 0.816),
    HardFact("sea slug", 2, 0.804),
    HardFact("cockroach", 8, 0.793),
    HardFact("cricket", 8, 0.781),
    HardFact("beetle", 8, 0.769),
    HardFact("grasshopper", 4, 0.758),
    HardFact("wasp", 4, 0.746),
    HardFact("butterfly", 4, 0.735),
    HardFact("deer", 2, 0.723),
    HardFact("giraffe", 2, 0.712),
    HardFact("chicken", 4, 0.7),
)
BUCKETS = (
    LegBucket("e2", 2, 0),      # no hard fact: nearly always solved
    LegBucket("e3", 3, 0),
    LegBucket("h1", 3, 1),      # one: the graded, solvable tail
    LegBucket("h2", 3, 2),      # two: nearly never
)
MIX = LegMix("leg_facts", BUCKETS, HARD_FACTS, max_instances=9, step_error_rate=0.002,
             check_rate=0.5)

WARM_START = WarmStartConfig(task_mix="leg_facts", steps=1000, warmup=100,
                             train_per_bucket=60, eval_per_bucket=80)

# The pool: twice as many questions naming no hard animal as naming one or two (240 : 60 : 60;
# the held-out set stays 80 per bucket, so the score still weighs the four buckets equally).
# Two thirds of a step's prompts are then nearly always solved, as in the papers' regime where
# most groups carry no gradient; GRPO sees about 5 hard prompts a step and a screening method
# finds 16 among 64 candidates.  Pilot (seeds 0, 1, GRPO and screening-oracle at b = 0.5):
# screening - GRPO +0.081 and +0.052 at weights (2, 2, 1, 1); +0.045 and +0.043 at (3, 3, 1, 1),
# where 64 candidates hold too few hard ones; +0.032 and +0.020 at 1 each (the gate's seeds 0, 1).
POOL_WEIGHTS = (2, 2, 1, 1)

STEPS = Preset(
    "leg-facts-steps", "the per-step protocol on leg-facts: a 0.8M Qwen3 policy warm-started on "
    "leg counting with half-known animals, 16 prompts x 16, 60 steps",
    warm_start=WARM_START, task_mix="leg_facts", train_per_bucket=60, eval_per_bucket=80,
    pool_weights=POOL_WEIGHTS, prompts_per_step=16, group_size=16, steps=60, max_new_tokens=72, lr=1e-4, warmup_steps=5,
    updates_per_step=2, eval_every=15, eval_samples=4, checkpoint_every=15, threads=1)

# T = 320k: 25 GRPO steps at b = 1, where GRPO's held-out accuracy is still rising.  Design 3a
# at T = 480k (seed 0): GRPO at b = 0.5 and 0.25 reached the ceiling (~0.87) by ~300k, so the
# last third only diluted every difference; at 320k GRPO at b = 1 gains +0.081 [+0.057, +0.104]
# between T/2 and T (design 4's gate, seeds 0-2; design 3a's: +0.081 [+0.029, +0.132], 0-3).
TOKENS = replace(
    STEPS, name="leg-facts", description="the second regime: leg counting with half-known "
    "animals under the token protocol (16 prompts x 16 per step at b = 1, T = 320k tokens), "
    "evaluated at 6 equal fractions of T", protocol="tokens", token_budget=320_000,
    eval_points=6, step_cap=600, greedy_at="ends")

register(Testbed(
    "leg_facts", "leg counting with half-known animals: informative groups are scarce",
    mix=MIX, presets=(STEPS, TOKENS),
    gate=Gate(seeds=5, learning=0.10, budget_sensitivity=0.06, headroom=0.04,
              negative_control=0.0, headroom_budgets=(0.5, 0.25), oracle="screening-oracle")))
