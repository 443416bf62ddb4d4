"""The regime a method works in: where it spends its budget, and whether its standing holds
across testbeds (issue 27).

**Where the budget went** (a standard table of every sweep whose runs record per-bucket spend,
``trainer.loop.spend_by_bucket``).  Per method and budget, mean over seeds:

* *hardest-bucket share* -- generated rows in the bucket with the lowest step-0 held-out accuracy
  over all generated rows (pilots, discarded and pruned rows included: what was charged), over
  the whole run and over its first and last third of steps (CoBA-RL's exploit-then-explore
  ordering shows as a share that rises);
* *first positives there* -- the share of that bucket's drawn prompts (per step, then averaged)
  with at least one correct row, over the first and the last third of the steps: how often a
  method finds a learning signal on the hardest prompts (Knapsack-RL's exploration claim);
* *effective ratio* -- trained groups with a non-zero advantage over all trained groups, first
  and last third: the effective-gradient ratio over training.

**The papers' regime claims** (a standard table, :func:`claims_table`, where the sweep has the
runs): Knapsack-RL's exploration of hard prompts, DUET's gap widening as the budget tightens and
CoBA-RL's exploit-then-explore ordering, each paired by seed with a verdict.

**The regime table** (``python -m bench.regime SWEEP [SWEEP ...]``, one sweep per testbed): per
method and budget, the normalised score on each testbed side by side -- the share of the oracle's
headroom the method captures, ``mean(method - GRPO) / mean(oracle - GRPO)`` paired by seed, with
its 95% paired bootstrap interval (:func:`bench.stats.normalised_score`) -- on the AUC over the
token budget for a token-protocol sweep (``bench.equal_compute``), on the curve average for a
per-step one.  A column whose oracle is not detectably above GRPO (the paired 95% t interval of
oracle − GRPO reaches 0, :func:`bench.stats.headroom_detected`) has no scores: its caption
gives the headroom and says so.  Whether a ranking holds: Kendall's tau between the testbeds' orders of the
methods both ran (``scipy.stats.kendalltau``), and per method its rank on each.  A score's
interval is wide where the oracle's headroom is small, so a rank there is read with its interval,
not alone.

**Which oracle.**  A sweep's own normalised table divides by its testbed's gate oracle
(``trainer.testbeds.Gate.oracle``): ``leg-facts`` gates ``screening-oracle``, because there the
plain oracle (the step's own candidates) has no headroom over GRPO and only choosing prompts
gains.  The regime table divides every column by one reference every sweep ran -- the screening
oracle if all ran it, else the plain one -- since shares of different references are not
comparable; with none shared it falls back to each sweep's gate oracle and says so in its
caption (``--oracle`` picks one).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.stats as sps

from bench.stats import t_interval
from bench.tables.cells import (MISSING, Table, blabel, budgets_of, fmt, method_order, row_label,
                                signed)
from bench.tables.builders import normalised_table
from bench.tables.registry import standard
from bench.tables.speedup import DeltaStats, paired_differences
from bench.tables.sweep import SweepError, _read, finished_runs, load_summaries, run_identity
from trainer.rundir import atomic_write_text, read_jsonl


# ------------------------------------------------------------------------------ per run
def hardest_bucket(evals: list[dict]) -> str | None:
    """The bucket with the lowest step-0 held-out accuracy (ties: the first name), the one
    ``bench.calibrate``'s truncation diagnostic reads too."""
    first = min(evals, key=lambda e: e["step"]) if evals else {}
    buckets = first.get("buckets") or {}
    return min(buckets, key=lambda b: (buckets[b], b)) if buckets else None


