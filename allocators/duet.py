"""DUET's rollout allocation: cost-weighted Neyman counts under a per-step token budget.

Paper: Hu, Zhao, Xu, Jacoby, "DUET: DUal-controlled tokEn allocaTion" for RL with verifiable
rewards, arXiv 2605.08441 (May 2026).  The paper body was unavailable, so the released code
(github.com/Haoyu-Hu/DUET @ 82bd6f4: ``src/duet/duet_allocator.py``,
``src/duet/duet_prompt_state.py``, ``src/duet/duet_surrogate.py``,
``src/duet/duet_logits_processor.py::assign_thresholds_batched`` and the allocation / update
blocks of ``src/verl_runtime/verl/trainer/ppo/ray_trainer.py``) is the reference, as described in
docs/ALGORITHMS.md §DUET (steps 1-8 and 14-18) and scaled by §Scaling.  Code was read for behaviour only.
The stop rule (steps 9-13) is ``lengthctl/duet.py``.

Registered methods
------------------
* ``duet-alloc``: DUET's counts and weights, rollouts run to EOS / ``L_max`` (``max_len``).
* ``duet``: the same plus DUET's marker-gated abort and confidence stop (``duet``).
* ``duet-abort``: uniform GRPO counts with DUET's stop rule (the stop rule's ablation).

Equations (§DUET)
----------------
1. ``ŝ_q = max(σ_min, σ̂_q)`` once ``q`` has ``k_warmup`` observed spreads, else the cold start
   ``ŝ_q = max(σ_min, α0 + α1 f(q))``, ``f(q)`` = prompt log-prob mean (missing ⇒ pool median)
   (before the ridge is fitted: a constant, below).
   ``L̂_q`` = mean kept length of ``q``, else the global mean kept length, else ``L_max``.
2. ``B = b · M · n_ref · mean_q(L̂_q)`` tokens.
3. ``n_q(λ) = clip(round(ŝ_q / sqrt(λ L̂_q)), n_min, n_max)``; 10 bisection steps on
   ``log λ ∈ [-20, 20]`` (``Φ(λ) = Σ n_q L̂_q > B`` raises λ), then ``n`` at the midpoint —
   the stationarity condition of ``min Σ ŝ_q² / n_q`` s.t. ``Σ n_q L̂_q = B``.
4. Trim: while ``Σ n_q L̂_q > B``, decrement the largest-``L̂`` prompt with ``n_q > n_min``
   (ties: the lowest index first, as released; ``trim_ties``).
6. ``p_pre,q = clip(n_q / max(1, mean(n)), ε_pre, 1)`` from the step-3 counts (before the
   trim, as released); each rollout of ``q`` carries ``weight = 1 / p_pre,q``.
7. ``ι_q = ŝ_q² / max(L̂_q, 1)``; ``r_q`` its within-batch rank in [0, 1];
   ``τ_q = 0.5 + (0.99 - 0.5) r_q`` goes to the stop rule as ``Request.control["tau"]``.
18. After the update, for each group with ≥ 2 kept rows:
    ``g_i = A_i w_i Σ_t log π_old(y_i,t)`` (advantage after the weights of step 15),
    ``σ_t = std(g)`` (population), Welford-update ``σ̂_q``; the ridge cold start is refitted.

Only the planned budget ``Σ n_q L̂_q`` is constrained: realised tokens are lower where the stop
rule cuts rollouts (the source of DUET's speed-up).

Defaults and provenance
-----------------------
* ``n_ref = G`` (8 in the release), ``n_min = 1``, ``n_max = 4 G`` (32 at G = 8) [code
  ``run_duet.sh``; scaled by §Scaling [inferred]]; ``ε_pre = 0.05``, 10 bisection iterations on
  ``[-20, 20]``, ``k_warmup = 1`` [code]; stop band floor 0.5, ceiling 0.99 [code].
* Rounding: the release uses Python's ``int(round(x))``, round-half-to-even; ``np.rint`` here is
  the same rule [code].  ``L̂`` enters the square root as ``max(L̂, 1)`` [code].
* ``σ_min = 1e-6``, the floor of every ``ŝ``: the release's value when no ridge-weights file
  exists [code: ``ray_trainer.py``]; the fitted value was never released (UNKNOWN).  A prompt
  whose rewards were all equal has ``σ̂ = 0`` and so drops to ``n_min``.
* Cold start [harness choice; the release loads offline ridge weights that are not public]:
  ``sklearn.linear_model.Ridge(alpha=1.0)`` (sklearn's default; source silent) fitted on
  ``(f(q), σ̂_q)`` of every prompt with ``k_warmup`` observations, refitted after every update
  once there are ``ridge_min_points = 8`` (source silent).  Until then, and throughout with
  ``cold_start="constant"``, cold prompts get ``ŝ = cold_spread = 1.0``: the release's cold
  ``ŝ`` when no ridge weights are loaded [code].  Prompts with no feature train and predict at
  the pool's median feature (as the release does on a feature-cache miss), so with no features
  at all the ridge predicts the mean observed spread.
* Why the constant is not ``σ_min`` (the release's ``DUET_S_HAT_COLD=sigma_min`` option, which
  ``cold_start="constant", cold_spread=σ_min`` reproduces): the price bracket
  ``λ ∈ [e^-20, e^20]`` only reaches ``n = ŝ / sqrt(λ L̂) >= 1/2`` when
  ``ŝ >= e^-10 sqrt(L̂) / 2 ≈ 2.3e-5 sqrt(L̂)``.  At ``σ_min = 1e-6`` an all-cold batch is
  therefore given ``n_min = 1`` rollout per prompt, no group ever has the two kept rows a
  spread needs, and the allocation never leaves ``n_min``.  Any ``ŝ`` in reach gives the same
  uniform first step, so only the floor role is scale-sensitive.
* Rank ties: ``rank_ties="ordinal"`` [code] ranks equal ``ι`` by batch position (a stable sort),
  so tied prompts still spread over the band; ``"average"`` gives them their mean rank.  One
  prompt alone gets the band midpoint [code].
* ``duet-abort``: every prompt gets ``τ = 0.745``, the band midpoint.  Uniform counts carry no
  information ranking, and the midpoint is both the release's value for a prompt with nothing
  to rank against and the batch mean of the rank-mapped thresholds (harness choice; source
  silent -- the release never runs the stop without its allocator).

Departures
----------
* Step 5 (make ``Σ n`` divisible by the number of GPUs) is skipped: the trainer is a single
  process, so no equal sharding is needed.
* ``L̂_q`` is read from the shared :class:`PromptStats` (every kept row of every trained group)
  instead of a DUET-private running mean over groups with ≥ 2 kept rows; the cold fallback is the
  all-time global mean kept length, standing in for the release's mean of its 1,024-length
  K-window.
* Budget comparisons on exact ties (issue 13 item 6): the bisection and the trim compare
  ``Σ n_q L̂_q`` with ``B`` exactly, with the sum taken left to right as the release's Python
  ``sum`` does (:func:`planned_tokens`) and ``B = b · (M · n_ref · mean L̂)`` rounded in the
  release's order.  This matters more than it looks: cold prompts share one ``L̂``, so on every
  first-epoch step ``Φ(λ) = B`` holds up to rounding and the last bit decides whether the
  bisection raises the price and whether the trim drains prompts.  With ``np.dot`` (blocked
  summation) the side-by-side check against the release disagreed on 44 of 200 such all-cold
  batches with a non-integer ``L̂`` (95 of 200 final plans); with the in-order sum all agree.
* The trim runs until the budget holds (or every count is at ``n_min``); the release stops after
  ``4 M`` decrements, a cap that cannot bind after 10 bisection steps (the last bracket moves
  each real count by under 2 %, so each prompt rounds at most one step over).
* The trim runs with ``trim_ties="most_rollouts"`` on ``np.dot`` with a tolerance of
  ``1e-12 B``; the released rule (the default) compares exactly, like the bisection.
* Python 3.12 made ``sum`` of floats compensated (Neumaier); :func:`planned_tokens` adds in
  plain order, the release's result under Python 3.10/3.11 (verl's versions).

Released behaviour kept by default (each with the harness alternative as an option)
-----------------------------------------------------------------------------------
* Trim ties (``trim_ties="lowest_index"`` [code]): among prompts of equal ``L̂`` the trim
  drains the lowest index to ``n_min`` before the next, and trimmed prompts keep their
  pre-trim propensity.  Equal ``L̂`` is the normal case for cold prompts (all share the global
  mean length) and their ``ŝ`` is equal too, so the bisection's counts are equal and its last
  midpoint can land one step over the budget: at ``M = 128``, ``n_ref = 8``, ``L̂ = 3072``,
  ``b = 1`` the bisection gives 9 each, and the trim leaves 16 prompts at 1 rollout and 112 at
  9 (the released code gives the same).  This is a tie rule, not a bug: the budget holds and
  the weights are the release's.  ``trim_ties="most_rollouts"`` levels the prompts instead
  (all 8 in that example), the cheaper choice for ``Σ ŝ² / n`` at equal ``ŝ``.
* Groups with fewer than two kept rows (``small_groups="verl"`` [code: verl's GRPO
  advantage]): a one-row group has mean 0 and std 1, so its advantage is its reward times its
  weight, and a group of two or more rows is normalised over all of them even when only one is
  kept.  ``small_groups="no_gradient"`` is the harness rule of every other method (docs/DESIGN.md
  §Loop).  The rule is applied by ``trainer.grpo.assign_advantages``, which the loop calls with
  this allocator's :meth:`advantage_options`; ``duet-abort`` uses the same default.  Groups
  of one row are common under DUET (``n_min = 1``; 17-36 % of its groups in the committed tiny
  sweep at b = 1 to 0.25), so this changes what DUET trains on.
"""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata
from sklearn.linear_model import Ridge

