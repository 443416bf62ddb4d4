"""Allocator overhead micro-benchmark: CoBA-RL's Table 4 layout, extended to every allocator.

``python -m bench.overhead`` prints one row per solver path (the public solver functions of
docs/DESIGN.md §Solvers, their slow references, and ``plan()`` of every registered allocator) and one column
per batch size ``M`` with ``C = 16 M`` rollouts (CoBA-RL's setting: ``M = 512``,
``B_total = 8192``).  A cell is the median wall-clock of ``--repeats`` solves of one fixed random
instance, after one untimed warm-up call.  Ratio rows divide a reference's time by its default's.

``—`` marks a cell that was not measured: an exact DP whose predicted work
(items x choices x budget) exceeds ``--dp-max-work`` (no time is extrapolated from smaller sizes),
a solver whose module is not importable, or a ``plan()`` that raised (the reason is listed
under the table).  A cell stops repeating once its timed calls pass ``--cell-budget`` seconds
and is then the median of the calls made (at least one).

Instances (seeded): pass rates on the 1/16 grid with about 20% exactly 0 and 20% exactly 1,
90% of prompts warm (Knapsack-RL's ``valid``); DUET's spread and length predictions are
log-normal.  Solver options follow docs/ALGORITHMS.md §Scaling rule at ``G = C / M``.

Adding a solver is one entry in :data:`SOLVER_CASES`: ``(label, builder)`` where
``builder(instance)`` returns the zero-argument call to time.
"""
from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

MISSING = "—"
DEFAULT_SIZES = (64, 512, 4096)
ROLLOUTS_PER_PROMPT = 16
# exact_weight_dp runs at roughly 1.3-2.5 ns per unit of work on the 2-core reference box,
# so 1e10 units keeps a DP cell under about 30 s
DEFAULT_DP_MAX_WORK = 1e10
DEFAULT_CELL_BUDGET_S = 20.0
PAPER_TABLE_4 = "CoBA-RL Table 4 (paper, M = 512, B_total = 8192): DP 115.05 s, heap 0.124 s, 928x"


class Unavailable(Exception):
    """A case that cannot run at this size or in this checkout; the cell becomes ``—``."""


@dataclass
class Instance:
    prompts: int
    total: int
    pass_rate: np.ndarray
    valid: np.ndarray
    spread: np.ndarray            # DUET's predicted gradient-signal spread per prompt
    mean_length: np.ndarray       # DUET's predicted rollout length per prompt
    seed: int
    dp_max_work: float = DEFAULT_DP_MAX_WORK
    notes: list[str] = field(default_factory=list)

    @property
    def group(self) -> int:
        return self.total // self.prompts


def make_instance(prompts: int, total: int, seed: int = 0,
                  dp_max_work: float = DEFAULT_DP_MAX_WORK) -> Instance:
    rng = np.random.default_rng(seed)
    kind = rng.choice(3, size=prompts, p=[0.2, 0.2, 0.6])
    pass_rate = np.where(kind == 0, 0.0, np.where(kind == 1, 1.0,
                                                  rng.integers(1, 16, size=prompts) / 16))
    return Instance(prompts=prompts, total=total, pass_rate=pass_rate,
                    valid=rng.random(prompts) < 0.9,
                    spread=rng.lognormal(-1.0, 0.5, size=prompts),
                    mean_length=rng.lognormal(5.0, 0.4, size=prompts), seed=seed,
                    dp_max_work=dp_max_work)


# ------------------------------------------------------------------------------ solver cases
def _optional(module: str, attribute: str):
    try:
        return getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError) as error:
        raise Unavailable(f"{module}.{attribute} not importable ({error})") from None


def _check_dp_work(inst: Instance, work: float, label: str) -> None:
    if work > inst.dp_max_work:
        raise Unavailable(f"{label} skipped at M={inst.prompts}: predicted work {work:.2g} > "
                          f"--dp-max-work {inst.dp_max_work:.2g}")


def _knapsack_options(inst: Instance) -> dict:
    # docs/ALGORITHMS.md §Scaling: n_max = 16 N capped at C - (M - 1) n_min, cold prompts at C // M
    return dict(n_default=inst.group,
                n_max=min(16 * inst.group, inst.total - (inst.prompts - 1) * 2))


