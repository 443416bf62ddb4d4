"""Reinforce-Ada: sample each prompt in rounds, stop sampling it once its group has the signal it
needs (successive elimination), then train on a fixed-size, balanced subset of its rows
(docs/METHODS.md §Reinforce-Ada).

Paper: "Reinforce-Ada: An Adaptive Sampling Framework for Reinforce-Style LLM Training", Xiong
et al. (RLHFlow), arXiv 2510.04996.  The released code is the reference ([code]
``RLHFlow/Reinforce-Ada@05be605``: ``verl/trainer/ppo/ray_trainer.py``
``_generate_multi_round_adaptive_downsampling``, ``verl/trainer/ppo/core_algos.py``
``compute_grpo_outcome_advantage`` (``global_stat_est``), ``verl/trainer/config/algorithm.py``,
``scripts/run_reinforce_ada.sh``, ``scripts/run_grpo.sh``).

Per step, for the ``M`` candidates:

1. Round ``r = 0 .. max_rounds-1``: every *active* prompt gets ``round_repeat`` rollouts.  A row
   is positive iff its reward ``> positive_threshold``; each prompt caches its positive and
   negative rows in arrival order.
2. Exit rule (:func:`ada_finished`), checked after each round: ``"balanced"`` - at least
   ``floor(keep/2)`` positives and ``keep - floor(keep/2)`` negatives; ``"positive_focused"`` -
   at least one positive.  A finished prompt is deactivated (never sampled again this step).
3. Down-sampling (:func:`ada_downsample`) to ``keep`` rows: a finished prompt takes
   ``min(floor(keep/2), P)`` positives and fills up to ``keep`` with negatives (then positives
   if negatives run short); a prompt still active after the last round takes what it has, at most
   ``keep`` rows, aiming at ``floor(keep/2)`` positives ("balanced") or at its observed positive
   ratio, clamped to ``[1, take-1]`` ("positive_focused"), filling from the other kind.  Rows
   are the first ones cached of each kind; positives first.
4. Advantages with global statistics (``global_stat = True``): the group's mean and std are
   those of *every* row the prompt drew this step, not only the ``keep`` trained rows.  The loop's
   advantage function reads them from ``Rollout.baseline_rewards``.

Defaults and provenance:

* ``round_repeat = round_half_up(b*G)`` - harness: the first round costs uniform GRPO's
  rollouts at budget ``b``; at ``G = 8``, ``b = 1`` this is the released 8 [code:
  ``round_repeat: 8``].
* ``keep = max(2, round_half_up(keep_fraction * round_repeat))``, ``keep_fraction = 0.5`` [code:
  ``rollout.n = 4`` kept of ``round_repeat = 8``]; at ``G = 8``: ``b = 1`` -> (8, 4) as released,
  ``b = 0.5`` -> (4, 2), ``b = 0.25`` -> (2, 2).  ``round_repeat`` / ``keep`` override them.
* ``max_rounds = 4``, ``positive_threshold = 0.7`` [code: ``algorithm.py``/``ppo_trainer.yaml``].
* ``choice = "balanced"`` [code: run script; the paper's headline variant], ``global_stat =
  True`` [code: run script; the config default is False].  The script also sets
  ``norm_adv_by_std_in_grpo = False`` (advantage ``r - mean``): that is the loop's
  ``normalize_std`` switch, shared by every method, not an option of this allocator.

Budget: every row of every round is charged; a step costs between ``M*round_repeat`` and
``max_rounds*M*round_repeat`` rollouts and trains on at most ``M*keep`` of them, so Reinforce-Ada
spends more than its share and is compared on cumulative tokens and rollouts.

Departures:

* The code pads each round to a multiple of the data-parallel size and cuts the padding off;
  nothing to pad here.
* A candidate list with a repeated prompt id (a pool smaller than ``M``) is de-duplicated.
* Rows aborted by a length controller are neither cached nor counted (they cannot train).
* The code raises when no prompt yields any row; here such a step simply trains on nothing.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from allocators import register
from allocators.base import Allocator, Request, Rollout, round_half_up
from allocators.dapo import RowCursor
from core.options import Options, option

CHOICES = ("balanced", "positive_focused")


def ada_finished(n_pos: int, n_neg: int, keep: int, choice: str = "balanced") -> bool:
    """Whether a prompt has the signal its exit rule asks for (and stops being sampled)."""
    if choice == "balanced":
        return n_pos >= keep // 2 and n_neg >= keep - keep // 2
    if choice == "positive_focused":
        return n_pos >= 1
    raise ValueError(f"reinforce-ada: choice must be one of {CHOICES}, got {choice!r}")


def ada_downsample(n_pos: int, n_neg: int, keep: int, *, finished: bool,
                   choice: str = "balanced") -> tuple[int, int]:
    """(positives, negatives) to train on out of ``n_pos`` / ``n_neg`` cached rows."""
    if finished:
        take = keep
        want_pos = min(keep // 2, n_pos)
        want_neg = min(keep - want_pos, n_neg)
    else:
        take = min(keep, n_pos + n_neg)
        if choice == "positive_focused":
            ratio = n_pos / (n_pos + n_neg) if n_pos + n_neg else 0.0
            target_pos = max(min(math.ceil(ratio * keep), take - 1), 1)
        else:
            target_pos = keep // 2
        target_neg = (take - target_pos) if choice == "positive_focused" else keep - target_pos
        want_pos, want_neg = min(n_pos, target_pos), min(n_neg, target_neg)
    short = take - want_pos - want_neg
    if short > 0:
        # one kind ran out: fill from the other, positives first (the code's order)
        if n_pos > want_pos:
            want_pos += min(n_pos - want_pos, short)
        elif n_neg > want_neg:
            want_neg += min(n_neg - want_neg, short)
    return int(want_pos), int(want_neg)


def ada_select(positive: Sequence[bool], keep: int, *, finished: bool,
               choice: str = "balanced") -> np.ndarray:
    """Indices of the trained rows among one prompt's rows (arrival order): positives first."""
    positive = np.asarray(positive, dtype=bool)
    pos, neg = np.flatnonzero(positive), np.flatnonzero(~positive)
    k_pos, k_neg = ada_downsample(len(pos), len(neg), keep, finished=finished, choice=choice)
    return np.concatenate([pos[:k_pos], neg[:k_neg]]).astype(np.int64)


