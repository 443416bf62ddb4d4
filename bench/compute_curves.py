"""Compute curves (ScaleRL, arXiv 2510.13786, eq. 1): accuracy against cumulative compute,

    R(C) = R0 + (A - R0) / (1 + (C_mid / C) ** B),

with ``R0`` the accuracy at C = 0 (fixed to the mean step-0 evaluation of the cell's seeds, as
ScaleRL fixes it to the initial performance), ``A`` the asymptote, ``C_mid`` the compute at which
half of the gain ``A - R0`` is reached (the midpoint) and ``B`` the steepness (ScaleRL's
"compute efficiency").  ScaleRL compares asymptote and efficiency separately: a method can reach
the same ceiling faster, or a higher ceiling slowly.

Fit: least squares of the pooled (C, accuracy) points of every seed of a (method, budget) cell,
C > 0 (``scipy.optimize.curve_fit``, trust-region reflective, C scaled by T for conditioning),
bounds A in [0, 1], B in [0.05, 20], C_mid in [T / 1000, 100 T].  Intervals: percentile 95%
bootstrap over seeds (seeds resampled with replacement, each resample refitted; 500 resamples,
fixed generator so tables are deterministic), only from 3 seeds on.

Identification (departure-free, a reporting rule of this harness): a fit is **not identified**
when the optimiser fails, when its covariance is not finite, when a parameter ends on a bound,
or when ``C_mid`` lies beyond the largest compute observed — a curve that has not bent within
[0, T] determines no midpoint and therefore no asymptote, only a lower bound on it.  Such cells
say so instead of printing a number; a bootstrap interval is printed when at least 80% of the
resamples are identified (their share is shown).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import OptimizeWarning, curve_fit

BOUNDS_A = (0.0, 1.0)
BOUNDS_B = (0.05, 20.0)
MID_RANGE = (1e-3, 100.0)            # C_mid / T
RESAMPLES = 500
RESAMPLE_SEED = 0
MIN_SEEDS_FOR_INTERVAL = 3
MIN_IDENTIFIED_SHARE = 0.8


def saturating(c, r0: float, a: float, b: float, c_mid: float):
    """ScaleRL's curve at compute ``c`` (array), zero compute giving ``r0``."""
    c = np.asarray(c, dtype=float)
    with np.errstate(divide="ignore", over="ignore"):
        ratio = np.where(c > 0, (c_mid / np.maximum(c, 1e-300)) ** b, np.inf)
    return r0 + (a - r0) / (1.0 + ratio)


@dataclass(frozen=True)
class Fit:
    r0: float
    asymptote: float
    steepness: float
    midpoint: float           # in the compute unit of the data
    identified: bool
    reason: str = ""


def fit_curve(c, accuracy, r0: float, total: float) -> Fit:
    """The least-squares fit of :func:`saturating` to points (c > 0), with ``r0`` fixed."""
    c = np.asarray(c, dtype=float)
    y = np.asarray(accuracy, dtype=float)
    keep = (c > 0) & np.isfinite(y)
    c, y = c[keep] / total, y[keep]
    if len(c) < 3:
        return Fit(r0, np.nan, np.nan, np.nan, False, "fewer than 3 points")
    lower = [BOUNDS_A[0], BOUNDS_B[0], MID_RANGE[0]]
    upper = [BOUNDS_A[1], BOUNDS_B[1], MID_RANGE[1]]
    start = [float(np.clip(y.max() if y.max() > r0 else y.min(), 0.0, 1.0)), 1.0,
             float(np.clip(np.median(c), MID_RANGE[0], MID_RANGE[1]))]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OptimizeWarning)
            params, cov = curve_fit(lambda x, a, b, m: saturating(x, r0, a, b, m), c, y,
                                    p0=start, bounds=(lower, upper), method="trf",
                                    max_nfev=5000)
    except (RuntimeError, ValueError) as exc:
        return Fit(r0, np.nan, np.nan, np.nan, False, f"fit failed ({type(exc).__name__})")
    a, b, m = (float(v) for v in params)
    fit = Fit(r0, a, b, m * total, True)
    span = np.array(upper) - np.array(lower)
    on_bound = np.any((params - lower) < 1e-6 * span) or np.any((upper - params) < 1e-6 * span)
    if not np.all(np.isfinite(cov)):
        return Fit(r0, a, b, m * total, False, "parameters not determined")
    if on_bound:
        return Fit(r0, a, b, m * total, False, "a parameter at its bound")
    if m > c.max():
        return Fit(r0, a, b, m * total, False, "no bend within the data")
    return fit


@dataclass(frozen=True)
class CurveFit:
    fit: Fit
    seeds: int
    intervals: dict          # parameter -> (low, high), empty when not formed
    identified_share: float  # over bootstrap resamples (nan without them)


def fit_cell(curves: pd.DataFrame, x: str, total: float) -> CurveFit:
    """Fit one (method, budget) cell's curves (columns seed, ``x``, mean_at_k) and bootstrap
    the parameters over its seeds."""
    seeds = sorted(curves["seed"].unique()) if not curves.empty else []
    if not seeds:
        return CurveFit(Fit(np.nan, np.nan, np.nan, np.nan, False, "no runs"), 0, {},
                        float("nan"))
    per_seed = {s: curves[curves["seed"] == s] for s in seeds}

    def fit_of(chosen) -> Fit:
        frame = pd.concat([per_seed[s] for s in chosen])
        r0 = float(frame.loc[frame[x] <= 0, "mean_at_k"].mean())
        return fit_curve(frame[x], frame["mean_at_k"], r0, total)

    point = fit_of(seeds)
    intervals, share = {}, float("nan")
    if len(seeds) >= MIN_SEEDS_FOR_INTERVAL:
        rng = np.random.default_rng(RESAMPLE_SEED)
        fits = [fit_of(list(rng.choice(seeds, size=len(seeds), replace=True)))
                for _ in range(RESAMPLES)]
        good = [f for f in fits if f.identified]
        share = len(good) / len(fits)
        if good and share >= MIN_IDENTIFIED_SHARE:
            for name in ("asymptote", "midpoint", "steepness"):
                values = np.array([getattr(f, name) for f in good])
                intervals[name] = (float(np.percentile(values, 2.5)),
                                   float(np.percentile(values, 97.5)))
    return CurveFit(point, len(seeds), intervals, share)

