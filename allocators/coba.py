"""CoBA-RL: capability-oriented budget allocation with a Beta preference over pass rates.

Paper: Yao, Zhang, Chen, et al. (Meituan), "CoBA-RL: Capability-Oriented Budget Allocation"
(title as docs/ALGORITHMS.md §CoBA-RL gives it), arXiv 2602.03048, v3, Feb 2026.  Code is announced at
github.com/Within-yao/CoBA-RL (README only), so the paper is the only reference.  docs/ALGORITHMS.md §CoBA-RL (method), §Paper-tables (tables), §Unknowns (UNKNOWNs), §Scaling
(scaling).

Equations (§CoBA-RL):

* capability ``F_t = 1 - mean_i p_i`` of step ``t``'s batch; ``F̄`` = mean over the last ``k``
  steps; ``F̃ = F̄`` if ``F̄ > 0.5`` else ``sigmoid(gamma (F̄ - 0.5))`` (continuous: both give 0.5
  at ``F̄ = 0.5``);
* ``alpha = clip(alpha_min + slope F̃, alpha_min, alpha_max)``, ``beta = kappa - alpha``;
* preference ``D(p) = p^(alpha-1) (1-p)^(beta-1) / Beta(alpha, beta)``; value
  ``V(B, p) = (1 - exp(-B k)) D(p)`` with ``k = p (1 - p) / tau``, zero for ``p in {0, 1}``;
* marginal gain ``D(p) (1 - e^-k) e^(-k B)``, strictly falling in ``B`` -- so granting the
  ``R = total - M B_low`` rollouts one at a time to the largest gain (Algorithm 1, a heap) is
  optimal.

Solvers.  :func:`coba_counts_heap` is Algorithm 1 literally (O(R log M) heap operations in a
Python loop, so its time grows with C; see ``python -m bench.overhead``).  :func:`coba_counts`, the
default, returns the same counts vectorised: the heap pops entries in increasing order of the key
``(-gain, B, i)`` and, because each prompt's gains fall with ``B``, each prompt's next entry is the
smallest key it has left -- so the heap takes exactly the ``R`` smallest keys of the whole
``M x (B_up - B_low)`` gain table.  A partition finds the ``R``-th largest gain; larger gains are
all taken and equal ones fill the rest in ``(B, i)`` order.  Both evaluate gains by the same
float recursion (``gain(B + 1) = gain(B) * e^-k``, which cannot rise in floating point), so they
agree bit for bit; ``tests/test_coba.py`` checks it.  :func:`coba_counts_dp` solves the same
objective by an exact-weight DP (CoBA Table 4's contrast, reference only).

Ties (deterministic, harness choice; the paper's heap order is implementation-defined): among
equal gains the prompt holding fewer rollouts goes first, then the lower index.  Prompts with
``p in {0, 1}`` have gain 0 and so receive rollouts only after every other prompt has reached
``B_up``; they then fill round-robin from the lowest index.

Defaults and provenance (§Unknowns UNKNOWNs marked [inferred]; none is a paper value unless [paper]):

* ``kappa = 11``, ``gamma = 10``, ``B_low = 2``, ``B_up = 128`` [paper]; ``alpha_min = 2``,
  ``alpha_max = 9``, ``slope = 8``, ``tau = 1``, ``window = 10`` steps [inferred, docs/ALGORITHMS.md §Unknowns].
  Check of the placeholders against Fig. 4's (alpha, beta) = (2.54, 8.46), (4.50, 6.50),
  (7.26, 3.74): ``alpha = 2 + 8 F̃`` gives exactly these at ``F̃ = 0.0675 / 0.3125 / 0.6575``
  (2.56 / 4.48 / 7.28 at the two-decimal ``F̃ = 0.07 / 0.31 / 0.66`` quoted in §Unknowns), so the
  placeholders reproduce the figure and are kept.  ``beta = 11 - alpha >= 2``.
* In the allocator: ``B_up = 8 G`` capped at ``C - (M - 1) B_low`` [inferred, §Scaling];
  ``p_i`` = last-visit pass rate; cold prompts use the running mean of every observed group pass
  rate, ``cold_pass_rate = 0.5`` before any is observed [inferred, §Unknowns].  All cold prompts then share
  one ``p``, so the first step's plan is as even as the budget allows whatever ``alpha``.  Before
  any step has been observed the failure history is taken as ``1 - cold pass rate``
  (harness choice; source silent).
* ``F_t`` = 1 - mean over the step's trained groups of each group's pass rate (kept rollouts),
  recorded in ``observe``.

Table 3 variants (separate method names): ``coba-fixed-exploit`` (alpha, beta) = (10.5, 1.5),
``coba-fixed-explore`` (1.5, 10.5) [paper]; ``coba-linear`` decays alpha linearly from 10 to 1
over the run with ``beta = kappa - alpha`` (so beta rises from 1 to 10 and stays positive at
kappa = 11; a kappa that would make beta <= 0 is rejected).  "Linear step decay" could mean a
per-step line or a staircase; the default is per step (``alpha_t = 10 - 9 t / (steps - 1)``) and
``decay_stages = s > 0`` gives ``s`` equal-length stages at evenly spaced alpha levels
(harness choice; source silent).

Departures: none from the paper's equations; the tie order, the cold start, the failure-history
start and the solver vectorisation are harness choices documented above.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np
from scipy.special import betaln, expit

from allocators import register
from allocators.base import Allocator, PromptStats, Request, StepBudget, check_count_bounds
from core.options import Options, option
from allocators.knapsack import exact_weight_dp, take_largest


# ------------------------------------------------------------------------------ shape schedule
def coba_shape(fail_rates, *, kappa=11.0, gamma=10.0, alpha_min=2.0, alpha_max=9.0, slope=8.0,
               window=10) -> tuple[float, float]:
    """(alpha_t, beta_t) from the per-step batch failure rates ``F_t`` (oldest first).

    Defaults: kappa, gamma [paper]; alpha_min, alpha_max, slope, window [inferred, §Unknowns].
    """
    history = np.asarray(fail_rates, dtype=np.float64).reshape(-1)
    if history.size == 0:
        raise ValueError("coba_shape: needs at least one failure rate")
    if window < 1:
        raise ValueError(f"coba_shape: window = {window} < 1")
    mean_fail = float(history[-int(window):].mean())
    mapped = mean_fail if mean_fail > 0.5 else float(expit(gamma * (mean_fail - 0.5)))
    alpha = float(np.clip(alpha_min + slope * mapped, alpha_min, alpha_max))
    return alpha, float(kappa - alpha)


# ------------------------------------------------------------------------------ value model
def beta_preference(pass_rate, alpha: float, beta: float) -> np.ndarray:
    """``D(p)``, the Beta(alpha, beta) density, set to 0 at ``p in {0, 1}`` (no gradient there)."""
    p = np.asarray(pass_rate, dtype=np.float64)
    density = np.zeros_like(p)
    inside = (p > 0.0) & (p < 1.0)
    pi = p[inside]
    density[inside] = np.exp((alpha - 1.0) * np.log(pi) + (beta - 1.0) * np.log1p(-pi)
                             - betaln(alpha, beta))
    return density


def coba_value(counts, pass_rate, *, alpha: float, beta: float, tau: float = 1.0) -> float:
    """Objective ``sum_i V(B_i, p_i)`` of an allocation."""
    p = np.asarray(pass_rate, dtype=np.float64)
    counts = np.asarray(counts, dtype=np.float64)
    rate = p * (1.0 - p) / tau
    return float(np.sum(-np.expm1(-rate * counts) * beta_preference(p, alpha, beta)))


def _first_gain_and_ratio(p: np.ndarray, alpha, beta, tau, n_low) -> tuple[np.ndarray, np.ndarray]:
    """Gain of the first extra rollout (at ``B = n_low``) and the factor ``e^-k`` per rollout."""
    rate = p * (1.0 - p) / tau
    gain = beta_preference(p, alpha, beta) * -np.expm1(-rate) * np.exp(-rate * n_low)
    return gain, np.exp(-rate)


def _validated(pass_rate, total, alpha, beta, tau, n_low, n_high) -> np.ndarray:
    p = np.asarray(pass_rate, dtype=np.float64).reshape(-1)
    if p.size == 0:
        raise ValueError("coba: no prompts")
    if not np.all((p >= 0.0) & (p <= 1.0)):
        raise ValueError("coba: pass rates must lie in [0, 1]")
    if alpha <= 0 or beta <= 0:
        raise ValueError(f"coba: Beta shape needs alpha, beta > 0 (got {alpha}, {beta})")
    if tau <= 0:
        raise ValueError(f"coba: tau = {tau} must be positive")
    if not 0 <= n_low <= n_high:
        raise ValueError(f"coba: need 0 <= n_low <= n_high (got {n_low}, {n_high})")
    check_count_bounds("coba", p.size, int(total), n_low, n_high)
    return p


# ------------------------------------------------------------------------------ solvers
def coba_counts(pass_rate, total, *, alpha, beta, tau=1.0, n_low=2, n_high=128) -> np.ndarray:
    """CoBA-RL counts (Algorithm 1's result), vectorised; equal to :func:`coba_counts_heap`.

    Returns int64 counts in ``[n_low, n_high]`` summing exactly to ``total``.  Memory and time
    are O(M * min(n_high - n_low, R)).
    """
    p = _validated(pass_rate, total, alpha, beta, tau, n_low, n_high)
    counts = np.full(p.size, n_low, dtype=np.int64)
    spare = int(total) - p.size * n_low
    columns = min(n_high - n_low, spare)
    if columns == 0:
        return counts
    gain, ratio = _first_gain_and_ratio(p, alpha, beta, tau, n_low)
    # row j = gain at B = n_low + j; flat order of (B, prompt) is the heap's tie order
    table = np.cumprod(np.vstack([gain, np.broadcast_to(ratio, (columns - 1, p.size))]), axis=0)
    counts += take_largest(table.ravel(), spare).reshape(table.shape).sum(axis=0)
    return counts


def coba_counts_heap(pass_rate, total, *, alpha, beta, tau=1.0, n_low=2, n_high=128) -> np.ndarray:
    """Algorithm 1 as written: a max-heap of marginal gains, one rollout per pop (reference)."""
    p = _validated(pass_rate, total, alpha, beta, tau, n_low, n_high)
    counts = [n_low] * p.size
    spare = int(total) - p.size * n_low
    gain, ratio = _first_gain_and_ratio(p, alpha, beta, tau, n_low)
    gain, ratio = gain.tolist(), ratio.tolist()
    heap = [(-gain[i], n_low, i) for i in range(p.size) if n_low < n_high]
    heapq.heapify(heap)
    while spare > 0 and heap:
        negative_gain, held, i = heapq.heappop(heap)
        counts[i] = held + 1
        spare -= 1
        if counts[i] < n_high:
            heapq.heappush(heap, (negative_gain * ratio[i], counts[i], i))
    return np.array(counts, dtype=np.int64)


def coba_counts_dp(pass_rate, total, *, alpha, beta, tau=1.0, n_low=2, n_high=128) -> np.ndarray:
    """Exact DP over the same objective, O(M * (n_high - n_low) * R): the slow reference of
    CoBA Table 4.  Among allocations of equal value it may differ from the greedy's."""
    p = _validated(pass_rate, total, alpha, beta, tau, n_low, n_high)
    spare = int(total) - p.size * n_low
    width = min(n_high - n_low, spare)
    held = n_low + np.arange(width + 1)
    rate = p * (1.0 - p) / tau
    values = -np.expm1(-rate[:, None] * held[None, :]) * beta_preference(p, alpha, beta)[:, None]
    return n_low + exact_weight_dp(values, spare)


# ------------------------------------------------------------------------------ allocators
@dataclass(frozen=True)
class CoBAOptions(Options):
    kappa: float = option(11.0, "alpha + beta, the Beta preference's concentration", gt=0)
    gamma: float = option(10.0, "sigmoid steepness of the capability map below F = 0.5", ge=0)
    alpha_min: float = option(2.0, "lower clip of alpha", gt=0)
    alpha_max: float = option(9.0, "upper clip of alpha", gt=0)
    slope: float = option(8.0, "alpha = alpha_min + slope * F~")
    window: int = option(10, "steps of failure rate averaged into F-bar", ge=1)
    tau: float = option(1.0, "temperature of the saturation k = p (1 - p) / tau", gt=0)
    n_low: int = option(2, "B_low, the fewest rollouts a prompt gets", ge=1)
    n_high: int | None = option(None, "B_up, the most rollouts a prompt gets; null = "
                                "min(8 G, C - (M - 1) B_low)", ge=1)
    cold_pass_rate: float = option(0.5, "pass rate assumed before any group is observed",
                                   ge=0, le=1)
    solver: str = option("vectorised", "Algorithm 1 vectorised, or the literal heap (same "
                         "counts)", choices=("vectorised", "heap"))


@register("coba")
class CoBA(Allocator):
    """CoBA-RL in the shared loop: one round, counts from :func:`coba_counts`."""

    Options = CoBAOptions
    SOLVERS = {"vectorised": coba_counts, "heap": coba_counts_heap}

    def __init__(self, setting, **options):
        super().__init__(setting, **options)
        o = self.opts
        prompts, total = setting.prompts_per_step, setting.rollouts_per_step
        self.n_high = int(min(8 * setting.group_size, total - (prompts - 1) * o.n_low)
                          if o.n_high is None else o.n_high)
        check_count_bounds("coba", prompts, total, o.n_low, self.n_high)
        self.fail_history: list[float] = []
        self.observed_pass_sum = 0.0
        self.observed_groups = 0
        self.last_shape: tuple[float, float] | None = None

    # -- state ---------------------------------------------------------------------------
    def cold_estimate(self) -> float:
        """Running mean of every observed group pass rate (the cold-prompt estimate)."""
        if not self.observed_groups:
            return self.opts.cold_pass_rate
        return self.observed_pass_sum / self.observed_groups

    def shape_at(self, step: int) -> tuple[float, float]:
        """(alpha, beta) for ``step``: the capability-driven schedule of §CoBA-RL."""
        history = self.fail_history or [1.0 - self.cold_estimate()]
        o = self.opts
        return coba_shape(history, kappa=o.kappa, gamma=o.gamma, alpha_min=o.alpha_min,
                          alpha_max=o.alpha_max, slope=o.slope, window=o.window)

    # -- loop hooks ------------------------------------------------------------------------
    def plan(self, step: int, candidates, stats: PromptStats, budget: StepBudget) -> list[Request]:
        cold = self.cold_estimate()
        pass_rate = np.array([_last_pass_rate(stats, c.pid, cold) for c in candidates])
        alpha, beta = self.last_shape = self.shape_at(step)
        self.step_metrics = {"alpha": alpha, "beta": beta}
        counts = self.SOLVERS[self.opts.solver](pass_rate, budget.rollouts, alpha=alpha,
                                                beta=beta, tau=self.opts.tau,
                                                n_low=self.opts.n_low, n_high=self.n_high)
        return [Request(c.pid, int(n)) for c, n in zip(candidates, counts)]

    def observe(self, step: int, groups, stats: PromptStats) -> None:
        rates = [float(np.clip(np.mean([r.reward for r in g if r.kept]), 0.0, 1.0))
                 for g in groups if any(r.kept for r in g)]
        if not rates:
            return
        self.fail_history.append(1.0 - float(np.mean(rates)))
        # only the last `window` failure rates are ever read; keep the checkpoint small
        del self.fail_history[:-max(self.opts.window, 1)]
        self.observed_pass_sum += float(np.sum(rates))
        self.observed_groups += len(rates)

    def resolved_options(self) -> dict:
        return dict(super().resolved_options(), n_high=self.n_high,
                    total=self.setting.rollouts_per_step,
                    prompts=self.setting.prompts_per_step, schedule=self.schedule_name())

    def schedule_name(self) -> str:
        return "capability"


def _last_pass_rate(stats: PromptStats, pid: int, cold: float) -> float:
    rate = stats.last_pass_rate(pid)
    return cold if rate is None else float(np.clip(rate, 0.0, 1.0))


@dataclass(frozen=True)
class FixedShapeOptions(CoBAOptions):
    fixed_alpha: float | None = option(None, "the constant alpha; null = the row's", gt=0)
    fixed_beta: float | None = option(None, "the constant beta; null = the row's", gt=0)


class _FixedShapeCoBA(CoBA):
    """CoBA with a constant (alpha, beta) (Table 3's static value functions)."""

    ablation = True
    Options = FixedShapeOptions
    default_shape: tuple[float, float] = (0.0, 0.0)

    def __init__(self, setting, **options):
        super().__init__(setting, **options)
        o = self.opts
        self.fixed_alpha = float(self.default_shape[0] if o.fixed_alpha is None else o.fixed_alpha)
        self.fixed_beta = float(self.default_shape[1] if o.fixed_beta is None else o.fixed_beta)

    def shape_at(self, step: int) -> tuple[float, float]:
        return self.fixed_alpha, self.fixed_beta

    def resolved_options(self) -> dict:
        return dict(super().resolved_options(), fixed_alpha=self.fixed_alpha,
                    fixed_beta=self.fixed_beta)

    def schedule_name(self) -> str:
        return "fixed"


@register("coba-fixed-exploit")
class CoBAFixedExploit(_FixedShapeCoBA):
    """Table 3 row "(alpha = 10.5, beta = 1.5)": preference on high pass rates [paper]."""

    default_shape = (10.5, 1.5)


@register("coba-fixed-explore")
class CoBAFixedExplore(_FixedShapeCoBA):
    """Table 3 row "(alpha = 1.5, beta = 10.5)": preference on low pass rates [paper]."""

    default_shape = (1.5, 10.5)


@dataclass(frozen=True)
class LinearOptions(CoBAOptions):
    alpha_start: float = option(10.0, "alpha at the first step", gt=0)
    alpha_end: float = option(1.0, "alpha at the last step", gt=0)
    decay_stages: int = option(0, "0 = a per-step line; >= 2 = that many constant stages", ge=0)


@register("coba-linear")
class CoBALinear(CoBA):
    """Table 3 row "Linear Step Decay": alpha from ``alpha_start`` (10) to ``alpha_end`` (1)
    over ``setting.steps``, ``beta = kappa - alpha`` [paper endpoints; schedule form harness
    choice, see the module docstring]."""

    ablation = True
    Options = LinearOptions

    def __init__(self, setting, **options):
        super().__init__(setting, **options)
        o = self.opts
        if o.kappa - max(o.alpha_start, o.alpha_end) <= 0:
            raise ValueError(f"coba-linear: kappa = {o.kappa} makes beta = kappa - alpha "
                             f"non-positive at alpha = {max(o.alpha_start, o.alpha_end)}")
        if o.decay_stages == 1:
            raise ValueError("coba-linear: decay_stages must be 0 (per-step line) or >= 2")

    def progress(self, step: int) -> float:
        """Fraction of the decay done at ``step`` (0 at the first step, 1 at the last)."""
        last = max(self.setting.steps - 1, 1)
        fraction = min(max(step, 0), last) / last
        if self.opts.decay_stages:
            stage = min(int(fraction * self.opts.decay_stages), self.opts.decay_stages - 1)
            return stage / max(self.opts.decay_stages - 1, 1)
        return fraction

    def shape_at(self, step: int) -> tuple[float, float]:
        o = self.opts
        alpha = o.alpha_start + (o.alpha_end - o.alpha_start) * self.progress(step)
        return alpha, o.kappa - alpha

    def schedule_name(self) -> str:
        return "linear"
