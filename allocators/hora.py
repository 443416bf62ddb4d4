"""HORA: Hit-Utility Optimal Rollout Allocation - rollout counts that maximise the batch's total
posterior probability of at least one correct rollout per prompt (docs/METHODS.md, HORA).

Paper: "Where to Spend Rollouts: Hit-Utility Optimal Rollout Allocation for Group-Based RLVR",
Wang, Li, Sun, Ding, Dobriban (UPenn / NJIT / UTK), arXiv 2605.07114 (v1, 2026-05-08).  Only the
abstract, the table of contents and a secondary summary could be read here (the search excerpts
of the stored HTML never reached section 3); no code was found.  Tags: [paper] the abstract,
[2nd] the secondary summary, [inferred] a choice made here where the text read is silent.

What the abstract fixes [paper]:

* hit utility of prompt ``i`` for a proposed additional allocation of ``n`` rollouts: the
  posterior probability that at least one of those ``n`` rollouts is correct;
* HORA maximises the *total* hit utility over the prompts of an allocation batch, learning-free,
  under a uniform prior ([2nd]: "under a uniform prior over success probabilities"), leaving the
  reward and the group advantage estimator unchanged.

Equations.  With success probability ``p_i ~ Beta(alpha_i, beta_i)`` a posteriori and ``n``
independent rollouts, the hit utility is (a property of the Beta distribution, not a formula
quoted from the paper)::

    H_i(n) = 1 - E[(1 - p_i)^n] = 1 - B(alpha_i, beta_i + n) / B(alpha_i, beta_i)

and its increments are ``d_i(k) = H_i(k + 1) - H_i(k) = E[p_i (1 - p_i)^k]
= B(alpha_i + 1, beta_i + k) / B(alpha_i, beta_i) > 0``.  Because ``(1 - p)^k`` falls in ``k`` for
every ``p in (0, 1)`` and the posterior puts mass there, ``d_i(k + 1) < d_i(k)``: each ``H_i`` is
strictly concave on the integers, so the problem

    max  sum_i H_i(n_i)   s.t.  sum_i n_i = C,  n_min <= n_i <= n_max

is solved exactly by the greedy that takes the ``C - M n_min`` largest increments
``d_i(k), k = n_min .. n_max - 1`` (:func:`concave_counts`; same exchange argument as
Knapsack-RL's solver; ``tests/test_hora.py`` checks it against brute force).  A prompt's
posterior mean is ``H_i(1)``: the first rollouts go where a hit is likely, later ones where the
probability of a first hit is still rising - prompts whose groups are saturated (``alpha >> beta``)
stop gaining after one or two rollouts, unsolved prompts keep gaining slowly.

Per step: ``plan`` draws ``M`` candidates, reads each one's posterior
``Beta(alpha_0 + s_i, beta_0 + f_i)`` from the shared prompt statistics (``s_i``/``f_i``: its
rewards at or above / below ``success_threshold`` over every earlier visit), and asks for the
greedy counts.  One round, every group trains, exactly ``C = round(b M G)`` rollouts per step.

Choices the text read leaves open [inferred]:

* The posterior: every earlier reward of the prompt from the harness's prompt statistics (all
  visits, no decay), on top of the uniform prior ``Beta(1, 1)`` [2nd: uniform prior].  An
  unseen prompt has ``H(n) = n / (n + 1)``, so step 0 (all unseen) is the most even split, as in
  uniform GRPO.
* "Allocation batch" = the step's ``M`` prompts, the budget ``C`` per step.
* ``n_min = 2`` (a group of one row carries no GRPO signal); ``n_max = min(16 G, C - (M - 1)
  n_min)`` as for the harness's other count allocators (Knapsack-RL, the controls).
* Success = reward ``>= success_threshold`` (1.0: the verifiers' binary reward).
* Ties between equal increments go to the prompt with fewer rollouts so far, then the lower
  index (:func:`allocators.knapsack.take_largest`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import betaln

from allocators import register
from allocators.base import Allocator, PromptStats, Request, check_count_bounds
from allocators.knapsack import take_largest
from core.options import Options, option


def beta_posterior(stats: PromptStats, pids, *, prior_alpha: float, prior_beta: float,
                   success_threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Each prompt's ``Beta(alpha_0 + successes, beta_0 + failures)`` over every recorded visit."""
    alpha, beta = [], []
    for pid in pids:
        rewards = [r for _, visit in stats.visits.get(pid, ()) for r in visit]
        successes = sum(r >= success_threshold for r in rewards)
        alpha.append(prior_alpha + successes)
        beta.append(prior_beta + len(rewards) - successes)
    return np.asarray(alpha, dtype=np.float64), np.asarray(beta, dtype=np.float64)


