"""VIGOR: every prompt starts with ``m0`` rollouts; over ``T`` follow-up rounds the groups with
the highest observed reward variance get more (docs/METHODS.md §VIGOR).

Paper: arXiv 2607.22002.  Neither its text nor its abstract could be found (``search`` over the
stored pages and documentation, 2026-12-06: no arXiv page, mirror or summary of the id), so its
title, equations and settings are unknown here, and no official code was found.  What is built
is the mechanism as this project's issue 28 states it; every other choice is tagged [inferred].
Nothing below is the paper's equation.

Stated [issue]: every prompt starts with ``m0`` rollouts; over ``T`` rounds the fraction ``alpha``
of groups with the highest observed reward variance gets ``gamma`` times more; ``alpha * gamma =
1`` keeps the budget; a follow-up-rounds method like SPEED-RL and Reinforce-Ada.

Mechanism here, per step, for the ``M`` candidates (:func:`vigor_boost`):

1. Round 0: ``m0`` rollouts of every candidate.
2. Rounds ``t = 1 .. T``: rank the step's groups by the population variance of their kept rows'
   rewards (every round so far), highest first, ties in candidate order; the top ``k =
   round_half_up(alpha * M)`` get ``round_half_up(gamma * m0)`` more rollouts each.
3. Each prompt trains on all its rows of the step as one group (advantages from the loop's shared
   GRPO function over that group).

Reading "gets gamma x more" as ``gamma * m0`` more rollouts per round [inferred] is what makes
"``alpha * gamma = 1`` keeps the budget" hold: each round then adds ``alpha*M*gamma*m0 = M*m0``
rollouts whatever ``alpha``, so the step's total is fixed by ``m0`` and ``T``:

    total = M*m0 + T * k * round_half_up(gamma*m0) = M*m0*(1 + T*alpha*gamma)   (exact rounding)

Defaults [inferred]: ``T = 1``, ``alpha = 0.5``, ``gamma = 2``, and ``m0 = max(2,
round_half_up(b*G / (1 + T*alpha*gamma)))``, so the expected step total equals uniform GRPO's
``C = b*M*G``: at ``G = 8`` the step spends exactly ``8M`` rollouts at ``b = 1`` (``m0 = 4``,
half the groups end with 12 rows, half with 4) and ``4M`` at ``b = 0.5`` (``m0 = 2``, 6 / 2).
``initial`` sets ``m0`` directly.  Other settings that leave ``alpha*M`` or ``gamma*m0``
fractional spend the rounded counts above (``step_metrics`` logs them); runs are compared on
cumulative tokens like every multi-round method.

Other choices [inferred]:

* Variance: population variance (``ddof = 0``) of the rewards of the kept rows; rows aborted by a
  length controller are charged but neither ranked nor trained.
* A group may be boosted in several rounds; the ranking is redone each round.
* The top fraction is taken whatever the variances: a zero-variance group is boosted when fewer
  than ``k`` groups are mixed (more rollouts may still reveal a mixed group), which also keeps
  the step's total exact.
* A candidate list with a repeated prompt id (a pool smaller than ``M``) is de-duplicated, as in
  Reinforce-Ada.
* The loss is the loop's shared GRPO loss.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from allocators import register
from allocators.base import Allocator, Request, Rollout, round_half_up
from allocators.dapo import RowCursor
from core.options import Options, option

TAG = "vigor"


def vigor_boost(rewards_per_group: Sequence[Sequence[float]], fraction: float) -> list[int]:
    """Indices of the ``round_half_up(fraction * groups)`` groups with the highest population
    reward variance, highest first, ties in group order."""
    variances = np.array([float(np.var(np.asarray(r, dtype=np.float64))) if len(r) else -1.0
                          for r in rewards_per_group])
    k = min(len(variances), round_half_up(fraction * len(variances)))
    return np.argsort(-variances, kind="stable")[:k].tolist()


@dataclass(frozen=True)
class VIGOROptions(Options):
    initial: int | None = option(None, "m0, rollouts per prompt in round 0; null = "
                                 "round_half_up(b*G / (1 + rounds*fraction*multiplier))", ge=1)
    rounds: int = option(1, "T, follow-up rounds after round 0", ge=0)
    fraction: float = option(0.5, "alpha, share of the groups (highest reward variance) boosted "
                             "each round", gt=0, le=1)
    multiplier: float = option(2.0, "gamma: a boosted group gets round_half_up(gamma*m0) more "
                               "rollouts (alpha*gamma = 1 keeps the budget)", gt=0)


@register("vigor")
class VIGOR(Allocator):
    Options = VIGOROptions

    def __init__(self, setting, **options) -> None:
        super().__init__(setting, **options)
        o = self.opts
        spread = 1.0 + o.rounds * o.fraction * o.multiplier
        self.m0 = (o.initial if o.initial is not None
                   else max(2, round_half_up(setting.budget_fraction * setting.group_size / spread)))
        self.extra = max(1, round_half_up(o.multiplier * self.m0))
        self.reset_step_state()

    def reset_step_state(self) -> None:
        self.order: list[int] = []                    # the step's prompts, in candidate order
        self.rows: dict[int, list[Rollout]] = {}      # pid -> kept rows so far this step
        self.cursor = RowCursor()

    def plan(self, step, candidates, stats, budget):
        self.reset_step_state()
        self.order = list(dict.fromkeys(c.pid for c in candidates))
        self.rows = {pid: [] for pid in self.order}
        self.step_metrics = {"rounds": 1, "boosted": 0,
                             "planned_rollouts": len(self.order) * self.m0}
        return [Request(pid, self.m0, tag=TAG) for pid in self.order]

    def follow_up(self, step, round_index, rollouts, ctx):
        self.absorb(step, rollouts)
        if round_index > min(self.opts.rounds, ctx.max_rounds - 1) or not self.order:
            return []
        chosen = vigor_boost([[r.reward for r in self.rows[pid]] for pid in self.order],
                             self.opts.fraction)
        self.step_metrics["rounds"] = round_index + 1
        self.step_metrics["boosted"] += len(chosen)
        self.step_metrics["planned_rollouts"] += len(chosen) * self.extra
        return [Request(self.order[i], self.extra, tag=TAG) for i in chosen]

    def select(self, step, rollouts):
        self.absorb(step, rollouts)
        return [self.rows[pid] for pid in self.order if self.rows[pid]]

    def observe(self, step, groups, stats):
        self.reset_step_state()

    def absorb(self, step: int, rollouts: list[Rollout]) -> None:
        """File the kept rows generated since the last call under their prompt."""
        new, _ = self.cursor.new_rows(rollouts)
        for row in new:
            if row.step == step and row.tag == TAG and row.kept and row.pid in self.rows:
                self.rows[row.pid].append(row)

    def resolved_options(self) -> dict:
        return {**super().resolved_options(), "initial_rollouts": self.m0,
                "extra_rollouts": self.extra,
                "boosted_per_round": round_half_up(self.opts.fraction
                                                   * self.setting.prompts_per_step)}