from allocators import register
from allocators.base import Allocator, Needs, Request, check_count_bounds
from core.options import Options, option
from allocators.uniform import UniformGRPO

LOG_PRICE_BRACKET = (-20.0, 20.0)   # [code] bisection on log λ
FEATURE = "prompt_logprob_mean"
COLD_STARTS = ("ridge", "constant")
RANK_TIES = ("ordinal", "average")
SMALL_GROUP_RULES = ("verl", "no_gradient")   # trainer.grpo.assign_advantages' small_groups
TRIM_TIES = ("lowest_index", "most_rollouts")
BAND_MIDPOINT = 0.745               # (0.5 + 0.99) / 2


# ----------------------------------------------------------------------------------------------
# Neyman counts under a token budget
# ----------------------------------------------------------------------------------------------

def counts_at_price(price: float, s_hat, mean_len, *, n_min: int, n_max: int) -> np.ndarray:
    """``clip(rint(ŝ / sqrt(λ max(L̂, 1))), n_min, n_max)``: the counts at dual price ``λ``."""
    real = np.asarray(s_hat, dtype=np.float64) / (
        math.sqrt(max(price, 1e-30)) * np.sqrt(np.maximum(mean_len, 1.0)))
    return np.clip(np.rint(real), n_min, n_max).astype(np.int64)


