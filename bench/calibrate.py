"""``python -m bench.calibrate --preset NAME --seeds 0,1,2``: can this testbed see a difference?

A benchmark may report "no method beats GRPO" only after showing it would have seen one
(docs/DESIGN.md §Evaluation).  This command runs, through the sweep machinery of ``bench.run`` (same run
directories, same executors, finished runs reused, unfinished ones resumed):

    GRPO at b = 1 and b = 0.5, ``oracle`` and ``anti-oracle`` at b = 0.5 (allocators/controls.py)
    and, with ``--with-duet``, ``duet-abort`` at b = 1 (uniform counts + DUET's stop rule),

then judges four criteria, each paired by seed on the curve-average accuracy (``bench.stats``)
with its two-sided 95% Student-t interval, against the thresholds the preset's testbed declares
(``trainer.testbeds.Gate``; the defaults shown):

    learning            GRPO (b=1) curve average − its step-0 accuracy      mean >= 0.10
    budget sensitivity  GRPO (b=1) − GRPO (b=0.5)                           > 0, interval excl. 0
                        (token protocol: GRPO (b=1) accuracy at T − at T/2: at equal T,
                        b = 0.5 is not less budget, only smaller steps)
    headroom            oracle − GRPO, b = 0.5                               > 0, interval excl. 0
                        (a testbed may name more budgets, ``Gate.headroom_budgets``: GRPO
                        and the oracle run at each, and the criterion passes at any of them;
                        and another control as its oracle, ``Gate.oracle``: ``leg-facts``
                        gates ``screening-oracle``, which picks from 4 M candidates, and
                        reports the plain oracle's headroom beside it)
    negative control    GRPO − anti-oracle, b = 0.5                          > 0, interval excl. 0

(a testbed may ask a paired criterion for a larger mean too: ``mean >= m, interval excl. 0``).
Without ``--seeds`` it runs seeds 0..K-1, K the testbed's ``Gate.seeds``: the count at which its
gate passes robustly.  For each paired criterion the table also gives the seed count at which,
at the mean and SD of the paired differences observed, the interval would exclude 0 with 80%
power (``bench.stats.seeds_for_power``), so that K is a computed number, not one lucky draw.

and prints the regime diagnostics each method family needs, with their targets (reported, not
gating): zero-variance group fraction under GRPO b=1 (0.3–0.7), pool epochs over the run (>= 4),
within-prompt SD of response length relative to the mean (>= 0.15), truncation in the hardest
bucket (the one with the lowest step-0 accuracy; 5–20%), and the share of tokens DUET's stop
rule cuts at b = 1, ``1 − tokens(duet-abort) / tokens(GRPO)`` paired by seed (both draw the same
rollout count; >= 20%).  That last one needs ``duet-abort`` at b = 1: it is read whenever the
directory has it, and run only with ``--with-duet`` (three more runs; the gate itself does not
need them).  Then, per run of the gate, where the budget went (:mod:`bench.regime`): the share of
generated rows given to the hardest bucket, the share of its prompts with a first positive and
the effective-gradient ratio, each over the first and the last third of training.

Writes ``calibration.md`` and ``calibration.csv`` beside the runs (and the usual tables.md), prints
the table, and exits 1 when any criterion fails (2 on bad input), 0 when all pass.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bench.overrides import ConfigError, run_options
from bench.presets import DEFAULT_PRESET, PRESETS, get_preset
from bench.regime import hardest_bucket, load_spend, spend_table
from bench.report import build, update_sweep_file
from bench.run import (HelpFormatter, UsageError, add_override_arguments, configure, execute,
                       locked, parse_ints)
from bench.stats import t_interval
from bench.stats import interval_power, seeds_for_power
from bench.tables import (MISSING, SweepError, Table, cell_runs, load_summaries,
                          paired_differences)
from trainer.testbeds import Gate, testbed_of
from trainer.spec import RunError, RunSpec, check_run_dir, validate_spec
from trainer.rundir import atomic_write_text, read_json, read_jsonl

POWER = 0.8
RUNS = (("grpo", 1.0), ("grpo", 0.5), ("oracle", 0.5), ("anti-oracle", 0.5))
DUET_RUN = ("duet-abort", 1.0)
METRIC = "curve_accuracy"


def gate_runs(gate: Gate) -> list[tuple[str, float]]:
    """:data:`RUNS` plus GRPO and the gate's oracle at each further budget the gate measures
    headroom at; a gate whose oracle is not ``oracle`` (``leg-facts``: ``screening-oracle``)
    runs it beside the plain oracle at each of those budgets, so that the table can say what
    allocation within the step's own candidates would gain there too."""
    runs = list(RUNS)
    for b in gate.headroom_budgets:
        for run in (("grpo", b), ("oracle", b), (gate.oracle, b)):
            if run not in runs:
                runs.append(run)
    return runs