def hit_utility(alpha, beta, n) -> np.ndarray:
    """``H(n) = 1 - B(alpha, beta + n) / B(alpha, beta)``: P(at least one of ``n`` rollouts is
    correct) when the success probability is ``Beta(alpha, beta)``."""
    alpha, beta, n = np.broadcast_arrays(np.asarray(alpha, dtype=np.float64),
                                         np.asarray(beta, dtype=np.float64),
                                         np.asarray(n, dtype=np.float64))
    return 1.0 - np.exp(betaln(alpha, beta + n) - betaln(alpha, beta))


def hit_increments(alpha, beta, start: int, width: int) -> np.ndarray:
    """``(width, prompts)`` array of ``d(k) = E[p (1 - p)^k]`` for ``k = start .. start+width-1``."""
    alpha = np.asarray(alpha, dtype=np.float64)[None, :]
    beta = np.asarray(beta, dtype=np.float64)[None, :]
    k = np.arange(start, start + width, dtype=np.float64)[:, None]
    return np.exp(betaln(alpha + 1.0, beta + k) - betaln(alpha, beta))


def concave_counts(increments: np.ndarray, floor: int, total: int) -> np.ndarray:
    """Counts ``floor + e_i`` maximising a separable concave value, ``sum = total`` exactly.

    ``increments[k, i]`` is prompt ``i``'s gain from its ``floor + k + 1``-th unit, falling in
    ``k``; the ``total - prompts * floor`` largest are taken (ties: fewer units first, then the
    lower index).  ValueError when ``total`` is outside what the floor and the ladder allow.
    """
    width, prompts = increments.shape
    extra = total - prompts * floor
    if extra < 0 or extra > width * prompts:
        raise ValueError(f"concave_counts: {total} units outside [{prompts * floor}, "
                         f"{prompts * (floor + width)}] for {prompts} prompts")
    taken = take_largest(increments.ravel(), extra).reshape(increments.shape)
    return floor + taken.sum(axis=0).astype(np.int64)


def hora_counts(alpha, beta, total: int, *, n_min: int = 2, n_max: int = 128) -> np.ndarray:
    """HORA's counts: ``argmax sum_i H_i(n_i)`` with ``sum n_i = total``, ``n_min <= n_i <= n_max``."""
    alpha = np.asarray(alpha, dtype=np.float64)
    if len(alpha) == 0:
        raise ValueError("hora: no prompts")
    check_count_bounds("hora", len(alpha), int(total), n_min, n_max)
    return concave_counts(hit_increments(alpha, beta, n_min, n_max - n_min), n_min, int(total))


@dataclass(frozen=True)
class BetaCountOptions(Options):
    """Options of the count allocators on per-prompt Beta posteriors (HORA, CERO)."""

    prior_alpha: float = option(1.0, "Beta prior alpha_0 (HORA's uniform prior: 1)", gt=0)
    prior_beta: float = option(1.0, "Beta prior beta_0 (HORA's uniform prior: 1)", gt=0)
    n_min: int = option(2, "fewest rollouts per prompt", ge=1)
    n_max: int | None = option(None, "most rollouts per prompt; null = min(16 G, C - (M-1) "
                               "n_min)", ge=1)
    success_threshold: float = option(1.0, "a reward at or above this counts as a success")


class BetaCountAllocator(Allocator):
    """Shared part of HORA and CERO: counts in ``[n_min, n_max]`` from each candidate's Beta
    posterior over its recorded rewards (unregistered: not a method by itself)."""

    Options = BetaCountOptions

    def __init__(self, setting, **options) -> None:
        super().__init__(setting, **options)
        o = self.opts
        total, m = setting.rollouts_per_step, setting.prompts_per_step
        self.n_max = o.n_max if o.n_max is not None else max(
            o.n_min, min(16 * setting.group_size, total - (m - 1) * o.n_min))
        check_count_bounds(self.name, m, total, o.n_min, self.n_max)

    def posterior(self, stats: PromptStats, pids) -> tuple[np.ndarray, np.ndarray]:
        o = self.opts
        return beta_posterior(stats, pids, prior_alpha=o.prior_alpha, prior_beta=o.prior_beta,
                              success_threshold=o.success_threshold)

    def resolved_options(self) -> dict:
        return {**super().resolved_options(), "n_max": self.n_max}


@register("hora")
class HORA(BetaCountAllocator):
    def plan(self, step, candidates, stats, budget):
        pids = [c.pid for c in candidates]
        alpha, beta = self.posterior(stats, pids)
        counts = hora_counts(alpha, beta, budget.rollouts, n_min=self.opts.n_min,
                             n_max=self.n_max)
        self.step_metrics = {"hit_utility": float(hit_utility(alpha, beta, counts).sum()),
                             "posterior_mean": float(np.mean(alpha / (alpha + beta))),
                             "count_max": int(counts.max()), "count_min": int(counts.min())}
        return [Request(pid, int(n)) for pid, n in zip(pids, counts)]