def planned_tokens(counts, mean_len) -> float:
    """``Σ n_q L̂_q`` summed left to right, the release's Python ``sum`` bit for bit.

    The budget comparisons decide on ties (cold prompts share one ``L̂``, so ``Φ = B`` up to
    rounding is the normal first-epoch case); ``np.dot``'s blocked summation rounds
    differently and flips them.  ``np.add.accumulate`` adds strictly in order.
    """
    products = np.asarray(counts, dtype=np.float64) * np.asarray(mean_len, dtype=np.float64)
    return float(np.add.accumulate(products)[-1]) if len(products) else 0.0


def neyman_bisection(s_hat, mean_len, token_budget, *, n_min: int = 1, n_max: int = 32,
                     iterations: int = 10) -> np.ndarray:
    """Step 3: the counts at the midpoint of ``iterations`` bisection steps on ``log λ``.

    With 10 steps the final bracket is 40/1024 wide in ``log λ``, so ``Σ n L̂`` lands near the
    budget but not exactly on it (either side); :func:`trim_to_budget` removes any excess.
    """
    s_hat = np.asarray(s_hat, dtype=np.float64)
    mean_len = np.asarray(mean_len, dtype=np.float64)
    log_low, log_high = LOG_PRICE_BRACKET
    for _ in range(iterations):
        log_mid = 0.5 * (log_low + log_high)
        spent = planned_tokens(counts_at_price(math.exp(log_mid), s_hat, mean_len,
                                               n_min=n_min, n_max=n_max), mean_len)
        if spent > token_budget:
            log_low = log_mid
        else:
            log_high = log_mid
    return counts_at_price(math.exp(0.5 * (log_low + log_high)), s_hat, mean_len,
                           n_min=n_min, n_max=n_max)


