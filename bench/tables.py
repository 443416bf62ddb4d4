"""Tables built from a sweep directory: every number comes from the runs' own files.

A sweep directory holds one sub-directory per (method, budget, seed) run; only finished runs
(those with ``summary.json``) enter a table, so a half-done run never skews a mean.

Intervals: with several seeds, a cell shows ``mean ± half-width`` of a two-sided 95% Student-t
interval over seeds (``t_{0.975, n-1} · s / sqrt(n)``, ``s`` the sample standard deviation); with
one seed, the value alone.

Paired comparisons (the Δ tables) difference two runs that share a seed — same warm start, same
prompt order, same evaluation samples (common random numbers) — and give the t-interval of those
per-seed differences, which is much tighter than comparing two independent means.

Headline accuracy, probability of improvement, IQM, normalised score and minimum detectable
effect: :mod:`bench.stats`.  Controls (``oracle``, ``anti-oracle``) sort last and are labelled
``(control)``: reference rows, never contenders.

Cost-to-target (default target: GRPO at b = 1's mean over its last three evaluations, mean over
seeds): a run "first reaches" the target at its first evaluation (in step order, the
step-0 evaluation of the initial policy included) whose held-out ``mean_at_k`` is ≥ the target
(with a 1e-9 tolerance for float round-off); the cost is that evaluation's cumulative tokens,
rollouts and training seconds, read as recorded — no interpolation between evaluations, so the
cost is an upper bound at the evaluation period's resolution.  Per (method, budget) the cell is
the mean ± t-interval over the seeds that reached the target, followed by ``(k/n)`` when only k
of n seeds reached it (such a cell is optimistic: the seeds that never reached it are left out);
``never`` when no seed reached it.  Ratios ``vs GRPO`` = GRPO (b = 1)'s mean cost / the run's
mean cost (> 1: the run gets there cheaper), from the same means.

Every function here is deterministic given the files, so ``python -m bench.report`` rebuilds
byte-identical ``tables.md`` and CSVs.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

import allocators
from scipy import stats as sps

from bench.stats import (curve_average, curve_average_upto, interquartile_mean, mde, mde_note,
                         normalised_score, prob_improvement, t_interval)
from trainer.ledger import SHARED_RATIO
from trainer.rundir import RunFileError, atomic_write_text, read_json, read_jsonl

PHASE_COLUMNS = ("generate", "reward", "logprob", "advantage", "update", "allocate", "other")
MISSING = "—"
NEVER = "never"
REFERENCE = ("grpo", 1.0)          # the reference run of speed-ups, targets and ratios
TOLERANCE = 1e-9
INTERVAL_NOTE = ("mean ± half-width of the two-sided 95% Student-t interval over seeds "
                 "(t₀.₉₇₅,ₙ₋₁ · s / √n); one seed: the value alone")


class SweepError(ValueError):
    """A sweep directory that cannot be read (one line, for ``error: ...``)."""


# ------------------------------------------------------------------------------ loading
def finished_runs(sweep_dir: Path) -> list[Path]:
    """Run directories holding a ``summary.json``, in name order (deterministic)."""
    return sorted(p.parent for p in Path(sweep_dir).glob("*/summary.json"))


def _read(path: Path, reader):
    try:
        return reader(path)
    except FileNotFoundError:
        raise SweepError(f"malformed run directory {path.parent}: {path.name} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SweepError(f"malformed run directory {path.parent}: {path.name} is not valid "
                         f"JSON ({exc})") from None
    except RunFileError as exc:
        raise SweepError(f"malformed run directory {path.parent}: {exc}") from None


def run_identity(run_dir: Path) -> dict:
    """method, budget, seed and preset of a run, from its config.json."""
    config = _read(run_dir / "config.json", read_json)
    try:
        run = config["run"]
        return {"method": run["method"], "budget": float(run["budget"]), "seed": int(run["seed"]),
                "preset": run["preset"]["name"], "group_size": run["preset"]["group_size"]}
    except (KeyError, TypeError) as exc:
        raise SweepError(f"malformed run directory {run_dir}: config.json lacks {exc}") from None


def load_summaries(sweep_dir: Path) -> pd.DataFrame:
    """One row per finished run; nested ``timing`` becomes ``sec_<phase>`` columns."""
    rows = []
    for run_dir in finished_runs(sweep_dir):
        s = _read(run_dir / "summary.json", read_json)
        if not isinstance(s, dict) or "final_accuracy" not in s or "timing" not in s:
            raise SweepError(f"malformed run directory {run_dir}: summary.json lacks "
                             f"final_accuracy/timing")
        flat = {k: v for k, v in s.items() if not isinstance(v, dict)}
        flat.update({f"sec_{k}": v for k, v in s["timing"].items()})
        flat.update({f"bucket_{k}": v for k, v in s.get("final_buckets", {}).items()})
        flat.update(run_identity(run_dir))
        flat.update(curve_columns(_read(run_dir / "eval.jsonl", read_jsonl)))
        flat["run"] = run_dir.name
        rows.append(flat)
    return pd.DataFrame(rows)


def curve_columns(evals: list[dict]) -> dict:
    """The run's curve average (headline accuracy, :func:`bench.stats.curve_average`) and the
    mean of its last three evaluations (the cost-to-target default target)."""
    ordered = sorted(evals, key=lambda e: e["step"])
    steps = [e["step"] for e in ordered]
    accuracy = [e["mean_at_k"] for e in ordered]
    return {"curve_accuracy": curve_average(steps, accuracy),
            "last3_accuracy": float(np.mean(accuracy[-3:])) if accuracy else float("nan")}


def load_curves(sweep_dir: Path) -> pd.DataFrame:
    """Every evaluation of every finished run, with the run's method, budget and seed."""
    frames = []
    for run_dir in finished_runs(sweep_dir):
        evals = _read(run_dir / "eval.jsonl", read_jsonl)
        if not evals:
            raise SweepError(f"malformed run directory {run_dir}: eval.jsonl is empty")
        ident = run_identity(run_dir)
        df = pd.DataFrame([{k: v for k, v in e.items() if not isinstance(v, dict)} for e in evals])
        for key in ("method", "budget", "seed"):
            df[key] = ident[key]
        frames.append(df.sort_values("step", kind="stable"))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


