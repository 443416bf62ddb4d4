"""``python -m bench.warmstart``: build (or reuse) a preset's warm-start policy and report it.

The warm start itself is :func:`trainer.sft.ensure_warm_start` (cached under
``$ALLOCBENCH_CACHE``); this command names it by preset and prints the held-out accuracy per
difficulty bucket.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys

import numpy as np

from bench.presets import DEFAULT_PRESET, PRESETS, get_preset


PASS_RATE_BINS = ((0.0, 0.0, "=0"), (0.0, 0.1, "(0,.1]"), (0.1, 0.3, "(.1,.3]"),
                  (0.3, 0.7, "(.3,.7]"), (0.7, 0.9, "(.7,.9]"), (0.9, 1.0, "(.9,1)"),
                  (1.0, 1.0, "=1"))


def pass_rate_histogram(rates) -> list[tuple[str, float]]:
    """Share of prompts in each pass-rate bin: exactly 0 and exactly 1 apart (the groups that
    carry no gradient at any group size those samples stand for), then (low, high]."""
    rates = np.asarray(rates, dtype=float)
    out = []
    for low, high, label in PASS_RATE_BINS:
        if low == high:
            inside = rates == low
        else:
            inside = (rates > low) & (rates <= high) & (rates < 1.0)
        out.append((label, float(inside.mean()) if len(rates) else float("nan")))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.warmstart",
        description="Warm-start the embedded policy of a preset on worked solutions (cached), "
                    "then report its held-out accuracy per difficulty bucket.")
    parser.add_argument("--preset", default=DEFAULT_PRESET,
                        help=f"one of {', '.join(PRESETS)} (default {DEFAULT_PRESET})")
    parser.add_argument("--force", action="store_true",
                        help="retrain even if a cached or shipped copy exists")
    parser.add_argument("--ship", action="store_true",
                        help="copy the cached build, with its held-out accuracy, to "
                             "trainer/assets/warmstart/<key>/ (the copy a fresh clone uses)")
    parser.add_argument("--samples", type=int, default=4,
                        help="samples per held-out prompt for the mean@k report (default 4)")
    args = parser.parse_args(argv)
    if args.samples < 1:       # 0 samples printed an accuracy of nan
        print(f"error: --samples must be at least 1, got {args.samples}", file=sys.stderr)
        return 2
    try:
        preset = get_preset(args.preset)
    except KeyError as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 2
    if preset.warm_start is None or preset.model_dir is not None:
        print(f"error: preset {preset.name!r} loads a model directory; nothing to warm-start",
              file=sys.stderr)
        return 2
    import torch
    from trainer.evaluate import evaluate_policy
    from trainer.policy import load_policy
    from trainer.sft import ensure_warm_start, warm_start_dir
    from trainer.tasks import build_splits
    from trainer.policy import PolicyLoadError
    from trainer.sft import warm_start_hash
    path = warm_start_dir(preset.warm_start)
    previous = None
    if args.force and path.exists():
        previous = warm_start_hash(path)
        shutil.rmtree(path)
    try:
        path = ensure_warm_start(preset.warm_start, previous_hash=previous,
                                 shipped=not args.force)
    except PolicyLoadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    info = json.loads((path / "warmstart.json").read_text())
    model, tokenizer = load_policy(path)
    torch.set_num_threads(preset.warm_start.threads)
    _, held_out = build_splits(preset.warm_start.train_per_bucket,
                               preset.warm_start.eval_per_bucket, preset.warm_start.task_mix)
    result = evaluate_policy(model, tokenizer, held_out, samples=args.samples,
                             temperature=preset.temperature, max_new_tokens=preset.max_new_tokens,
                             seed=0, per_prompt=True)
    print(f"warm start {path.name}: {info['parameters']:,} parameters, "
          f"trained {info['train_seconds']} s, weights sha256 {info['weights_sha256']}")
    print(f"held-out mean@{args.samples} (T={preset.temperature}): {result['mean_at_k']:.3f}   "
          f"greedy pass@1: {result['greedy']:.3f}")
    for bucket, acc in result["buckets"].items():
        print(f"  {bucket:6s} mean@{args.samples} {acc:.3f}")
    print(f"held-out prompts by pass rate (mean@{args.samples}): "
          + "  ".join(f"{label} {share:.2f}" for label, share in
                      pass_rate_histogram(result.pop("per_prompt"))))
    if args.ship:
        from trainer.sft import ship
        target = ship(path, preset, result, args.samples, len(held_out))
        size = sum(f.stat().st_size for f in target.iterdir()) / 1e6
        print(f"shipped to {target} ({size:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