def trim_to_budget(counts, mean_len, token_budget, *, n_min: int = 1,
                   ties: str = "lowest_index") -> np.ndarray:
    """Step 4: decrement the largest-``L̂`` prompt above ``n_min`` until ``Σ n L̂ <= B``.

    ``ties="lowest_index"`` [code]: among prompts of equal ``L̂`` the lowest index goes first,
    so the trim drains one prompt to ``n_min`` before touching the next.
    ``ties="most_rollouts"``: the prompt with the most rollouts goes first, then the lower
    index, which levels equal prompts instead (see the module docstring).
    """
    if ties not in TRIM_TIES:
        raise ValueError(f"trim ties must be one of {TRIM_TIES}, got {ties!r}")
    counts = np.asarray(counts, dtype=np.int64).copy()
    mean_len = np.asarray(mean_len, dtype=np.float64)
    if ties == "lowest_index":
        # the release's argmax stays on one prompt until it reaches n_min, so a walk in
        # (-L̂, index) order draining each prompt in turn makes the same decrements; the
        # in-order sum falls monotonically with each count, so the release's stopping point
        # (the first decrement after which Σ n L̂ <= B exactly) is found by bisection
        spent = planned_tokens(counts, mean_len)
        for q in np.lexsort((np.arange(len(counts)), -mean_len)):
            if spent <= token_budget:
                break
            room = int(counts[q]) - n_min
            if room <= 0:
                continue
            base = int(counts[q])

            def spent_after(k: int) -> float:
                counts[q] = base - k
                return planned_tokens(counts, mean_len)

            low, high = 1, room            # the answer lies in [low, high]
            if spent_after(room) <= token_budget:
                while low < high:
                    mid = (low + high) // 2
                    if spent_after(mid) <= token_budget:
                        high = mid
                    else:
                        low = mid + 1
            else:
                low = room
            spent = spent_after(low)
        return counts
    excess = float(np.dot(counts, mean_len)) - token_budget
    tolerance = 1e-12 * max(abs(token_budget), 1.0)
    heap = [(-mean_len[q], -int(counts[q]), int(q)) for q in np.flatnonzero(counts > n_min)]
    heapq.heapify(heap)
    while excess > tolerance and heap:
        _, _, q = heapq.heappop(heap)
        counts[q] -= 1
        excess -= mean_len[q]
        if counts[q] > n_min:
            heapq.heappush(heap, (-mean_len[q], -int(counts[q]), q))
    return counts


def allocation_propensities(counts, *, eps_pre: float = 0.05) -> np.ndarray:
    """Step 6: ``clip(n_q / max(1, mean(n)), ε_pre, 1)`` (not self-normalised, as released)."""
    counts = np.asarray(counts, dtype=np.float64)
    reference = max(1.0, float(counts.mean())) if len(counts) else 1.0
    return np.clip(counts / reference, eps_pre, 1.0)


