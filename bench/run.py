"""``python -m bench.run``: run methods x budget fractions x seeds on a preset and print tables.

Each (method, budget, seed) is an independent run directory under ``--out``; finished runs are
skipped, unfinished ones resume from their last checkpoint, so re-running a sweep only does what
is missing.  At the end the sweep's ``summary.csv`` and ``tables.md`` are (re)written from every
finished run in ``--out`` and the tables are printed.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import fields
from pathlib import Path

from tqdm.auto import tqdm

import allocators
from bench.presets import PRESETS, Preset, get_preset, with_overrides
from bench.tables import write_tables
from trainer.features import FeatureError
from trainer.loop import Run, RunError, RunSpec, check_run_dir, validate_spec
from trainer.policy import PolicyLoadError


class UsageError(Exception):
    pass


def parse_floats(text: str, what: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"{what} must be comma-separated numbers, got {text!r}") from None


def parse_ints(text: str, what: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"{what} must be comma-separated integers, got {text!r}") from None


def resolve_methods(text: str) -> list[str]:
    names = allocators.main_methods() if text == "all" else [m.strip() for m in text.split(",") if m.strip()]
    known = set(allocators.available())
    for name in names:
        if name not in known:
            raise UsageError(f"unknown method {name!r}; known: {', '.join(allocators.available())}")
    return names


def load_config_file(path: str | None) -> dict:
    """A JSON file: {"preset": {field: value}, "method_options": {method: {...}},
    "length_options": {method: {...}}}."""
    if path is None:
        return {}
    try:
        config = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UsageError(f"config file {path!r} does not exist") from None
    except json.JSONDecodeError as exc:
        raise UsageError(f"config file {path!r} is not valid JSON: {exc.msg} "
                         f"(line {exc.lineno})") from None
    if not isinstance(config, dict) or set(config) - {"preset", "method_options", "length_options"}:
        raise UsageError(f"config file {path!r} must be an object with keys among "
                         f"preset, method_options, length_options")
    valid = {f.name for f in fields(Preset)} - {"name", "description", "warm_start"}
    unknown = set(config.get("preset", {})) - valid
    if unknown:
        raise UsageError(f"config file {path!r}: unknown preset field(s) {sorted(unknown)}")
    return config


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description="Train with each rollout-allocation method at each budget fraction and seed "
                    "in the shared GRPO loop, then print the budget and speed tables.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--methods", default="all",
                        help="comma-separated method names, or 'all' for every registered method "
                             "except ablations (see --list)")
    parser.add_argument("--budgets", default="1.0,0.5",
                        help="comma-separated budget fractions b in (0, 1]: rollout methods get "
                             "round(b*M*G) rollouts per step, token methods b*M*G*mean-length tokens")
    parser.add_argument("--seeds", default="0", help="comma-separated integer seeds")
    parser.add_argument("--preset", default="tiny",
                        help=f"run preset: {', '.join(f'{k} ({v.description})' for k, v in PRESETS.items())}")
    parser.add_argument("--out", default=None,
                        help="sweep directory (default: runs/<preset>); one sub-directory per run")
    parser.add_argument("--steps", type=int, default=None, help="override the preset's training steps")
    parser.add_argument("--config", default=None,
                        help="JSON file overriding preset fields and per-method options "
                             "(keys: preset, method_options, length_options)")
    parser.add_argument("--embedding", choices=("hashed", "minilm"), default="hashed",
                        help="prompt embedding for methods that need one (VIP): minilm = the paper's "
                             "all-MiniLM-L6-v2 (extra 'embed'), hashed = deterministic n-gram hashing")
    parser.add_argument("--list", action="store_true", help="list methods and presets, then exit")
    return parser


def list_everything() -> str:
    lines = ["methods (name, length control or 'ablation' = not in --methods all):"]
    for name in allocators.available():
        cls = allocators.get(name)
        doc = (cls.__doc__ or sys.modules[cls.__module__].__doc__ or "").strip().splitlines()
        kind = "ablation" if cls.ablation else cls.length_control
        lines.append(f"  {name:20s} {kind:9s} {doc[0] if doc else ''}")
    lines.append("presets:")
    for name, preset in PRESETS.items():
        lines.append(f"  {name:20s} {preset.description}")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.list:
        print(list_everything())
        return 0
    started = time.perf_counter()
    try:
        preset = get_preset(args.preset)
        config = load_config_file(args.config)
        if config.get("preset"):
            preset = with_overrides(preset, **config["preset"])
        if args.steps is not None:
            if args.steps < 1:
                raise UsageError("--steps must be at least 1")
            preset = with_overrides(preset, steps=args.steps)
        methods = resolve_methods(args.methods)
        budgets = parse_floats(args.budgets, "--budgets")
        seeds = parse_ints(args.seeds, "--seeds")
        specs = [RunSpec(m, b, s, preset,
                         config.get("method_options", {}).get(m, {}),
                         config.get("length_options", {}).get(m, {}), args.embedding)
                 for m in methods for b in budgets for s in seeds]
        skipped = []
        for spec in list(specs):
            try:
                validate_spec(spec)
            except RunError as exc:
                # with --methods all, a method that cannot run at some budget (e.g. Pilot-Commit
                # needs round(b*G) >= 3) is reported and left out instead of blocking the sweep
                if args.methods != "all" or "unknown" in str(exc) or "outside" in str(exc):
                    raise
                specs.remove(spec)
                skipped.append(f"{spec.run_name()}: {exc}")
    except (UsageError, RunError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyError as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 2
    out = Path(args.out or f"runs/{preset.name}")
    try:
        for spec in specs:
            check_run_dir(spec, out / spec.run_name())
    except RunError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for note in skipped:
        print(f"skipped (infeasible): {note}", file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    total = len(specs) * preset.steps
    bar = tqdm(total=total, desc="sweep", unit="step", dynamic_ncols=True)
    status = {}
    try:
        for spec in specs:
            run_dir = out / spec.run_name()
            bar.set_description(f"{spec.method} b={spec.budget:g} s={spec.seed}")

            def progress(record, last_eval, _bar=bar):
                _bar.update(1)
                _bar.set_postfix(acc=f"{last_eval['mean_at_k']:.3f}", tok=record["cum_tokens"])

            before = bar.n
            run = Run(spec, run_dir, log=tqdm.write, progress=progress)
            summary = run.execute()
            bar.update(preset.steps - (bar.n - before))
            status[spec.run_name()] = summary
    except (RunError, PolicyLoadError, FeatureError) as exc:
        bar.close()
        print(f"error: {exc}", file=sys.stderr)
        _finish_tables(out, preset.name)
        return 2
    except KeyboardInterrupt:
        bar.close()
        print("interrupted: finished runs are kept; re-run the same command to resume",
              file=sys.stderr)
        return 130
    bar.close()
    print(_finish_tables(out, preset.name))
    print(f"{len(status)} runs in {out} ({time.perf_counter() - started:.0f} s); "
          f"tables in {out / 'tables.md'}")
    return 0


def _finish_tables(out: Path, preset_name: str) -> str:
    return write_tables(out, preset_name)


if __name__ == "__main__":
    sys.exit(main())
