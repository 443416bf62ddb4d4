"""``python -m bench.run``: run methods x budget fractions x seeds on a preset and print tables.

Each (method, budget, seed) is an independent run directory under ``--out``; finished runs are
skipped, unfinished ones resume from their last checkpoint, so re-running a sweep only does what
is missing.  At the end the sweep's ``summary.csv``, ``tables.md``, one CSV per table and the
plots are (re)written from every finished run in ``--out`` (:func:`bench.report.build`, which
``python -m bench.report DIR`` also runs) and the tables are printed.

Under the token protocol (the default preset's, :mod:`trainer.budget`) every run spends the same
budget T and the sweep also runs the tuned uniform baseline's grid at ``--tune-seeds`` and then
its chosen configuration at ``--seeds`` (:mod:`bench.uniform_grid`); the first table printed is
the equal-compute headline (:mod:`bench.equal_compute`).  ``--preset noisy-chain-steps`` (or
``--set preset.protocol=steps``) is the per-step protocol.

``--config FILE`` and ``--set KEY=VALUE`` change preset fields and method options, checked before
any work (:mod:`bench.overrides`); ``--log-to wandb,tensorboard`` streams each run to experiment
trackers (:mod:`trainer.tracking`).  ``--table NAME`` runs what one of the papers' tables needs
(:mod:`bench.paper_tables`) and prints it in the paper's layout; ``--executor local --jobs N``
runs independent runs in parallel worker processes (:mod:`bench.executors`).
"""
from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

# Nothing imported here loads torch, pandas or matplotlib: a bad argument is answered at once.
# The tables (bench.paper_tables, bench.report) are imported where they are used, the loop
# itself by the executors when a run starts.
import allocators
import lengthctl
from core.options import describe, plain
from bench.executors import EXECUTORS, SweepProgress
from bench.overrides import FIXED_PRESET_FIELDS, ConfigError, apply_sets, check_method_options, \
    checked_preset, load_config_file, run_options
from bench.presets import DEFAULT_PRESET, PRESETS, get_preset, with_overrides
from bench.uniform_grid import DEFAULT_SELECTION_SEEDS, in_sweep, selection_specs, spec_for
from trainer.config import Preset
from bench.sweepdir import INTERRUPTED, UsageError, locked, parse_target  # noqa: F401
from trainer.spec import (RunError, RunSpec, check_run_dir, check_task_mix, validate_preset,
                          validate_spec)
from trainer.tracking import TrackingError, check_backends
from trainer.testbeds import testbeds

if TYPE_CHECKING:
    from bench.paper_tables import PaperTable

DEFAULT_METHODS = "all"
DEFAULT_BUDGETS = "1.0,0.5"
OVERHEAD_SIZES = (64, 512)          # small sizes: the full benchmark is python -m bench.overhead




def parse_list(text: str, what: str) -> list[str]:
    """The items of a comma-separated option; an empty list is an error, never "the default"."""
    items = [x.strip() for x in text.split(",") if x.strip()]
    if not items:
        raise UsageError(f"{what} is empty; give at least one value (omit {what} for the default)")
    return items


def parse_floats(text: str, what: str) -> list[float]:
    """Numbers in order, each once (``1,1.0`` is one budget: one run, not two of the same)."""
    try:
        return list(dict.fromkeys(float(x) for x in parse_list(text, what)))
    except ValueError:
        raise UsageError(f"{what} must be comma-separated numbers, got {text!r}") from None


def parse_ints(text: str, what: str) -> list[int]:
    try:
        return list(dict.fromkeys(int(x) for x in parse_list(text, what)))
    except ValueError:
        raise UsageError(f"{what} must be comma-separated integers, got {text!r}") from None


