"""The papers' tables (docs/ALGORITHMS.md §Paper-tables), as data: name -> methods, budgets, renderer.

``python -m bench.run --table NAME`` runs ``methods x budgets`` (x ``--seeds``) on the chosen
preset and prints the table in the paper's layout; ``--table list`` names them.  Adding a table is
one :class:`PaperTable` (``bench.tables.registry.TableSpec``) in the one registry of tables
(:data:`bench.tables.registry.TABLES`; :data:`PAPER_TABLES` here lists the papers' ones), whose
``render(ctx)`` returns :class:`bench.tables.Table` objects (and, optionally, whose ``figure(ctx)`` returns a figure and
whose ``measure(out_dir)`` does non-training work first, like CoBA-RL's allocation timing).

Our numbers and the paper's never share a cell.  The paper's numbers appear, in columns or rows
labelled "paper", only where the preset *is* the paper's setting (:data:`PAPER_SETTINGS`); on
the embedded default the title says that the columns are our own held-out sets and no paper
number is shown.  CoBA-RL Table 4 is the exception: allocation time at ``M = 512``,
``B_total = 8192`` does not depend on the model, so the paper's row is always shown beside ours.

Our accuracy cells are final held-out mean@k in %, ``mean ± 95% t-interval`` over seeds (see
:mod:`bench.tables`); ``—`` = the run was not produced (or the method is not implemented).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from bench.tables import (MISSING, NEVER, SPEEDUP_NOTE, Table, cell_runs, cost_cell,
                          default_target, fmt, ratio_text, reach_costs, speedup_of, t_interval)
from bench.tables.registry import Context, TableSpec, register
from trainer.rundir import atomic_write_json, read_json

FULL, HALF, QUARTER = 1.0, 0.5, 0.25


# a paper's table is a registered table that names its methods and budgets
PaperTable = TableSpec


# ------------------------------------------------------------------------------ cells
class Grid:
    """A table in a fixed column order, filled cell by cell; keeps the numbers for the CSV."""

    def __init__(self, columns: list[str]):
        self.columns = columns
        self.rows: dict[str, dict] = {}
        self.records: list[dict] = []

    def put(self, row: str, column: str, text: str, mean=float("nan"), half=float("nan"),
            n: int = 0, source: str = "ours") -> None:
        self.rows.setdefault(row, {self.columns[0]: row})[column] = text
        self.records.append({"row": row, "column": column, "source": source, "mean": mean,
                             "ci95": half, "seeds": n, "text": text})

    def table(self, key: str, title: str, note: str = "", extra=None) -> Table:
        display = pd.DataFrame([{c: r.get(c, MISSING) for c in self.columns}
                                for r in self.rows.values()], columns=self.columns)
        return Table(key, title, display, pd.DataFrame(self.records), note, list(extra or []))


def pct_cell(values) -> tuple[str, float, float, int]:
    values = [v for v in values if not np.isnan(v)]
    mean, half = t_interval(values)
    return fmt(mean, half, digits=1, scale=100.0), mean, half, len(values)


def accuracy(ctx: Context, method: str, budget: float, column: str = "final_accuracy"):
    runs = cell_runs(ctx.summaries, method, budget) if not ctx.summaries.empty else []
    return list(runs[column]) if len(runs) and column in runs else []


def put_accuracy(grid: Grid, ctx: Context, row: str, column: str, method: str, budget: float,
                 field_name: str = "final_accuracy") -> tuple[float, int]:
    text, mean, half, n = pct_cell(accuracy(ctx, method, budget, field_name))
    grid.put(row, column, text, mean, half, n)
    return mean, n


def initial_accuracy(ctx: Context, methods) -> list[float]:
    """The policy before RL: every run of one seed starts from the same warm start and evaluates
    it with the same samples, so the initial evaluation is taken once per seed."""
    if ctx.summaries.empty:
        return []
    runs = ctx.summaries[ctx.summaries["method"].isin(methods)]
    return list(runs.groupby("seed", sort=True)["initial_accuracy"].first())


OWN_SETS = "columns are our own held-out sets, not the paper's benchmarks"


def setting_note(ctx: Context, table: str, ours: str = OWN_SETS) -> tuple[str, bool]:
    """(title suffix, whether paper numbers may be shown)."""
    if ctx.preset in PAPER_SETTINGS.get(table, ()):
        return (f"preset `{ctx.preset}` = the paper's setting; columns marked (paper) are the "
                f"paper's reported numbers, all others ours", True)
    return f"preset `{ctx.preset}`: {ours}; paper numbers not shown (different setting)", False


def seeds_note(ctx: Context) -> str:
    seeds = sorted(ctx.summaries["seed"].unique()) if not ctx.summaries.empty else []
    return (f"Our cells: final held-out mean@k (%), mean ± 95% t-interval over seeds "
            f"{', '.join(map(str, seeds)) or '(none)'}; — = not produced.")


def missing_methods(methods) -> list[str]:
    import allocators
    known = set(allocators.available())
    return [m for m in methods if m not in known]


# ------------------------------------------------------------------------------ DUET fig. 1
DUET_PAPER = {     # docs/ALGORITHMS.md §DUET: Qwen3-1.7B-Base on MATH, MATH-500 Mean@4 (%)
    "pareto": {"GRPO": (56.8, 56.4, 54.9), "DAPO": (57.6, 56.6, 55.5), "VIP": (58.6, 56.0, 55.1),
               "DUET": (61.6, 62.1, 61.4)},
    "bars": {"Baseline (no RL)": 45.1, "GRPO": 56.8, "DAPO": 57.6, "ARRoL": 58.4, "VIP": 58.6,
             "DUET": 61.6, "DUET (50% Budget)": 62.1},
    "speedup": {"GRPO": 1.00, "DAPO": 0.81, "ARRoL": 1.30, "VIP": 0.95, "DUET": 1.62,
                "DUET (50% Budget)": 2.51},
}
DUET_ROWS = {"GRPO": ("grpo", FULL), "DAPO": ("dapo", FULL), "ARRoL": ("arrol", FULL),
             "VIP": ("vip", FULL), "DUET": ("duet", FULL), "DUET (50% Budget)": ("duet", HALF)}
PARETO_METHODS = {"GRPO": "grpo", "DAPO": "dapo", "VIP": "vip", "DUET": "duet"}
BUDGET_LABELS = {FULL: "100%", HALF: "50%", QUARTER: "25%"}


def duet_fig1(ctx: Context) -> list[Table]:
    suffix, paper = setting_note(ctx, "duet-fig1")
    absent = missing_methods(m for m, _ in DUET_ROWS.values())
    extra = [f"- not implemented in this harness: {', '.join(absent)} (cells —)"] if absent else []
    # (a) Pareto
    columns = ["Method"] + [BUDGET_LABELS[b] for b in (FULL, HALF, QUARTER)]
    if paper:
        columns += [f"{BUDGET_LABELS[b]} (paper)" for b in (FULL, HALF, QUARTER)]
    pareto = Grid(columns)
    for label, method in PARETO_METHODS.items():
        for i, b in enumerate((FULL, HALF, QUARTER)):
            put_accuracy(pareto, ctx, label, BUDGET_LABELS[b], method, b)
            if paper:
                value = DUET_PAPER["pareto"][label][i]
                pareto.put(label, f"{BUDGET_LABELS[b]} (paper)", f"{value:.1f}", value / 100,
                           source="paper")
    # (b) full-budget bars
    columns = ["Method", "Held-out mean@k (%)"] + (["MATH-500 Mean@4 (%) (paper)"] if paper else [])
    bars = Grid(columns)
    text, mean, half, n = pct_cell(initial_accuracy(ctx, [m for m, _ in DUET_ROWS.values()]))
    bars.put("Baseline (no RL)", columns[1], text, mean, half, n)
    for label, (method, b) in DUET_ROWS.items():
        put_accuracy(bars, ctx, label, columns[1], method, b)
    # (c) speed-up
    columns3 = ["Method", "Speed-up vs full-budget GRPO (×)"] + (["(paper)"] if paper else [])
    speed = Grid(columns3)
    for label, (method, b) in DUET_ROWS.items():
        mean, half = speedup_of(ctx.summaries, method, b) if not ctx.summaries.empty \
            else (float("nan"), float("nan"))
        n = len(cell_runs(ctx.summaries, method, b)) if not ctx.summaries.empty else 0
        speed.put(label, columns3[1], MISSING if np.isnan(mean) else fmt(mean, half, 2) + "×",
                  mean, half, n)
    if paper:
        for label, value in DUET_PAPER["bars"].items():
            bars.put(label, columns[2], f"{value:.1f}", value / 100, source="paper")
        for label, value in DUET_PAPER["speedup"].items():
            speed.put(label, "(paper)", f"{value:.2f}×", value, source="paper")
    note = seeds_note(ctx)
    return [
        pareto.table("duet-fig1_a", f"DUET Fig. 1 (a) Pareto: accuracy by token budget — {suffix}",
                     note + " Columns: budget fraction of GRPO's per-step token budget.", extra),
        bars.table("duet-fig1_b", f"DUET Fig. 1 (b) full-budget accuracy — {suffix}",
                   note + " Baseline (no RL) = the warm-start policy's step-0 evaluation."),
        speed.table("duet-fig1_c", f"DUET Fig. 1 (c) speed-up vs full-budget GRPO — "
                    f"{setting_note(ctx, 'duet-fig1', 'our own runs and machine')[0]}",
                    SPEEDUP_NOTE[0].upper() + SPEEDUP_NOTE[1:] + "."),
    ]


def bar_panel(ax, values: dict[str, tuple[float, float]], color: str) -> None:
    """Bars with t-interval error bars; a run that was not produced gets "—" instead of a bar,
    so it cannot be mistaken for a zero."""
    means = np.array([m for m, _ in values.values()], dtype=float)
    halves = np.array([h for _, h in values.values()], dtype=float)
    x = np.arange(len(values))
    spread = None if np.isnan(halves).all() else np.nan_to_num(halves)   # one seed: no bars
    ax.bar(x, np.nan_to_num(means), yerr=spread, capsize=3, color=color)
    for i in np.flatnonzero(np.isnan(means)):
        ax.text(i, 0, "—\nnot run", ha="center", va="bottom", fontsize=7, color="0.3")
    ax.set_xticks(x)
    ax.set_xticklabels(list(values), rotation=35, ha="right", fontsize=8)


def duet_fig1_figure(ctx: Context):
    """The three panels as a figure: Pareto lines, full-budget bars, speed-up bars."""
    from bench.plots import new_figure
    fig = new_figure(13, 4.2)
    a, b, c = fig.subplots(1, 3)
    for label, method in PARETO_METHODS.items():
        xs, ys, es = [], [], []
        for budget in (QUARTER, HALF, FULL):
            values = accuracy(ctx, method, budget)
            if values:
                mean, half = t_interval(values)
                xs.append(budget * 100)
                ys.append(mean * 100)
                es.append(0.0 if np.isnan(half) else half * 100)
        if xs:
            a.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=label)
    a.set(xlabel="token budget (% of GRPO's)", ylabel="held-out mean@k (%)",
          title="(a) accuracy vs budget")
    a.set_xticks([25, 50, 100])
    a.legend(fontsize=8)
    bars = {}
    for label in ["Baseline (no RL)"] + list(DUET_ROWS):
        values = (initial_accuracy(ctx, [m for m, _ in DUET_ROWS.values()])
                  if label == "Baseline (no RL)" else accuracy(ctx, *DUET_ROWS[label]))
        mean, half = t_interval(values)
        bars[label] = (mean * 100, half * 100)
    bar_panel(b, bars, "C0")
    b.set(ylabel="held-out mean@k (%)", title="(b) full budget")
    bar_panel(c, {label: speedup_of(ctx.summaries, *run) for label, run in DUET_ROWS.items()},
              "C1")
    c.axhline(1.0, color="0.4", linestyle=":", linewidth=1)
    c.set(ylabel="× vs full-budget GRPO", title="(c) training wall-clock speed-up")
    fig.suptitle(f"DUET Fig. 1 layout, our runs (preset {ctx.preset}; bars = 95% t-interval)",
                 fontsize=10)
    return fig


# ------------------------------------------------------------------------------ CoBA-RL 1 / 3
def bucket_columns(ctx: Context) -> list[str]:
    if ctx.summaries.empty:
        return []
    return sorted(c for c in ctx.summaries.columns if c.startswith("bucket_"))


def accuracy_table(ctx: Context, rows: dict[str, str], key: str, title: str,
                   with_delta: bool) -> Table:
    """Rows = methods at b = 1, columns = per-bucket accuracy + Avg (mean of the buckets), the
    CoBA-RL Table 1/3 layout; optional (Δ vs GRPO) = difference of the means, in points."""
    buckets = bucket_columns(ctx)
    labels = [c[len("bucket_"):] for c in buckets]
    grid = Grid(["Method"] + labels + ["Avg"])
    summaries = ctx.summaries
    if not summaries.empty and buckets:
        summaries = summaries.assign(_avg=summaries[buckets].mean(axis=1))
    reference = {}
    for row, method in rows.items():
        runs = cell_runs(summaries, method, FULL) if not summaries.empty else summaries
        for column, label in list(zip(buckets, labels)) + [("_avg", "Avg")]:
            values = list(runs[column]) if len(runs) and column in runs else []
            text, mean, half, n = pct_cell(values)
            if method == "grpo":
                reference[label] = mean
            elif with_delta and not np.isnan(mean) and not np.isnan(reference.get(label, np.nan)):
                text += f" ({(mean - reference[label]) * 100:+.1f})"
            grid.put(row, label, text, mean, half, n)
    suffix, _ = setting_note(ctx, key.split("_")[0])
    note = (seeds_note(ctx) + " Columns: difficulty buckets of our held-out set (the paper's: "
            "AIME24, AIME25, AMC23, MATH500, OLYMPIAD); Avg = mean of the bucket accuracies."
            + (" (±x.x) = Δ vs GRPO in points (difference of the means)." if with_delta else ""))
    return grid.table(key, f"{title} — {suffix}", note)


COBA1_ROWS = {"GRPO": "grpo", "Knapsack-RL": "knapsack", "CoBA-RL": "coba"}
COBA3_ROWS = {"(α=10.5, β=1.5)": "coba-fixed-exploit", "(α=1.5, β=10.5)": "coba-fixed-explore",
              "Linear Step Decay": "coba-linear", "CoBA-RL (Ours)": "coba"}


def coba_table1(ctx: Context) -> list[Table]:
    return [accuracy_table(ctx, COBA1_ROWS, "coba-table1", "CoBA-RL Table 1: accuracy by "
                           "benchmark (b = 1)", with_delta=True)]


def coba_table3(ctx: Context) -> list[Table]:
    return [accuracy_table(ctx, COBA3_ROWS, "coba-table3", "CoBA-RL Table 3: static and "
                           "heuristic value functions (b = 1)", with_delta=False)]


# ------------------------------------------------------------------------------ CoBA-RL 4
COBA4_FILE = "coba_table4.json"
COBA4_PROMPTS, COBA4_TOTAL, COBA4_REPEATS = 512, 8192, 3
COBA4_PAPER = {"dp": 115.05, "heap": 0.124}


def measure_coba_table4(out_dir: Path) -> None:
    """Time coba_counts_dp / coba_counts_heap / coba_counts on one seeded instance at the paper's
    size (M = 512, B_total = 8192; bench.overhead's instance and options) into coba_table4.json."""
    import platform

    from bench.overhead import _coba_options, make_instance, time_call
    from allocators.coba import coba_counts, coba_counts_dp, coba_counts_heap
    inst = make_instance(COBA4_PROMPTS, COBA4_TOTAL, seed=0)
    options = _coba_options(inst)
    seconds = {}
    for key, solver in (("dp", coba_counts_dp), ("heap", coba_counts_heap),
                        ("vectorised", coba_counts)):
        seconds[key] = time_call(lambda s=solver: s(inst.pass_rate, inst.total, **options),
                                 COBA4_REPEATS, cell_budget_s=60.0)
    atomic_write_json(Path(out_dir) / COBA4_FILE, {
        "prompts": COBA4_PROMPTS, "total": COBA4_TOTAL, "repeats": COBA4_REPEATS,
        "options": options, "seconds": seconds,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "measured_at": time.strftime("%Y-%m-%d")})


def coba_table4(ctx: Context) -> list[Table]:
    path = Path(ctx.sweep_dir) / COBA4_FILE
    columns = ["", "DP", "Heap-Based Greedy (Ours)", "Speedup"]
    grid = Grid(columns)
    label = f"Allocation Time (s), B_total = {COBA4_TOTAL}"
    measured = read_json(path)["seconds"] if path.is_file() else None
    rows = [(f"{label} — ours (heap)", "heap"), (f"{label} — ours (vectorised default)", "vectorised")]
    for row, key in rows:
        if measured is None:
            for column in columns[1:]:
                grid.put(row, column, MISSING)
            continue
        dp, fast = measured["dp"], measured[key]
        grid.put(row, "DP", f"{dp:.3f}", dp)
        grid.put(row, "Heap-Based Greedy (Ours)", f"{fast:.4f}", fast)
        grid.put(row, "Speedup", f"{dp / fast:.0f}×", dp / fast)
    paper_row = f"{label} — paper"
    grid.put(paper_row, "DP", f"{COBA4_PAPER['dp']:.2f}", COBA4_PAPER["dp"], source="paper")
    grid.put(paper_row, "Heap-Based Greedy (Ours)", f"{COBA4_PAPER['heap']:.3f}",
             COBA4_PAPER["heap"], source="paper")
    grid.put(paper_row, "Speedup", f"{COBA4_PAPER['dp'] / COBA4_PAPER['heap']:.0f}×",
             COBA4_PAPER["dp"] / COBA4_PAPER["heap"], source="paper")
    note = (f"Ours: median of {COBA4_REPEATS} timed calls after one warm-up, M = {COBA4_PROMPTS} "
            f"prompts, one seeded instance (bench.overhead.make_instance, B_up = 128); DP = "
            f"coba_counts_dp, heap = coba_counts_heap (Algorithm 1), vectorised default = "
            f"coba_counts (same counts) in the heap column; from "
            f"{COBA4_FILE}; the paper row is the paper's own (different hardware and code) and "
            f"is never mixed into ours." if measured is not None else
            f"{COBA4_FILE} is missing: run `python -m bench.run --table coba-table4`.")
    return [grid.table("coba-table4", "CoBA-RL Table 4: allocation time, DP vs heap-greedy "
                       "(machine-independent setting: paper row shown)", note)]


# ------------------------------------------------------------------------------ Pilot-Commit
PC_COLUMNS = {"PC": "pilot-commit", "GRPO": "grpo", "DAPO": "dapo"}


def group_size(ctx: Context) -> str:
    if ctx.summaries.empty or "group_size" not in ctx.summaries:
        return MISSING
    return ", ".join(str(g) for g in sorted(ctx.summaries["group_size"].unique()))


def pilot_commit_cost(ctx: Context) -> list[Table]:
    suffix, _ = setting_note(ctx, "pilot-commit-cost", "accuracy on our own held-out set, not "
                             "the paper's benchmark average")
    target = default_target(ctx.summaries) if ctx.target is None else float(ctx.target)
    grid = Grid(["Config", "n", "PC", "GRPO", "DAPO", "vs GRPO", "vs DAPO"])
    row = f"{ctx.preset} (target {target:.3f})" if not np.isnan(target) else ctx.preset
    grid.put(row, "n", group_size(ctx))
    means = {}
    for column, method in PC_COLUMNS.items():
        if np.isnan(target) or ctx.curves.empty:
            grid.put(row, column, MISSING)
            means[column] = float("nan")
            continue
        reached, n = reach_costs(ctx.curves, method, FULL, target)
        text, mean, half = cost_cell(reached, n, "rollouts") if n else (MISSING, np.nan, np.nan)
        grid.put(row, column, "—" if text == NEVER else text, mean, half, len(reached))
        means[column] = mean
    for column, base in (("vs GRPO", "GRPO"), ("vs DAPO", "DAPO")):
        grid.put(row, column, ratio_text(means[base], means["PC"]),
                 means[base] / means["PC"] if means["PC"] else float("nan"))
    source = "--target" if ctx.target is not None else \
        "GRPO (b = 1)'s mean over its last three evaluations, mean over seeds"
    note = (f"Cells: cumulative rollouts (ours: raw counts; the paper's are millions) at the first "
            f"evaluation with held-out mean@k ≥ target ({source}), mean ± 95% t-interval over the "
            f"seeds that reached it, (k/n) when only k of n did; — = never reached (or not run). vs GRPO / vs "
            f"DAPO = their rollouts to target / Pilot-Commit's (> 1: Pilot-Commit is cheaper).")
    return [grid.table("pilot-commit-cost", f"Pilot-Commit: cumulative rollouts to target — "
                       f"{suffix}", note)]


def pilot_commit_figure(ctx: Context):
    from bench.plots import accuracy_vs_cost
    target = default_target(ctx.summaries) if ctx.target is None else float(ctx.target)
    return accuracy_vs_cost(ctx.curves, "cum_rollouts", target=target,
                            methods=set(PC_COLUMNS.values()), budgets=[FULL],
                            title="Pilot-Commit Fig. 1 layout: held-out accuracy vs cumulative "
                                  "rollouts\n(mean over seeds, band = 95% t-interval; dashed = target)")


# ------------------------------------------------------------------------------ Knapsack-RL
KNAPSACK_ROWS = {"GRPO": "grpo", "Knapsack-RL": "knapsack"}
WINDOWS = 5


def step_windows(steps: pd.DataFrame) -> list[np.ndarray]:
    all_steps = np.array(sorted(steps["step"].unique())) if not steps.empty else np.zeros(0)
    return [w for w in np.array_split(all_steps, min(WINDOWS, len(all_steps))) if len(w)] \
        if len(all_steps) else []


def window_means(steps: pd.DataFrame, method: str, windows) -> dict[int, list[float]]:
    """Per seed: mean effective ratio in each window (None where the seed has no step there)."""
    cell = cell_runs(steps, method, FULL)
    out = {}
    for seed, runs in cell.groupby("seed", sort=True):
        out[int(seed)] = [float(runs[runs["step"].isin(w)]["effective_ratio"].mean())
                          if runs["step"].isin(w).any() else float("nan") for w in windows]
    return out


def knapsack_effective(ctx: Context) -> list[Table]:
    suffix, _ = setting_note(ctx, "knapsack-effective", "our own tasks and policy")
    windows = step_windows(ctx.steps)
    labels = [f"step {w[0]}" if len(w) == 1 else f"steps {w[0]}–{w[-1]}" for w in windows]
    grid = Grid(["Method"] + labels + ["all steps"])
    per_method = {}
    for row, method in KNAPSACK_ROWS.items():
        per_seed = window_means(ctx.steps, method, windows + [np.concatenate(windows)]) \
            if windows else {}
        per_method[method] = per_seed
        for i, label in enumerate(labels + ["all steps"]):
            values = [v[i] for v in per_seed.values()]
            mean, half = t_interval(values)
            grid.put(row, label, fmt(mean, half, 2), mean, half, len(values))
    seeds = sorted(set(per_method["grpo"]) & set(per_method["knapsack"]))
    row = "Knapsack-RL − GRPO (paired by seed)"
    for i, label in enumerate(labels + ["all steps"]):
        diffs = [per_method["knapsack"][s][i] - per_method["grpo"][s][i] for s in seeds]
        mean, half = t_interval(diffs)
        text = MISSING if np.isnan(mean) else f"{mean:+.2f}" + (
            f" ± {half:.2f}" if not np.isnan(half) else "")
        grid.put(row, label, text, mean, half, len(diffs))
    note = ("Cell: fraction of trained groups with a non-zero advantage (effective-gradient "
            "ratio), averaged over the steps of the window per seed, then mean ± 95% t-interval "
            "over seeds; b = 1. The paper reports this as a curve over iterations.")
    return [grid.table("knapsack-effective", f"Knapsack-RL: effective-gradient ratio over training "
                       f"— {suffix}", note)]


def knapsack_figure(ctx: Context):
    from bench.plots import effective_ratio_plot
    steps = ctx.steps[np.isclose(ctx.steps["budget"], FULL)] if not ctx.steps.empty else ctx.steps
    return effective_ratio_plot(steps, methods=set(KNAPSACK_ROWS.values()))


# ------------------------------------------------------------------------------ registry
# preset names that are a paper's own setting (its paper numbers may then be shown)
PAPER_SETTINGS: dict[str, tuple[str, ...]] = {
    "duet-fig1": ("qwen3-1.7b-math",),
}

PAPER_TABLES: dict[str, PaperTable] = {t.name: register(t) for t in [
    PaperTable("duet-fig1", "DUET Fig. 1: (a) accuracy at 100/50/25% budget, (b) full-budget "
               "bars incl. no-RL baseline and DUET at 50%, (c) speed-up vs GRPO",
               ("grpo", "dapo", "arrol", "vip", "duet"), (FULL, HALF, QUARTER),
               duet_fig1, figure=duet_fig1_figure),
    PaperTable("coba-table1", "CoBA-RL Table 1: GRPO, Knapsack-RL, CoBA-RL; per-bucket accuracy "
               "+ Avg, Δ vs GRPO", ("grpo", "knapsack", "coba"), (FULL,), coba_table1),
    PaperTable("coba-table3", "CoBA-RL Table 3: fixed exploit/explore shapes, linear decay, CoBA-RL",
               ("coba-fixed-exploit", "coba-fixed-explore", "coba-linear", "coba"), (FULL,),
               coba_table3),
    PaperTable("coba-table4", "CoBA-RL Table 4: allocation time, DP vs heap-greedy at M=512, "
               "B_total=8192 (no training), beside the paper's 115.05 s / 0.124 s",
               (), (), coba_table4, measure=measure_coba_table4),
    PaperTable("pilot-commit-cost", "Pilot-Commit: cumulative rollouts to target accuracy for "
               "pilot-commit, grpo, dapo with vs-GRPO / vs-DAPO ratios",
               ("pilot-commit", "grpo", "dapo"), (FULL,), pilot_commit_cost,
               figure=pilot_commit_figure),
    PaperTable("knapsack-effective", "Knapsack-RL: effective-gradient ratio by step window, grpo "
               "vs knapsack (table + plot)", ("grpo", "knapsack"), (FULL,), knapsack_effective,
               figure=knapsack_figure),
]}


def get_table(name: str) -> PaperTable:
    if name not in PAPER_TABLES:
        raise KeyError(f"unknown table {name!r}; known: {', '.join(PAPER_TABLES)} "
                       f"(--table list describes them)")
    return PAPER_TABLES[name]


def list_tables() -> str:
    return "\n".join(f"  {t.name:20s} {t.summary}" for t in PAPER_TABLES.values())


def render(name: str, ctx: Context) -> list[Table]:
    return get_table(name).render(ctx)
