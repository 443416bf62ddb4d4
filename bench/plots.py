"""Plots of a sweep directory (PNG, matplotlib's Agg canvas; no pyplot, so importing this module
never changes a notebook's backend).

Every function takes the frames of :mod:`bench.tables` (``load_summaries``, ``load_curves``,
``load_steps``) and returns a :class:`matplotlib.figure.Figure`; :func:`write_plots` saves them
all into the sweep directory.

Aggregating curves over seeds: each seed's evaluation curve (accuracy against cumulative tokens,
rollouts or training seconds) is interpolated linearly onto a common grid of 60 points from 0 to
the smallest final x among the seeds (so no seed is extrapolated past its last evaluation); the
line is the mean over seeds at each grid point and the band its 95% Student-t interval (no band
for one seed).  Per-step curves (effective-gradient ratio) are aggregated the same way on the
step axis, after a moving average over a few steps to make the trend readable.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scipy import stats as sps

from bench.tables import blabel, budgets_of, cell_runs, method_order, t_interval

GRID_POINTS = 60
COST_AXES = {"cum_tokens": "cumulative generated tokens",
             "cum_rollouts": "cumulative rollouts",
             "cum_train_seconds": "cumulative training wall-clock (s, evaluation excluded)"}
PLOT_FILES = {"cum_tokens": "acc_vs_tokens.png", "cum_rollouts": "acc_vs_rollouts.png",
              "cum_train_seconds": "acc_vs_seconds.png"}
LINESTYLES = ("-", "--", ":", "-.")
BAND_ALPHA = 0.08       # ten methods' bands overlap; lines must stay readable through them


def new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def colors_for(methods) -> dict:
    """One fixed colour per method, in table order, so every plot of a sweep agrees (tab10, or
    tab20 when there are more than ten methods, so no two methods share a colour)."""
    from matplotlib import colormaps
    ordered = method_order(methods)
    palette = colormaps["tab10" if len(ordered) <= 10 else "tab20"].colors
    return {m: palette[i % len(palette)] for i, m in enumerate(ordered)}


def select(frame: pd.DataFrame, methods=None, budgets=None) -> pd.DataFrame:
    """Rows of the given methods and budget fractions (None = all)."""
    if frame.empty:
        return frame
    keep = np.ones(len(frame), dtype=bool)
    if methods is not None:
        keep &= frame["method"].isin(list(methods)).to_numpy()
    if budgets is not None:
        keep &= np.isclose(frame["budget"].to_numpy(float)[:, None],
                           np.asarray(list(budgets), float)[None, :]).any(axis=1)
    return frame[keep]


def legend_width(frame: pd.DataFrame, axes_width: float) -> float:
    """Figure width: the axes plus room for an outside legend of one entry per (method,
    budget) (two columns past 14 entries)."""
    lines = len(frame[["method", "budget"]].drop_duplicates()) if not frame.empty else 0
    return axes_width + (2.3 if lines <= 14 else 4.6)


def outside_legend(ax) -> None:
    """Legend to the right of the axes, so it never hides a curve."""
    handles = ax.get_legend_handles_labels()[0]
    ax.legend(fontsize=7, ncol=2 if len(handles) > 14 else 1, loc="upper left",
              bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)


def budget_style(budget: float, budgets) -> str:
    order = sorted(set(budgets), reverse=True)
    return LINESTYLES[order.index(budget) % len(LINESTYLES)] if budget in order else "-"


def band(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Column-wise mean and 95% t-interval bounds of seeds x points (bounds = mean for 1 seed)."""
    mean = matrix.mean(axis=0)
    n = matrix.shape[0]
    if n < 2:
        return mean, mean, mean
    half = sps.t.ppf(0.975, n - 1) * matrix.std(axis=0, ddof=1) / np.sqrt(n)
    return mean, mean - half, mean + half


def interpolated(cell: pd.DataFrame, x: str, y: str = "mean_at_k"):
    """Common grid and per-seed interpolated y (seeds x grid), or None without usable data."""
    curves = [c.sort_values(x, kind="stable") for _, c in cell.groupby("seed", sort=True)]
    curves = [c for c in curves if len(c)]
    if not curves:
        return None
    end = min(float(c[x].max()) for c in curves)
    grid = np.linspace(0.0, end, GRID_POINTS) if end > 0 else np.zeros(1)
    values = np.stack([np.interp(grid, c[x].to_numpy(float), c[y].to_numpy(float))
                       for c in curves])
    return grid, values