def resolve_methods(text: str) -> list[str]:
    # each once, in order: grpo,grpo would be two runs of one directory; "all" may stand
    # beside other names ("all,oracle,anti-oracle": every contender and the controls)
    names = list(dict.fromkeys(
        name for item in parse_list(text, "--methods")
        for name in (allocators.main_methods() if item == "all" else [item])))
    for name in names:
        try:
            allocators.get(name)
        except KeyError as exc:
            raise UsageError(exc.args[0]) from None
    return names


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show defaults, except the None of options whose default depends on other options."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False or action.default in ([], ""):
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description="Train with each rollout-allocation method at each budget fraction and seed "
                    "in the shared GRPO loop (token protocol by default: every run spends the "
                    "preset's token budget T; the tuned uniform baseline's grid runs beside it), "
                    "then write and print the equal-compute headline, budget, paired-Δ, speed, "
                    "cost-to-target and diagnostics tables (tables.md, one CSV per table) and "
                    "the plots (PNG) into the sweep directory.",
        formatter_class=HelpFormatter)
    parser.add_argument("--methods", default=None,
                        help=f"comma-separated method names; 'all' stands for every registered "
                             f"method except ablations and controls (see --list), alone or "
                             f"beside others ('all,oracle,anti-oracle'); default "
                             f"{DEFAULT_METHODS!r}, or the table's methods with --table")
    parser.add_argument("--budgets", default=None,
                        help=f"comma-separated budget fractions b in (0, 1]: rollout methods get "
                             f"round(b*M*G) rollouts per step, token methods b*M*G*mean-length "
                             f"tokens; default {DEFAULT_BUDGETS}, or the table's with --table")
    parser.add_argument("--seeds", default="0", help="comma-separated integer seeds")
    parser.add_argument("--tune-seeds", default=DEFAULT_SELECTION_SEEDS,
                        help="token protocol: seeds of the tuned uniform baseline's grid "
                             "(bench.uniform_grid), which choose its configuration and must "
                             "differ from --seeds; the chosen one is then run at --seeds")
    parser.add_argument("--no-tune", action="store_true",
                        help="token protocol: leave out the tuned uniform baseline's grid (the "
                             "equal-compute headline then has GRPO at b = 1 as its only "
                             "reference)")
    parser.add_argument("--preset", default=DEFAULT_PRESET,
                        help=f"run preset: {', '.join(f'{k} ({v.description})' for k, v in PRESETS.items())}")
    parser.add_argument("--out", default=None,
                        help="sweep directory (default: runs/<preset>); one sub-directory per run")
    add_override_arguments(parser)
    parser.add_argument("--table", default=None, metavar="NAME",
                        help="run what one of the papers' tables needs (its methods and budgets, "
                             "on --preset, with --seeds, into --out) and print it in the paper's "
                             "layout; 'list' names the tables")
    parser.add_argument("--target", type=float, default=None,
                        help="target accuracy of the cost-to-target tables (default: GRPO at "
                             "b = 1's mean over its last three evaluations, mean over seeds)")
    parser.add_argument("--overhead", action="store_true",
                        help=f"also time the allocators' solvers at M in {OVERHEAD_SIZES} "
                             f"(bench.overhead, small sizes) into overhead.md/.csv and add the "
                             f"overhead table")
    parser.add_argument("--executor", choices=tuple(EXECUTORS), default="local",
                        help="local: independent runs in parallel worker processes on this "
                             "machine; serial: one run after another in this process; ray: each "
                             "run as a Ray task (extra 'dist'), see --ray-address")
    parser.add_argument("--ray-address", default=None,
                        help="--executor ray: address of a running Ray cluster (default: start "
                             "a local Ray instance)")
    parser.add_argument("--jobs", type=int, default=None,
                        help="--executor local: runs at a time (default: as many as fit, "
                             "max(1, cores // the preset's torch threads))")
    parser.add_argument("--log-to", default="", metavar="TRACKERS",
                        help="also stream each run's steps and evaluations to experiment "
                             "trackers, comma-separated: wandb (offline unless WANDB_MODE is "
                             "set; files under RUN_DIR/wandb), tensorboard (RUN_DIR/tensorboard)"
                             "; one tracker run per method x budget x seed, grouped by the "
                             "sweep directory, continued on resume (extra 'track')")
    parser.add_argument("--no-plots", action="store_true", help="write the tables only")
    parser.add_argument("--list", action="store_true",
                        help="list the methods with their options, the stop rules with "
                             "theirs, the presets and the preset fields (defaults and allowed "
                             "values), then exit")
    return parser


def _option_lines(cls, prefix: str, skip=()) -> list[str]:
    return [f"      {prefix}{name}={json.dumps(plain(default))}  {text} ({allowed})"
            for name, default, text, allowed in describe(cls, skip)]


def _parent_method(cls) -> str | None:
    """The registered method whose options ``cls``'s extend (listed once, under it)."""
    for base in cls.__mro__[1:-1]:          # not object
        if base.name and base.name != cls.name and issubclass(cls.Options, base.Options) \
                and base.Options.names():
            return base.name
    return None


ROLE = re.compile(r":[\w.]+(?::[\w.]+)?:`([^`]+)`")       # :func:`x`, :py:class:`x`
LITERAL = re.compile(r"``(.+?)``")


def _role_text(match: re.Match) -> str:
    """What Sphinx would print for a role: the title of ``title <target>``, the last part of
    ``~a.b.c``, else the target as written."""
    text = match.group(1)
    titled = re.fullmatch(r"(.+?)\s*<[^<>]+>", text)
    if titled:
        return titled.group(1)
    return text[1:].rsplit(".", 1)[-1] if text.startswith("~") else text


