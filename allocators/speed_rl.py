"""SPEED-RL: a cheap screening pass per candidate, the rest of the group only for prompts whose
screening rewards are mixed (docs/METHODS.md §SPEED-RL).

Paper: "SPEED-RL: Faster Training of Reasoning Models via Online Curriculum Learning", Zhang,
Arora, Mei, Zanette, arXiv 2506.09016.  The released code is the reference ([code]
``Zanette-Labs/speed-rl@80e47b5``: ``verl/trainer/ppo/data_controller.py`` (``DataController``),
``recipe/dapo/src/fast_dapo_ray_trainer.py`` (``fit``), ``run_fast_rloo_7b.sh``,
``run_rloo_7b.sh``).

Mechanism (as released):

1. Screening: each fresh candidate gets ``n_init`` rollouts.  It qualifies iff the population
   std of its screening rewards is > 0 (:func:`speed_screen`; for binary rewards: pass rate
   strictly between 0 and 1).  Unqualified prompts are dropped (their rows are charged, never
   trained on).
2. Continuation: every qualified prompt gets ``n_cont`` more rollouts in the *next* generation
   call, which also screens the next batch of fresh candidates (one inference call per round,
   screening + continuation).  A prompt's training group is its screening rows plus its
   continuation rows, ``n_init + n_cont = n`` rows.
3. Completed groups queue FIFO; a training step takes the first ``M``.  Completed groups beyond
   ``M`` and qualified prompts still waiting for their continuation carry over to the next step
   (the code's ``prompts_for_training`` / ``prompts_for_second_generation_phase``); a step whose
   queue already holds ``M`` completed groups trains without generating.

Per step here: round ``r`` requests ``n_init`` screening rollouts (tag ``"screen"``) for
``ceil(candidate_multiplier*M)`` fresh candidates plus ``n_cont`` continuation rollouts (tag
``"continue"``) for every waiting qualified prompt; after each round the continuations become
completed groups and the screens are classified; stop once ``M`` groups are complete or after
``max_rounds`` rounds (then the step trains on the completed groups it has).

Defaults and provenance:

* Group ``n = round_half_up(b*G)`` - harness: uniform GRPO's group at budget ``b`` (the code's
  baseline RLOO uses ``n = 24`` and SPEED ``4 + 20``: the same trained group size).
* ``n_init = max(2, round_half_up(screen_fraction * n))``, ``screen_fraction = 4/24`` [code: 4 of
  24], ``n_cont = n - n_init`` (at least 1, else construction fails).  The floor 2 is a harness
  choice (one screening rollout has std 0 and qualifies nothing).  At ``G = 8``: (2, 6); at
  ``b = 0.5``: (2, 2); ``b = 0.25`` (n = 2) cannot run.  ``screen_size`` / ``continue_size``
  override them.
* ``candidate_multiplier = 4`` [code: ``gen_batch_size = 64`` for ``train_batch_size = 16``].
* ``max_rounds = 10`` harness (the code raises at 50 generation batches; the loop's own
  ``max_rounds`` also applies).

Budget: every screening and continuation row is charged in the round that generates it; the
per-step cost varies (zero on a step that trains from the carried-over queue, more when few
candidates qualify), so SPEED is compared on cumulative tokens and rollouts.

Departures:

* The code consumes, and never uses, one dataloader batch on each iteration that trains
  (``fit`` trains instead of generating on that iteration); here a step that trains from the
  queue draws no candidates.
* The code rounds continuation batches down to a multiple of the GPU count and keeps the rest
  waiting; irrelevant here, every waiting prompt is continued in the next round.
* The code's ``n_cont % n_init == 0`` requirement (continuations are generated as
  ``n_cont / n_init`` repeats of an ``n_init``-sample request) is not needed here.
* The paper's base algorithms are RLOO and DAPO; the loop's shared GRPO loss applies here.
* Rows aborted by a length controller are left out of the screening test.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from allocators import register
from allocators.base import (Allocator, PromptInfo, Request, Rollout, group_rows,
                             round_half_up, two_stage_split)
from allocators.dapo import RowCursor
from core.options import Options, option

SCREEN, CONTINUE = "screen", "continue"


def speed_screen(rewards_per_group: Sequence[Sequence[float]]) -> np.ndarray:
    """True for each screened prompt whose rewards have population std > 0 (the code's test)."""
    return np.array([len(r) > 0 and float(np.std(np.asarray(r, dtype=np.float64))) > 0.0
                     for r in rewards_per_group], dtype=bool)


def speed_split(n: int, *, screen_fraction: float = 4.0 / 24.0, min_screen: int = 2,
                screen_size: int | None = None,
                continue_size: int | None = None) -> tuple[int, int]:
    """(n_init, n_cont): screening and continuation rollouts for a trained group of ``n``."""
    n_init, n_cont = two_stage_split(n, screen_fraction, min_screen, screen_size, continue_size)
    if n_init < 2 or n_cont < 1:
        raise ValueError(f"speed-rl: a group of {n} gives screen {n_init} / continue {n_cont}; "
                         f"need screen >= 2 and continue >= 1 (raise the budget fraction or set "
                         f"screen_size/continue_size)")
    return n_init, n_cont


@dataclass(frozen=True)
class SpeedRLOptions(Options):
    screen_fraction: float = option(4.0 / 24.0, "screening rollouts as a fraction of the "
                                    "group (the released 4 of 24)", gt=0, le=1)
    min_screen: int = option(2, "fewest screening rollouts per prompt", ge=1)
    screen_size: int | None = option(None, "screening rollouts per prompt (wins over the "
                                     "fraction)", ge=2)
    continue_size: int | None = option(None, "continuation rollouts per qualified prompt; "
                                       "null = the rest of the group", ge=1)
    candidate_multiplier: float = option(4.0, "fresh prompts screened per round, as a multiple "
                                         "of M (capped at the pool)", gt=0)
    max_rounds: int = option(10, "rounds per step, round 0 included", ge=1)


@register("speed-rl")
class SpeedRL(Allocator):
    Options = SpeedRLOptions

    def __init__(self, setting, **options) -> None:
        super().__init__(setting, **options)
        o = self.opts
        self.group_size = round_half_up(setting.budget_fraction * setting.group_size)
        self.n_init, self.n_cont = speed_split(self.group_size, screen_fraction=o.screen_fraction,
                                               min_screen=o.min_screen, screen_size=o.screen_size,
                                               continue_size=o.continue_size)
        self.pool_size = int(setting.pool_size)
        # cross-step state: qualified screens awaiting continuation, completed groups (FIFO)
        self.waiting: deque[list[Rollout]] = deque()
        self.ready: deque[list[Rollout]] = deque()
        # the step in progress: (pid, round) -> screening rows whose continuation was requested
        self.in_flight: dict[tuple[int, int], list[Rollout]] = {}
        self.cursor = RowCursor()

    def attach_pool(self, pool: list[PromptInfo]) -> None:
        self.pool_size = len(pool)

    def fresh_per_round(self) -> int:
        wanted = math.ceil(self.opts.candidate_multiplier * self.setting.prompts_per_step)
        return min(wanted, self.pool_size) if self.pool_size else wanted

    def candidates_per_step(self) -> int:
        # a queue that already holds a batch trains without screening anyone
        return 0 if len(self.ready) >= self.setting.prompts_per_step else self.fresh_per_round()

    # -- the step --------------------------------------------------------------------------
    def plan(self, step, candidates, stats, budget):
        self.in_flight, self.cursor = {}, RowCursor()
        self.step_metrics = {"rounds": 1, "screened": 0, "qualified": 0, "continued": 0,
                             "carried_ready": len(self.ready), "carried_waiting": len(self.waiting)}
        if len(self.ready) >= self.setting.prompts_per_step:
            self.step_metrics["rounds"] = 0
            return []
        return self.round_requests(0, candidates)

    def follow_up(self, step, round_index, rollouts, ctx):
        self.absorb(step, rollouts)
        if not self.step_metrics["rounds"]:
            return []
        if len(self.ready) >= self.setting.prompts_per_step:
            return []
        if round_index >= min(self.opts.max_rounds, ctx.max_rounds):
            return []
        requests = self.round_requests(round_index, ctx.draw(self.fresh_per_round()))
        if requests:
            self.step_metrics["rounds"] = round_index + 1
        return requests

    def select(self, step, rollouts):
        self.absorb(step, rollouts)
        take = min(self.setting.prompts_per_step, len(self.ready))
        groups = [self.ready.popleft() for _ in range(take)]
        self.step_metrics.update(trained_groups=len(groups), ready_left=len(self.ready),
                                 waiting_left=len(self.waiting))
        return groups

    def observe(self, step, groups, stats):
        # rows of the step are no longer needed here (the queues keep their own references)
        self.in_flight, self.cursor = {}, RowCursor()

    def round_requests(self, round_index: int, candidates: list[PromptInfo]) -> list[Request]:
        continued = list(self.waiting)
        self.waiting.clear()
        for rows in continued:
            self.in_flight[(rows[0].pid, round_index)] = rows
        self.step_metrics["screened"] += len(candidates)
        self.step_metrics["continued"] += len(continued)
        return ([Request(c.pid, self.n_init, tag=SCREEN) for c in candidates]
                + [Request(rows[0].pid, self.n_cont, tag=CONTINUE) for rows in continued])

    def absorb(self, step: int, rollouts: list[Rollout]) -> None:
        """File the rows generated since the last call: complete groups, classify screens."""
        new, _ = self.cursor.new_rows(rollouts)
        screens, continuations = [], {}
        for row in new:
            if row.step != step:
                continue
            if row.tag == CONTINUE:
                continuations.setdefault((row.pid, row.round), []).append(row)
            elif row.tag == SCREEN:
                screens.append(row)
        for key, rows in continuations.items():
            self.ready.append(self.in_flight.pop(key) + rows)
        groups = group_rows(screens)
        qualified = speed_screen([[r.reward for r in g if r.kept] for g in groups])
        for group, ok in zip(groups, qualified):
            if ok:
                self.waiting.append(group)
        self.step_metrics["qualified"] = self.step_metrics.get("qualified", 0) + int(qualified.sum())

    def resolved_options(self) -> dict:
        return {**super().resolved_options(), "group_size": self.group_size,
                "n_init": self.n_init, "n_cont": self.n_cont,
                "fresh_per_round": self.fresh_per_round()}