STEP_FIELDS = ("step", "effective_ratio", "zero_variance_groups", "groups_trained", "rounds",
               "rollouts", "tokens")


def load_steps(sweep_dir: Path) -> pd.DataFrame:
    """One row per training step of every finished run (metrics.jsonl), ``counts`` kept as a list
    (the first-round per-prompt rollout counts)."""
    rows = []
    for run_dir in finished_runs(sweep_dir):
        ident = run_identity(run_dir)
        for record in _read(run_dir / "metrics.jsonl", read_jsonl):
            row = {k: record.get(k) for k in STEP_FIELDS}
            row["counts"] = list(record.get("counts", []))
            row.update(method=ident["method"], budget=ident["budget"], seed=ident["seed"])
            rows.append(row)
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------ numbers
def fmt(mean: float, half: float, digits: int = 3, scale: float = 1.0, thousands=False) -> str:
    """``mean ± half`` (or ``mean`` alone when half is nan; ``—`` when mean is nan)."""
    if mean is None or np.isnan(mean):
        return MISSING
    spec = f",.{digits}f" if thousands else f".{digits}f"
    if half is None or np.isnan(half):
        return f"{mean * scale:{spec}}"
    return f"{mean * scale:{spec}} ± {half * scale:{spec}}"


def signed(mean: float, half: float, n: int, digits: int = 3, p_improve: float | None = None,
           detectable: float | None = None) -> str:
    """A paired difference: ``+0.012 ± 0.010 (n=3)``, with ``, P=0.67`` when the probability of
    improvement is given and ``, MDE 0.021`` when the minimum detectable effect is; ``—`` when
    there is no pair."""
    if n == 0 or np.isnan(mean):
        return MISSING
    spread = f" ± {half:.{digits}f}" if not np.isnan(half) else ""
    p_text = f", P={p_improve:.2f}" if p_improve is not None else ""
    mde_text = (f", MDE {detectable:.{digits}f}" if detectable is not None
                and not np.isnan(detectable) else "")
    return f"{mean:+.{digits}f}{spread} (n={n}{p_text}{mde_text})"