def _coba_options(inst: Instance) -> dict:
    # Fig. 4's middle shape; B_up = 8 G capped at C - (M - 1) B_low (§Scaling)
    return dict(alpha=4.5, beta=6.5,
                n_high=min(8 * inst.group, inst.total - (inst.prompts - 1) * 2))


def _vip_bounds(inst: Instance) -> dict:
    return dict(lower=inst.total // (2 * inst.prompts), upper=2 * inst.total // inst.prompts)


def knapsack_default(inst):
    from allocators.knapsack import knapsack_counts
    options = _knapsack_options(inst)
    return lambda: knapsack_counts(inst.pass_rate, inst.valid, inst.total, **options)


def knapsack_dp(inst):
    from allocators.knapsack import knapsack_counts_dp
    options = _knapsack_options(inst)
    effective = int(np.sum(inst.valid & (inst.pass_rate > 0) & (inst.pass_rate < 1)))
    spare = inst.total - 2 * effective - int(np.sum(~inst.valid)) * options["n_default"] \
        - 2 * int(np.sum(inst.valid & ((inst.pass_rate == 0) | (inst.pass_rate == 1))))
    _check_dp_work(inst, effective * (options["n_max"] - 1) * (max(spare, 0) + 1), "Knapsack DP")
    return lambda: knapsack_counts_dp(inst.pass_rate, inst.valid, inst.total, **options)


def coba_default(inst):
    from allocators.coba import coba_counts
    return lambda: coba_counts(inst.pass_rate, inst.total, **_coba_options(inst))


def coba_heap(inst):
    from allocators.coba import coba_counts_heap
    return lambda: coba_counts_heap(inst.pass_rate, inst.total, **_coba_options(inst))


def coba_dp(inst):
    from allocators.coba import coba_counts_dp
    options = _coba_options(inst)
    spare = inst.total - 2 * inst.prompts
    _check_dp_work(inst, inst.prompts * (options["n_high"] - 1) * (spare + 1), "CoBA DP")
    return lambda: coba_counts_dp(inst.pass_rate, inst.total, **options)


def vip_kkt(inst):
    vip_counts = _optional("allocators.vip", "vip_counts")
    return lambda: vip_counts(inst.pass_rate, inst.total, **_vip_bounds(inst))


def vip_cvxpy(inst):
    vip_counts = _optional("allocators.vip", "vip_counts")
    return lambda: vip_counts(inst.pass_rate, inst.total, solver="cvxpy", **_vip_bounds(inst))


def duet_neyman(inst):
    neyman_counts = _optional("allocators.duet", "neyman_counts")
    budget = float(inst.total * inst.mean_length.mean())
    # §Scaling: n_max = 4 n_ref
    return lambda: neyman_counts(inst.spread, inst.mean_length, budget, n_min=1,
                                 n_max=4 * inst.group)


SOLVER_CASES: list[tuple[str, Callable[[Instance], Callable[[], object]]]] = [
    ("Knapsack-RL greedy (default)", knapsack_default),
    ("Knapsack-RL DP (released code's solver)", knapsack_dp),
    ("CoBA-RL vectorised (default)", coba_default),
    ("CoBA-RL heap (Algorithm 1)", coba_heap),
    ("CoBA-RL DP (Table 4 contrast)", coba_dp),
    ("VIP KKT (default)", vip_kkt),
    ("VIP cvxpy", vip_cvxpy),
    ("DUET Neyman", duet_neyman),
]

# (label, numerator row, denominator row)
RATIO_ROWS = [
    ("Knapsack-RL DP / greedy (x)", "Knapsack-RL DP (released code's solver)",
     "Knapsack-RL greedy (default)"),
    ("CoBA-RL DP / vectorised (x)", "CoBA-RL DP (Table 4 contrast)",
     "CoBA-RL vectorised (default)"),
    ("CoBA-RL DP / heap (x)", "CoBA-RL DP (Table 4 contrast)", "CoBA-RL heap (Algorithm 1)"),
    ("VIP cvxpy / KKT (x)", "VIP cvxpy", "VIP KKT (default)"),
]


def plan_case(method: str) -> Callable[[Instance], Callable[[], object]]:
    """Builder timing ``plan()`` of a registered allocator on a synthetic warm statistics store."""

    def build(inst: Instance):
        import allocators
        from allocators.base import PromptInfo, PromptStats, Rollout, Setting, StepBudget

        rng = np.random.default_rng(inst.seed + 1)
        setting = Setting(prompts_per_step=inst.prompts, group_size=inst.group,
                          budget_fraction=1.0, max_response_tokens=256, steps=100,
                          seed=inst.seed, pool_size=inst.prompts)
        pool = [PromptInfo(pid=i, text=f"prompt {i}", token_ids=(1, 2, 3 + i % 50),
                           features={"embedding": rng.normal(size=32),
                                     "prompt_logprob_mean": float(-rng.uniform(0.5, 3.0))})
                for i in range(inst.prompts)]
        stats = PromptStats()
        for i, p in enumerate(inst.pass_rate):
            if inst.valid[i]:
                rewards = rng.random(inst.group) < p
                length = max(1, int(inst.mean_length[i]))
                stats.update(0, [[Rollout(pid=i, group=i, tag="main", step=0, round=0,
                                          tokens=np.zeros(length, dtype=np.int64),
                                          logprobs=np.zeros(length, dtype=np.float32),
                                          finish="eos", reward=float(r)) for r in rewards]])
        mean_length = stats.global_mean_length(128.0)
        budget = StepBudget(rollouts=inst.total, tokens=inst.total * mean_length,
                            mean_length=mean_length)
        try:
            allocator = allocators.get(method)(setting)
            allocator.attach_pool(pool)
            if allocator.needs().pass_rate_estimates:    # controls: estimates recorded first
                stats.record_estimates(1, dict(enumerate(map(float, inst.pass_rate))))
            allocator.plan(1, pool, stats, budget)
        except Exception as error:   # another method's failure must not sink the table
            raise Unavailable(f"plan(): {method} failed at M={inst.prompts}: "
                              f"{type(error).__name__}: {error}") from None
        return lambda: allocator.plan(1, pool, stats, budget)

    return build


def all_cases(include_plans: bool = True) -> list[tuple[str, Callable]]:
    cases = list(SOLVER_CASES)
    if include_plans:
        import allocators
        cases += [(f"plan(): {name}", plan_case(name)) for name in allocators.available()]
    return cases


# ------------------------------------------------------------------------------ measurement
def time_call(call: Callable[[], object], repeats: int, cell_budget_s: float) -> float:
    """Median seconds of up to ``repeats`` calls after one untimed warm-up."""
    call()
    times: list[float] = []
    spent = 0.0
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
        spent += times[-1]
        if spent > cell_budget_s:
            break
    return float(statistics.median(times))


def column_label(prompts: int, total: int) -> str:
    return f"M={prompts}, C={total}"


def overhead_table(sizes, repeats, *, seed: int = 0, dp_max_work: float = DEFAULT_DP_MAX_WORK,
                   cell_budget_s: float = DEFAULT_CELL_BUDGET_S, include_plans: bool = True,
                   progress: bool = False) -> pd.DataFrame:
    """Median solve seconds: rows = solver paths then ratio rows, columns = ``M`` (``C = 16 M``).

    Cells are positive floats (seconds; ratio rows: a dimensionless factor) or :data:`MISSING`.
    ``table.attrs["notes"]`` lists why each missing cell is missing.
    """
    from tqdm import tqdm

    cases = all_cases(include_plans)
    columns = [column_label(m, ROLLOUTS_PER_PROMPT * m) for m in sizes]
    table = pd.DataFrame(MISSING, index=[label for label, _ in cases], columns=columns,
                         dtype=object)
    notes: list[str] = []
    with tqdm(total=len(cases) * len(sizes), desc="overhead", disable=not progress,
              file=sys.stderr) as bar:
        for prompts, column in zip(sizes, columns):
            inst = make_instance(prompts, ROLLOUTS_PER_PROMPT * prompts, seed, dp_max_work)
            for label, build in cases:
                bar.set_postfix_str(f"{label} @ M={prompts}")
                try:
                    table.loc[label, column] = time_call(build(inst), repeats, cell_budget_s)
                except Unavailable as reason:
                    notes.append(str(reason))
                bar.update()
    for label, numerator, denominator in RATIO_ROWS:
        table.loc[label] = [_ratio(table.loc[numerator, c], table.loc[denominator, c])
                            for c in columns]
    table.attrs["notes"] = list(dict.fromkeys(notes))    # one line per distinct reason
    return table


def _ratio(numerator, denominator):
    if isinstance(numerator, float) and isinstance(denominator, float):
        return numerator / denominator
    return MISSING


# ------------------------------------------------------------------------------ output
def format_seconds(seconds) -> str:
    if not isinstance(seconds, float):
        return MISSING
    if seconds >= 1.0:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.0f} µs"


