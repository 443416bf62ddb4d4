"""PODS: generate ``n`` rollouts per prompt, train on the ``m`` whose rewards have the largest
variance (max-variance down-sampling; docs/METHODS.md §PODS).

Paper: "Not All Rollouts are Useful: Down-Sampling Rollouts in LLM Reinforcement Learning", Xu,
Savani, Fang, Kolter (CMU), arXiv 2504.13818.  No official code was found; the reference is the
paper's abstract and method as summarised in its public versions (v1-v4): generate many rollouts
in parallel, update on an informative subset, the subset chosen by max-variance down-sampling,
which has an ``O(n log n)`` solution.

Equations implemented (:func:`pods_select`): given rewards ``r_1..r_n`` and ``m <= n``, choose
``S``, ``|S| = m``, maximising ``Var({r_i : i in S})``.  Sorted ascending, some optimal ``S`` is
the ``m - k`` smallest together with the ``k`` largest rewards for some ``k`` in ``0..m``
(the paper's structural result; moving any chosen value outward never lowers the variance), so
one sort plus prefix sums of ``r`` and ``r^2`` scores every ``k`` in ``O(1)``: ``O(n log n)``
overall.  For binary rewards this keeps ``min(#correct, m/2)`` correct rows and fills the rest
with incorrect ones (balanced where possible).  GRPO advantages are then computed over the ``m``
kept rows (the loop's shared advantage function).

Per step: ``plan`` asks ``n`` rollouts of each of the ``M`` candidates; ``select`` keeps, per
group, the max-variance ``m`` of its kept (non-aborted) rows; the other ``n - m`` are generated
and charged but never trained on.

Defaults and provenance:

* ``n = round_half_up(b*G)`` - harness choice: PODS spends exactly uniform GRPO's rollouts at
  budget ``b`` (docs/DESIGN.md §Budget), so the comparison is at equal generation cost and PODS
  differs from GRPO only in training on the selected subset.  ``rollouts_per_prompt`` overrides
  ``n`` for the paper's "generate more than you train" form (then compare on cumulative tokens).
* ``m = max(2, round_half_up(keep_fraction * n))``, ``keep_fraction = 0.5`` - harness choice:
  the paper's (n, m) pairs were not available here (UNKNOWN); 2 is the smallest group with a
  baseline.  ``train_per_prompt`` overrides ``m``.
* ``rule = "max_variance"`` [paper]; ``"random"`` (a uniform ``m``-subset, seeded) is the
  natural control for the selection rule (harness option).
* Scale-free apart from ``n`` and ``m``, which are relative to ``G`` as docs/ALGORITHMS.md §Scaling
  asks.

Departures:

* Ties between subsets of equal variance go to the smallest ``k`` (fewest top rewards), and the
  kept rows stay in generation order; the paper does not specify a tie rule.
* Rows aborted by a length controller are never candidates for the subset (they cannot enter
  the gradient); a group with fewer than ``m`` kept rows trains on all of them.
* The paper's loss settings (LoRA / full fine-tuning, its optimiser) are not reproduced: the
  loop's shared loss applies to every method.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from allocators import register
from allocators.base import Allocator, Request, Rollout, group_rows, round_half_up
from core.options import Options, option

RULES = ("max_variance", "random")


def pods_select(rewards, m: int) -> np.ndarray:
    """Indices (ascending) of the ``m`` rewards with the largest population variance."""
    r = np.asarray(rewards, dtype=np.float64)
    n = len(r)
    if not 0 <= m <= n:
        raise ValueError(f"pods: cannot keep {m} of {n} rollouts")
    if m == n or m == 0:
        return np.arange(m)
    order = np.argsort(r, kind="stable")
    s = r[order]
    pre = np.concatenate([[0.0], np.cumsum(s)])
    pre2 = np.concatenate([[0.0], np.cumsum(s * s)])
    k = np.arange(m + 1)                       # k largest + (m - k) smallest
    total = pre[m - k] + pre[n] - pre[n - k]
    total2 = pre2[m - k] + pre2[n] - pre2[n - k]
    var = total2 / m - (total / m) ** 2
    # first k within rounding of the best: the smallest-k tie rule, stable under float error
    best = int(np.flatnonzero(var >= var.max() - 1e-12)[0])
    chosen = np.concatenate([order[: m - best], order[n - best:]])
    return np.sort(chosen)


@dataclass(frozen=True)
class PODSOptions(Options):
    keep_fraction: float = option(0.5, "trained rows m as a fraction of the generated n "
                                  "(at least 2)", gt=0, le=1)
    rollouts_per_prompt: int | None = option(None, "rollouts n per prompt; null = "
                                             "round_half_up(b*G), uniform GRPO's group", ge=1)
    train_per_prompt: int | None = option(None, "trained rows m per prompt (wins over "
                                          "keep_fraction)", ge=2)
    rule: str = option("max_variance", "down-sampling rule: max_variance (the paper) or "
                       "random (a seeded uniform subset, a control)", choices=RULES)


@register("pods")
class PODS(Allocator):
    Options = PODSOptions

    def __init__(self, setting, **options) -> None:
        super().__init__(setting, **options)
        o = self.opts
        self.n = (o.rollouts_per_prompt if o.rollouts_per_prompt is not None
                  else round_half_up(setting.budget_fraction * setting.group_size))
        self.m = (o.train_per_prompt if o.train_per_prompt is not None
                  else max(2, round_half_up(o.keep_fraction * self.n)))
        if not 2 <= self.m <= self.n:
            raise ValueError(f"pods: need 2 <= m <= n, got n = {self.n}, m = {self.m} (raise the "
                             f"budget fraction or set rollouts_per_prompt/train_per_prompt)")
        self.rng = np.random.default_rng(setting.seed)

    def plan(self, step, candidates, stats, budget):
        return [Request(c.pid, self.n) for c in candidates]

    def select(self, step, rollouts: list[Rollout]) -> list[list[Rollout]]:
        groups, dropped, mixed_before, mixed_after = [], 0, 0, 0
        for group in group_rows(rollouts):
            kept = [r for r in group if r.kept]
            rewards = [r.reward for r in kept]
            if len(kept) <= self.m:
                chosen = list(range(len(kept)))
            elif self.opts.rule == "max_variance":
                chosen = pods_select(rewards, self.m).tolist()
            else:
                chosen = sorted(self.rng.choice(len(kept), size=self.m, replace=False).tolist())
            subset = [kept[i] for i in chosen]
            dropped += len(group) - len(subset)
            mixed_before += int(len(set(rewards)) > 1)
            mixed_after += int(len({r.reward for r in subset}) > 1)
            groups.append(subset)
        self.step_metrics = {"rows_not_trained": dropped, "mixed_groups": mixed_before,
                             "mixed_groups_after_selection": mixed_after}
        return groups

    def resolved_options(self) -> dict:
        return {**super().resolved_options(), "rollouts_per_prompt": self.n,
                "train_per_prompt": self.m}
