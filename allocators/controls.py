"""Controls: ``oracle`` and ``anti-oracle``, the upper and lower references of allocation.

No paper: these are the benchmark's own instruments (issue 12, docs/DESIGN.md §Loop and §Evaluation).  A testbed
may report "no method beats GRPO" only after showing that an allocation with perfect knowledge
*would* beat it, and that a deliberately bad one would lose to it.

Knowledge.  A control declares ``Needs(pass_rate_estimates=estimate_rollouts)``; before
planning, the step protocol (``trainer.step.run_step``, with ``trainer.estimates`` in a run)
draws ``estimate_rollouts`` (default 16) extra rollouts of every candidate from the current
policy and records their mean reward ``p̂_i`` as this step's estimates in the prompt statistics
(:meth:`core.rows.PromptStats.estimate`).  Those rollouts are *unbilled*: the ledger counts them
apart (``unbilled_rollouts`` / ``unbilled_tokens`` / ``unbilled`` seconds), no cost or speed
table reads them, no row of them is trained on, and they never enter the prompt-statistics
history (visits, lengths: the history of what methods drew and trained on; the estimates sit
beside it, replaced every step, so the history's meaning stays the same for every method).

Objective: the expected number of groups with a non-zero advantage, the quantity allocation
methods try to raise (a group of ``n`` binary rewards with pass rate ``p`` has all rewards equal
with probability ``p^n + (1-p)^n``)::

    F(n) = sum_i f_i(n_i),   f_i(n) = 1 - p̂_i^n - (1 - p̂_i)^n

subject to ``sum_i n_i = C = round(b M G)`` (the budget every method gets at that fraction) and
``n_min <= n_i <= n_max`` (``f_i(0) = 0``: a skipped prompt yields nothing).  The anti-oracle's
bounds are Knapsack-RL's (``allocators/knapsack.py``): ``n_min = 2`` (a group needs two rows for
a GRPO signal) and ``n_max = 16 G`` capped at ``C - (M - 1) n_min``; the oracle's ``n_min`` is 0
(below); all are options.  At ``C = M n_min`` (e.g. b = 0.25 at G = 8) every count is forced to
``n_min``: the anti-oracle then equals uniform GRPO, while the oracle can still skip prompts.

``oracle`` maximises ``F``.  Its lower bound is 0 by default, not Knapsack-RL's 2: it is the
upper reference of *allocation*, and contenders skip prompts (GRESO's skip rule, DAPO's filter
spend nothing on a prompt they drop), so an oracle forced to spend 2 rollouts on every prompt
that its estimate shows always solved or never solved wastes budget no method has to: on
``noisy-chain`` at b = 0.5 the Knapsack-bounded oracle held 13.6 of 32 prompts a step at 2
(5-23; ~27 of its 128 rollouts), and its gain over uniform, though no larger on average
(+0.015 over 5 seeds either way), varied twice as much from seed to seed (SD 0.0075 vs 0.0036).
``--set oracle.n_min=2`` gives the Knapsack-bounded oracle of the first gate runs.

With ``n_min >= 1`` the greedy below is exact.  With ``n_min = 0`` it is not: ``f(0) = f(1) = 0``
and ``f(2) = 2pq``, so the increments rise before they fall and ``f`` is not concave at 0; then
:func:`oracle_counts` solves the problem exactly by dynamic programming over the prompts
(capacity ``C``, each prompt's count in ``{0} ∪ [1, n_max]``, O(M C n_max) vectorised,
12-17 ms at M = 32, C = 128-256, n_max = 128, timed once with ``time.perf_counter``), ties to the smaller count of the later prompt.  Proof that the
greedy is exact (``n_min >= 1``): the increments
``f_i(n + 1) - f_i(n) = p q^n + q p^n`` (``q = 1 - p``) do not increase in ``n`` (each term is
multiplied by ``q`` or ``p``, both <= 1), so every ``f_i`` is concave on the integers; a
separable concave objective under one sum constraint is maximised by taking the
``C - M n_min`` largest increments overall, and since each prompt's increments fall, those are
prefixes, i.e. a feasible allocation.  Ties go to the earlier candidate (determinism).

``anti-oracle`` minimises ``F`` on the same set.  A concave function over the polytope
``{sum n = C, n_min <= n <= n_max}`` attains its minimum at a vertex, and (the data being
integers) every vertex is integral with all counts at a bound except at most one: ``k`` prompts
at ``n_max``, one at ``n_min + r`` and the rest at ``n_min``, where ``(k, r) = divmod(C - M n_min,
n_max - n_min)``.  :func:`anti_oracle_counts` searches every choice of the remainder prompt with
the ``k`` cheapest full prompts beside it, which is the exact minimum in O(M log M).  It pours the
spare budget into prompts whose estimate is 0 or 1 (``f = 0`` at any ``n``), then into those
nearest 0 or 1 — the most wasteful spending the bounds allow.

``tests/test_controls.py`` checks both against brute force on small cases.

Screening: ``screening-oracle`` (``screen = 4``; ``--set oracle.screen=k`` gives the plain
oracle, whose default is 1, any ``k``).  The oracle chooses among the step's ``M`` candidates,
as every allocation-only method does; it cannot fund a prompt the step did not draw.  With
``screen = k`` it draws ``k M`` candidates, estimates every one (``k`` times the unbilled
rollouts) and solves the same problem over all of them (``n_min = 0``: the unfunded ones are
simply not trained), which is the upper reference for methods that draw extra candidates and
filter them (DAPO's dynamic sampling, GRESO's skip rule, SPEED-RL's screen).  It draws through
the pool ``k`` times as fast, so it also sees each prompt ``k`` times as often.  The plain
oracle keeps 1 (the committed gates and controls are its).  Why both: on ``leg-facts`` the
plain oracle is level with GRPO (its gate, seeds 0-2, curve average: +0.001 at b = 0.5, +0.013
at 0.25, intervals spanning 0) -- it makes the groups of the step's few informative prompts
bigger, while learning there is limited by how many informative prompts a step trains on -- and
the screening oracle is +0.067 [+0.030, +0.105] ahead at b = 0.5 (results/leg-facts-calibration).

``anti-oracle`` keeps ``n_min = 2``: with 0 it would put the whole budget on prompts whose
estimate is 0 or 1 and learn nothing, a control that passes without saying anything; at 2 it is
the worst allocation of a method that trains every prompt (the vertex argument needs ``f``
concave, so it requires ``n_min >= 1``).

Departures / choices: the estimate is a plug-in (``p̂`` from 16 samples, not the true pass
rate), so the oracle is "perfect knowledge" up to that sampling error; the estimate rollouts use
the plain length limit (no stop rule), their own random streams (``trainer.estimates``), and the
preset's truncation rule for rewards.  Controls are never contenders: ``--methods all`` does not
run them (they cost ``estimate_rollouts x M`` unbilled rollouts per step, twice a b = 1 step at
G = 8); ``python -m bench.calibrate`` runs them, or name them in ``--methods``; tables print them
as reference rows.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from allocators import register
from allocators.base import Allocator, Needs, Request, check_count_bounds
from core.options import Options, option


def expected_signal_groups(pass_rate, counts) -> float:
    """``sum_i 1 - p_i^n_i - (1 - p_i)^n_i``: expected groups with a non-zero advantage (a
    skipped prompt, ``n_i = 0``, counts 0, not the formula's -1)."""
    p = np.asarray(pass_rate, dtype=float)
    n = np.asarray(counts, dtype=float)
    return float(np.sum(np.where(n > 0, 1.0 - p ** n - (1.0 - p) ** n, 0.0)))


def _check(pass_rate, total: int, n_min: int, n_max: int, lowest: int = 1) -> np.ndarray:
    p = np.asarray(pass_rate, dtype=float)
    if p.ndim != 1 or len(p) == 0:
        raise ValueError("pass_rate must be a non-empty 1-d array")
    if np.any((p < 0) | (p > 1)) or not np.all(np.isfinite(p)):
        raise ValueError("pass rates must lie in [0, 1]")
    if not lowest <= n_min <= n_max or n_max < 1:
        raise ValueError(f"bounds need {lowest} <= n_min <= n_max (n_max >= 1), got {n_min}, "
                         f"{n_max}")
    check_count_bounds("controls", len(p), int(total), n_min, n_max)
    return p


def oracle_counts(pass_rate, total: int, *, n_min: int = 2, n_max: int = 128) -> np.ndarray:
    """Counts maximising :func:`expected_signal_groups` with ``sum = total`` within the bounds
    (``n_min = 0``: a prompt may be skipped)."""
    p = _check(pass_rate, total, n_min, n_max, lowest=0)
    if n_min == 0:
        return _skipping_oracle_counts(p, int(total), n_max)
    counts = np.full(len(p), n_min, dtype=np.int64)
    spare = int(total) - len(p) * n_min
    if spare == 0 or n_max == n_min:
        return counts
    n = np.arange(n_min, n_max)[None, :]                      # step n -> n + 1
    q = 1.0 - p[:, None]
    gains = p[:, None] * q ** n + q * p[:, None] ** n          # rows non-increasing (concave f)
    # stable sort of the flattened rows: equal gains go to the earlier prompt, and inside a row
    # to the smaller n, so the taken entries are prefixes of each row
    order = np.argsort(-gains.ravel(), kind="stable")[:spare]
    counts += np.bincount(order // gains.shape[1], minlength=len(p))
    return counts


def anti_oracle_counts(pass_rate, total: int, *, n_min: int = 2, n_max: int = 128) -> np.ndarray:
    """Counts minimising :func:`expected_signal_groups` with ``sum = total`` within the bounds
    (the best vertex of the feasible polytope, see the module docstring); ``n_min >= 1``."""
    p = _check(pass_rate, total, n_min, n_max)
    m = len(p)
    counts = np.full(m, n_min, dtype=np.int64)
    spare = int(total) - m * n_min
    if spare == 0 or n_max == n_min:
        return counts
    full, rest = divmod(spare, n_max - n_min)

    def f(n):
        return 1.0 - p ** n - (1.0 - p) ** n

    cost_full = f(n_max) - f(n_min)                  # raising a prompt to n_max
    cost_rest = f(n_min + rest) - f(n_min)           # raising it by the remainder only
    order = np.argsort(cost_full, kind="stable")
    if rest == 0:
        counts[order[:full]] = n_max
        return counts
    prefix = np.concatenate([[0.0], np.cumsum(cost_full[order])])
    rank = np.empty(m, dtype=np.int64)
    rank[order] = np.arange(m)
    # remainder prompt j: the `full` cheapest others go to n_max
    others = np.where(rank < full, prefix[min(full + 1, m)] - cost_full, prefix[full])
    j = int(np.argmin(others + cost_rest))
    chosen = [i for i in order if i != j][:full]
    counts[chosen] = n_max
    counts[j] = n_min + rest
    return counts


def _skipping_oracle_counts(p: np.ndarray, total: int, n_max: int) -> np.ndarray:
    """The exact maximum with counts in ``{0, 1, ..., n_max}`` (dynamic programming)."""
    n = np.arange(n_max + 1)
    value = 1.0 - p[:, None] ** n - (1.0 - p[:, None]) ** n     # f_i(n); f(0) is -1 here
    value[:, 0] = 0.0                                           # a skipped prompt yields nothing
    capacity = np.arange(total + 1)
    source = capacity[:, None] - n[None, :]                     # rollouts left to the others
    reachable = source >= 0
    best = np.where(capacity == 0, 0.0, -np.inf)                # prompts so far, exactly c
    choice = np.empty((len(p), total + 1), dtype=np.int64)
    for i in range(len(p)):
        candidates = np.where(reachable, best[source.clip(min=0)], -np.inf) + value[i]
        choice[i] = np.argmax(candidates, axis=1)
        best = candidates[capacity, choice[i]]
    counts = np.zeros(len(p), dtype=np.int64)
    left = total
    for i in range(len(p) - 1, -1, -1):
        counts[i] = choice[i, left]
        left -= counts[i]
    return counts


@dataclass(frozen=True)
class ControlOptions(Options):
    estimate_rollouts: int = option(16, "unbilled rollouts per candidate for the pass-rate "
                                    "estimate", ge=1)
    n_min: int = option(2, "fewest rollouts per prompt", ge=1)
    n_max: int | None = option(None, "most rollouts per prompt; null = 16 G capped at "
                               "C - (M - 1) n_min", ge=1)


SCREEN_HELP = ("candidates drawn a step, in multiples of M, all estimated and any of them funded "
               "(1: the step's M prompts, the reference of allocation; k > 1: a screening "
               "oracle, the reference of methods that draw extra candidates, at k times the "
               "unbilled estimates)")


@dataclass(frozen=True)
class OracleOptions(ControlOptions):
    n_min: int = option(0, "fewest rollouts per prompt (0: a prompt may be skipped, as "
                        "contenders' skip rules do; 2: Knapsack-RL's bounds)", ge=0)
    screen: int = option(1, SCREEN_HELP, ge=1)


class PassRateControl(Allocator):
    """Shared part of the two controls: unbilled estimates in, counts within the bounds out."""

    control = True
    counts_fn = staticmethod(oracle_counts)
    Options = ControlOptions

    def __init__(self, setting, **options) -> None:
        super().__init__(setting, **options)
        o = self.opts
        total, m = setting.rollouts_per_step, setting.prompts_per_step
        self.n_min = o.n_min
        cap = total - (m - 1) * self.n_min
        self.n_max = o.n_max if o.n_max is not None else max(self.n_min,
                                                              min(16 * setting.group_size, cap))
        check_count_bounds(self.name, m, total, self.n_min, self.n_max)

    def needs(self) -> Needs:
        return Needs(pass_rate_estimates=self.opts.estimate_rollouts)

    def plan(self, step, candidates, stats, budget):
        p = np.array([stats.estimate(c.pid, step) for c in candidates], dtype=float)
        counts = type(self).counts_fn(p, budget.rollouts, n_min=self.n_min, n_max=self.n_max)
        self.step_metrics = {"expected_signal_groups": expected_signal_groups(p, counts),
                             "estimate_mean": float(p.mean()),
                             "estimate_mixed": float(np.mean((p > 0) & (p < 1)))}
        return [Request(c.pid, int(n)) for c, n in zip(candidates, counts)]

    def resolved_options(self) -> dict:
        return {**super().resolved_options(), "n_max": self.n_max,
                "objective": "expected groups with non-zero advantage"}


@register("oracle")
class Oracle(PassRateControl):
    """Control: the budget where it yields the most expected non-zero-advantage groups."""

    counts_fn = staticmethod(oracle_counts)
    Options = OracleOptions

    def candidates_per_step(self) -> int:
        return self.opts.screen * self.setting.prompts_per_step


@dataclass(frozen=True)
class ScreeningOracleOptions(OracleOptions):
    screen: int = option(4, SCREEN_HELP, ge=1)


@register("screening-oracle")
class ScreeningOracle(Oracle):
    """Control: the oracle choosing from ``screen`` (4) times the step's candidates."""

    Options = ScreeningOracleOptions


@register("anti-oracle")
class AntiOracle(PassRateControl):
    """Control: the budget where it yields the fewest expected non-zero-advantage groups."""

    counts_fn = staticmethod(anti_oracle_counts)
