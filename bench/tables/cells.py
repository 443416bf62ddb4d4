"""Cells of every table: formatting, method order and labels, the :class:`Table` type."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

import allocators
from bench.stats import t_interval

MISSING = "—"
NEVER = "never"
TOLERANCE = 1e-9
INTERVAL_NOTE = ("mean ± half-width of the two-sided 95% Student-t interval over seeds "
                 "(t₀.₉₇₅,ₙ₋₁ · s / √n); one seed: the value alone")
HEADLINE = "curve_accuracy"
CURVE_NOTE = ("curve average = area under the held-out mean@k curve over the evaluations after "
              "step 0 (trapezoid on the step axis), divided by its span")


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


def row_label(method: str) -> str:
    """Row label: controls are marked as reference rows, never read as contenders."""
    return f"{method} (control)" if is_control(method) else method
