"""The statistics every comparison table uses (docs/DESIGN.md §Evaluation), as plain functions of numbers.

* Curve average (the headline accuracy): the area under a run's held-out accuracy curve over its
  evaluations after step 0, by the trapezoid rule on the step axis, divided by the span it covers
  (first to last of those evaluations).  With evenly spaced evaluations this is their mean with
  the first and last weighted one half; one evaluation alone is its own average.  Averaging the
  evaluations a run already makes cuts the seed-to-seed noise of a single final point (on the
  committed tiny sweep: paired SD 0.0154 -> 0.0083).  Step 0 is left out because every method
  shares it (same warm start), so it only dilutes differences.
* On a cumulative-token axis (cost comparisons) the curve starts at the step-0 point (0 tokens)
  and is averaged over ``[0, T]``, ``T`` common to every run compared (the smallest final
  cumulative token count), linear between evaluations: an equal-cost comparison.
* Paired differences: per seed, method minus reference; mean ± the two-sided 95% Student-t
  half-width ``t_{0.975, n-1} s / sqrt(n)``.
* Probability of improvement: over seed pairs, the share with a positive difference, ties
  counting one half (rliable's P(X > Y) restricted to pairs that share a seed, i.e. the same warm
  start, prompt order and evaluation samples).
* Interquartile mean (rliable): ``scipy.stats.trim_mean(x, 0.25)``, reported from 5 seeds on.
* Normalised score: ``mean(method - GRPO) / mean(oracle - GRPO)`` over seeds that have all three
  at one budget — the share of the oracle's headroom a method captures; its 95% interval is a
  paired percentile bootstrap over seeds (``scipy.stats.bootstrap``, 2,000 resamples, fixed
  seed, so the tables stay deterministic).  With 3 seeds a bootstrap has only 10 distinct
  resamples: read that interval as rough.
* Minimum detectable effect (80% power, two-sided alpha 0.05, paired t):
  ``MDE = (t_{0.975, n-1} + t_{0.8, n-1}) sd / sqrt(n)``, ``sd`` the paired SD: per cell from its
  own differences, and in a table's footer from the SD pooled over its comparisons that share the
  most common seed count.
"""
from __future__ import annotations

import numpy as np
from scipy import stats as sps

ALPHA = 0.05
POWER = 0.8
# the effect a sweep's contenders must be able to detect (issue 27: "enough seeds for MDE <=
# 0.02 on every contender"): allocation effects on our testbeds are a few hundredths
TARGET_MDE = 0.02
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0


def curve_average(steps, accuracy) -> float:
    """Trapezoid area under the accuracy curve after step 0, divided by its span."""
    x = np.asarray(steps, dtype=float)
    y = np.asarray(accuracy, dtype=float)
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    keep = x > 0
    x, y = x[keep], y[keep]
    if len(x) == 0:
        return float("nan")
    if len(x) == 1 or x[-1] == x[0]:
        return float(y.mean())
    return float(np.trapezoid(y, x) / (x[-1] - x[0]))


def curve_average_upto(x, accuracy, upto: float) -> float:
    """Average of the piecewise-linear curve (x, accuracy) over ``[x_0, upto]`` (x_0 its first
    point, e.g. 0 tokens at step 0); nan when ``upto`` is outside the curve's range."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(accuracy, dtype=float)
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    if len(x) == 0 or not x[0] < upto <= x[-1] + 1e-9:
        return float("nan")
    grid = np.concatenate([x[x < upto], [upto]])
    return float(np.trapezoid(np.interp(grid, x, y), grid) / (upto - x[0]))


def t_interval(values) -> tuple[float, float]:
    """(mean, half-width of the two-sided 95% t interval); half-width nan below 2 values."""
    v = np.asarray(list(values), dtype=float)
    v = v[~np.isnan(v)]
    if len(v) == 0:
        return float("nan"), float("nan")
    if len(v) < 2:
        return float(v.mean()), float("nan")
    half = sps.t.ppf(1 - ALPHA / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
    return float(v.mean()), float(half)


def seeds_for_power(mean: float, sd: float, power: float = 0.8, most: int = 1000) -> int | None:
    """The fewest paired seeds n (>= 2) at which the two-sided 95% t interval of a paired
    difference with true mean ``mean`` and SD ``sd`` lies wholly above 0 with probability
    ``power``; None when ``mean <= 0`` or more than ``most`` seeds would be needed.

    The interval's lower end exceeds 0 when the t statistic mean_n / (s_n / sqrt n) exceeds
    t_{0.975, n-1}; that statistic follows a noncentral t with n - 1 degrees of freedom and
    noncentrality mean sqrt(n) / sd, so the power is exact (no normal approximation, which
    undercounts at the few seeds a gate uses).  Fed with an observed mean and SD it answers
    "how many seeds would make this gate pass robustly if the effect is what we saw"."""
    if not (np.isfinite(mean) and np.isfinite(sd)) or mean <= 0:
        return None
    for n in range(2, most + 1):
        if interval_power(mean, sd, n) >= power:
            return n
    return None


def interval_power(mean: float, sd: float, n: int) -> float:
    """Probability that the two-sided 95% t interval over ``n`` paired differences (true mean
    ``mean``, SD ``sd``) lies wholly above 0 (see :func:`seeds_for_power`)."""
    if n < 2 or not (np.isfinite(mean) and np.isfinite(sd)):
        return float("nan")
    if sd <= 0:
        return float(mean > 0)
    critical = sps.t.ppf(1 - ALPHA / 2, n - 1)
    return float(sps.nct.sf(critical, n - 1, mean * np.sqrt(n) / sd))


def prob_improvement(differences) -> float:
    """Share of seed pairs with a positive difference (ties count 1/2); nan without pairs."""
    d = np.asarray(differences, dtype=float)
    if len(d) == 0:
        return float("nan")
    return float((np.sum(d > 0) + 0.5 * np.sum(d == 0)) / len(d))


def interquartile_mean(values, min_seeds: int = 5) -> float:
    """rliable's IQM (25% trimmed mean); nan below ``min_seeds`` values."""
    v = np.asarray(values, dtype=float)
    return float(sps.trim_mean(v, 0.25)) if len(v) >= min_seeds else float("nan")


