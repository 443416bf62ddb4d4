"""Tables built from a sweep directory: every number comes from the runs' own files.

Intervals: with several seeds, a cell shows ``mean ± half-width`` of a two-sided 95% Student-t
interval over seeds (``t_{0.975, n-1} · s / sqrt(n)``); with one seed, the value alone.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as sps

from trainer.rundir import read_json, read_jsonl

PHASE_COLUMNS = ("generate", "reward", "logprob", "update", "allocate", "other")


def load_summaries(sweep_dir: Path) -> pd.DataFrame:
    """One row per finished run (a sub-directory holding summary.json)."""
    rows = []
    for path in sorted(Path(sweep_dir).glob("*/summary.json")):
        s = read_json(path)
        flat = {k: v for k, v in s.items() if not isinstance(v, dict)}
        flat.update({f"sec_{k}": v for k, v in s["timing"].items()})
        flat["run"] = path.parent.name
        rows.append(flat)
    return pd.DataFrame(rows)


def load_curves(sweep_dir: Path) -> pd.DataFrame:
    """Every evaluation of every run, with the run's method, budget and seed."""
    frames = []
    for path in sorted(Path(sweep_dir).glob("*/eval.jsonl")):
        config = read_json(path.parent / "config.json")["run"]
        evals = read_jsonl(path)
        if not evals:
            continue
        df = pd.DataFrame([{k: v for k, v in e.items() if not isinstance(v, dict)} for e in evals])
        df["method"], df["budget"], df["seed"] = config["method"], config["budget"], config["seed"]
        frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def t_interval(values) -> tuple[float, float]:
    """(mean, half-width of the 95% t interval); half-width nan for fewer than 2 values."""
    v = np.asarray(list(values), dtype=float)
    if len(v) == 0:
        return float("nan"), float("nan")
    if len(v) < 2:
        return float(v.mean()), float("nan")
    half = sps.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
    return float(v.mean()), float(half)


def fmt(mean: float, half: float, digits: int = 3, scale: float = 1.0) -> str:
    if np.isnan(mean):
        return "—"
    if np.isnan(half):
        return f"{mean * scale:.{digits}f}"
    return f"{mean * scale:.{digits}f} ± {half * scale:.{digits}f}"


def method_order(methods) -> list[str]:
    return sorted(set(methods), key=lambda m: (m != "grpo", m))


def budget_table(df: pd.DataFrame) -> pd.DataFrame:
    """Rows = methods, columns = budget fractions, cell = final held-out mean@k (± 95% t)."""
    budgets = sorted(df["budget"].unique(), reverse=True)
    out = {}
    for method in method_order(df["method"]):
        row = {}
        for b in budgets:
            cell = df[(df["method"] == method) & (df["budget"] == b)]["final_accuracy"]
            row[f"b={b:g}"] = fmt(*t_interval(cell))
        out[method] = row
    table = pd.DataFrame.from_dict(out, orient="index")
    table.index.name = "method"
    return table


def speed_table(df: pd.DataFrame) -> pd.DataFrame:
    """Rows = method x budget: tokens, rollouts, seconds by phase, speed-up vs GRPO at b = 1."""
    reference = df[(df["method"] == "grpo") & (df["budget"] == 1.0)]["sec_train_seconds"]
    ref = float(reference.mean()) if len(reference) else float("nan")
    rows = []
    for method in method_order(df["method"]):
        for b in sorted(df[df["method"] == method]["budget"].unique(), reverse=True):
            cell = df[(df["method"] == method) & (df["budget"] == b)]
            row = {"method": method, "budget": f"{b:g}", "seeds": len(cell),
                   "tokens": f"{cell['tokens'].mean():,.0f}",
                   "rollouts": f"{cell['rollouts'].mean():,.0f}"}
            for phase in PHASE_COLUMNS:
                row[f"{phase} s"] = f"{cell[f'sec_{phase}'].mean():.1f}"
            train = cell["sec_train_seconds"].mean()
            row["train s"] = f"{train:.1f}"
            row["speed-up"] = f"{ref / train:.2f}×" if not np.isnan(ref) and train > 0 else "—"
            rows.append(row)
    return pd.DataFrame(rows).set_index(["method", "budget"])


def to_markdown(title: str, table: pd.DataFrame, note: str = "") -> str:
    text = f"### {title}\n\n{table.to_markdown()}\n"
    return text + (f"\n{note}\n" if note else "")


def write_tables(sweep_dir: Path, preset_name: str) -> str:
    """Write summary.csv and tables.md into ``sweep_dir``; return the markdown."""
    from trainer.rundir import atomic_write_text
    df = load_summaries(sweep_dir)
    if df.empty:
        return "no finished runs\n"
    atomic_write_text(Path(sweep_dir) / "summary.csv", df.to_csv(index=False))
    seeds = sorted(df["seed"].unique())
    interval = "mean ± 95% t-interval over seeds" if len(seeds) > 1 else "one seed"
    parts = [
        f"# AllocBench results — preset `{preset_name}`, seeds {', '.join(map(str, seeds))}\n",
        to_markdown("Budget table: final held-out accuracy (mean@k on our own held-out set)",
                    budget_table(df), f"Cells: {interval}. Columns: budget fraction b."),
        to_markdown("Speed table: cumulative cost of each run (means over seeds)", speed_table(df),
                    "Seconds by phase are wall-clock; speed-up = GRPO (b = 1) training seconds "
                    "(all phases but evaluation) / this run's."),
    ]
    text = "\n".join(parts)
    atomic_write_text(Path(sweep_dir) / "tables.md", text)
    return text