@dataclass
class Criterion:
    name: str
    what: str
    mean: float
    half: float
    n: int
    threshold: str
    passed: bool
    sd: float = float("nan")          # of the paired differences (nan for learning)
    power_seeds: int | None = None    # seeds for 80% power at the observed mean and SD
    paired: bool = True

    def power_text(self) -> str:
        if not self.paired:
            return "—"
        if np.isnan(self.sd):
            return MISSING
        return str(self.power_seeds) if self.power_seeds is not None else "never (mean <= 0)"

    def row(self) -> dict:
        interval = (f"[{self.mean - self.half:+.3f}, {self.mean + self.half:+.3f}]"
                    if not np.isnan(self.half) else MISSING)
        return {"criterion": self.name, "measured": (f"{self.mean:+.3f}" if not np.isnan(self.mean)
                                                     else MISSING),
                "95% interval": interval, "seeds": str(self.n), "threshold": self.threshold,
                "result": "pass" if self.passed else "FAIL",
                "paired SD": MISSING if np.isnan(self.sd) else f"{self.sd:.4f}",
                f"seeds for {POWER:.0%} power": self.power_text(), "what": self.what}


@dataclass
class Diagnostic:
    name: str
    value: float
    low: float
    high: float
    note: str = ""

    @property
    def in_range(self) -> bool | None:
        return None if np.isnan(self.value) else bool(self.low <= self.value <= self.high)

    def target(self) -> str:
        return f">= {self.low:g}" if np.isinf(self.high) else f"{self.low:g}–{self.high:g}"

    def row(self) -> dict:
        status = {None: "not measured", True: "in range", False: "off target"}[self.in_range]
        return {"diagnostic": self.name,
                "measured": MISSING if np.isnan(self.value) else f"{self.value:.3f}",
                "target": self.target(), "status": status, "note": self.note}


# ------------------------------------------------------------------------------ the gate
def _paired(df, a, b, column=METRIC) -> np.ndarray:
    return paired_differences(df, *a, *b, column=column) if not df.empty else np.zeros(0)


# a t interval needs two values: the fewest seeds with which every criterion can pass
MIN_SEEDS = 2


def _excludes_zero(name, what, diffs, minimum: float = 0.0) -> Criterion:
    mean, half = t_interval(diffs)
    passed = (len(diffs) >= MIN_SEEDS and not np.isnan(half) and mean - half > 0
              and mean >= minimum)
    threshold = ("> 0" if minimum <= 0 else f">= {minimum:g}") + ", interval excl. 0"
    finite = np.asarray(diffs, dtype=float)
    finite = finite[~np.isnan(finite)]
    sd = float(np.std(finite, ddof=1)) if len(finite) >= MIN_SEEDS else float("nan")
    return Criterion(name, what, mean, half, len(diffs), threshold, passed, sd,
                     seeds_for_power(mean, sd, POWER))