def mde(sd: float, n: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """Smallest true paired difference a paired t test of ``n`` pairs detects with ``power``."""
    if n < 2 or sd is None or np.isnan(sd):
        return float("nan")
    quantiles = sps.t.ppf(1 - alpha / 2, n - 1) + sps.t.ppf(power, n - 1)
    return float(quantiles * sd / np.sqrt(n))


def seeds_for_mde(sd: float, target: float = TARGET_MDE, most: int = 1000) -> int | None:
    """The fewest paired seeds n (>= 2) whose :func:`mde` at paired SD ``sd`` is at most
    ``target``; None when ``sd`` is not finite or more than ``most`` would be needed.  A
    sweep's report reads it off its worst contender's measured SD, so "enough seeds for
    MDE <= 0.02" is a number the sweep states, not a guess."""
    if sd is None or not np.isfinite(sd) or not np.isfinite(target) or target <= 0:
        return None
    for n in range(2, most + 1):
        if mde(sd, n) <= target:
            return n
    return None


def pooled_sd(groups) -> tuple[float, int, int]:
    """(pooled SD, n, k): the SD pooled over the ``k`` samples that have the most common size
    ``n`` (ties: the larger ``n``), each variance weighted by its degrees of freedom.  Samples of
    another size are left out so that a comparison with fewer seeds (noisier, and with a wider
    t quantile) cannot inflate or shrink the footer's MDE for the table's main seed count; each
    cell carries its own MDE.  (nan, 0, 0) when no sample has 2 values."""
    usable = [np.asarray(g, dtype=float) for g in groups if len(g) >= 2]
    if not usable:
        return float("nan"), 0, 0
    sizes = [len(g) for g in usable]
    n = max(set(sizes), key=lambda size: (sizes.count(size), size))
    same = [g for g in usable if len(g) == n]
    variance = sum(g.var(ddof=1) for g in same) / len(same)    # equal dof: a plain mean
    return float(np.sqrt(variance)), n, len(same)


def mde_note(groups, what: str = "paired differences") -> str:
    """The footer line every comparison table carries."""
    sd, n, k = pooled_sd(groups)
    if n < 2:
        return "Minimum detectable effect: needs at least 2 seeds per comparison."
    others = sum(1 for g in groups if len(g) >= 2) - k
    left_out = (f"; {others} comparison(s) with another seed count left out, each cell gives "
                f"its own") if others else ""
    return (f"Minimum detectable effect at 80% power (two-sided α = 0.05, paired t, n = {n} "
            f"seeds, SD of the {what} pooled over the {k} comparison(s) with {n} seeds "
            f"{sd:.4f}{left_out}): {mde(sd, n):.3f}. A true difference smaller than this is "
            f"likely to read as \"no difference\" here.")


def headroom_detected(oracle_minus_ref) -> bool:
    """Whether the oracle is above the reference: mean above 0 and, from 2 paired seeds, the
    paired 95% t interval wholly above 0 (one seed: the mean alone)."""
    b = np.asarray(oracle_minus_ref, dtype=float)
    if len(b) == 0 or not b.mean() > 0:
        return False
    mean, half = t_interval(b)
    return len(b) < 2 or mean - half > 0


def normalised_score(method_minus_ref, oracle_minus_ref) -> tuple[float, float, float]:
    """(score, 95% low, 95% high): mean(method - ref) / mean(oracle - ref) over paired seeds, with
    a paired percentile bootstrap interval; all nan where it cannot be formed, and where the
    oracle's headroom is not detected -- its mean not above 0, or (from 2 seeds) its paired 95% t
    interval not wholly above 0: a share of a headroom that is not there has no meaning
    (dividing by a negative one turned a method 0.09 below GRPO into "+12.6 oracles", and by
    `leg-facts`' plain-oracle headroom at b = 0.5 over 3 seeds, +0.003, DAPO's -0.057 into
    "-20 oracles" with an interval from -67 to +31)."""
    a = np.asarray(method_minus_ref, dtype=float)
    b = np.asarray(oracle_minus_ref, dtype=float)
    if len(a) == 0 or len(a) != len(b) or not headroom_detected(b):
        return float("nan"), float("nan"), float("nan")
    point = float(a.mean() / b.mean())
    if len(a) < 2:
        return point, float("nan"), float("nan")

    def ratio(x, y, axis=-1):
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.mean(x, axis=axis) / np.mean(y, axis=axis)

    result = sps.bootstrap((a, b), ratio, paired=True, vectorized=True, method="percentile",
                           n_resamples=BOOTSTRAP_RESAMPLES, confidence_level=1 - ALPHA,
                           rng=np.random.default_rng(BOOTSTRAP_SEED))
    low, high = result.confidence_interval
    return point, float(low), float(high)
