"""Knapsack-RL: rollout counts from a multiple-choice knapsack over prompts.

Paper: Ziniu Li et al., "Knapsack RL: Unlocking Exploration of LLMs via Optimizing Budget
Allocation", arXiv 2509.25849 (ICML 2026 poster).  The paper body was unavailable, so the
released code (github.com/liziniu/KnapsackRL @ ca5d5f5, ``verl/trainer/ppo/exploration_utils.py``
and ``verl/utils/dataset/rl_dataset.py``) is the reference; docs/ALGORITHMS.md §Knapsack-RL describes it and
§Scaling scales it.  This module re-implements that behaviour; no code is copied.

Allocation (docs/ALGORITHMS.md §Knapsack-RL, steps 1-6), ``q = 1 - p``:

1. cold prompts (fewer than ``min_buffer_length`` recorded rewards) get ``n_default``;
   ``0 < p < 1`` gets ``n_min`` and is *effective*, with cost
   ``c = ln(1 - alpha) / ln(max(p, q))`` (rollouts for a non-zero gradient with probability
   ``alpha``); ``p = 0`` gets ``n_zero``; ``p = 1`` gets ``n_one``.
2. ``R = total - sum(n)``.
3. no effective prompt: ``R`` is split evenly over the ``p = 0`` prompts; with none, every
   prompt is reset to the most even split of ``total`` (the code's "uniform N for all").
4. fallback: ``est = sum_eff floor(min(n_max, c_i))``; if ``est < R`` the surplus ``R - est``
   is split evenly over the ``p = 0`` prompts (none: over all non-effective prompts) and
   ``R = est``.
5. extra ``k_i in {0..n_max - n_min}`` per effective prompt maximising ``sum_i v_i(k_i)`` with
   ``sum k_i = w``, ``w`` the largest feasible total ``<= R``, where
   ``v(k) = (1 - p^(k+n_min) - q^(k+n_min)) * p q^2`` for ``k >= 1`` and ``v(0) = 0``
   (P(non-zero gradient) x InfoGain; the exponent is ``k + 2`` at the default ``n_min = 2``).
6. ``n_i += k_i``; the counts sum exactly to ``total``.

Exactness of the greedy solver (the default; the released code runs an O(M*R*n_max) DP).
Write ``m = n_min + 1`` and ``w = p q^2 > 0``.  The increments of ``v`` are

    d_1 = v(1) - v(0) = (1 - p^m - q^m) w
    d_k = v(k) - v(k-1) = (p^(m+k-2) q + q^(m+k-2) p) w            (k >= 2)

For k >= 2, ``d_(k+1)`` multiplies each term of ``d_k`` by ``p`` or ``q`` (both < 1), so the
``d_k`` fall strictly.  The jump at ``v(0) = 0`` is harmless when ``n_min >= 1``:
``d_1 - d_2 = (1 - p^m (1 + q) - q^m (1 + p)) w`` and, since ``m >= 2``,
``p^m (1 + q) + q^m (1 + p) <= p^2 (1 + q) + q^2 (1 + p) = p^2 + q^2 + pq = 1 - pq``,
so ``d_1 - d_2 >= pq w > 0``.  Every ``v_i`` is therefore concave on ``{0..K}``, any allocation
with ``sum k_i = w`` is worth the sum of a prefix of each prompt's increments, and no such sum
exceeds the sum of the ``w`` largest increments overall -- which the greedy takes, and which
are prefixes because each row falls.  Hence greedy = optimum of the DP.  (For ``n_min = 0`` the
bound fails -- ``p(1 + q) + q(1 + p) = 1 + 2pq > 1`` -- and greedy is not exact; ``n_min >= 1``
is required.)  ``tests/test_knapsack.py`` checks greedy against :func:`knapsack_counts_dp` and
against brute force.

Defaults and provenance:

* ``alpha = 0.9`` probability cost, fallback on, ``n_min = n_zero = n_one = 2``, ``n_max = 128``,
  ``n_default = 8`` [code: ``run_knapsack_grpo_7b.sh``].  The allocator scales them per §Scaling:
  ``n_max = 16 G`` capped at ``C - (M - 1) n_min``; ``min_buffer_length = N_b``,
  ``reward_buffer_length = 2 N_b`` with ``N_b = C // M`` (below) [inferred, §Scaling; 8 and 16 at
  the released ``N = 8``, ``b = 1``].
* Cold prompts get ``n_default = C // M`` in the allocator (harness choice; source silent for
  ``b < 1``): the code's ``n = N`` holds only at ``C = M N``.  ``C // M`` equals ``G`` at
  ``b = 1`` and ``round(b G)`` whenever ``b G`` is an integer, and unlike ``round(b G)`` it never
  makes the cold prompts alone overshoot ``C`` (``b G = 2.5`` rounds up to 3).
* ``p̂`` = mean of the last visit's rewards, or of the last ``reward_buffer_length`` rewards
  across visits when that visit had fewer rollouts [code: ``robust_epoch_estimation``].
* §Scaling rule of the validity rule with the budget: a prompt is valid once it holds one
  visit's worth of rewards at the run's budget, ``min_buffer_length = N_b = C // M`` (the
  count a cold prompt gets), and the robust window is two visits' worth, ``2 N_b``.  The
  release sets both relative to its uniform group ``N`` (8 and 16 at ``N = 8``), the group a
  cold prompt gets there; at ``b = 1`` ``N_b = G`` and nothing changes.  A fixed
  ``min_buffer_length = G`` would keep every prompt cold for two visits at ``b = 0.5`` (a first
  visit has ``C // M = G / 2`` rollouts) and for four at ``b = 0.25``, so on a pool visited
  only a few times Knapsack-RL would be uniform GRPO throughout: the committed tiny sweep's
  ``knapsack`` at b = 0.5 and 0.25 matched ``grpo`` rollout for rollout (same 249,891 tokens,
  count spread 0).  Pass ``min_buffer_length`` / ``reward_buffer_length`` to fix them.
* Advantage clip ``adv_clip = 5`` [code: ``algorithm.adv_clip_value = 5`` in both the
  Knapsack-RL and the GRPO scripts of the release]: set through
  :meth:`KnapsackRL.advantage_options`, applied by ``trainer.grpo.assign_advantages`` to the
  group-normalised advantages.  It is part of the method here because it binds only where
  Knapsack-RL puts its budget: with binary rewards the largest ``|A|`` of an ``n``-row group is
  ``(n - 1) / sqrt(n)`` (one success or one failure), which exceeds 5 only from ``n = 27`` on;
  uniform GRPO's groups (``G <= 26``) are never clipped, so the release's GRPO arm is the
  harness's GRPO, while Knapsack-RL's large groups on hard prompts (up to ``n_max``) are
  clipped as in its release.  ``adv_clip=None`` turns it off.

Departures from the released code (each keeps the sum exact and the counts inside the bounds):

* Solver: exact greedy on increments (proof above) instead of the DP; the DP stays as
  :func:`knapsack_counts_dp`.  Ties between equal increments go to the prompt with fewer extra
  rollouts so far, then to the lower index (the DP keeps the first maximiser it meets), so the
  two may return different counts of equal value.
* Every even split is capped at ``n_max`` (the code lets the fallback push ``p = 0`` prompts past
  ``max_n``); what a capped split cannot place goes on to the next destination:
  step 3: ``p = 0`` prompts -> all prompts; step 4: ``p = 0`` prompts -> other non-effective
  prompts -> back to the knapsack.  ``total <= M n_max`` guarantees room at the end.
* The code spreads budget the knapsack cannot use "over the effective prompts"; that happens only
  when every effective prompt already holds ``n_max``, so here it goes to the non-effective
  prompts (``p = 0`` first), capped at ``n_max``.
* When every prompt is effective the fallback has nowhere to send a surplus (the code divides by
  zero); the knapsack then receives all of ``R``.
* Remainders of even splits go to the lowest indices first, as in the code.

Released behaviour kept by default (the harness alternative is an option):

* Cold prompts join the ``p = 0`` prompts in the even splits of steps 3 and 4 and of unused
  budget (``cold_joins_unsolved=True``): the code's pass-rate array is zero-initialised, so a
  prompt with too few rewards reads ``p = 0`` there while still getting ``n_default`` in
  step 1.  ``cold_joins_unsolved=False`` sends those splits to valid ``p̂ = 0`` prompts only
  (docs/ALGORITHMS.md §Knapsack-RL's wording).  The two differ whenever cold and unsolved prompts share a batch
  and a surplus is split: in the side-by-side check against the released function (random
  batches, M = 4..32, N = 8, a quarter or half of them cold) 69 of the 78 plans with both kinds
  differed under the old rule; with this default all 150 plans are identical.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from allocators import register
from allocators.base import Allocator, PromptStats, Request, StepBudget, check_count_bounds
from core.options import Options, option

COST_MODELS = ("probability", "expectation")
ESTIMATORS = ("robust", "last_visit", "window")


# ------------------------------------------------------------------------------ value model
def knapsack_value(pass_rate: np.ndarray, extra: np.ndarray, n_min: int = 2) -> float:
    """Objective ``sum_i v_i(k_i)`` of extra counts ``extra`` over effective pass rates."""
    p = np.asarray(pass_rate, dtype=np.float64).reshape(-1)
    extra = np.asarray(extra, dtype=np.int64).reshape(-1)
    values = np.array([_value_ladder(p[i:i + 1], int(k), n_min)[0, -1]
                       for i, k in enumerate(extra)])
    return float(values.sum())


def _one_minus_powers(p: np.ndarray, exponents: np.ndarray) -> np.ndarray:
    """``1 - p^e - q^e`` for each row's ``p`` and each exponent, without cancellation.

    Written through the smaller of ``p, q`` so that ``1 - l^e`` is an ``expm1`` and the small
    term stays exact even for ``p`` within rounding of 0 or 1.
    """
    small = np.minimum(p, 1.0 - p)[:, None]
    e = np.asarray(exponents, dtype=np.float64)[None, :]
    return -np.expm1(e * np.log1p(-small)) - small ** e


def _value_ladder(p: np.ndarray, width: int, n_min: int) -> np.ndarray:
    """``v_i(k)`` for ``k = 0..width``, one row per pass rate (``v(0) = 0``)."""
    info_gain = p * (1.0 - p) ** 2
    values = np.zeros((len(p), width + 1))
    if width:
        k = np.arange(1, width + 1)
        values[:, 1:] = _one_minus_powers(p, k + n_min) * info_gain[:, None]
    return values


def _increment_ladder(p: np.ndarray, width: int, n_min: int) -> np.ndarray:
    """Increments ``d_1..d_width`` of ``v``, as a ``(width, len(p))`` array (row j = ``d_(j+1)``).

    ``d_1`` comes from the stable closed form; ``d_k`` for ``k >= 2`` from powers built by
    repeated multiplication, which cannot rise in floating point (``fl(x*p) <= x`` for
    ``p < 1``), so each column falls as the exactness proof assumes.
    """
    q = 1.0 - p
    info_gain = p * q ** 2
    ladder = np.empty((width, len(p)))
    ladder[0] = _one_minus_powers(p, np.array([n_min + 1]))[:, 0] * info_gain
    if width > 1:
        p_pow = np.cumprod(np.vstack([p ** (n_min + 1), np.broadcast_to(p, (width - 2, len(p)))]),
                           axis=0)
        q_pow = np.cumprod(np.vstack([q ** (n_min + 1), np.broadcast_to(q, (width - 2, len(p)))]),
                           axis=0)
        ladder[1:] = (p_pow * q + q_pow * p) * info_gain
    return ladder


# ------------------------------------------------------------------------------ exact solvers
def take_largest(values: np.ndarray, count: int) -> np.ndarray:
    """Boolean mask of the ``count`` largest entries of flat ``values``; ties by lower index.

    Exact (no tolerance): a partition finds the ``count``-th largest value, everything above it
    is taken, and the entries equal to it fill the rest in index order.
    """
    values = np.asarray(values, dtype=np.float64)
    chosen = np.zeros(values.shape, dtype=bool)
    if count <= 0:
        return chosen
    if count >= values.size:
        chosen[:] = True
        return chosen
    threshold = np.partition(values, values.size - count)[values.size - count]
    chosen = values > threshold
    ties = np.flatnonzero(values == threshold)
    chosen[ties[:count - int(chosen.sum())]] = True
    return chosen


def exact_weight_dp(value_table: np.ndarray, weight: int) -> np.ndarray:
    """Multiple-choice knapsack by DP: pick ``e_i`` maximising ``sum value_table[i, e_i]``.

    ``value_table[i, e]`` is item ``i``'s value at ``e`` units (``e = 0..K``); the chosen
    ``e_i`` sum to exactly ``weight`` (ValueError if infeasible).  O(items * K * weight), the
    reference the fast solvers are tested against.  Ties keep the smallest ``e`` for the
    later item (the first maximiser met while scanning ``e`` upwards).
    """
    items, width = value_table.shape[0], value_table.shape[1] - 1
    if weight < 0 or weight > items * width:
        raise ValueError(f"exact_weight_dp: weight {weight} outside [0, {items * width}]")
    best = np.full(weight + 1, -np.inf)
    best[0] = 0.0
    choice = np.zeros((items, weight + 1), dtype=np.int32)
    for i in range(items):
        new_best = np.full(weight + 1, -np.inf)
        new_choice = np.zeros(weight + 1, dtype=np.int32)
        for e in range(min(width, weight) + 1):
            candidate = best[:weight + 1 - e] + value_table[i, e]
            better = candidate > new_best[e:]
            new_best[e:][better] = candidate[better]
            new_choice[e:][better] = e
        best, choice[i] = new_best, new_choice
    units = np.zeros(items, dtype=np.int64)
    remaining = weight
    for i in range(items - 1, -1, -1):
        units[i] = choice[i, remaining]
        remaining -= units[i]
    return units


def _extra_by_greedy(p: np.ndarray, weight: int, width: int, n_min: int) -> np.ndarray:
    """Exact extra counts: the ``weight`` largest increments (see the module docstring)."""
    if weight == 0 or len(p) == 0:
        return np.zeros(len(p), dtype=np.int64)
    columns = min(width, weight)
    ladder = _increment_ladder(p, columns, n_min)
    # flat order of the (step, prompt) array is "fewer extra rollouts first, then lower index"
    return take_largest(ladder.ravel(), weight).reshape(ladder.shape).sum(axis=0).astype(np.int64)


def _extra_by_dp(p: np.ndarray, weight: int, width: int, n_min: int) -> np.ndarray:
    if weight == 0 or len(p) == 0:
        return np.zeros(len(p), dtype=np.int64)
    return exact_weight_dp(_value_ladder(p, min(width, weight), n_min), weight)


# ------------------------------------------------------------------------------ even splits
def spread_evenly(counts: np.ndarray, targets: np.ndarray, amount: int, cap: int) -> int:
    """Add ``amount`` to ``counts[targets]`` in equal shares, lowest indices taking the remainder,
    no count above ``cap``; shares a capped target cannot take are re-split over the others.

    Modifies ``counts`` in place and returns what could not be placed.
    """
    open_targets = np.asarray(targets, dtype=np.int64)
    open_targets = open_targets[counts[open_targets] < cap]
    while amount > 0 and len(open_targets):
        share, remainder = divmod(amount, len(open_targets))
        wanted = np.full(len(open_targets), share, dtype=np.int64)
        wanted[:remainder] += 1
        given = np.minimum(wanted, cap - counts[open_targets])
        counts[open_targets] += given
        amount -= int(given.sum())
        open_targets = open_targets[counts[open_targets] < cap]
    return amount


def _most_even_split(prompts: int, total: int) -> np.ndarray:
    counts = np.full(prompts, total // prompts, dtype=np.int64)
    counts[:total % prompts] += 1
    return counts


# ------------------------------------------------------------------------------ public API
def _validated(pass_rate, valid, total, n_default, n_min, n_zero, n_one, n_max, alpha, cost):
    p = np.asarray(pass_rate, dtype=np.float64).reshape(-1)
    ok = np.asarray(valid, dtype=bool).reshape(-1)
    if p.shape != ok.shape:
        raise ValueError(f"knapsack: pass_rate has {p.size} entries, valid has {ok.size}")
    if np.any(ok & ~((p >= 0.0) & (p <= 1.0))):
        raise ValueError("knapsack: pass rates of valid prompts must lie in [0, 1]")
    if n_min < 1:
        raise ValueError(f"knapsack: n_min = {n_min} < 1; the greedy solver is exact only for "
                         "n_min >= 1 (see the module docstring)")
    for name, n in (("n_default", n_default), ("n_zero", n_zero), ("n_one", n_one),
                    ("n_min", n_min)):
        if n < 0:
            raise ValueError(f"knapsack: {name} = {n} is negative")
    if n_min > n_max:
        raise ValueError(f"knapsack: n_min = {n_min} exceeds n_max = {n_max}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"knapsack: alpha = {alpha} outside (0, 1)")
    if cost not in COST_MODELS:
        raise ValueError(f"knapsack: cost must be one of {COST_MODELS}, got {cost!r}")
    if len(p) == 0:
        raise ValueError("knapsack: no prompts")
    check_count_bounds("knapsack", len(p), int(total), 0, n_max)
    return p, ok


def _rollout_cost(p: np.ndarray, alpha: float, cost: str) -> np.ndarray:
    if cost == "probability":
        return math.log(1.0 - alpha) / np.log(np.maximum(p, 1.0 - p))
    return 1.0 / (p * (1.0 - p)) - 1.0


def _knapsack_plan(pass_rate, valid, total, *, n_default, n_min, n_zero, n_one, n_max, alpha,
                   cost, allow_fallback, cold_joins_unsolved, solve_extra) -> np.ndarray:
    total = int(total)
    p, ok = _validated(pass_rate, valid, total, n_default, n_min, n_zero, n_one, n_max, alpha,
                       cost)
    effective = ok & (p > 0.0) & (p < 1.0)
    unsolved = ok & (p == 0.0)
    if cold_joins_unsolved:
        unsolved |= ~ok
    counts = np.where(~ok, n_default, np.where(effective, n_min,
                                               np.where(p == 0.0, n_zero, n_one))).astype(np.int64)
    if counts.max() > n_max:
        raise ValueError(f"knapsack: a class minimum ({counts.max()}) exceeds n_max = {n_max}")
    remaining = total - int(counts.sum())
    if remaining < 0:
        raise ValueError(f"knapsack: the per-class minimums need {int(counts.sum())} rollouts "
                         f"but the budget is {total} (lower n_default/n_min/n_zero/n_one)")
    everyone = np.arange(len(p))
    if not effective.any():
        if unsolved.any():
            left = spread_evenly(counts, np.flatnonzero(unsolved), remaining, n_max)
            spread_evenly(counts, everyone, left, n_max)
            return counts
        return _most_even_split(len(p), total)

    for_knapsack = remaining
    if allow_fallback:
        estimate = int(np.sum(np.floor(np.minimum(n_max, _rollout_cost(p[effective], alpha,
                                                                       cost)))))
        if estimate < remaining:
            targets = unsolved if unsolved.any() else ~effective
            left = spread_evenly(counts, np.flatnonzero(targets), remaining - estimate, n_max)
            left = spread_evenly(counts, np.flatnonzero(~effective), left, n_max)
            for_knapsack = estimate + left

    width = n_max - n_min
    weight = min(for_knapsack, int(effective.sum()) * width)
    counts[effective] += solve_extra(p[effective], weight, width, n_min)
    unused = for_knapsack - weight
    if unused:
        unused = spread_evenly(counts, np.flatnonzero(unsolved), unused, n_max)
        unused = spread_evenly(counts, np.flatnonzero(~effective), unused, n_max)
    assert unused == 0 and int(counts.sum()) == total, "knapsack: budget not met exactly"
    return counts


def knapsack_counts(pass_rate, valid, total, *, n_default=8, n_min=2, n_zero=2, n_one=2,
                    n_max=128, alpha=0.9, cost="probability", allow_fallback=True,
                    cold_joins_unsolved=True) -> np.ndarray:
    """Knapsack-RL rollout counts (docs/ALGORITHMS.md §Knapsack-RL steps 1-6), exact greedy solver.

    ``pass_rate[i]`` is prompt ``i``'s estimated pass rate (read only where ``valid[i]``);
    invalid (cold) prompts get ``n_default``.  Returns int64 counts summing exactly to ``total``,
    each at most ``n_max``.  ``alpha`` [code 0.9] is the cost confidence, ``cost`` the cost model
    ("probability" [code default] or "expectation" ``1/(p q) - 1``), ``allow_fallback`` [code
    True] the surplus rule of step 4, ``cold_joins_unsolved`` the code's treatment of cold
    prompts as ``p = 0`` (module docstring).
    """
    return _knapsack_plan(pass_rate, valid, total, n_default=n_default, n_min=n_min,
                          n_zero=n_zero, n_one=n_one, n_max=n_max, alpha=alpha, cost=cost,
                          allow_fallback=allow_fallback, cold_joins_unsolved=cold_joins_unsolved,
                          solve_extra=_extra_by_greedy)


def knapsack_counts_dp(pass_rate, valid, total, *, n_default=8, n_min=2, n_zero=2, n_one=2,
                       n_max=128, alpha=0.9, cost="probability", allow_fallback=True,
                       cold_joins_unsolved=True) -> np.ndarray:
    """:func:`knapsack_counts` with the released code's DP for step 5 (reference; slow)."""
    return _knapsack_plan(pass_rate, valid, total, n_default=n_default, n_min=n_min,
                          n_zero=n_zero, n_one=n_one, n_max=n_max, alpha=alpha, cost=cost,
                          allow_fallback=allow_fallback, cold_joins_unsolved=cold_joins_unsolved,
                          solve_extra=_extra_by_dp)