def token_budget_gains(sweep_dir: Path, seeds=None) -> np.ndarray | None:
    """Token protocol: per seed, GRPO at b = 1's accuracy at T minus its accuracy at T / 2
    (linear between evaluations); None for a per-step sweep.  At equal T, GRPO at b = 0.5 is
    not a smaller budget (it spends the same T in more steps), so "does more budget help" is
    asked of the budget T itself."""
    from bench.equal_compute import UNIT_COLUMNS, load_budget_runs
    runs = load_budget_runs(sweep_dir)
    if runs.empty:
        return None
    grpo = runs.sweep()
    grpo = grpo[(grpo["method"] == "grpo") & np.isclose(grpo["budget"], 1.0) & grpo["reached"]]
    if seeds is not None:
        grpo = grpo[grpo["seed"].isin(list(seeds))]
    curves = runs.curves[(runs.curves["source"] == "sweep") & (runs.curves["method"] == "grpo")
                         & np.isclose(runs.curves["budget"], 1.0)]
    gains = []
    for row in grpo.itertuples():
        curve = curves[curves["seed"] == row.seed]
        x = curve[UNIT_COLUMNS[row.budget_unit]].to_numpy(float)
        half = float(np.interp(row.budget_total / 2, x, curve["mean_at_k"].to_numpy(float)))
        gains.append(row.acc_at_T - half)
    return np.array(gains, dtype=float)


def criteria(summaries: pd.DataFrame, budget_gains: np.ndarray | None = None,
             gate: Gate = Gate()) -> list[Criterion]:
    """The four gate criteria from a sweep's summaries (``curve_accuracy`` column) against
    ``gate``'s thresholds; under the token protocol budget sensitivity is ``budget_gains``
    (:func:`token_budget_gains`)."""
    if summaries.empty:
        gains = np.zeros(0)
    else:
        grpo = cell_runs(summaries, "grpo", 1.0)
        gains = (grpo[METRIC] - grpo["initial_accuracy"]).to_numpy(dtype=float)
    mean, half = t_interval(gains)
    learning = Criterion("learning", "GRPO b=1 curve average − step-0 accuracy", mean, half,
                         len(gains), f">= {gate.learning:.2f}",
                         len(gains) > 0 and mean >= gate.learning, paired=False)
    return [learning,
            _excludes_zero("budget sensitivity", "GRPO b=1 − GRPO b=0.5",
                           _paired(summaries, ("grpo", 1.0), ("grpo", 0.5)),
                           gate.budget_sensitivity)
            if budget_gains is None else
            _excludes_zero("budget sensitivity", "GRPO b=1 accuracy at T − at T/2 (token "
                           "protocol)", budget_gains, gate.budget_sensitivity),
            headroom(summaries, gate),
            _excludes_zero("negative control", "GRPO − anti-oracle, b=0.5",
                           _paired(summaries, ("grpo", 0.5), ("anti-oracle", 0.5)),
                           gate.negative_control)]


def headroom(summaries: pd.DataFrame, gate: Gate) -> Criterion:
    """Oracle − GRPO at each of the gate's headroom budgets; the criterion is the first budget
    at which it passes (else the first budget), and its text names the others' results, so
    that a pass at one budget never hides a failure at the other."""
    found = []
    for b in gate.headroom_budgets:
        c = _excludes_zero("headroom", f"{gate.oracle} − GRPO, b={b:g}",
                           _paired(summaries, (gate.oracle, b), ("grpo", b)), gate.headroom)
        found.append((b, c))
    chosen = next((c for _, c in found if c.passed), found[0][1])
    others = [_at_budget(b, c.mean, c.half) for b, c in found if c is not chosen]
    if others:
        chosen.what += f" (passes at any of b = {', '.join(f'{b:g}' for b, _ in found)}; " \
                       + "; ".join(others) + ")"
    if gate.oracle != "oracle":
        # reported, not gated: the oracle confined to the step's M candidates
        plain = [_at_budget(b, *t_interval(_paired(summaries, ("oracle", b), ("grpo", b))))
                 for b in gate.headroom_budgets]
        chosen.what += "; not gated, oracle (the step's M candidates) − GRPO: " + \
            "; ".join(plain)
    return chosen


def _at_budget(b: float, mean: float, half: float) -> str:
    return f"b={b:g}: {mean:+.3f} [{mean - half:+.3f}, {mean + half:+.3f}]"


