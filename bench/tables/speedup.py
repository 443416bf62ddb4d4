"""Speed-up and paired-difference statistics of a sweep's cells (against GRPO at b = 1)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

from bench.stats import mde, prob_improvement, t_interval
from bench.tables.cells import HEADLINE, cell_runs, signed
from bench.tables.clock import seconds_column

REFERENCE = ("grpo", 1.0)          # the reference run of speed-ups, targets and ratios


def speedup(reference_seconds, run_seconds) -> tuple[float, float]:
    """(speed-up, 95% half-width) of a run: mean reference seconds per step / mean run seconds
    per step (a ratio of means, as the papers define it).  The half-width is the delta method's
    for a ratio of two independent means, ``r · sqrt((se_a/a)² + (se_b/b)²) · t``, with the
    t quantile at ``min(n_a, n_b) - 1`` degrees of freedom (conservative); nan below 2 each."""
    a = np.asarray(reference_seconds, dtype=float)
    b = np.asarray(run_seconds, dtype=float)
    if len(a) == 0 or len(b) == 0 or b.mean() <= 0:
        return float("nan"), float("nan")
    ratio = float(a.mean() / b.mean())
    if min(len(a), len(b)) < 2:
        return ratio, float("nan")
    relative = np.hypot(a.std(ddof=1) / np.sqrt(len(a)) / a.mean(),
                        b.std(ddof=1) / np.sqrt(len(b)) / b.mean())
    return ratio, float(ratio * relative * sps.t.ppf(0.975, min(len(a), len(b)) - 1))


def speedup_of(df: pd.DataFrame, method: str, budget: float) -> tuple[float, float]:
    """Speed-up of (method, budget) vs GRPO at b = 1; (1, nan) for the reference itself."""
    ref_runs, runs = cell_runs(df, *REFERENCE), cell_runs(df, method, budget)
    if ref_runs.empty or runs.empty:
        return float("nan"), float("nan")
    if (method, budget) == REFERENCE:
        return 1.0, float("nan")
    column = seconds_column(df, "train_seconds")
    steps = lambda d: d[column] / d["steps"].clip(lower=1)  # noqa: E731 (one clock for both)
    return speedup(steps(ref_runs), steps(runs))


SPEEDUP_NOTE = ("speed-up = GRPO (b = 1)'s mean training seconds per step / this run's (evaluation "
                "excluded); ± = delta-method 95% interval of that ratio of two independent means "
                "(t at min(n) − 1 df); the reference row is 1.00× by definition")


def paired_differences(df: pd.DataFrame, method: str, budget: float, ref_method: str,
                       ref_budget: float, column: str = "final_accuracy") -> np.ndarray:
    """``column`` of (method, budget) minus that of (ref_method, ref_budget), seed by seed, over
    the seeds both have."""
    a = cell_runs(df, method, budget).set_index("seed")[column]
    b = cell_runs(df, ref_method, ref_budget).set_index("seed")[column]
    seeds = sorted(set(a.index) & set(b.index))
    return np.array([a[s] - b[s] for s in seeds], dtype=float)


@dataclass
class DeltaStats:
    """A paired Δ: per-seed differences, mean, 95% t half-width, SD and the minimum detectable
    effect at 80% power (nan where fewer than 2 pairs). The per-step tables and the
    equal-compute headline (bench.equal_compute) both build it with :meth:`of`."""

    diffs: np.ndarray
    mean: float
    half: float
    sd: float
    mde: float

    @classmethod
    def of(cls, diffs) -> "DeltaStats":
        diffs = np.asarray(diffs, dtype=float)
        mean, half = t_interval(diffs)
        sd = float(np.std(diffs, ddof=1)) if len(diffs) > 1 else float("nan")
        return cls(diffs, mean, half, sd, mde(sd, len(diffs)))

    @property
    def pairs(self) -> int:
        return len(self.diffs)

    @property
    def p_improve(self) -> float:
        return prob_improvement(self.diffs)

    def text(self) -> str:
        return signed(self.mean, self.half, self.pairs, p_improve=self.p_improve
                      if self.pairs else None, detectable=self.mde)


def delta_stats(df: pd.DataFrame, method: str, budget: float, ref_budget: float) -> DeltaStats:
    """(method, budget) − (GRPO, ref_budget) on the curve average, paired by seed."""
    return DeltaStats.of(paired_differences(df, method, budget, "grpo", ref_budget,
                                            column=HEADLINE))