def is_control(method: str) -> bool:
    """A registered control (oracle, anti-oracle); unknown names are not."""
    try:
        return bool(allocators.get(method).control)
    except KeyError:
        return False


def method_order(methods) -> list[str]:
    """GRPO first (the reference), then the contenders alphabetically, then the controls."""
    return sorted(set(methods), key=lambda m: (m != "grpo", is_control(m), m))


def budgets_of(df: pd.DataFrame) -> list[float]:
    return sorted(df["budget"].unique(), reverse=True)


def cell_runs(df: pd.DataFrame, method: str, budget: float) -> pd.DataFrame:
    return df[(df["method"] == method) & np.isclose(df["budget"], budget)]


def blabel(budget: float) -> str:
    return f"b={budget:g}"


def cpu_clocked(df: pd.DataFrame) -> bool:
    """Whether every run recorded CPU seconds and is timed by them (CPU presets; GPU: wall)."""
    return ("sec_clock" in df and "sec_cpu_train_seconds" in df and len(df) > 0
            and bool((df["sec_clock"] == "cpu").all()) and df["sec_cpu_train_seconds"].notna().all())


def seconds_column(df: pd.DataFrame, name: str) -> str:
    """The summary column of ``name`` (``train_seconds`` or a phase) under the runs' clock."""
    return f"sec_cpu_{name}" if cpu_clocked(df) and f"sec_cpu_{name}" in df else f"sec_{name}"


def clock_note(df: pd.DataFrame) -> str:
    shared = int(df["sec_shared_machine"].fillna(False).astype(bool).sum()) \
        if "sec_shared_machine" in df else 0
    what = ("process CPU seconds (verifier workers included), which a shared machine does not "
            "inflate" if cpu_clocked(df) else "wall-clock seconds")
    flag = (f"; {shared} run(s) shared the machine (wall > {SHARED_RATIO:g} x CPU per thread)"
            if shared else "")
    return f"Seconds are {what}{flag}"


def per_step_seconds(df: pd.DataFrame) -> pd.Series:
    """Training seconds per step of each run (speed-ups compare per step, so that runs of
    different lengths stay comparable; equal to total seconds when steps are equal)."""
    return df[seconds_column(df, "train_seconds")] / df["steps"].clip(lower=1)


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


# ------------------------------------------------------------------------------ tables
@dataclass
class Table:
    """One table: ``display`` (strings, plain columns) for markdown, ``data`` (numbers, long form)
    for its CSV ``table_<key>.csv``."""

    key: str
    title: str
    display: pd.DataFrame
    data: pd.DataFrame | None = None
    note: str = ""
    extra: list[str] = field(default_factory=list)    # free markdown lines after the note

    def markdown(self) -> str:
        # disable_numparse: cells are printed exactly as formatted here ("56.0" stays "56.0")
        body = (self.display.to_markdown(index=False, disable_numparse=True)
                if not self.display.empty else "(no rows)")
        text = f"### {self.title}\n\n{body}\n"
        if self.note:
            text += f"\n{self.note}\n"
        if self.extra:
            text += "\n" + "\n".join(self.extra) + "\n"
        return text


def _stat_columns(prefix: str, values) -> dict:
    mean, half = t_interval(values)
    return {f"{prefix}_mean": mean, f"{prefix}_ci95": half}


HEADLINE = "curve_accuracy"
CURVE_NOTE = ("curve average = area under the held-out mean@k curve over the evaluations after "
              "step 0 (trapezoid on the step axis), divided by its span")


def row_label(method: str) -> str:
    """Row label: controls are marked as reference rows, never read as contenders."""
    return f"{method} (control)" if is_control(method) else method