def summary(cls) -> str:
    """The first paragraph of the docstring of ``cls`` (else of its module) on one line, as a
    reader sees it: its first line alone stops mid-sentence when the summary wraps, and reST
    markup is noise on a terminal."""
    doc = inspect.cleandoc(cls.__doc__ or sys.modules[cls.__module__].__doc__ or "")
    first = " ".join(doc.split("\n\n")[0].split())
    return LITERAL.sub(r"\1", ROLE.sub(_role_text, first))


def add_override_arguments(parser) -> None:
    """``--steps``, ``--config`` and ``--set``: how ``bench.run`` and ``bench.calibrate`` change a
    preset and the methods' options (read by :func:`configure`)."""
    parser.add_argument("--steps", type=int, default=None, help="override the preset's training steps")
    parser.add_argument("--config", default=None,
                        help="JSON file overriding preset fields and per-method options: "
                             '{"preset": {FIELD: V}, "method_options": {METHOD: {OPTION: V}}, '
                             '"length_options": {METHOD: {OPTION: V}}, "length": {METHOD: RULE}}')
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one value, after --config (repeatable): preset.FIELD=V, "
                             "METHOD.OPTION=V (e.g. vip.embedding=hashed), method.OPTION=V "
                             "(every selected method with that option), METHOD.length=RULE or "
                             "method.length=RULE (run with another stop rule, e.g. "
                             "knapsack.length=duet), METHOD.length.OPTION=V or length.OPTION=V "
                             "(the stop rule's options); V is JSON where it parses "
                             "(3e-5, true, null, [\"a.jsonl\"]), else a string; --list shows "
                             "every field and option with its default and range")


def list_everything() -> str:
    lines = ["methods (name, own stop rule, or 'ablation' / 'control' = not in --methods all), "
             "with their options (--set METHOD.OPTION=V):"]
    for name in allocators.available():
        cls = allocators.get(name)
        kind = "ablation" if cls.ablation else "control" if cls.control else cls.default_length
        lines.append(f"  {name:20s} {kind:9s} {summary(cls)}")
        parent = _parent_method(cls)
        if parent is not None:
            inherited = allocators.get(parent).Options.names()
            more = cls.Options.names() != inherited
            lines.append(f"      (the options of {parent}{', plus:' if more else ''})")
        lines += _option_lines(cls.Options, "", inherited if parent else ())
    lines.append("stop rules (any method runs with any of them, the engine permitting: "
                 "--set METHOD.length=RULE), with their options (--set METHOD.length.OPTION=V):")
    for name in lengthctl.available():
        cls = lengthctl.get(name)
        lines.append(f"  {name:20s} {summary(cls)}")
        lines += _option_lines(cls.Options, "")
    for module, error in {**allocators.import_errors(), **lengthctl.import_errors()}.items():
        lines.append(f"  (not loaded: {module}: {error})")
    lines.append("testbeds (trainer/testbeds/) and their presets, with the seeds "
                 "bench.calibrate runs by default:")
    for testbed in testbeds():
        lines.append(f"  {testbed.name} (gate: {testbed.gate.seeds} seeds): "
                     f"{testbed.description}")
        for preset in testbed.presets:
            lines.append(f"    {preset.name:20s} {preset.description}")
    lines.append("preset fields (--set preset.FIELD=V; defaults of the dataclass, each preset "
                 "sets its own):")
    lines += _option_lines(Preset, "", FIXED_PRESET_FIELDS)     # set by --preset, not --set
    return "\n".join(lines)


@dataclass
class Plan:
    preset: Preset
    specs: list
    skipped: list
    table: PaperTable | None
    out: Path
    grid: list = field(default_factory=list)     # the tuned uniform baseline's selection runs
    seeds: list = field(default_factory=list)
    budgets: list = field(default_factory=list)


def table_methods(table: PaperTable, skipped: list) -> list[str]:
    """The table's methods that this checkout implements; the others are noted (their cells
    print —)."""
    from bench import paper_tables
    missing = paper_tables.missing_methods(table.methods)
    skipped += [f"{m}: not implemented in this harness (its cells print —)" for m in missing]
    return [m for m in table.methods if m not in missing]


