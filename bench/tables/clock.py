"""Which clock a sweep's seconds are read on: process CPU seconds on CPU presets (a shared
machine does not inflate them), wall seconds on accelerators."""
from __future__ import annotations

import pandas as pd

from trainer.ledger import SHARED_RATIO

PHASE_COLUMNS = ("generate", "reward", "logprob", "advantage", "update", "allocate", "other")


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