def neyman_counts(s_hat, mean_len, token_budget, *, n_min=1, n_max=32, eps_pre=0.05,
                  iterations=10, trim_ties="lowest_index") -> tuple[np.ndarray, np.ndarray]:
    """DUET's per-prompt counts and allocation propensities (docs/DESIGN.md §Solvers).

    ``s_hat``: predicted gradient-signal spreads ``ŝ_q >= 0``; ``mean_len``: predicted rollout
    lengths ``L̂_q > 0``; ``token_budget``: ``B``.  Returns ``(counts, propensities)``: counts in
    ``[n_min, n_max]`` with ``Σ counts · L̂ <= B`` unless every count is at ``n_min`` (then
    ``B`` is below the floor's cost); propensities from the pre-trim counts (step 6), so
    trimmed prompts keep theirs [code]; ``trim_ties`` as in :func:`trim_to_budget`.
    """
    s_hat = np.asarray(s_hat, dtype=np.float64)
    mean_len = np.asarray(mean_len, dtype=np.float64)
    _check_neyman_inputs(s_hat, mean_len, token_budget, n_min, n_max, eps_pre, iterations)
    before_trim = neyman_bisection(s_hat, mean_len, token_budget, n_min=n_min, n_max=n_max,
                                   iterations=iterations)
    counts = trim_to_budget(before_trim, mean_len, token_budget, n_min=n_min, ties=trim_ties)
    return counts, allocation_propensities(before_trim, eps_pre=eps_pre)


def _check_neyman_inputs(s_hat, mean_len, token_budget, n_min, n_max, eps_pre, iterations):
    if s_hat.shape != mean_len.shape or s_hat.ndim != 1:
        raise ValueError(f"neyman_counts: s_hat {s_hat.shape} and mean_len {mean_len.shape} "
                         f"must be 1-D of equal length")
    if not np.all(np.isfinite(s_hat)) or np.any(s_hat < 0):
        raise ValueError("neyman_counts: s_hat must be finite and >= 0")
    if not np.all(np.isfinite(mean_len)) or np.any(mean_len <= 0):
        raise ValueError("neyman_counts: mean_len must be finite and > 0")
    if not (0 <= n_min <= n_max):
        raise ValueError(f"neyman_counts: need 0 <= n_min <= n_max, got {n_min}, {n_max}")
    if not 0 < eps_pre <= 1:
        raise ValueError(f"neyman_counts: eps_pre must be in (0, 1], got {eps_pre}")
    if iterations < 1 or not math.isfinite(token_budget) or token_budget < 0:
        raise ValueError("neyman_counts: need iterations >= 1 and a finite budget >= 0")


# ----------------------------------------------------------------------------------------------
# Confidence thresholds
# ----------------------------------------------------------------------------------------------

def stop_thresholds(s_hat, mean_len, *, floor: float = 0.5, ceiling: float = 0.99,
                    ties: str = "ordinal") -> np.ndarray:
    """Step 7: ``τ_q = floor + (ceiling - floor) r_q``, ``r_q`` the rank of ``ŝ² / max(L̂, 1)``."""
    if ties not in RANK_TIES:
        raise ValueError(f"rank ties must be one of {RANK_TIES}, got {ties!r}")
    info_rate = np.asarray(s_hat, dtype=np.float64) ** 2 / np.maximum(mean_len, 1.0)
    if len(info_rate) == 0:
        return np.zeros(0)
    if len(info_rate) == 1:
        return np.array([(floor + ceiling) / 2.0])
    if ties == "ordinal":
        rank = np.empty(len(info_rate))
        rank[np.argsort(info_rate, kind="stable")] = np.arange(len(info_rate))
    else:
        rank = rankdata(info_rate, method="average") - 1.0
    return floor + (ceiling - floor) * rank / (len(info_rate) - 1)


# ----------------------------------------------------------------------------------------------
# Per-prompt spread state
# ----------------------------------------------------------------------------------------------

@dataclass
class Welford:
    """Running mean (and sum of squared deviations) of one prompt's observed spreads."""

    count: int = 0
    mean: float = 0.0
    m2: float = 0.0

    def add(self, value: float) -> None:
        self.count += 1
        delta = value - self.mean
        self.mean += delta / self.count
        self.m2 += delta * (value - self.mean)


def gradient_signal_spread(group) -> float | None:
    """``std_i(A_i w_i Σ_t log π_old)`` over a group's kept rows; ``None`` below 2 kept rows."""
    kept = [r for r in group if r.kept]
    if len(kept) < 2:
        return None
    signal = np.array([r.advantage * r.weight * r.logprob_sum for r in kept], dtype=np.float64)
    spread = float(np.std(signal))
    return spread if math.isfinite(spread) else None