def accuracy_vs_cost(curves: pd.DataFrame, x: str = "cum_tokens", *, ax=None,
                     target: float | None = None, methods=None, budgets=None,
                     title: str | None = None) -> Figure:
    """Held-out mean@k against a cumulative cost, one line per method, t bands over seeds; an
    optional dashed target line (cost-to-target).

    Without ``ax`` the figure has one panel per budget fraction, side by side with a shared
    accuracy axis: a sweep of ten methods at three budgets drawn on one axes is thirty
    overlapping lines.  Each panel keeps its own cost axis, since a quarter-budget run spends a
    quarter of the tokens; the budget-sweep plot compares budgets.  With ``ax`` every selected
    (method, budget) goes on that one axes, budgets told apart by line style."""
    colors = colors_for(curves["method"]) if not curves.empty else {}
    all_budgets = budgets_of(curves) if not curves.empty else []
    curves = select(curves, methods, budgets)
    label = COST_AXES.get(x, x)
    title = title or (f"Held-out accuracy vs {label}\n"
                      "(mean over seeds on a common grid, band = 95% t-interval)")
    if ax is not None or curves.empty or len(budgets_of(curves)) == 1:
        fig = ax.figure if ax is not None else new_figure(legend_width(curves, 6.5), 4.6)
        ax = ax or fig.add_subplot()
        draw_accuracy_lines(ax, curves, x, colors, all_budgets, target, budget_in_label=True)
        ax.set_title(title, fontsize=10)
        outside_legend(ax)
        return fig
    panel_budgets = sorted(budgets_of(curves), reverse=True)
    fig = new_figure(4.2 * len(panel_budgets) + 2.3, 4.4)
    axes = fig.subplots(1, len(panel_budgets), sharey=True, squeeze=False).ravel()
    seeds: set[int] = set()
    for panel, b in zip(axes, panel_budgets):
        seeds |= draw_accuracy_lines(panel, select(curves, None, [b]), x, colors, [b], target,
                                     budget_in_label=False)
        panel.set_title(f"budget fraction {blabel(b)}", fontsize=9)
        if panel is not axes[0]:
            panel.set_ylabel("")
    # one legend for the figure: the same methods keep the same colours in every panel
    by_label = {}
    for panel in axes:
        for handle, text in zip(*panel.get_legend_handles_labels()):
            by_label.setdefault(text, handle)
    if len(seeds) == 1:
        title = title.replace("(mean over seeds", f"(mean over {seeds.pop()} seed(s)")
    fig.suptitle(title, fontsize=10)
    axes[-1].legend(by_label.values(), by_label.keys(), fontsize=7, loc="upper left",
                    bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    return fig


def draw_accuracy_lines(ax, curves: pd.DataFrame, x: str, colors: dict, all_budgets,
                        target: float | None, budget_in_label: bool) -> set[int]:
    """The mean line and t band of every (method, budget) in ``curves`` on ``ax``; returns the
    seed counts of the lines.  ``budget_in_label`` names the budget and seed count in each
    line's label (one axes for several budgets); otherwise the label is the method alone."""
    seeds: set[int] = set()
    if curves.empty:
        ax.text(0.5, 0.5, "no finished runs", ha="center", va="center", transform=ax.transAxes)
        return seeds
    for method in method_order(curves["method"]):
        for b in budgets_of(curves[curves["method"] == method]):
            result = interpolated(cell_runs(curves, method, b), x)
            if result is None:
                continue
            grid, values = result
            mean, low, high = band(values)
            n = values.shape[0]
            seeds.add(n)
            ax.plot(grid, mean, color=colors[method], linestyle=budget_style(b, all_budgets),
                    label=f"{method} {blabel(b)} (n={n})" if budget_in_label else method)
            if n > 1:     # accuracy is bounded: clip the band to [0, 1]
                ax.fill_between(grid, np.clip(low, 0, 1), np.clip(high, 0, 1),
                                color=colors[method], alpha=BAND_ALPHA, linewidth=0)
    if target is not None and not np.isnan(target):
        ax.axhline(target, color="0.3", linestyle=(0, (4, 3)), linewidth=1,
                   label=f"target {target:.3f}")
    ax.set_xlabel(COST_AXES.get(x, x))
    ax.set_ylabel("held-out accuracy (mean@k)")
    ax.grid(alpha=0.3)
    return seeds


def budget_sweep(summaries: pd.DataFrame, *, ax=None) -> Figure:
    """Final accuracy against budget fraction, one line per method, t-interval error bars; the
    initial policy's accuracy (no RL) as a dotted line."""
    fig = ax.figure if ax is not None else new_figure(6.5, 4.4)
    ax = ax or fig.add_subplot()
    if summaries.empty:
        ax.text(0.5, 0.5, "no finished runs", ha="center", va="center", transform=ax.transAxes)
        return fig
    colors = colors_for(summaries["method"])
    budgets = sorted(summaries["budget"].unique())
    methods = method_order(summaries["method"])
    offsets = np.linspace(-0.04, 0.04, len(methods)) if len(methods) > 1 else [0.0]
    for method, offset in zip(methods, offsets):
        xs, means, halves = [], [], []
        for b in budgets:
            cell = cell_runs(summaries, method, b)["final_accuracy"]
            if len(cell):
                mean, half = t_interval(cell)
                xs.append(b * 2 ** offset)        # a small sideways shift so bars do not overlap
                means.append(mean)
                halves.append(0.0 if np.isnan(half) else half)
        means, halves = np.array(means), np.array(halves)
        # accuracy is bounded: clip the bars to [0, 1]
        yerr = np.vstack([means - np.clip(means - halves, 0, 1),
                          np.clip(means + halves, 0, 1) - means])
        ax.errorbar(xs, means, yerr=yerr, color=colors[method], marker="o", capsize=3,
                    label=method)
    initial = summaries.groupby("seed", sort=True)["initial_accuracy"].first()
    ax.axhline(float(initial.mean()), color="0.4", linestyle=":", linewidth=1,
               label="initial policy (no RL)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(budgets)
    ax.set_xticklabels([f"{b:g}" for b in budgets])
    ax.set_xlabel("budget fraction b (of uniform GRPO's per-step rollouts)")
    ax.set_ylabel("final held-out accuracy (mean@k)")
    ax.set_title("Budget sweep: final accuracy vs budget\n(mean over seeds, bars = 95% t-interval)",
                 fontsize=10)
    ax.grid(alpha=0.3)
    outside_legend(ax)
    return fig


def max_count(cell: pd.DataFrame) -> int:
    return int(max((max(c) for c in cell["counts"] if len(c)), default=1))


def count_matrix(cell: pd.DataFrame, windows: int, top: int | None = None
                 ) -> tuple[np.ndarray, list[str], int]:
    """Fraction of first-round per-prompt counts equal to c in each step window (windows x c),
    c = 0 .. top (default: the cell's largest count)."""
    steps = sorted(cell["step"].unique())
    edges = np.array_split(np.array(steps), min(windows, len(steps)))
    top = max_count(cell) if top is None else top
    matrix = np.zeros((len(edges), top + 1))
    labels = []
    for i, chunk in enumerate(edges):
        counts = [c for lst in cell[cell["step"].isin(chunk)]["counts"] for c in lst]
        if counts:
            matrix[i] = np.bincount(counts, minlength=top + 1)[: top + 1] / len(counts)
        labels.append(f"{chunk[0]}" if chunk[0] == chunk[-1] else f"{chunk[0]}–{chunk[-1]}")
    return matrix, labels, top


def count_histograms(steps: pd.DataFrame, windows: int = 8) -> Figure:
    """Small multiples, one panel per (method, budget): step window (x) x first-round rollout
    count per prompt (y), colour = fraction of the window's prompts with that count (seeds
    pooled).  Panels of one method share its count range; rows hold several methods when there
    are few budgets, so the figure stays readable with every method."""
    if steps.empty:
        fig = new_figure(4, 3)
        fig.add_subplot().text(0.5, 0.5, "no finished runs", ha="center", va="center")
        return fig
    methods = method_order(steps["method"])
    budgets = budgets_of(steps)
    panels = [(m, b) for m in methods for b in budgets]
    ncols = len(budgets) * max(1, 4 // len(budgets))
    nrows = -(-len(panels) // ncols)
    fig = new_figure(2.4 * ncols + 1.0, 1.9 * nrows + 0.6)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    tops = {m: max_count(steps[steps["method"] == m]) for m in methods}
    image = None
    for ax, (method, b) in zip(axes, panels):
        cell = cell_runs(steps, method, b)
        ax.set_title(f"{method} {blabel(b)}", fontsize=8)
        if cell.empty:
            ax.set_axis_off()
            continue
        matrix, labels, top = count_matrix(cell, windows, tops[method])
        image = ax.imshow(matrix.T, origin="lower", aspect="auto", cmap="viridis", vmin=0.0,
                          vmax=1.0, interpolation="nearest",
                          extent=(-0.5, len(labels) - 0.5, -0.5, top + 0.5))
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, fontsize=6, rotation=45)
        ax.tick_params(axis="y", labelsize=6)
        ax.yaxis.get_major_locator().set_params(integer=True)
        ax.set_ylabel("rollouts / prompt", fontsize=7)
        ax.set_xlabel("training steps", fontsize=7)
    for ax in axes[len(panels):]:
        ax.set_axis_off()
    if image is not None:
        fig.colorbar(image, ax=list(axes), shrink=0.5, label="fraction of prompts in the window")
    fig.suptitle("First-round rollouts per prompt over training (prompts with ≥ 1 rollout, "
                 "seeds pooled)", fontsize=10)
    return fig


def smoothed(values: np.ndarray, width: int) -> np.ndarray:
    """Trailing moving average (the first points average what exists so far)."""
    if width <= 1:
        return values
    cumulative = np.cumsum(np.insert(values, 0, 0.0))
    idx = np.arange(1, len(values) + 1)
    start = np.maximum(0, idx - width)
    return (cumulative[idx] - cumulative[start]) / (idx - start)


def effective_ratio_plot(steps: pd.DataFrame, *, methods=None, ax=None) -> Figure:
    """Effective-gradient ratio (fraction of trained groups with a non-zero advantage) per step,
    one line per (method, budget), t bands over seeds."""
    colors = colors_for(steps["method"]) if not steps.empty else {}
    all_budgets = budgets_of(steps) if not steps.empty else []
    steps = select(steps, methods, None)
    fig = ax.figure if ax is not None else new_figure(legend_width(steps, 6.0), 4.2)
    ax = ax or fig.add_subplot()
    if steps.empty:
        ax.text(0.5, 0.5, "no finished runs", ha="center", va="center", transform=ax.transAxes)
        return fig
    width = max(1, int(steps["step"].max() + 1) // 20)
    for method in method_order(steps["method"]):
        for b in budgets_of(steps[steps["method"] == method]):
            cell = cell_runs(steps, method, b)
            per_seed = [c.sort_values("step")["effective_ratio"].to_numpy(float)
                        for _, c in cell.groupby("seed", sort=True)]
            length = min(len(v) for v in per_seed)
            matrix = np.stack([smoothed(v[:length], width) for v in per_seed])
            mean, low, high = band(matrix)
            x = np.arange(length)
            ax.plot(x, mean, color=colors[method], linestyle=budget_style(b, all_budgets),
                    label=f"{method} {blabel(b)} (n={matrix.shape[0]})")
            if matrix.shape[0] > 1:
                ax.fill_between(x, low, high, color=colors[method], alpha=0.15, linewidth=0)
    ax.set_ylim(-0.02, 1.02)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("training step")
    ax.set_ylabel("effective-gradient ratio")
    ax.set_title("Fraction of trained groups with a non-zero gradient"
                 + (f" (moving average over {width} steps)" if width > 1 else "")
                 + "\nmean over seeds, band = 95% t-interval", fontsize=10)
    ax.grid(alpha=0.3)
    outside_legend(ax)
    return fig


def save(fig: Figure, path: Path) -> str:
    # no timestamp/software metadata, so re-drawing the same data gives the same file
    fig.savefig(path, format="png", metadata={"Software": None})
    return str(path)


def without_ablations(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows of the main methods only, when the frame has any: ablation runs (e.g. CoBA-RL
    Table 3's fixed shapes, trained for ``--table coba-table3``) have their own paper table and
    plot, and thirteen lines on one axes are unreadable.  The tables keep every run."""
    import allocators
    if frame.empty:
        return frame
    # controls stay: they are the reference lines a reader compares the contenders with
    ablations = (set(allocators.available()) - set(allocators.main_methods())
                 - set(allocators.control_methods()))
    main = ~frame["method"].isin(ablations)
    return frame[main] if main.any() else frame


def write_plots(sweep_dir: Path, summaries: pd.DataFrame, curves: pd.DataFrame,
                steps: pd.DataFrame, target: float | None = None) -> list[str]:
    """Every standard plot of a sweep, written into ``sweep_dir``; returns the paths."""
    sweep_dir = Path(sweep_dir)
    if summaries.empty:
        return []
    summaries, curves, steps = (without_ablations(frame) for frame in (summaries, curves, steps))
    paths = [save(accuracy_vs_cost(curves, x, target=target), sweep_dir / name)
             for x, name in PLOT_FILES.items()]
    paths.append(save(budget_sweep(summaries), sweep_dir / "budget_sweep.png"))
    paths.append(save(count_histograms(steps), sweep_dir / "rollout_counts.png"))
    return paths