def _thirds(n: int) -> tuple[slice, slice]:
    k = max(1, n // 3)
    return slice(0, k), slice(n - k, n)


def run_spend(run_dir: Path) -> dict | None:
    """The run's hardest-bucket spend, first positives and effective ratio (None: its steps
    do not record per-bucket spend, as runs before it was recorded)."""
    steps = _read(run_dir / "metrics.jsonl", read_jsonl)
    if not steps or any("by_bucket" not in s for s in steps):
        return None
    hardest = hardest_bucket(_read(run_dir / "eval.jsonl", read_jsonl))
    if hardest is None:
        return None

    def share(records):
        rows = sum(sum(c["rows"] for c in r["by_bucket"].values()) for r in records)
        return sum(r["by_bucket"].get(hardest, {}).get("rows", 0) for r in records) / rows \
            if rows else float("nan")

    def solved(records):
        rates = [c["solved_prompts"] / c["prompts"] for c in
                 (r["by_bucket"].get(hardest) for r in records) if c and c["prompts"]]
        return float(np.mean(rates)) if rates else float("nan")

    def effective(records):
        return float(np.mean([r["effective_ratio"] for r in records]))

    early, late = _thirds(len(steps))
    return {"hardest": hardest, "share": share(steps), "share_early": share(steps[early]),
            "share_late": share(steps[late]), "solved_early": solved(steps[early]),
            "solved_late": solved(steps[late]), "effective_early": effective(steps[early]),
            "effective_late": effective(steps[late])}


def load_spend(sweep_dir: Path) -> pd.DataFrame:
    rows = []
    for run_dir in finished_runs(sweep_dir):
        spend = run_spend(run_dir)
        if spend is not None:
            rows.append({**run_identity(run_dir), **spend})
    return pd.DataFrame(rows)


SPEND_COLUMNS = (("share", "hardest share"), ("share_early", "share, first third"),
                 ("share_late", "share, last third"), ("solved_early", "first positives, first third"),
                 ("solved_late", "first positives, last third"),
                 ("effective_early", "effective ratio, first third"),
                 ("effective_late", "effective ratio, last third"))


def spend_table(spend: pd.DataFrame) -> Table | None:
    if spend.empty:
        return None
    display, data = [], []
    for method in method_order(spend["method"]):
        for b in budgets_of(spend[spend["method"] == method]):
            cell = spend[(spend["method"] == method) & np.isclose(spend["budget"], b)]
            row = {"method": row_label(method), "budget": f"{b:g}"}
            numbers = {"method": method, "budget": b, "seeds": len(cell)}
            for column, heading in SPEND_COLUMNS:
                mean, half = t_interval(cell[column].to_numpy(float))
                row[heading] = fmt(mean, half, digits=2)
                numbers[f"{column}_mean"], numbers[f"{column}_ci95"] = mean, half
            display.append(row)
            data.append(numbers)
    hardest = ", ".join(sorted(spend["hardest"].unique()))
    return Table("spend", f"Where the budget went: the hardest bucket ({hardest})",
                 pd.DataFrame(display), pd.DataFrame(data),
                 "Cells: mean ± 95% t over seeds. hardest share = generated rows in the bucket with "
                 "the lowest step-0 held-out accuracy / all generated rows (what was charged, "
                 "pilots and discarded rows included), over the run and its first / last third "
                 "of steps; first positives = share of that bucket's drawn prompts with at least "
                 "one correct row (per step, averaged over the third); effective ratio = trained "
                 "groups with a non-zero advantage / trained groups.")


# ------------------------------------------------------------------------------ papers' claims
def _verdict(stats: DeltaStats, n_needed: int = 2) -> str:
    """reproduced: the interval lies above 0; contradicted: below; else not resolved."""
    if len(stats.diffs) < n_needed or np.isnan(stats.half):
        return "not testable here (fewer than 2 paired seeds)"
    if stats.mean - stats.half > 0:
        return "reproduced"
    if stats.mean + stats.half < 0:
        return "contradicted"
    return f"not reproduced (interval spans 0; MDE {stats.mde:.3f})"


def _text(stats: DeltaStats) -> str:
    return (f"{stats.mean:+.3f} ± {stats.half:.3f} (n={len(stats.diffs)})"
            if len(stats.diffs) else MISSING)


def _paired(frame: pd.DataFrame, a: tuple, b: tuple, column: str) -> DeltaStats:
    """(method, budget) ``a`` minus ``b`` on ``column``, seed by seed; a run without a value
    there (short of T) has no pair."""
    diffs = paired_differences(frame, *a, *b, column=column)
    return DeltaStats.of(diffs[~np.isnan(diffs)])


def claims_table(sweep_dir: Path) -> Table | None:
    """The papers' regime claims this sweep can test, each with its paired numbers and a verdict:

    * Knapsack-RL explores hard prompts: at each budget, knapsack's hardest-bucket share minus
      GRPO's, and its first-positive rate there over the last third of training minus GRPO's;
    * DUET's gap widens as the budget tightens: (duet − GRPO) at the tightest budget minus
      (duet − GRPO) at b = 1, on the headline metric (token AUC, or the curve average);
    * CoBA-RL exploits, then explores: its hardest-bucket share over the last third of training
      minus over the first third."""
    spend = load_spend(sweep_dir)
    from bench.equal_compute import load_budget_runs
    budget_runs = load_budget_runs(sweep_dir)
    runs, metric = (budget_runs.sweep(), "auc") if not budget_runs.empty else \
        (load_summaries(sweep_dir), "curve_accuracy")
    if spend.empty and runs.empty:
        return None
    rows = []
    for b in (budgets_of(spend) if not spend.empty else []):
        share = _paired(spend, ("knapsack", b), ("grpo", b), "share")
        found = _paired(spend, ("knapsack", b), ("grpo", b), "solved_late")
        if len(share.diffs):
            rows.append({"claim": f"Knapsack-RL gives the hardest bucket more ({blabel(b)})",
                         "measured": f"share {_text(share)}; first positives, last third "
                                     f"{_text(found)}",
                         "verdict": _verdict(share) + " / " + _verdict(found)})
    if not runs.empty and "duet" in set(runs["method"]):
        budgets = [b for b in budgets_of(runs) if
                   ((runs["method"] == "duet") & np.isclose(runs["budget"], b)).any()]
        if len(budgets) >= 2 and np.isclose(budgets[0], 1.0):
            gaps = {b: _paired(runs, ("duet", b), ("grpo", b), metric) for b in budgets}
            widening = _paired_gap(runs, budgets[-1], budgets[0], metric)
            rows.append({"claim": "DUET's gap over GRPO widens as the budget tightens",
                         "measured": "; ".join(f"{blabel(b)} {_text(g)}"
                                               for b, g in gaps.items())
                         + f"; tightest − b=1 {_text(widening)}",
                         "verdict": _verdict(widening)})
    if not spend.empty and "coba" in set(spend["method"]):
        for b in budgets_of(spend[spend["method"] == "coba"]):
            c = spend[(spend["method"] == "coba") & np.isclose(spend["budget"], b)]
            order = DeltaStats.of((c["share_late"] - c["share_early"]).to_numpy(float))
            rows.append({"claim": f"CoBA-RL exploits, then explores ({blabel(b)})",
                         "measured": f"hardest share, last − first third {_text(order)}",
                         "verdict": _verdict(order)})
    if not rows:
        return None
    return Table("claims", "The papers' regime claims, tested on this sweep",
                 pd.DataFrame(rows), None,
                 "Paired by seed: mean ± 95% t half-width (n pairs). reproduced = the interval "
                 "lies above 0; contradicted = below; not reproduced = it spans 0 (with the "
                 f"minimum detectable effect at 80% power). Headline metric: {metric}.")


def _paired_gap(runs: pd.DataFrame, tight: float, full: float, metric: str) -> DeltaStats:
    """Per seed: (duet − GRPO) at ``tight`` minus (duet − GRPO) at ``full``."""
    def gap(b):
        d = runs[(runs["method"] == "duet") & np.isclose(runs["budget"], b)].set_index("seed")
        g = runs[(runs["method"] == "grpo") & np.isclose(runs["budget"], b)].set_index("seed")
        seeds = sorted(set(d.index) & set(g.index))
        return pd.Series({s: d.loc[s, metric] - g.loc[s, metric] for s in seeds}, dtype=float)
    a, b = gap(tight), gap(full)
    seeds = sorted(set(a.dropna().index) & set(b.dropna().index))
    return DeltaStats.of([a[s] - b[s] for s in seeds])


# ------------------------------------------------------------------------------ across testbeds
def gate_oracle(runs: pd.DataFrame) -> str:
    """The upper reference of a sweep's scores: its testbed's gate oracle (``Gate.oracle``,
    ``screening-oracle`` on ``leg-facts``) where the sweep ran it, else the plain oracle.  A
    preset no testbed declares (a user's config) has the plain oracle."""
    from trainer.testbeds import testbed_of
    ran = set(runs["method"])
    for preset in sorted(runs["preset"].astype(str).unique()):
        try:
            oracle = testbed_of(preset).gate.oracle
        except KeyError:
            continue
        if oracle in ran:
            return oracle
    return "oracle"


def scores(sweep_dir: Path, oracle: str | None = None) -> tuple[str, str, pd.DataFrame, str]:
    """(preset, metric, the normalised-score table's numbers: one row per method x budget with
    ``normalised``, its interval, and the mean Δ against GRPO and the oracle's headroom, the
    oracle): the metric is the token-budget AUC under the token protocol, the curve average per
    step; the oracle is ``oracle`` if given, else :func:`gate_oracle`."""
    return _scores(sweep_dir, *_loaded(sweep_dir), oracle)


def _loaded(sweep_dir: Path) -> tuple[pd.DataFrame, str]:
    runs, metric = scored_runs(sweep_dir)
    if runs.empty:
        raise SweepError(f"{sweep_dir}: no finished runs")
    return runs, metric


def _scores(sweep_dir, runs, metric, oracle):
    oracle = oracle or gate_oracle(runs)
    table = normalised_table(runs, metric, oracle)
    data = table.data if table is not None and table.data is not None else pd.DataFrame()
    return ", ".join(sorted(runs["preset"].astype(str).unique())), metric, data, oracle


def common_oracle(runs: list[pd.DataFrame]) -> str | None:
    """The one reference every sweep ran, for a regime table whose columns divide by the same
    thing: the stronger one (``screening-oracle``, which may choose prompts as well as rollouts)
    if every sweep ran it, else the plain oracle if every sweep ran that; None if neither."""
    for oracle in ("screening-oracle", "oracle"):
        if all(oracle in set(r["method"]) for r in runs):
            return oracle
    return None


def scored_runs(sweep_dir: Path) -> tuple[pd.DataFrame, str]:
    """The sweep's runs and the metric its scores are on: the AUC over [0, T] under the token
    protocol, the curve average per step otherwise (the grid's runs are not the sweep's)."""
    from bench.equal_compute import load_budget_runs
    budget_runs = load_budget_runs(sweep_dir)
    if not budget_runs.empty:
        return budget_runs.sweep(), "auc"
    return load_summaries(sweep_dir), "curve_accuracy"


def _headroom_text(scores: pd.DataFrame, budget: float) -> str:
    """A column's headroom for the caption: from its most-paired row (the oracle's own seeds),
    with its interval, and "not detected" where no method there has a score."""
    rows = scores[np.isclose(scores["budget"], budget)].sort_values("pairs", ascending=False)
    first = rows.iloc[0]
    return (signed(first["headroom"], first["headroom_ci95"], int(first["pairs"]))
            + ("" if rows["normalised"].notna().any() else ", not detected: no scores"))


def regime_table(sweeps: list[Path], oracle: str | None = None) -> Table:
    """``oracle``: the reference every column divides by; None = :func:`common_oracle`, and
    where the sweeps share none, each sweep's :func:`gate_oracle` (the caption names each)."""
    runs = [_loaded(Path(s)) for s in sweeps]
    oracle = oracle or common_oracle([r for r, _ in runs])
    loaded = [_scores(s, r, metric, oracle) for s, (r, metric) in zip(sweeps, runs)]
    names = [preset for preset, _, _, _ in loaded]
    if len(set(names)) < len(names):        # two sweeps of one preset: tell them by directory
        names = [f"{n} ({Path(s).name})" for n, s in zip(names, sweeps)]
    references = [used for _, _, _, used in loaded]
    loaded = [(n, metric, df) for n, (_, metric, df, _) in zip(names, loaded)]
    budgets = sorted({b for _, _, df in loaded if not df.empty for b in df["budget"]},
                     reverse=True)
    # a column per budget a testbed ran: noisy-chain has no b = 0.25 (at G = 8 it leaves no
    # method freedom), and a column of dashes there would read as missing scores
    ran = [r["budget"].to_numpy(dtype=float) for r, _ in runs]
    columns = [(x, b) for b in budgets for x, budgets_ran in zip(loaded, ran)
               if np.isclose(budgets_ran, b).any()]
    methods = method_order({m for _, _, df in loaded if not df.empty for m in df["method"]})
    display, data, extra = [], [], []
    for method in methods:
        row = {"method": row_label(method)}
        for (name, _, df), b in columns:
            hit = df[(df["method"] == method) & np.isclose(df["budget"], b)] if not df.empty \
                else df
            key = f"{name} {blabel(b)}"
            if hit.empty or np.isnan(hit["normalised"].iloc[0]):
                row[key] = MISSING
                continue
            h = hit.iloc[0]
            interval = (f" [{h['ci95_low']:+.2f}, {h['ci95_high']:+.2f}]"
                        if not np.isnan(h["ci95_low"]) else "")
            row[key] = f"{h['normalised']:+.2f}{interval} (n={int(h['pairs'])})"
            data.append({"testbed": name, **h.to_dict()})
        display.append(row)
    for b in budgets:
        ranks = []
        for name, _, df in loaded:
            cell = df[np.isclose(df["budget"], b)] if not df.empty else df
            ranks.append(cell.set_index("method")["delta"] if not cell.empty else pd.Series())
        for i in range(len(loaded)):
            for j in range(i + 1, len(loaded)):
                common = sorted(set(ranks[i].index) & set(ranks[j].index) - {"anti-oracle"})
                if len(common) < 3:
                    continue
                tau, p = sps.kendalltau(ranks[i][common], ranks[j][common])
                extra.append(f"- {blabel(b)}: Kendall's tau between {names[i]} and {names[j]} "
                             f"over {len(common)} methods' mean Δ vs GRPO = {tau:+.2f} "
                             f"(p = {p:.2f}); ranks (1 = best): " + ", ".join(
                                 f"{m} {int(ranks[i][common].rank(ascending=False)[m])}/"
                                 f"{int(ranks[j][common].rank(ascending=False)[m])}"
                                 for m in common))
    headroom = "; ".join(
        f"{name} {blabel(b)}: {used} − GRPO {_headroom_text(df, b)}"
        for (name, _, df), used in zip(loaded, references) for b in budgets
        if not df.empty and np.isclose(df["budget"], b).any())
    reference = (f"The oracle of every column: `{references[0]}`." if len(set(references)) == 1
                 else "The oracle differs between testbeds (no control ran on all of them): " +
                 ", ".join(f"`{used}` on {name}" for (name, _, _), used in
                           zip(loaded, references)) + " -- shares of different references.")
    return Table("regime", "The regime table: share of the oracle's headroom captured, per testbed",
                 pd.DataFrame(display), pd.DataFrame(data),
                 f"{reference} "
                 "Cell: mean(method − GRPO) / mean(oracle − GRPO) at that budget, paired by seed "
                 "(token-budget AUC under the token protocol, curve average per step), [95% "
                 "paired percentile bootstrap]; 0 = GRPO, 1 = the oracle, < 0 = worse than GRPO. "
                 f"The oracle's headroom it divides by: {headroom}. Whether a rank holds:",
                 extra or ["- (fewer than three methods in common at any budget)"])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.regime",
        description="The regime table: each method's share of the oracle's headroom on every "
                    "testbed side by side, and whether its rank holds across them.")
    parser.add_argument("sweeps", nargs="+", help="sweep directories, one per testbed")
    parser.add_argument("--out", default=None, help="write the table (markdown) here too")
    parser.add_argument("--oracle", default=None,
                        help="the control every column divides by (default: screening-oracle "
                             "if every sweep ran it, else oracle if every sweep ran it, else "
                             "each testbed's gate oracle)")
    args = parser.parse_args(argv)
    missing = [s for s in args.sweeps if not Path(s).is_dir()]
    if missing:
        print(f"error: not a directory: {missing[0]}", file=sys.stderr)
        return 2
    try:
        table = regime_table([Path(s) for s in args.sweeps], args.oracle)
    except SweepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    text = table.markdown()
    print(text)
    if args.out:
        atomic_write_text(Path(args.out), text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
else:
    # the standard tables this module owns, registered by the importable module only: ``python
    # -m bench.regime`` runs this file as __main__ while bench.tables.write imports it as
    # bench.regime, a second module object.  The normalised table reads the same runs and metric
    # as the regime table, so a token-protocol sweep's tables.md scores the AUC over [0, T].
    def _normalised(ctx):
        runs, metric = scored_runs(ctx.sweep_dir)
        return normalised_table(runs, metric, gate_oracle(runs)) if not runs.empty else None

    standard("normalised", 5)(_normalised)
    standard("spend", 10)(lambda ctx: spend_table(load_spend(ctx.sweep_dir)))
    standard("claims", 11)(lambda ctx: claims_table(ctx.sweep_dir))