# ------------------------------------------------------------------------------ allocator
@dataclass(frozen=True)
class KnapsackOptions(Options):
    n_default: int | None = option(None, "rollouts of a prompt without a valid estimate; "
                                   "null = C // M", ge=1)
    n_min: int = option(2, "fewest rollouts of a prompt with 0 < p < 1", ge=1)
    n_zero: int = option(2, "rollouts of a prompt estimated unsolved (p = 0)", ge=0)
    n_one: int = option(2, "rollouts of a prompt estimated solved (p = 1)", ge=0)
    n_max: int | None = option(None, "most rollouts of a prompt; null = "
                               "min(16 G, C - (M - 1) n_min)", ge=1)
    min_buffer_length: int | None = option(None, "rewards a prompt needs for a valid "
                                           "estimate; null = C // M, one visit's worth at "
                                           "this budget (the §Scaling rule)", ge=1)
    reward_buffer_length: int | None = option(None, "rewards the estimate averages; "
                                              "null = 2 (C // M)", ge=1)
    alpha: float = option(0.9, "cost confidence: an effective prompt's cost is the rollouts "
                          "that give a non-zero gradient with this probability, "
                          "ln(1 - alpha) / ln(max(p, 1 - p))", gt=0, lt=1)
    cost: str = option("probability", "cost model of a rollout", choices=COST_MODELS)
    allow_fallback: bool = option(True, "step 4: when the effective prompts' summed costs "
                                  "fall short of the remaining budget, the surplus goes "
                                  "evenly to the unsolved prompts (false: all of it to the "
                                  "knapsack)")
    cold_joins_unsolved: bool = option(True, "prompts without an estimate join the unsolved "
                                       "class, as in the release's zero-initialised array")
    adv_clip: float | None = option(5.0, "clamp group-normalised advantages to +-adv_clip "
                                    "(the recipe's adv_clip_value); null = off", gt=0)
    estimator: str = option("robust", "robust = the code's robust_epoch_estimation; "
                            "last_visit; window = the mean of the last reward_buffer_length "
                            "rewards", choices=ESTIMATORS)