def _budget_cells(df: pd.DataFrame, column: str, what: str, key: str, title: str) -> Table:
    display, data = [], []
    for method in method_order(df["method"]):
        row = {"method": row_label(method)}
        for b in budgets_of(df):
            cell = cell_runs(df, method, b)[column].dropna()
            iqm = interquartile_mean(cell)
            row[blabel(b)] = fmt(*t_interval(cell)) + ("" if np.isnan(iqm)
                                                      else f" (IQM {iqm:.3f})")
            if len(cell):
                data.append({"method": method, "budget": b, "seeds": len(cell),
                             "control": is_control(method), **_stat_columns(column, cell),
                             f"{column}_iqm": iqm})
        display.append(row)
    return Table(key, title, pd.DataFrame(display), pd.DataFrame(data),
                 f"Cells: {what}; {INTERVAL_NOTE}; IQM = interquartile mean (25% trimmed, "
                 f"rliable), shown from 5 seeds. Columns: budget fraction b. Rows marked "
                 f"(control) are the oracle / anti-oracle references, not contenders.")


def budget_table(df: pd.DataFrame) -> Table:
    """Rows = methods, columns = budget fractions, cell = curve-average accuracy (± 95% t)."""
    return _budget_cells(df, HEADLINE, CURVE_NOTE, "budget",
                         "Budget table: curve-average held-out accuracy")


def final_budget_table(df: pd.DataFrame) -> Table:
    """The same layout on the final evaluation alone."""
    return _budget_cells(df, "final_accuracy", "held-out mean@k at the last evaluation",
                         "budget_final", "Budget table: final held-out accuracy")


@dataclass
class DeltaStats:
    """A paired Δ on the headline metric: per-seed differences, mean, 95% t half-width, SD and
    the minimum detectable effect at 80% power (nan where fewer than 2 pairs)."""

    diffs: np.ndarray
    mean: float
    half: float
    sd: float
    mde: float

    @property
    def pairs(self) -> int:
        return len(self.diffs)


def delta_stats(df: pd.DataFrame, method: str, budget: float, ref_budget: float) -> DeltaStats:
    """(method, budget) − (GRPO, ref_budget) on the curve average, paired by seed."""
    diffs = paired_differences(df, method, budget, "grpo", ref_budget, column=HEADLINE)
    mean, half = t_interval(diffs)
    sd = float(np.std(diffs, ddof=1)) if len(diffs) > 1 else float("nan")
    return DeltaStats(diffs, mean, half, sd, mde(sd, len(diffs)))


def delta_table(df: pd.DataFrame, against_full: bool) -> Table | None:
    """Paired Δ curve-average accuracy vs GRPO at the same seed: at the same budget, or at b = 1;
    probability of improvement per cell, the minimum detectable effect in the footer."""
    if "grpo" not in set(df["method"]):
        return None
    display, data, samples = [], [], []
    for method in method_order(df["method"]):
        if method == "grpo" and not against_full:
            continue
        row = {"method": row_label(method)}
        for b in budgets_of(df):
            ref_b = 1.0 if against_full else b
            if method == "grpo" and np.isclose(b, ref_b):
                row[blabel(b)] = MISSING
                continue
            s = delta_stats(df, method, b, ref_b)
            p_improve = prob_improvement(s.diffs)
            row[blabel(b)] = signed(s.mean, s.half, s.pairs, p_improve=p_improve,
                                    detectable=s.mde)
            if s.pairs:
                samples.append(s.diffs)
                final = paired_differences(df, method, b, "grpo", ref_b)
                f_mean, f_half = t_interval(final)
                data.append({"method": method, "budget": b, "reference_budget": ref_b,
                             "control": is_control(method), "pairs": s.pairs,
                             "delta_mean": s.mean, "delta_ci95": s.half,
                             "delta_sd": s.sd, "mde": s.mde,
                             "prob_improvement": p_improve,
                             "delta_final_mean": f_mean, "delta_final_ci95": f_half})
        display.append(row)
    if against_full:
        key, title = "delta_full", "Δ vs full-budget GRPO (paired by seed, curve average)"
        what = "this run's curve average − GRPO at b = 1's, same seed"
    else:
        key, title = "delta", "Δ vs GRPO (paired by seed, same budget, curve average)"
        what = "this run's curve average − GRPO's at the same budget and seed"
    return Table(key, title, pd.DataFrame(display), pd.DataFrame(data),
                 f"Cell: mean of per-seed differences ({what}) ± 95% Student-t interval of those "
                 f"differences; n = seeds paired; P = probability of improvement (share of seed "
                 f"pairs where this run is higher, ties ½); MDE = the smallest true difference this "
                 f"cell's seeds detect with 80% power (paired t, from its own SD). Positive = "
                 f"better than GRPO. The "
                 f"final-accuracy differences are in the CSV (delta_final_*).",
                 [mde_note(samples)])