# ----------------------------------------------------------------------------------------------
# The allocators
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DuetAllocationOptions(Options):
    n_ref: int | None = option(None, "reference group size of the token budget; null = G",
                               ge=1)
    n_min: int = option(1, "fewest rollouts of a drawn prompt", ge=0)
    n_max: int | None = option(None, "most rollouts of a prompt; null = 4 n_ref", ge=1)
    eps_pre: float = option(0.05, "floor of the pre-draw propensity", ge=0, le=1)
    iterations: int = option(10, "bisection steps on log lambda in [-20, 20]", ge=1)
    k_warmup: int = option(1, "visits before a prompt's observed spread is used", ge=1)
    sigma_min: float = option(1e-6, "floor of the predicted spread", ge=0)
    cold_start: str = option("ridge", "spread of unvisited prompts: ridge on the prompt "
                             "log-prob, or constant (cold_spread)", choices=COLD_STARTS)
    cold_spread: float = option(1.0, "spread of cold prompts until the ridge is fitted, "
                                "and always with cold_start=constant", gt=0)
    ridge_alpha: float = option(1.0, "ridge regularisation", ge=0)
    ridge_min_points: int = option(8, "warm prompts before the ridge is fitted", ge=2)
    stop_floor: float = option(0.5, "lowest stop threshold tau", ge=0, le=1)
    stop_ceiling: float = option(0.99, "highest stop threshold tau", ge=0, le=1)
    rank_ties: str = option("ordinal", "how tied ranks share thresholds", choices=RANK_TIES)
    trim_ties: str = option("lowest_index", "which prompt the budget trim takes from first: "
                            "lowest_index among the largest L-hat, as released; most_rollouts",
                            choices=TRIM_TIES)
    small_groups: str = option("verl", "groups with fewer than two kept rows: verl = one row "
                               "gets A = r (released); no_gradient = the harness rule",
                               choices=SMALL_GROUP_RULES)