@register("knapsack")
class KnapsackRL(Allocator):
    """Knapsack-RL in the shared loop: one round, counts from :func:`knapsack_counts`
    (``None`` options = the §Scaling rule of the released value)."""

    Options = KnapsackOptions

    def __init__(self, setting, **options):
        super().__init__(setting, **options)
        o = self.opts
        prompts, total, group = setting.prompts_per_step, setting.rollouts_per_step, \
            setting.group_size
        self.n_default = int(total // prompts if o.n_default is None else o.n_default)
        self.n_max = int(min(16 * group, total - (prompts - 1) * o.n_min)
                         if o.n_max is None else o.n_max)
        visit = max(1, total // prompts)        # N_b: one visit's rewards at this budget
        self.min_buffer_length = int(visit if o.min_buffer_length is None
                                     else o.min_buffer_length)
        self.reward_buffer_length = int(2 * visit if o.reward_buffer_length is None
                                        else o.reward_buffer_length)
        # fail at start-up (docs/ALGORITHMS.md §Scaling), not at the first step whose classes do not fit
        largest_floor = max(self.n_default, o.n_min, o.n_zero, o.n_one)
        check_count_bounds("knapsack", prompts, total, largest_floor, self.n_max)

    def _solver_options(self) -> dict:
        o = self.opts
        return dict(n_default=self.n_default, n_min=o.n_min, n_zero=o.n_zero, n_one=o.n_one,
                    n_max=self.n_max, alpha=o.alpha, cost=o.cost,
                    allow_fallback=o.allow_fallback, cold_joins_unsolved=o.cold_joins_unsolved)

    def estimate(self, pid: int, stats: PromptStats) -> tuple[bool, float]:
        """(valid, p̂) of one prompt from the shared statistics store (docs/ALGORITHMS.md §Knapsack-RL)."""
        visits = stats.visits.get(pid, ())
        if sum(len(rewards) for _, rewards in visits) < self.min_buffer_length:
            return False, 0.0
        last = visits[-1][1]
        if self.opts.estimator == "last_visit" or (self.opts.estimator == "robust"
                                              and len(last) >= self.reward_buffer_length):
            return True, _success_rate([last])
        # walk back over the visits instead of concatenating the whole history (plan() time)
        window, held = [], 0
        for _, rewards in reversed(visits):
            window.append(rewards[-(self.reward_buffer_length - held):])
            held += len(window[-1])
            if held >= self.reward_buffer_length:
                break
        return True, _success_rate(window)

    def plan(self, step: int, candidates, stats: PromptStats, budget: StepBudget) -> list[Request]:
        estimates = [self.estimate(c.pid, stats) for c in candidates]
        valid = np.array([v for v, _ in estimates], dtype=bool)
        pass_rate = np.array([p for _, p in estimates], dtype=np.float64)
        counts = knapsack_counts(pass_rate, valid, budget.rollouts, **self._solver_options())
        return [Request(c.pid, int(n)) for c, n in zip(candidates, counts)]

    def advantage_options(self) -> dict:
        return {"clip": self.opts.adv_clip}

    def resolved_options(self) -> dict:
        return dict(self._solver_options(), estimator=self.opts.estimator,
                    adv_clip=self.opts.adv_clip,
                    min_buffer_length=self.min_buffer_length,
                    reward_buffer_length=self.reward_buffer_length,
                    total=self.setting.rollouts_per_step,
                    prompts=self.setting.prompts_per_step)


def _success_rate(reward_arrays: list[np.ndarray]) -> float:
    """Mean reward with rewards clipped to [0, 1]: the code maps {-1, 0, 1} to {0, 0, 1}."""
    rewards = np.concatenate(reward_arrays) if len(reward_arrays) > 1 else reward_arrays[0]
    return float(np.clip(rewards, 0.0, 1.0).mean())