def _grpo_dirs(sweep_dir: Path, summaries: pd.DataFrame) -> list[Path]:
    return [Path(sweep_dir) / r for r in cell_runs(summaries, "grpo", 1.0)["run"]] \
        if not summaries.empty else []


def _hardest_truncation(run_dir: Path) -> float:
    """Truncated share of rows in the bucket with the lowest step-0 held-out accuracy."""
    summary = read_json(run_dir / "summary.json")
    truncation = summary.get("truncation_by_bucket")
    hardest = hardest_bucket(read_jsonl(run_dir / "eval.jsonl"))
    if not truncation or hardest is None:
        return float("nan")
    return float(truncation.get(hardest, float("nan")))


def diagnostics(sweep_dir: Path, summaries: pd.DataFrame) -> list[Diagnostic]:
    runs = _grpo_dirs(sweep_dir, summaries)
    grpo = cell_runs(summaries, "grpo", 1.0) if not summaries.empty else pd.DataFrame()

    def mean_of(column):
        if grpo.empty or column not in grpo:
            return float("nan")
        return float(np.nanmean(grpo[column].to_numpy(dtype=float)))

    epochs = []
    for run_dir in runs:
        config = read_json(run_dir / "config.json")
        preset = config["run"]["preset"]
        if config.get("pool_size") and "prompts_per_step" in preset:
            # the steps the run took (under the token protocol the preset's are a reference)
            steps = read_json(run_dir / "summary.json").get("steps", preset["steps"])
            epochs.append(steps * preset["prompts_per_step"] / config["pool_size"])
    truncation = [_hardest_truncation(r) for r in runs]
    cut = np.zeros(0)
    if not summaries.empty:
        duet = cell_runs(summaries, *DUET_RUN).set_index("seed")["tokens"]
        ref = grpo.set_index("seed")["tokens"] if not grpo.empty else pd.Series(dtype=float)
        seeds = sorted(set(duet.index) & set(ref.index))
        cut = np.array([1.0 - duet[s] / ref[s] for s in seeds], dtype=float)
    return [
        Diagnostic("zero-variance groups (GRPO b=1)", mean_of("zero_variance_fraction"), 0.3, 0.7,
                   "share of trained groups whose rewards were all equal"),
        Diagnostic("pool epochs (GRPO b=1)", float(np.mean(epochs)) if epochs else float("nan"),
                   4.0, float("inf"), "steps × prompts per step / pool size"),
        Diagnostic("within-prompt length SD / mean (GRPO b=1)", mean_of("length_sd_ratio"), 0.15,
                   float("inf"), "mean SD of response length inside a group ÷ mean length"),
        Diagnostic("truncation, hardest bucket (GRPO b=1)",
                   float(np.nanmean(truncation)) if truncation and not np.all(np.isnan(truncation))
                   else float("nan"), 0.05, 0.20,
                   "rows cut at max_new_tokens in the bucket with the lowest step-0 accuracy"),
        Diagnostic("tokens cut by DUET's stop rule (b=1)",
                   float(cut.mean()) if len(cut) else float("nan"), 0.20, float("inf"),
                   f"1 − tokens(duet-abort) / tokens(GRPO), paired over {len(cut)} seed(s)"
                   if len(cut) else "needs duet-abort at b=1 (--with-duet)"),
    ]


def power_line(gate: list[Criterion], default_seeds: int | None) -> str:
    """The seed count the observed spread asks for: the largest over the paired criteria."""
    needed = [c for c in gate if c.paired and not np.isnan(c.sd)]
    if not needed:
        return "Seeds for 80% power: not computable (each paired criterion needs 2 seeds)."
    if any(c.power_seeds is None for c in needed):
        worst = ", ".join(c.name for c in needed if c.power_seeds is None)
        verdict = f"no seed count gives it: {worst} has a mean <= 0 (or needs over 1,000)"
    else:
        most = max(needed, key=lambda c: c.power_seeds)
        verdict = (f"{most.power_seeds} seeds (set by {most.name}: mean {most.mean:+.4f}, "
                   f"paired SD {most.sd:.4f} over {most.n} seeds)")
    default = ""
    if default_seeds:
        weakest = min(interval_power(c.mean, c.sd, default_seeds) for c in needed)
        default = (f"; this testbed's gate runs {default_seeds} by default (trainer.testbeds), "
                   f"where the weakest criterion's power is {weakest:.2f}")
    return (f"Seeds for every interval to exclude 0 with {POWER:.0%} power, at the means and "
            f"paired SDs observed: {verdict}{default}.")


