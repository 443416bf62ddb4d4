"""GRESO: pre-rollout skipping of prompts predicted to give zero-variance groups (docs/ALGORITHMS.md §GRESO).

Paper: "Act Only When It Pays: Efficient Reinforcement Learning for LLM Reasoning via Selective
Rollouts", Zheng, Zhou, Bartoldson, Kailkhura, Lai, Zhao, Chen (CMU / LLNL / UIUC / Meta),
arXiv 2506.02177.  The paper body was not reviewed; the released code is the
reference ([code] ``Infini-AI-Lab/GRESO@b277843``: ``verl/trainer/ttis/presampling_selector.py``
``DataProfiler.filter_examples_all_probabilistic`` and ``verl/trainer/ppo/ray_trainer.py``
L298-299, L958-1010, L1140-1230).

Mechanism implemented:

1. Per prompt, the trace of its visits; a visit is all-correct (every kept reward = 1), all-wrong
   (every kept reward = 0) or mixed.  The streak ``c`` is the number of most recent consecutive
   visits of the same zero-variance kind as the last visit (0 when the last visit was mixed).
2. Before rollout, a candidate is skipped with probability ``1 - max(p^c, 0.01)``, ``p = p_easy``
   for an all-correct streak, ``p_hard`` for an all-wrong one (:func:`greso_skip_probability`).
3. After each step, from the pool's second epoch on (the code's ``epoch > 0``): realised easy /
   hard ratio = fraction of the groups generated this step (all rounds) that were all-correct /
   all-wrong; ``p -= step`` when the ratio reached its target, else ``p += step``; clamp to
   ``[lo, hi]``; targets ``tau/3`` (easy) and ``2*tau/3`` (hard) (:func:`greso_adapt`).
4. Skipping shrinks the batch, so GRESO runs on top of dynamic sampling: it is
   :class:`allocators.dapo.DAPODynamicSampling` whose admitted candidates are the non-skipped ones.
   The code filters dataloader batches until ``sampling_batch_size`` prompts survive, then
   generates them.  Here round 0 gets ``ceil(oversample*M / a)`` candidates, ``a`` = the fraction
   admitted over the previous step (1 at first, at least ``1/draw_limit``, at most one pool epoch),
   so that about ``oversample*M`` survive; all survivors are rolled out.  While fewer than ``M``
   mixed groups exist, a refill round wants ``k`` admitted candidates, ``k`` sized from the step's
   keep rate exactly as DAPO's refill (:func:`allocators.dapo.refill_size`); it draws fresh
   candidates in chunks, applies the skip rule to each, and stops once ``k`` are admitted or
   ``min(draw_limit*k, pool size)`` candidates were looked at; skipped candidates are consumed from
   the pool (as the code consumes dataloader batches).  ``select`` keeps the first ``M`` mixed
   groups in generation order; after ``max_rounds`` it trains on the mixed groups it has.

Defaults and provenance: ``p_easy = p_hard = 0.5`` [code: ``data.p_easy``/``p_hard`` in the
``*_greso.sh`` scripts], ``target_zero_variance = 0.25`` [code], ``p_step = 0.01``,
``p_min = 0.05``, ``p_max = 0.95``, keep floor 0.01 [code]; ``draw_limit = 10`` harness choice,
source silent (the code keeps consuming dataloader batches without bound; with the keep floor of
0.01 a bound is needed so that a pool of long-streak prompts cannot stall a round); refill sizing
(headroom 1.25 [code]) and ``max_rounds`` as DAPO's (see its docstring; the code's 64-prompt
floor on a refill is an absolute scale and is not used).  ``oversample = 1.0`` as DAPO's, so that
the two differ only by the skip rule; the released scripts generate ``sampling_batch_size = 192``
for a training batch of 128 ([code] ``train-scripts/*_greso.sh``), i.e. ``oversample=1.5``.  The
skip draws come from a numpy Generator seeded with ``setting.seed``.

Departures:

* Visit classification uses exact all-correct / all-wrong tests instead of the code's mean
  ``>= 0.98`` / ``<= 0.11`` (docs/ALGORITHMS.md §Scaling: those thresholds mean "all" only for ``G <= 9``).
* "Hard" is adapted to binary rewards.  The release scores 0 (no extractable answer), 0.1
  (formatted but wrong, ``latex_math.compute_score(format_score=0.1)``) and 1, and uses two
  notions of hard: the skip streak counts visits of mean ``<= 0.11`` (no correct answer, any mix
  of 0 and 0.1), while the adaptation's realised hard ratio counts only groups whose every
  reward is exactly 0.1 ([code] ``metric_utils.compute_reward_metrics``
  ``format_example_ratio``, on rows reshaped by a hard-coded group of 8), so all-0 groups and
  0/0.1 mixes are neither easy nor hard there.  The harness's verifiers score 0 or 1 with no
  format credit, so both become "every kept reward is 0" (all-wrong): the streak keeps the
  release's meaning, and the hard ratio counts every no-correct-answer group, including those
  the release would have scored all 0 (no answer at all), which it leaves out.  With a policy
  that always formats its answer the two ratios coincide; where unformatted answers are common
  the harness's hard ratio is the larger, so ``p_hard`` falls faster than the release's would.
* The trace is summarised by this allocator as one signed streak per prompt, updated from every
  *generated* group of the step (the code's ``DataProfiler`` likewise records every generated
  group, including those dynamic sampling then drops).  The shared ``PromptStats`` store holds the
  same visits; the streak is a running summary of them kept so that the skip rule costs O(1) per
  candidate instead of a walk over each prompt's history.
* The epoch is not given to allocators: it is counted from the candidates this allocator is shown
  (:class:`EpochTracker`: the pool is an epoch-shuffled permutation, so the first repeated prompt id
  starts the next epoch).
* When a step generated no group at all (everything skipped), p_easy / p_hard are left unchanged
  (the code would divide by zero).
* Round 0's candidate count is predicted from the previous step's admission rate instead of
  filtering until a full batch survives (the loop draws round 0's candidates before ``plan``); a
  misprediction is made up, or overshot, by the refill rounds.
* The code's ``last_sampling`` rule (one final refill, then train on whatever is mixed) is replaced
  by DAPO's round limit; the overlong shaping switch is inherited from DAPO and off by default.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from allocators import register
from allocators.dapo import DAPODynamicSampling, DAPOOptions
from core.options import option
from allocators.base import PromptInfo, Rollout

ALL_CORRECT, MIXED, ALL_WRONG = 1, 0, -1


def greso_skip_probability(streak: int, p: float, min_keep: float = 0.01) -> float:
    """Probability of skipping a prompt after ``streak`` consecutive zero-variance visits."""
    if streak < 0:
        raise ValueError(f"streak must be >= 0, got {streak}")
    return float(1.0 - max(p ** streak, min_keep))


def greso_adapt(p_easy: float, p_hard: float, easy_ratio: float, hard_ratio: float,
                target: float = 0.25, step: float = 0.01, lo: float = 0.05,
                hi: float = 0.95) -> tuple[float, float]:
    """One adaptation step of the two keep bases toward the zero-variance targets tau/3, 2*tau/3.

    A realised ratio at or above its target means too many zero-variance groups were generated,
    so the base shrinks (more skipping); below target it grows.
    """
    def move(p: float, ratio: float, goal: float) -> float:
        p = p - step if ratio >= goal else p + step
        return float(min(hi, max(lo, p)))

    return move(p_easy, easy_ratio, target / 3.0), move(p_hard, hard_ratio, 2.0 * target / 3.0)


def visit_kind(rewards) -> int:
    """All-correct, all-wrong or mixed, by exact tests on the (non-empty) kept rewards."""
    if all(r == 1.0 for r in rewards):
        return ALL_CORRECT
    if all(r == 0.0 for r in rewards):
        return ALL_WRONG
    return MIXED


def extend_streak(streak: int, kind: int) -> int:
    """Signed streak after one more visit: +c all-correct, -c all-wrong, 0 after a mixed visit."""
    if kind == MIXED:
        return 0
    return streak + kind if streak * kind > 0 else kind


class EpochTracker:
    """Counts pool epochs from the candidate ids an allocator sees, in draw order.

    The loop's pool hands out an epoch-shuffled permutation of the training set and cycles, so
    within an epoch every id appears once: the first id seen twice starts the next epoch.
    """

    def __init__(self) -> None:
        self.epoch = 0
        self._seen: set[int] = set()

    def advance(self, pid: int) -> bool:
        """Record ``pid``; True when it starts a new epoch."""
        if pid in self._seen:
            self.epoch += 1
            self._seen = {pid}
            return True
        self._seen.add(pid)
        return False


@dataclass(frozen=True)
class GRESOOptions(DAPOOptions):
    p_easy: float = option(0.5, "initial base skip probability of all-correct streaks",
                           ge=0, le=1)
    p_hard: float = option(0.5, "initial base skip probability of all-wrong streaks",
                           ge=0, le=1)
    target_zero_variance: float = option(0.25, "zero-variance share the adaptation aims at",
                                         ge=0, le=1)
    p_step: float = option(0.01, "adaptation step of p_easy / p_hard", ge=0)
    p_min: float = option(0.05, "lower clip of p_easy / p_hard", gt=0, le=1)
    p_max: float = option(0.95, "upper clip of p_easy / p_hard", gt=0, le=1)
    min_keep: float = option(0.01, "floor of the keep probability", ge=0, le=1)
    draw_limit: float = option(10.0, "candidates a refill may look at per admitted one", ge=1)


@register("greso")
class GRESO(DAPODynamicSampling):
    Options = GRESOOptions

    def __init__(self, setting, **options) -> None:
        super().__init__(setting, **options)
        o = self.opts
        if not o.p_min <= o.p_max:
            raise ValueError(f"need p_min <= p_max, got {o.p_min}, {o.p_max}")
        self.p_easy, self.p_hard = o.p_easy, o.p_hard
        self.draw_limit = o.draw_limit
        self.rng = np.random.default_rng(setting.seed)
        self.streaks: dict[int, int] = {}
        self.epochs = EpochTracker()
        self.admit_rate = 1.0       # admitted / considered candidates over the last step

    def candidates_per_step(self) -> int:
        """Enough candidates that about ``base_batch`` survive the skip rule (last step's rate)."""
        wanted = math.ceil(self.base_batch() / max(self.admit_rate, 1.0 / self.draw_limit))
        return min(wanted, self.pool_size) if self.pool_size else wanted

    def admit(self, step: int, candidates: list[PromptInfo]) -> list[PromptInfo]:
        for c in candidates:
            self.epochs.advance(c.pid)
        streaks = np.array([self.streaks.get(c.pid, 0) for c in candidates], dtype=np.int64)
        skip_probability = np.array([
            greso_skip_probability(abs(s), self.p_easy if s > 0 else self.p_hard,
                                   self.opts.min_keep)
            for s in streaks.tolist()])
        skipped = self.rng.random(len(candidates)) < skip_probability
        metrics = self.step_metrics
        metrics["considered"] = metrics.get("considered", 0) + len(candidates)
        metrics["admitted"] = metrics.get("admitted", 0) + int(len(candidates) - skipped.sum())
        for key, kind in (("skipped_easy", streaks > 0), ("skipped_hard", streaks < 0)):
            metrics[key] = metrics.get(key, 0) + int(np.sum(skipped & kind))
        return [c for c, skip in zip(candidates, skipped) if not skip]

    def select(self, step: int, rollouts: list[Rollout]) -> list[list[Rollout]]:
        table = self.step_groups.update(rollouts)
        visits = [(g[0].pid, visit_kind(r)) for g, r in zip(table.groups, table.rewards) if r]
        for pid, kind in visits:
            self.streaks[pid] = extend_streak(self.streaks.get(pid, 0), kind)
        self.adapt([kind for _, kind in visits])
        if self.step_metrics.get("considered"):
            self.admit_rate = self.step_metrics["admitted"] / self.step_metrics["considered"]
        return self.choose(table)

    def adapt(self, kinds: list[int]) -> None:
        easy_ratio = kinds.count(ALL_CORRECT) / len(kinds) if kinds else 0.0
        hard_ratio = kinds.count(ALL_WRONG) / len(kinds) if kinds else 0.0
        o = self.opts
        if kinds and self.epochs.epoch >= 1:
            self.p_easy, self.p_hard = greso_adapt(
                self.p_easy, self.p_hard, easy_ratio, hard_ratio, o.target_zero_variance,
                o.p_step, o.p_min, o.p_max)
        self.step_metrics.update(easy_ratio=easy_ratio, hard_ratio=hard_ratio, p_easy=self.p_easy,
                                 p_hard=self.p_hard, epoch=self.epochs.epoch)

    def resolved_options(self) -> dict:
        # the adapted p_easy / p_hard are step metrics; the options are their initial values
        return {**super().resolved_options(), "p_easy_init": self.opts.p_easy,
                "p_hard_init": self.opts.p_hard}