@register("duet-alloc")
class DuetAllocation(Allocator):
    """DUET's Neyman counts, propensity weights and stop thresholds; no early stopping."""

    Options = DuetAllocationOptions

    def __init__(self, setting, **options) -> None:
        super().__init__(setting, **options)
        o = self.opts
        self.n_ref = int(o.n_ref if o.n_ref is not None else setting.group_size)
        self.n_max = int(o.n_max if o.n_max is not None else 4 * self.n_ref)
        check_count_bounds(self.name or "duet", setting.prompts_per_step,
                           round(setting.budget_fraction * setting.prompts_per_step * self.n_ref),
                           o.n_min, self.n_max)
        self.spreads: dict[int, Welford] = {}
        self.features: dict[int, float] = {}
        self.feature_median = 0.0
        self.ridge_coef: tuple[float, float] | None = None    # (α0, α1) once fitted

    # -- prompt features -------------------------------------------------------------------
    def attach_pool(self, pool) -> None:
        for prompt in pool:
            self._remember_feature(prompt)
        if self.features:
            self.feature_median = float(np.median(list(self.features.values())))

    def _remember_feature(self, prompt) -> None:
        value = prompt.features.get(FEATURE)
        if value is not None and math.isfinite(float(value)):
            self.features[prompt.pid] = float(value)

    def feature_of(self, pid: int) -> float:
        return self.features.get(pid, self.feature_median)

    # -- predictions -----------------------------------------------------------------------
    def predicted_spread(self, pid: int) -> float:
        """``ŝ_q``: observed mean spread once warm, else the cold start."""
        state = self.spreads.get(pid)
        if state is not None and state.count >= self.opts.k_warmup:
            return max(self.opts.sigma_min, state.mean)
        if self.opts.cold_start == "ridge" and self.ridge_coef is not None:
            intercept, slope = self.ridge_coef
            return max(self.opts.sigma_min, intercept + slope * self.feature_of(pid))
        return max(self.opts.sigma_min, self.opts.cold_spread)

    def predicted_length(self, pid: int, stats) -> float:
        seen = stats.mean_length(pid)
        if seen is not None:
            return float(seen)
        return float(stats.global_mean_length(default=self.setting.max_response_tokens))

    def token_budget(self, mean_len: np.ndarray) -> float:
        """``B = b · (M · n_ref · mean(L̂))``, rounded in the release's order."""
        return self.setting.budget_fraction * float(len(mean_len) * self.n_ref
                                                    * float(np.mean(mean_len)))

    # -- the loop --------------------------------------------------------------------------
    def plan(self, step, candidates, stats, budget):
        for prompt in candidates:
            if prompt.pid not in self.features:
                self._remember_feature(prompt)
        pids = [p.pid for p in candidates]
        if not pids:
            return []
        s_hat = np.array([self.predicted_spread(pid) for pid in pids])
        mean_len = np.array([self.predicted_length(pid, stats) for pid in pids])
        counts, propensity = neyman_counts(s_hat, mean_len, self.token_budget(mean_len),
                                           n_min=self.opts.n_min, n_max=self.n_max,
                                           eps_pre=self.opts.eps_pre,
                                           iterations=self.opts.iterations,
                                           trim_ties=self.opts.trim_ties)
        drawn = counts > 0
        tau = np.full(len(pids), np.nan)
        tau[drawn] = stop_thresholds(s_hat[drawn], mean_len[drawn], floor=self.opts.stop_floor,
                                     ceiling=self.opts.stop_ceiling, ties=self.opts.rank_ties)
        return [Request(pid, int(n), weight=float(1.0 / p),
                        control={"tau": float(t)} if n > 0 else None)
                for pid, n, p, t in zip(pids, counts, propensity, tau)]

    def observe(self, step, groups, stats):
        for group in groups:
            if not group:
                continue
            spread = gradient_signal_spread(group)
            if spread is not None:
                self.spreads.setdefault(group[0].pid, Welford()).add(spread)
        self._refit_cold_start()

    def _refit_cold_start(self) -> None:
        if self.opts.cold_start != "ridge":
            return
        warm = [(self.feature_of(pid), state.mean) for pid, state in self.spreads.items()
                if state.count >= self.opts.k_warmup]
        if len(warm) < self.opts.ridge_min_points:
            return
        feature, spread = np.array(warm).T
        model = Ridge(alpha=self.opts.ridge_alpha).fit(feature[:, None], spread)
        self.ridge_coef = (float(model.intercept_), float(model.coef_[0]))

    def resolved_options(self) -> dict:
        return {**super().resolved_options(), "n_ref": self.n_ref, "n_max": self.n_max,
                "length_control": self.default_length}

    def needs(self) -> Needs:
        return Needs(features={FEATURE: {}}, length_options=self.length_options())

    def length_options(self) -> dict:
        """Options for the method's own stop rule (none: ``max_len``)."""
        return {}

    def advantage_options(self) -> dict:
        return {"small_groups": self.opts.small_groups}


@register("duet")
class Duet(DuetAllocation):
    """DUET in full: Neyman counts plus the marker-gated abort and confidence stop."""

    default_length = "duet"

    def length_options(self) -> dict:
        return duet_stop_window(self.setting)


def duet_stop_window(setting) -> dict:
    """DUET's K-window holds one step of reference rollouts, M * n_ref (1,024 = 128 x 8, §Scaling)."""
    return {"window": setting.prompts_per_step * setting.group_size}


@dataclass(frozen=True)
class DuetAbortOptions(Options):
    tau: float = option(BAND_MIDPOINT, "the one stop threshold of every prompt", ge=0, le=1)
    small_groups: str = option("verl", "groups with fewer than two kept rows: verl = one row "
                               "gets A = r (released); no_gradient = the harness rule",
                               choices=SMALL_GROUP_RULES)


@register("duet-abort")
class DuetAbort(UniformGRPO):
    """Uniform GRPO counts with DUET's stop rule at one threshold for every prompt."""

    default_length = "duet"
    Options = DuetAbortOptions

    def plan(self, step, candidates, stats, budget):
        requests = super().plan(step, candidates, stats, budget)
        for request in requests:
            request.control = {"tau": self.opts.tau}
        return requests

    def needs(self) -> Needs:
        return Needs(length_options=duet_stop_window(self.setting))

    def resolved_options(self) -> dict:
        return {**super().resolved_options(), "per_prompt": self.per_prompt(),
                "length_control": self.default_length}