def render(gate: list[Criterion], diags: list[Diagnostic], preset: str, seeds=(),
           default_seeds: int | None = None, spend: Table | None = None) -> str:
    passed = all(c.passed for c in gate)
    rows = pd.DataFrame([c.row() for c in gate])
    diag = pd.DataFrame([d.row() for d in diags])
    verdict = "PASS: the testbed can see these differences" if passed else \
        f"FAIL: {', '.join(c.name for c in gate if not c.passed)}"
    return "\n".join([
        f"## Calibration gate — preset `{preset}`"
        + (f", seeds {', '.join(str(int(x)) for x in seeds)}" if len(seeds) else ""), "",
        rows.to_markdown(index=False, disable_numparse=True), "",
        "Paired by seed on the curve-average held-out accuracy (trapezoid over the evaluations "
        "after step 0, normalised by their span); 95% interval = two-sided Student-t over the "
        "per-seed differences. Learning passes on its mean; the others need the whole interval "
        "above 0.", "", power_line(gate, default_seeds), "", f"**{verdict}**", "",
        "### Regime diagnostics (reported, not gating)", "",
        diag.to_markdown(index=False, disable_numparse=True), ""]
        + ([f"#{spend.markdown()}"] if spend is not None else []))


def _declared_gate(preset: str) -> Gate | None:
    """The gate the preset's testbed declares (None for a preset no testbed declares, e.g. one
    renamed by ``--set preset.name=...``: the default thresholds then apply)."""
    try:
        return testbed_of(preset).gate
    except KeyError:
        return None


def judge(sweep_dir: Path, seeds=None) -> tuple[list[Criterion], list[Diagnostic], str]:
    """Gate and diagnostics of a sweep directory's finished runs of ``seeds`` (None: every
    seed there); writes calibration.md/.csv.  ``bench.calibrate --seeds 0,1,2`` judges those
    three even in a directory that holds more, so that the gate printed is the one asked for."""
    summaries = load_summaries(sweep_dir)
    if seeds is not None and not summaries.empty:
        summaries = summaries[summaries["seed"].isin(list(seeds))]
    names = sorted(summaries["preset"].astype(str).unique()) if not summaries.empty else []
    declared = _declared_gate(names[0]) if len(names) == 1 else None
    gate = criteria(summaries, token_budget_gains(sweep_dir, seeds), declared or Gate())
    diags = diagnostics(sweep_dir, summaries)
    preset = ", ".join(names) if names else "(no runs)"
    judged = sorted(summaries["seed"].unique()) if not summaries.empty else []
    spend = load_spend(sweep_dir)
    if seeds is not None and not spend.empty:
        spend = spend[spend["seed"].isin(list(seeds))]
    text = render(gate, diags, preset, judged, declared.seeds if declared else None,
                  spend_table(spend))
    atomic_write_text(Path(sweep_dir) / "calibration.md", text)
    records = [{"kind": "criterion", "name": c.name, "value": c.mean, "ci95": c.half,
                "seeds": c.n, "target": c.threshold, "passed": c.passed, "sd": c.sd,
                "power_seeds": c.power_seeds} for c in gate]
    records += [{"kind": "diagnostic", "name": d.name, "value": d.value, "ci95": float("nan"),
                 "seeds": float("nan"), "target": d.target(), "passed": d.in_range}
                for d in diags]
    atomic_write_text(Path(sweep_dir) / "calibration.csv",
                      pd.DataFrame(records).to_csv(index=False))
    return gate, diags, text


