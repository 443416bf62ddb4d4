"""PODS: generate ``n`` rollouts per prompt, train on the ``m`` whose rewards have the largest
variance (max-variance down-sampling; docs/METHODS.md §PODS).

Paper: "Not All Rollouts are Useful: Down-Sampling Rollouts in LLM Reinforcement Learning", Xu,
Savani, Fang, Kolter (CMU), arXiv 2504.13818.  Released code: [code]
``YixuanEvenXu/pods@187f43b``: ``trainer/maxvargrpo_trainer.py`` (``_prepare_inputs``: the
selection and the advantages), ``config/train.yaml`` (``num_generations_reward`` = n,
``num_generations_grad`` = m), ``results/*.json`` (the runs behind the paper's figures, named
``...-n-m-RunK``).

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
  differs from GRPO only in training on the selected subset.  The released runs compare the
  other way, GRPO at the same number of *trained* rows (GSM8K: PODS 64 -> 16 vs GRPO 16;
  MATH: 32 -> 8 vs 8) [code: ``results/``]; ``rollouts_per_prompt`` sets ``n`` for that
  "generate more than you train" form (then compare on cumulative tokens).
* ``m = max(2, round_half_up(keep_fraction * n))``, ``keep_fraction = 0.25`` [code: every
  headline run keeps m = n/4, GSM8K 64 -> 16, MATH 32 -> 8]; at ``G = 8`` this is 8 -> 2 at
  ``b = 1`` and 4 -> 2 at ``b = 0.5`` (2 is the smallest group with a baseline, harness).
  ``keep_fraction = 0.5`` is the harness's earlier m = n/2 (the committed sweep's PODS rows
  until 2026-12), kept as an option; ``train_per_prompt`` sets ``m`` directly.
* ``rule = "max_variance"`` [paper, code]; ``"random"`` (a uniform ``m``-subset, seeded) is the
  control for the selection rule [code: ``randomgrpo_trainer.py``, the paper's ablation].
* Scale-free apart from ``n`` and ``m``, which are relative to ``G`` as docs/ALGORITHMS.md §Scaling
  asks.

Checked against the release (side by side outside the project, 20,000 random reward vectors,
n in 4..64, m = n/4 or random in 2..n; binary, three-level and continuous rewards; the release's
lines run verbatim on a float32 torch tensor): the chosen subset's variance agrees in 20,000/20,000;
the chosen multiset of rewards in 19,814/20,000 (binary 6,549/6,667, three-level 6,599/6,667,
continuous 6,666/6,666) and every difference is the tie order below (with the released order on
our scores: 20,000/20,000); the chosen row indices in 9,579/20,000, because among equal rewards
the release takes the rows its unstable descending ``torch.sort`` puts first.

Departures:

* Tie order.  The release scores ``k = m`` first (the ``m`` largest rewards), then ``k = 0, 1,
  ..., m-1`` (``sorted_indices[:k] + sorted_indices[k-m:]``), replacing the incumbent only on a
  strict improvement; so among subsets of equal variance it keeps ``k = m``, else the smallest
  ``k``.  Here the smallest ``k`` always wins.  The two differ only where ``k = m`` ties with a
  smaller ``k`` (binary rewards with odd ``m``: ``c`` and ``m - c`` correct rows have the same
  variance); the default ``m`` at ``G = 8`` is even.  Rows tied on reward are taken in
  generation order here (a stable sort).  The paper states no tie rule.
* Advantages: the release normalises by the kept rows' unbiased std plus 1e-4; the loop's shared
  advantage function (one rule for every method) applies here.
* Rows aborted by a length controller are never candidates for the subset (they cannot enter
  the gradient); a group with fewer than ``m`` kept rows trains on all of them.
* The release's training settings (LoRA on a 4-bit model, its optimiser) are not reproduced: the
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
    keep_fraction: float = option(0.25, "trained rows m as a fraction of the generated n "
                                  "(at least 2); 0.25 = the released n/4, 0.5 = the harness's "
                                  "earlier n/2", gt=0, le=1)
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