def plan_sweep(args) -> Plan:
    """Every check that needs no work, raising UsageError/RunError/KeyError (one line each)."""
    # plain values first: their errors need neither the tables nor the method modules loaded
    seeds = parse_ints(args.seeds, "--seeds")
    budgets = None if args.budgets is None else parse_floats(args.budgets, "--budgets")
    table = None
    if args.table:
        from bench import paper_tables
        table = paper_tables.get_table(args.table)
    if args.jobs is not None and args.executor != "local":
        raise UsageError("--jobs applies to --executor local")
    if args.ray_address is not None and args.executor != "ray":
        raise UsageError("--ray-address applies to --executor ray")
    if args.jobs is not None and args.jobs < 1:
        raise UsageError("--jobs must be at least 1")
    if args.executor == "ray" and importlib.util.find_spec("ray") is None:
        raise UsageError("--executor ray needs Ray: pip install 'allocbench[dist]'")
    parse_target(args.target)
    preset = get_preset(args.preset)
    skipped: list[str] = []
    if table is not None and args.methods is None:
        methods = table_methods(table, skipped)
    else:
        methods = resolve_methods(DEFAULT_METHODS if args.methods is None else args.methods)
    preset, config = configure(preset, args, methods)
    if budgets is None:
        budgets = list(table.budgets) if table is not None else \
            parse_floats(DEFAULT_BUDGETS, "--budgets")
    if table is not None and not table.trains:
        methods = []                        # e.g. coba-table4: timing only, nothing trained
    try:
        log_to = check_backends(t.strip() for t in args.log_to.split(",") if t.strip())
    except TrackingError as exc:
        raise UsageError(str(exc)) from None
    specs = [RunSpec(m, b, s, preset, **run_options(config, m), log_to=log_to)
             for m in methods for b in budgets for s in seeds]
    # with --methods all or a table's own methods, a method that cannot run at some budget (e.g.
    # Pilot-Commit needs round(b*G) >= 3) is reported and left out instead of blocking the sweep
    lenient = "all" in parse_list(args.methods or DEFAULT_METHODS, "--methods") or (
        table is not None and args.methods is None)
    validate_preset(preset)         # strict whatever the methods: it is every run's problem
    check_distinct_directories(specs)
    for spec in list(specs):
        try:
            validate_spec(spec, check_preset=False)
        except RunError as exc:
            if not lenient or "unknown" in str(exc) or "outside" in str(exc):
                raise
            specs.remove(spec)
            skipped.append(f"{spec.run_name()}: {exc}")
    grid = tuning_specs(args, preset, seeds, log_to) if table is None else []
    out = Path(args.out or f"runs/{preset.name}")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {str(out)!r} is a file, not a directory")
    for spec in specs + grid:
        check_run_dir(spec, out / spec.run_name())
    return Plan(preset, specs, skipped, table, out, grid, seeds, budgets)


def tuning_specs(args, preset: Preset, seeds: list[int], log_to) -> list[RunSpec]:
    """Token protocol: the tuned uniform baseline's grid at the selection seeds
    (:mod:`bench.uniform_grid`); nothing under the per-step protocol or with ``--no-tune``."""
    if preset.protocol != "tokens" or args.no_tune:
        return []
    tune = parse_ints(args.tune_seeds, "--tune-seeds")
    shared = sorted(set(tune) & set(seeds))
    if shared:
        raise UsageError(f"--tune-seeds {shared} are also in --seeds: the tuned baseline must "
                         f"be chosen on seeds it is not compared on")
    grid = selection_specs(RunSpec("grpo", 1.0, 0, preset, log_to=log_to), tune)
    for spec in grid:
        validate_spec(spec)
    return grid


def check_distinct_directories(specs: list[RunSpec]) -> None:
    """Two runs of a sweep never share a directory (one would train, the lock would refuse the
    other): budgets that differ only past the run name's 6 significant digits are refused."""
    seen: dict[str, RunSpec] = {}
    for spec in specs:
        other = seen.setdefault(spec.run_name(), spec)
        if other is not spec:
            raise UsageError(f"budgets {other.budget!r} and {spec.budget!r} both name the run "
                             f"directory {spec.run_name()}; give budgets that differ within "
                             f"6 significant digits")


def configure(preset: Preset, args, methods: list[str]) -> tuple[Preset, dict]:
    """``preset`` and the sweep's config after ``--config``, ``--set`` and ``--steps`` (every
    value checked, one-line errors), as both ``bench.run`` and ``bench.calibrate`` read them."""
    config = apply_sets(load_config_file(args.config), args.set, methods)
    check_method_options(config, methods)
    preset = checked_preset(preset, config["preset"])
    check_task_mix(preset)
    if args.steps is not None:
        if args.steps < 1:
            raise UsageError("--steps must be at least 1")
        if preset.protocol == "tokens":
            raise UsageError(f"--steps sets the per-step protocol's length; preset "
                             f"{preset.name!r} uses the token protocol (--set "
                             f"preset.token_budget=T, or --set preset.protocol=steps)")
        preset = with_overrides(preset, steps=args.steps)
    return preset, config