def to_markdown(table: pd.DataFrame) -> str:
    header = "| Solver | " + " | ".join(table.columns) + " |"
    lines = [header, "|" + "---|" * (len(table.columns) + 1)]
    for label, row in table.iterrows():
        is_ratio = label.endswith("(x)")
        cells = [(f"{v:.0f}x" if v >= 10 else f"{v:.1f}x") if is_ratio and isinstance(v, float)
                 else format_seconds(v) for v in row]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary_line(table: pd.DataFrame) -> str:
    """One sentence at the column nearest M = 512: CoBA's Table 4 contrast, the slowest default."""
    column = min(table.columns, key=lambda c: abs(int(c.split(",")[0][2:]) - 512))
    heap, dp = table.loc["CoBA-RL heap (Algorithm 1)", column], \
        table.loc["CoBA-RL DP (Table 4 contrast)", column]
    measured = isinstance(dp, float) and isinstance(heap, float)
    contrast = (f"CoBA-RL heap {format_seconds(heap)} vs DP {format_seconds(dp)} "
                f"({dp / heap:.0f}x; paper 928x)" if measured
                else f"CoBA-RL heap {format_seconds(heap)}, DP not measured")
    defaults = [(v, label) for label in table.index if "(default)" in label
                for v in [table.loc[label, column]] if isinstance(v, float)]
    slowest = (f"; slowest default solver {max(defaults)[1]} at {format_seconds(max(defaults)[0])}"
               if defaults else "")
    return f"Summary at {column}: {contrast}{slowest}."