def normalised_table(df: pd.DataFrame) -> Table | None:
    """Share of the oracle's headroom each method captures, at every budget where the oracle ran:
    (method − GRPO) / (oracle − GRPO), curve average, paired by seed, bootstrap interval."""
    if "oracle" not in set(df["method"]) or "grpo" not in set(df["method"]):
        return None
    budgets = [b for b in budgets_of(df) if not cell_runs(df, "oracle", b).empty
               and not cell_runs(df, "grpo", b).empty]
    display, data = [], []
    for method in method_order(df["method"]):
        if method in ("grpo", "oracle"):
            continue
        row = {"method": row_label(method)}
        for b in budgets:
            a = cell_runs(df, method, b).set_index("seed")[HEADLINE]
            o = cell_runs(df, "oracle", b).set_index("seed")[HEADLINE]
            g = cell_runs(df, "grpo", b).set_index("seed")[HEADLINE]
            seeds = sorted(set(a.index) & set(o.index) & set(g.index))
            if not seeds:
                row[blabel(b)] = MISSING
                continue
            score, low, high = normalised_score([a[s] - g[s] for s in seeds],
                                                [o[s] - g[s] for s in seeds])
            interval = f" [{low:+.2f}, {high:+.2f}]" if not np.isnan(low) else ""
            row[blabel(b)] = (f"{score:+.2f}{interval} (n={len(seeds)})" if not np.isnan(score)
                              else f"{MISSING} (oracle = GRPO)")
            data.append({"method": method, "budget": b, "pairs": len(seeds),
                         "normalised": score, "ci95_low": low, "ci95_high": high})
        display.append(row)
    return Table("normalised", "Normalised score: share of the oracle's headroom captured",
                 pd.DataFrame(display), pd.DataFrame(data),
                 "Cell: mean(method − GRPO) / mean(oracle − GRPO) on the curve average, over the "
                 "seeds with all three runs at that budget; 0 = GRPO, 1 = the oracle, < 0 = worse "
                 "than GRPO; [..] = 95% paired percentile bootstrap over seeds "
                 "(scipy.stats.bootstrap, rough with 3 seeds). Only budgets where the oracle ran.")


def speed_table(df: pd.DataFrame) -> Table:
    """Rows = method x budget: tokens, rollouts, seconds by phase, speed-up vs GRPO at b = 1."""
    display, data = [], []
    # a phase no run spent time in is not a measured column of this sweep
    phases = [p for p in PHASE_COLUMNS if seconds_column(df, p) in df
              and df[seconds_column(df, p)].fillna(0).abs().sum() > 0]
    for method in method_order(df["method"]):
        for b in budgets_of(df[df["method"] == method]):
            cell = cell_runs(df, method, b)
            row = {"method": row_label(method), "budget": f"{b:g}", "seeds": len(cell),
                   "tokens": fmt(*t_interval(cell["tokens"]), digits=0, thousands=True),
                   "rollouts": fmt(*t_interval(cell["rollouts"]), digits=0, thousands=True)}
            numbers = {"method": method, "budget": b, "seeds": len(cell),
                       **_stat_columns("tokens", cell["tokens"]),
                       **_stat_columns("rollouts", cell["rollouts"])}
            for phase in phases:
                values = cell[seconds_column(df, phase)]
                row[f"{phase} s"] = fmt(*t_interval(values), digits=1)
                numbers.update(_stat_columns(f"{phase}_seconds", values))
            train = cell[seconds_column(df, "train_seconds")]
            row["train s"] = fmt(*t_interval(train), digits=1)
            numbers.update(_stat_columns("train_seconds", train))
            mean, half = speedup_of(df, method, b)
            row["speed-up"] = MISSING if np.isnan(mean) else fmt(mean, half, digits=2) + "×"
            numbers.update(speedup_mean=mean, speedup_ci95=half)
            display.append(row)
            data.append(numbers)
    return Table("speed", "Speed table: cumulative cost of each run", pd.DataFrame(display),
                 pd.DataFrame(data),
                 f"Cells: {INTERVAL_NOTE}. {clock_note(df)}; phases no run spent time in are "
                 f"left out; train s = every phase but evaluation; {SPEEDUP_NOTE}.")