# ------------------------------------------------------------------------------ CLI
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.calibrate",
        description="Run GRPO at b = 1 and 0.5 and the oracle / anti-oracle controls at b = 0.5 "
                    "(finished runs reused), then print whether the testbed passes the "
                    "calibration gate (learning, budget sensitivity, headroom, negative "
                    "control) with the regime diagnostics; exit 1 when a criterion fails.",
        formatter_class=HelpFormatter)
    parser.add_argument("--preset", default=DEFAULT_PRESET,
                        help=f"run preset: {', '.join(PRESETS)} (default {DEFAULT_PRESET})")
    parser.add_argument("--seeds", default=None,
                        help="comma-separated integer seeds (intervals need at least 2; "
                             "default 0..K-1, K the preset's gate seed count: noisy-chain 5)")
    parser.add_argument("--out", default=None,
                        help="sweep directory (default: runs/<preset>-calibration); an existing "
                             "bench.run sweep of the same preset works too: its runs are reused")
    add_override_arguments(parser)
    parser.add_argument("--with-duet", action="store_true",
                        help="also run duet-abort at b = 1 for the stop-rule diagnostic (read "
                             "whenever present, run only with this flag)")
    parser.add_argument("--executor", choices=("local", "serial"), default="local",
                        help="local: runs in parallel worker processes; serial: one after "
                             "another in this process")
    parser.add_argument("--jobs", type=int, default=None,
                        help="--executor local: runs at a time (default: cores // threads)")
    parser.add_argument("--no-plots", action="store_true", help="write the tables only")
    return parser


def plan(args) -> tuple[list[RunSpec], Path]:
    preset = get_preset(args.preset)
    runs = gate_runs(_declared_gate(args.preset) or Gate())
    methods = sorted({m for m, _ in runs}) + [DUET_RUN[0]]
    preset, config = configure(preset, args, methods)
    if args.jobs is not None and (args.jobs < 1 or args.executor != "local"):
        raise UsageError("--jobs is a positive count for --executor local")
    seeds = parse_ints(args.seeds, "--seeds") if args.seeds is not None else \
        list(range(_default_seeds(args.preset)))
    if len(seeds) < MIN_SEEDS:
        # a single seed trained every run and then failed each interval criterion
        raise UsageError(f"--seeds gives {len(seeds)} seed(s); the gate's intervals need at "
                         f"least {MIN_SEEDS} (e.g. --seeds 0,1,2)")
    # seed by seed, so that an interrupted gate already has whole pairs; DUET's runs last
    order = [(m, b, s) for s in seeds for m, b in runs]
    order += [(*DUET_RUN, s) for s in seeds] if args.with_duet else []
    specs = [RunSpec(m, b, s, preset, **run_options(config, m)) for m, b, s in order]
    out = Path(args.out or f"runs/{preset.name}-calibration")
    for spec in specs:
        validate_spec(spec)
        check_run_dir(spec, out / spec.run_name())
    return specs, out


def _default_seeds(preset: str) -> int:
    gate = _declared_gate(preset)
    return gate.seeds if gate is not None else Gate().seeds


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    started = time.perf_counter()
    try:
        specs, out = plan(args)
    except (UsageError, ConfigError, RunError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyError as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 2
    return locked(out, lambda: gate_sweep(args, specs, out, started))


def gate_sweep(args, specs: list[RunSpec], out: Path, started: float) -> int:
    """Run the gate's runs into ``out`` (held by :func:`bench.run.locked`), then judge it."""
    update_sweep_file(out)
    outcome = execute(specs, out, args.executor, jobs=args.jobs)
    if outcome is None:
        return 130
    try:
        build(out, with_plots=not args.no_plots)
        gate, _, text = judge(out, sorted({spec.seed for spec in specs}))
    except SweepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(text)
    print(f"{len(outcome.summaries)}/{len(specs)} runs in {out} "
          f"({time.perf_counter() - started:.0f} s); gate in {out / 'calibration.md'}")
    if outcome.errors:
        return 2
    return 0 if all(c.passed for c in gate) else 1


if __name__ == "__main__":
    sys.exit(main())
