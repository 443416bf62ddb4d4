"""Loading a sweep directory: its finished runs' summaries, evaluation curves and steps."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from bench.stats import curve_average
from trainer.rundir import RunFileError, read_json, read_jsonl


PASS_PREFIX = "final_pass_at_"     # summary columns of the last evaluation's pass@k


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
    """method, budget, seed and preset of a run, from its config.json; a run with another stop
    rule than its method's own is the method ``METHOD+RULE``."""
    config = _read(run_dir / "config.json", read_json)
    try:
        run = config["run"]
        rule = run.get("length")
        return {"method": run["method"] + (f"+{rule}" if rule else ""), "budget": float(run["budget"]), "seed": int(run["seed"]),
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
    # the last evaluation's pass@k (trainer.evaluate), absent from runs that predate it
    passes = {f"{PASS_PREFIX}{k}": float(v)
              for k, v in (ordered[-1].get("pass_at_k", {}) if ordered else {}).items()}
    return {"curve_accuracy": curve_average(steps, accuracy),
            "last3_accuracy": float(np.mean(accuracy[-3:])) if accuracy else float("nan"),
            **passes}


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