# ------------------------------------------------------------------------------ cost-to-target
COST_COLUMNS = (("cum_tokens", "tokens"), ("cum_rollouts", "rollouts"),
                ("cum_train_seconds", "seconds"))


def default_target(summaries: pd.DataFrame) -> float:
    """GRPO at b = 1's mean over its last three evaluations, mean over its seeds (one noisy final
    point is a target only some seeds of GRPO itself reach); nan when that run is absent."""
    ref = cell_runs(summaries, *REFERENCE)["last3_accuracy"] if not summaries.empty else []
    return float(np.mean(ref)) if len(ref) else float("nan")


def token_grid_averages(curves: pd.DataFrame) -> tuple[dict, float]:
    """Each run's accuracy averaged over the common cumulative-token range ``[0, T]``, ``T`` the
    smallest final cumulative token count of the runs (:func:`bench.stats.curve_average_upto`):
    ``({(method, budget, seed): value}, T)``."""
    if curves.empty:
        return {}, float("nan")
    keys = ["method", "budget", "seed"]
    upto = float(curves.groupby(keys)["cum_tokens"].max().min())
    if not upto > 0:
        return {}, float("nan")
    return {key: curve_average_upto(run["cum_tokens"], run["mean_at_k"], upto)
            for key, run in curves.groupby(keys)}, upto


def first_reach(curve: pd.DataFrame, target: float) -> dict | None:
    """The costs at the first evaluation (step order) with mean_at_k ≥ target; None if never."""
    curve = curve.sort_values("step", kind="stable")
    hits = curve[curve["mean_at_k"] >= target - TOLERANCE]
    if hits.empty:
        return None
    first = hits.iloc[0]
    return {"step": int(first["step"]), **{name: float(first[col]) for col, name in COST_COLUMNS}}


def reach_costs(curves: pd.DataFrame, method: str, budget: float, target: float) -> tuple[list, int]:
    """(first-reach costs of the seeds that reached the target, number of seeds)."""
    cell = cell_runs(curves, method, budget)
    reached, seeds = [], sorted(cell["seed"].unique())
    for seed in seeds:
        hit = first_reach(cell[cell["seed"] == seed], target)
        if hit is not None:
            reached.append(hit)
    return reached, len(seeds)


def cost_cell(reached: list, n: int, name: str, digits: int = 0) -> tuple[str, float, float]:
    """Display string, mean and half-width of one cost over the seeds that reached the target."""
    if not reached:
        return NEVER, float("nan"), float("nan")
    mean, half = t_interval([h[name] for h in reached])
    text = fmt(mean, half, digits=digits, thousands=True)
    return (text if len(reached) == n else f"{text} ({len(reached)}/{n})"), mean, half


def ratio_text(reference: float, value: float) -> str:
    if np.isnan(reference) or np.isnan(value) or value <= 0:
        return MISSING
    return f"{reference / value:.2f}×"