def measure_overhead(out: Path, progress: SweepProgress) -> None:
    """The allocator overhead table at small sizes, into out/overhead.md and out/overhead.csv."""
    from bench.overhead import PAPER_TABLE_4, overhead_table, summary_line, to_markdown, \
        write_outputs
    progress.describe("allocator overhead")
    table = overhead_table(OVERHEAD_SIZES, repeats=3, cell_budget_s=2.0, progress=True)
    write_outputs(table, out / "overhead.md",
                  "\n".join([to_markdown(table), "", PAPER_TABLE_4, "", summary_line(table)]))


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.list:
        print(list_everything())
        return 0
    if args.table == "list":
        from bench import paper_tables
        print("paper tables (python -m bench.run --table NAME):\n" + paper_tables.list_tables())
        return 0
    started = time.perf_counter()
    try:
        plan = plan_sweep(args)
    except (UsageError, ConfigError, RunError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyError as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 2
    for note in plan.skipped:
        print(f"skipped (infeasible): {note}", file=sys.stderr)
    return locked(plan.out, lambda: sweep(args, plan, started))


def execute(specs: list[RunSpec], out: Path, executor: str, *, jobs: int | None = None,
            ray_address: str | None = None, after=None):
    """Run ``specs`` into ``out`` (held by :func:`locked`) with ``executor``, finished runs
    reused; ``after(progress)`` runs once when every run succeeded.  Prints each failed run's
    error.  Returns the executor's outcome, or None when interrupted (finished runs kept)."""
    progress = SweepProgress(specs, disable=not specs)
    try:
        outcome = EXECUTORS[executor](specs, out, progress, jobs=jobs, ray_address=ray_address)
        if not outcome.errors and after is not None:
            after(progress)
    except KeyboardInterrupt:
        progress.close()
        print(INTERRUPTED, file=sys.stderr)
        return None
    progress.close()
    for error in outcome.errors:
        print(f"error: {error}", file=sys.stderr)
    return outcome


def tuned_specs(plan: Plan) -> list[RunSpec]:
    """The selected uniform configuration at the reported seeds, once the grid's selection
    runs are done (none when the sweep's own GRPO runs are that configuration)."""
    from bench.equal_compute import load_budget_runs, select_tuned
    chosen = select_tuned(load_budget_runs(plan.out).runs).chosen
    if chosen is None or in_sweep(chosen, plan.preset, plan.budgets if any(
            s.method == "grpo" for s in plan.specs) else []):
        return []
    print(f"tuned uniform baseline: {chosen.label} (chosen on the selection seeds); running it "
          f"at seeds {', '.join(map(str, plan.seeds))}", file=sys.stderr)
    return [spec_for(chosen, seed, plan.grid[0]) for seed in plan.seeds]


def sweep(args, plan: Plan, started: float) -> int:
    """Run the plan's runs into its directory (held locked by :func:`main`), then write and
    print the tables."""
    from bench.report import build, update_sweep_file
    from bench.tables import SweepError
    out = plan.out
    try:
        update_sweep_file(out, table=plan.table.name if plan.table else None, target=args.target)
    except SweepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    def measure(progress):
        if plan.table is not None and plan.table.measure is not None:
            progress.describe(f"measuring {plan.table.name}")
            plan.table.measure(out)
        if args.overhead:
            measure_overhead(out, progress)

    outcome = execute(plan.specs + plan.grid, out, args.executor, jobs=args.jobs,
                      ray_address=args.ray_address, after=measure)
    if outcome is None:
        return 130
    if plan.grid and not outcome.errors:
        tuned = execute(tuned_specs(plan), out, args.executor, jobs=args.jobs,
                        ray_address=args.ray_address)
        if tuned is None:
            return 130
        outcome.errors += tuned.errors
        outcome.summaries.update(tuned.summaries)
    try:
        report = build(out, with_plots=not args.no_plots)
    except SweepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if outcome.errors:
        print(f"{len(outcome.errors)} run(s) failed; tables of the {len(outcome.summaries)} "
              f"finished in {out / 'tables.md'}", file=sys.stderr)
        return 2
    print(report.paper[plan.table.name] if plan.table is not None else report.text)
    print(f"{len(outcome.summaries)} runs in {out} ({time.perf_counter() - started:.0f} s); "
          f"tables in {out / 'tables.md'}" + (f", {len(report.plots)} plots" if report.plots
                                              else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