def write_outputs(table: pd.DataFrame, out: Path, text: str) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    for path, content in ((out, text + "\n"),
                          (out.with_suffix(".csv"), table.to_csv(index_label="solver"))):
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text(content, encoding="utf-8")
        temporary.replace(path)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.overhead",
        description="Median allocator solve times, CoBA-RL Table 4 layout: rows = solver paths, "
                    f"columns = batch sizes M with C = {ROLLOUTS_PER_PROMPT} M rollouts.")
    parser.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)),
                        help="comma-separated prompts per step M (C = 16 M each); "
                             "default %(default)s")
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed calls per cell, after one untimed warm-up; the cell is their "
                             "median (default %(default)s)")
    parser.add_argument("--out", type=Path, default=None,
                        help="also write the markdown table to this FILE.md and the raw seconds "
                             "to FILE.csv beside it")
    parser.add_argument("--seed", type=int, default=0, help="instance seed (default %(default)s)")
    parser.add_argument("--dp-max-work", type=float, default=DEFAULT_DP_MAX_WORK,
                        help="skip an exact DP (cell '—') when items x choices x budget exceeds "
                             "this; the default keeps a DP under about 30 s on a 2-core CPU")
    parser.add_argument("--cell-budget", type=float, default=DEFAULT_CELL_BUDGET_S,
                        help="stop repeating a cell once its timed calls pass this many seconds "
                             "(default %(default)s)")
    parser.add_argument("--solvers-only", action="store_true",
                        help="leave out the plan() rows of the registered allocators")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    table = overhead_table(sizes, args.repeats, seed=args.seed, dp_max_work=args.dp_max_work,
                           cell_budget_s=args.cell_budget, include_plans=not args.solvers_only,
                           progress=True)
    parts = [to_markdown(table), "", PAPER_TABLE_4]
    if table.attrs["notes"]:
        parts += ["", "Not measured (—):"] + [f"- {note}" for note in table.attrs["notes"]]
    parts += ["", summary_line(table)]
    text = "\n".join(parts)
    print(text)
    if args.out is not None:
        write_outputs(table, args.out, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