def cost_table(summaries: pd.DataFrame, curves: pd.DataFrame, target: float | None) -> Table:
    """Rows = method x budget: cumulative tokens / rollouts / train seconds to first reach the
    target, with ratios vs GRPO at b = 1."""
    explicit = target is not None
    target = default_target(summaries) if target is None else float(target)
    source = "given by --target" if explicit else \
        "GRPO (b = 1)'s mean over its last three evaluations, mean over seeds"
    title = f"Cost-to-target table: target accuracy {target:.3f} ({source})" \
        if not np.isnan(target) else "Cost-to-target table"
    if np.isnan(target):
        return Table("cost", title, pd.DataFrame(), None,
                     "No target: GRPO at b = 1 is not in this sweep; pass --target.")
    if cpu_clocked(summaries) and "cum_train_cpu_seconds" in curves \
            and curves["cum_train_cpu_seconds"].notna().all():
        curves = curves.assign(cum_train_seconds=curves["cum_train_cpu_seconds"])
    grid, upto = token_grid_averages(curves)
    ref_reached, _ = reach_costs(curves, *REFERENCE, target)
    ref_means = {name: (t_interval([h[name] for h in ref_reached])[0] if ref_reached
                        else float("nan")) for _, name in COST_COLUMNS}
    display, data = [], []
    for method in method_order(summaries["method"]):
        for b in budgets_of(summaries[summaries["method"] == method]):
            reached, n = reach_costs(curves, method, b, target)
            row = {"method": row_label(method), "budget": f"{b:g}", "reached": f"{len(reached)}/{n}"}
            numbers = {"method": method, "budget": b, "target": target, "seeds": n,
                       "reached": len(reached)}
            for _, name in COST_COLUMNS:
                digits = 1 if name == "seconds" else 0
                row[f"{name} to target"], mean, half = cost_cell(reached, n, name, digits)
                numbers.update({f"{name}_mean": mean, f"{name}_ci95": half})
            for _, name in COST_COLUMNS:
                mean = numbers[f"{name}_mean"]
                row[f"{name} vs GRPO"] = ratio_text(ref_means[name], mean)
                numbers[f"{name}_vs_grpo"] = (ref_means[name] / mean
                                              if mean and not np.isnan(mean) else float("nan"))
            on_grid = [v for (m, bb, _), v in grid.items() if m == method and np.isclose(bb, b)]
            row["acc on token grid"] = fmt(*t_interval(on_grid))
            numbers.update(_stat_columns("token_grid_accuracy", on_grid), token_grid_upto=upto)
            display.append(row)
            data.append(numbers)
    return Table("cost", title, pd.DataFrame(display), pd.DataFrame(data),
                 "First reach = first evaluation (step 0 included) with held-out mean@k ≥ target; "
                 "the cost is that evaluation's cumulative tokens / rollouts / training seconds, "
                 "not interpolated between evaluations. Cells: mean ± 95% t-interval over the "
                 "seeds that reached the target; (k/n) = only k of n seeds reached it (optimistic: "
                 "the others are left out); never = no seed reached it. vs GRPO = GRPO (b = 1)'s "
                 "mean cost / this row's (> 1: cheaper). acc on token grid = held-out accuracy "
                 f"averaged over the same cumulative-token range [0, {upto:,.0f}] for every row "
                 "(the smallest run's total; linear between evaluations, step 0 at 0 tokens): "
                 "the equal-cost comparison, mean ± 95% t over seeds.")


# ------------------------------------------------------------------------------ diagnostics
DIAGNOSTICS = (("zero_variance_fraction", "zero-var groups"),
               ("effective_ratio", "effective ratio"),
               ("count_mean", "count mean"), ("count_std", "count spread (sd)"),
               ("stopped_fraction", "stopped"), ("aborted_fraction", "aborted"),
               ("eps_kept_fraction", "kept by chance"), ("mean_rounds", "rounds/step"))


def diagnostics_table(df: pd.DataFrame) -> Table:
    """Per method x budget: how each allocator spent its rollouts (summary.json fields)."""
    display, data = [], []
    for method in method_order(df["method"]):
        for b in budgets_of(df[df["method"] == method]):
            cell = cell_runs(df, method, b)
            row = {"method": row_label(method), "budget": f"{b:g}"}
            numbers = {"method": method, "budget": b, "seeds": len(cell)}
            for column, heading in DIAGNOSTICS:
                values = cell[column] if column in cell else []
                row[heading] = fmt(*t_interval(values), digits=2)
                numbers.update(_stat_columns(column, values))
            display.append(row)
            data.append(numbers)
    return Table("diagnostics", "Diagnostics: how each method spent its rollouts",
                 pd.DataFrame(display), pd.DataFrame(data),
                 f"Cells: {INTERVAL_NOTE}. zero-var groups = fraction of trained groups whose "
                 "rewards were all equal (no gradient); effective ratio = fraction of trained "
                 "groups with a non-zero advantage; count mean / sd = first-round rollouts per "
                 "prompt over all steps; stopped / aborted / kept by chance = fractions of "
                 "generated rows ended by DUET's stop rule (kept), aborted (excluded), or kept by "
                 "its ε-chance; rounds/step = generation rounds per training step.")