@dataclass(frozen=True)
class ReinforceAdaOptions(Options):
    round_repeat: int | None = option(None, "rollouts per active prompt per round; null = "
                                      "round_half_up(b*G), uniform GRPO's group", ge=1)
    keep: int | None = option(None, "trained rows per prompt (wins over keep_fraction)", ge=2)
    keep_fraction: float = option(0.5, "trained rows as a fraction of round_repeat (at "
                                  "least 2)", gt=0, le=1)
    max_rounds: int = option(4, "sampling rounds per step, round 0 included", ge=1)
    positive_threshold: float = option(0.7, "a reward above this counts as positive")
    choice: str = option("balanced", "exit and down-sampling rule: balanced (keep/2 of each "
                         "kind) or positive_focused (one positive)", choices=CHOICES)
    global_stat: bool = option(True, "advantage mean/std over every row the prompt drew this "
                               "step, not only the trained ones")


@register("reinforce-ada")
class ReinforceAda(Allocator):
    Options = ReinforceAdaOptions

    def __init__(self, setting, **options) -> None:
        super().__init__(setting, **options)
        o = self.opts
        self.round_repeat = (o.round_repeat if o.round_repeat is not None
                             else round_half_up(setting.budget_fraction * setting.group_size))
        self.keep = (o.keep if o.keep is not None
                     else max(2, round_half_up(o.keep_fraction * self.round_repeat)))
        if self.round_repeat < 1 or self.keep < 2:
            raise ValueError(f"reinforce-ada: need round_repeat >= 1, keep >= 2; "
                             f"got {self.round_repeat}, {self.keep}")
        self.reset_step_state()

    def reset_step_state(self) -> None:
        self.order: list[int] = []                    # the step's prompts, in candidate order
        self.cache: dict[int, list[Rollout]] = {}     # pid -> kept rows so far
        self.finished: dict[int, bool] = {}
        self.cursor = RowCursor()

    def plan(self, step, candidates, stats, budget):
        self.reset_step_state()
        self.order = list(dict.fromkeys(c.pid for c in candidates))
        self.cache = {pid: [] for pid in self.order}
        self.finished = {pid: False for pid in self.order}
        self.step_metrics = {"rounds": 1}
        return [Request(pid, self.round_repeat, tag="ada") for pid in self.order]

    def follow_up(self, step, round_index, rollouts, ctx):
        self.absorb(step, rollouts)
        active = [pid for pid in self.order if not self.finished[pid]]
        if not active or round_index >= min(self.opts.max_rounds, ctx.max_rounds):
            return []
        self.step_metrics["rounds"] = round_index + 1
        return [Request(pid, self.round_repeat, tag="ada") for pid in active]

    def select(self, step, rollouts):
        self.absorb(step, rollouts)
        groups = []
        for pid in self.order:
            rows = self.cache[pid]
            if not rows:
                continue
            positive = [r.reward > self.opts.positive_threshold for r in rows]
            chosen = [rows[i] for i in ada_select(positive, self.keep, finished=self.finished[pid],
                                                  choice=self.opts.choice).tolist()]
            if self.opts.global_stat:
                pool = tuple(float(r.reward) for r in rows)
                for r in chosen:
                    r.baseline_rewards = pool
            groups.append(chosen)
        self.step_metrics.update(finished=sum(self.finished.values()),
                                 unfinished=len(self.order) - sum(self.finished.values()),
                                 trained_groups=len(groups))
        return groups

    def observe(self, step, groups, stats):
        self.reset_step_state()

    def absorb(self, step: int, rollouts: list[Rollout]) -> None:
        """Cache the kept rows of the rounds generated since the last call; apply the exit rule."""
        new, _ = self.cursor.new_rows(rollouts)
        touched = []
        for row in new:
            if row.step == step and row.pid in self.cache and not self.finished[row.pid] and row.kept:
                self.cache[row.pid].append(row)
                touched.append(row.pid)
        for pid in dict.fromkeys(touched):
            rows = self.cache[pid]
            n_pos = sum(r.reward > self.opts.positive_threshold for r in rows)
            if ada_finished(n_pos, len(rows) - n_pos, self.keep, self.opts.choice):
                self.finished[pid] = True

    def resolved_options(self) -> dict:
        return {**super().resolved_options(), "round_repeat": self.round_repeat,
                "keep": self.keep}