# ------------------------------------------------------------------------------ overhead
OVERHEAD_FILE = "overhead.csv"


def overhead_from_file(sweep_dir: Path) -> Table | None:
    """The allocator overhead table from ``overhead.csv`` (written by ``python -m bench.overhead
    --out DIR/overhead.md`` or ``bench.run --overhead``), if the sweep has one."""
    from bench.overhead import format_seconds
    path = Path(sweep_dir) / OVERHEAD_FILE
    if not path.is_file():
        return None
    try:
        raw = pd.read_csv(path, index_col=0, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise SweepError(f"{path} is not a readable CSV ({exc})") from None
    rows = []
    for label, values in raw.iterrows():
        row = {"solver": label}
        for column, value in values.items():
            try:
                number = float(value)
            except ValueError:
                row[column] = MISSING
                continue
            row[column] = (f"{number:.0f}x" if number >= 10 else f"{number:.1f}x") \
                if str(label).endswith("(x)") else format_seconds(number)
        rows.append(row)
    return Table("overhead", "Allocator overhead: median solve time per step (CoBA-RL Table 4 "
                 "layout)", pd.DataFrame(rows), None,
                 f"From {OVERHEAD_FILE} (raw seconds there). Columns: M prompts per step, C = 16 M "
                 "rollouts; — = not measured. Paper (CoBA-RL Table 4, M = 512, B_total = 8192): "
                 "DP 115.05 s, heap 0.124 s.")


# ------------------------------------------------------------------------------ writing
def standard_tables(summaries: pd.DataFrame, curves: pd.DataFrame, sweep_dir: Path,
                    target: float | None) -> list[Table]:
    from bench.headline import headline_table    # it builds on this module's cells
    tables = [headline_table(summaries), budget_table(summaries), final_budget_table(summaries),
              delta_table(summaries, against_full=False),
              delta_table(summaries, against_full=True), normalised_table(summaries),
              speed_table(summaries),
              cost_table(summaries, curves, target), diagnostics_table(summaries),
              overhead_from_file(sweep_dir)]
    return [t for t in tables if t is not None]


def write_csvs(sweep_dir: Path, tables: list[Table], prefix: str = "table") -> None:
    for table in tables:
        if table.data is not None and not table.data.empty:
            atomic_write_text(Path(sweep_dir) / f"{prefix}_{table.key}.csv",
                              table.data.to_csv(index=False))


def header(summaries: pd.DataFrame, preset_name: str | None) -> str:
    presets = preset_name or ", ".join(sorted(summaries["preset"].astype(str).unique()))
    seeds = sorted(summaries["seed"].unique())
    return f"# AllocBench results — preset `{presets}`, seeds {', '.join(map(str, seeds))}\n"


def write_tables(sweep_dir: Path, preset_name: str | None = None, target: float | None = None,
                 extra_sections: list[str] | None = None) -> str:
    """Write summary.csv, table_*.csv and tables.md into ``sweep_dir``; return the markdown.

    ``extra_sections`` (already rendered markdown, e.g. paper tables) are appended.
    """
    summaries = load_summaries(sweep_dir)
    if summaries.empty:
        text = "no finished runs\n" + "".join("\n" + s for s in extra_sections or [])
        atomic_write_text(Path(sweep_dir) / "tables.md", text)
        return text
    atomic_write_text(Path(sweep_dir) / "summary.csv", summaries.to_csv(index=False))
    tables = standard_tables(summaries, load_curves(sweep_dir), sweep_dir, target)
    write_csvs(sweep_dir, tables)
    text = "\n".join([header(summaries, preset_name)] + [t.markdown() for t in tables]
                     + list(extra_sections or []))
    atomic_write_text(Path(sweep_dir) / "tables.md", text)
    return text
