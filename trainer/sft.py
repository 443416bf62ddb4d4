"""Supervised warm start of the embedded policy on worked solutions, cached by its config.

``python -m trainer.sft [--preset tiny]`` builds the character-level Qwen3 policy, trains it for a
fixed number of steps (not a fixed time, so the result is deterministic for a seed on a given
thread count) on worked ``chain_sum`` solutions drawn from their own seed range with every
held-out question removed, reports per-bucket accuracy on the held-out set, and caches the model
under ``$ALLOCBENCH_CACHE`` (default ``~/.cache/allocbench``) keyed by a hash of its config.  Later
runs with the same config reuse it.

A first run should start at once, so built copies ship with the code: ``trainer/assets/
warmstart/<config key>/`` holds a warm start (safetensors weights, config, tokenizer) with
``warmstart.json`` recording its training config, the SHA-256 of its files and its held-out
accuracy when it was shipped.  On a cache miss :func:`ensure_warm_start` copies a shipped copy
whose key matches (after checking its hashes) instead of training; any preset whose config key
has a shipped copy gets it, and a changed config trains as before.  ``python -m trainer.sft
--force`` retrains into the cache regardless; ``--ship`` then replaces the shipped copy with the
cache's build (run it after changing the default warm start, then commit the directory).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from trainer.policy import Architecture, build_model, build_tokenizer, load_policy, save_policy
from trainer.tasks import DEFAULT_BUCKETS, build_pool, build_splits

SFT_SEED = 2_000_000_000


@dataclass(frozen=True)
class WarmStartConfig:
    arch: Architecture = field(default_factory=Architecture)
    steps: int = 500
    batch: int = 64
    lr: float = 3e-3
    warmup: int = 50
    examples_per_bucket: int = 4000
    train_per_bucket: int = 400          # the RL pool sizes, so held-out questions are known
    eval_per_bucket: int = 50
    seed: int = 0
    threads: int = 2

    def key(self) -> str:
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


ASSETS = Path(__file__).resolve().parent / "assets" / "warmstart"
HASHED_FILES = ("model.safetensors", "config.json", "generation_config.json", "tokenizer.json",
                "tokenizer_config.json")


def cache_root() -> Path:
    return Path(os.environ.get("ALLOCBENCH_CACHE", Path.home() / ".cache" / "allocbench"))


def warm_start_dir(cfg: WarmStartConfig) -> Path:
    return cache_root() / "warmstart" / cfg.key()


def _examples(cfg: WarmStartConfig, tokenizer) -> list[tuple[list[int], int]]:
    """(prompt+solution+EOS ids, prompt length) for every warm-start example."""
    _, held_out = build_splits(cfg.train_per_bucket, cfg.eval_per_bucket)
    tasks = build_pool(cfg.examples_per_bucket, DEFAULT_BUCKETS, SFT_SEED,
                       exclude=frozenset(t.prompt for t in held_out))
    out = []
    for t in tasks:
        p = tokenizer(t.prompt)["input_ids"]
        r = tokenizer(t.solution)["input_ids"] + [tokenizer.eos_token_id]
        out.append((p + r, len(p)))
    return out


def _batch(examples, idx, pad_id):
    width = max(len(examples[i][0]) for i in idx)
    ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
    labels = torch.full((len(idx), width), -100, dtype=torch.long)
    attn = torch.zeros((len(idx), width), dtype=torch.long)
    for row, i in enumerate(idx):
        seq, plen = examples[i]
        ids[row, :len(seq)] = torch.tensor(seq)
        labels[row, plen:len(seq)] = torch.tensor(seq[plen:])
        attn[row, :len(seq)] = 1
    return ids, attn, labels


def train_warm_start(cfg: WarmStartConfig, progress: bool = True):
    torch.set_num_threads(cfg.threads)
    tokenizer = build_tokenizer()
    model = build_model(tokenizer, cfg.arch, cfg.seed)
    examples = _examples(cfg, tokenizer)
    rng = np.random.default_rng(cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / cfg.warmup) * (
        0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, s / cfg.steps)))))
    order = rng.permutation(len(examples))
    pos = 0
    model.train()
    bar = tqdm(range(cfg.steps), desc="warm start", disable=not progress, leave=False)
    for _ in bar:
        if pos + cfg.batch > len(order):
            order, pos = rng.permutation(len(examples)), 0
        idx = order[pos:pos + cfg.batch]
        pos += cfg.batch
        ids, attn, labels = _batch(examples, idx, tokenizer.pad_token_id)
        loss = model(input_ids=ids, attention_mask=attn, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    return model, tokenizer


def shipped_dir(cfg: WarmStartConfig) -> Path:
    return ASSETS / cfg.key()


def file_hashes(path: Path) -> dict[str, str]:
    return {name: hashlib.sha256((path / name).read_bytes()).hexdigest()
            for name in HASHED_FILES if (path / name).is_file()}


class ShippedWarmStartError(RuntimeError):
    """A shipped warm start whose files do not match their recorded hashes."""


def _install_shipped(cfg: WarmStartConfig, path: Path) -> bool:
    """Copy the shipped warm start of ``cfg`` into the cache at ``path``; False if none ships."""
    source = shipped_dir(cfg)
    if not (source / "warmstart.json").is_file():
        return False
    info = json.loads((source / "warmstart.json").read_text())
    if file_hashes(source) != info.get("sha256"):
        raise ShippedWarmStartError(f"shipped warm start {source} does not match its recorded "
                                    "SHA-256; restore it from git or rebuild with "
                                    "`python -m trainer.sft --force --ship`")
    import shutil
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(source, tmp)
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)
    return True


def ensure_warm_start(cfg: WarmStartConfig, progress: bool = True, log=print,
                      shipped: bool = True) -> Path:
    """The cached warm-start directory for ``cfg``: the shipped copy on a cache miss where one
    exists (``shipped=False`` skips it), else trained first."""
    path = warm_start_dir(cfg)
    if (path / "warmstart.json").is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    if shipped and _install_shipped(cfg, path):
        log(f"warm start: using the shipped policy {cfg.key()} (cached at {path})")
        return path
    log(f"warm start: training the embedded policy ({cfg.steps} steps), cached at {path}")
    start = time.perf_counter()
    model, tokenizer = train_warm_start(cfg, progress)
    seconds = time.perf_counter() - start
    save_policy(model, tokenizer, path)
    info = {"config": asdict(cfg), "key": cfg.key(), "train_seconds": round(seconds, 1),
            "parameters": sum(p.numel() for p in model.parameters()), "sha256": file_hashes(path)}
    tmp = path / "warmstart.json.tmp"
    tmp.write_text(json.dumps(info, indent=2))
    os.replace(tmp, path / "warmstart.json")
    return path


def initial_policy_dir(preset, progress: bool = False, log=print) -> Path:
    """Where a run of ``preset`` starts from: its model directory if it names one, else the
    cached warm start (trained first if absent)."""
    if preset.model_dir is not None:
        return Path(preset.model_dir)
    return ensure_warm_start(preset.warm_start, progress=progress, log=log)


def main(argv=None) -> int:
    from bench.presets import PRESETS, get_preset
    parser = argparse.ArgumentParser(
        prog="python -m trainer.sft",
        description="Warm-start the embedded policy of a preset on worked solutions (cached), "
                    "then report its held-out accuracy per difficulty bucket.")
    parser.add_argument("--preset", default="tiny", help=f"one of {', '.join(PRESETS)} (default tiny)")
    parser.add_argument("--force", action="store_true",
                        help="retrain even if a cached or shipped copy exists")
    parser.add_argument("--ship", action="store_true",
                        help="copy the cached build, with its held-out accuracy, to "
                             "trainer/assets/warmstart/<key>/ (the copy a fresh clone uses)")
    parser.add_argument("--samples", type=int, default=4,
                        help="samples per held-out prompt for the mean@k report (default 4)")
    args = parser.parse_args(argv)
    try:
        preset = get_preset(args.preset)
    except KeyError as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 2
    if preset.warm_start is None or preset.model_dir is not None:
        print(f"error: preset {preset.name!r} loads a model directory; nothing to warm-start",
              file=sys.stderr)
        return 2
    path = warm_start_dir(preset.warm_start)
    if args.force and path.exists():
        import shutil
        shutil.rmtree(path)
    path = ensure_warm_start(preset.warm_start, shipped=not args.force)
    info = json.loads((path / "warmstart.json").read_text())
    from trainer.evaluate import evaluate_policy
    model, tokenizer = load_policy(path)
    torch.set_num_threads(preset.warm_start.threads)
    _, held_out = build_splits(preset.warm_start.train_per_bucket, preset.warm_start.eval_per_bucket)
    result = evaluate_policy(model, tokenizer, held_out, samples=args.samples,
                             temperature=preset.temperature, max_new_tokens=preset.max_new_tokens,
                             seed=0)
    print(f"warm start {path.name}: {info['parameters']:,} parameters, "
          f"trained {info['train_seconds']} s")
    print(f"held-out mean@{args.samples} (T={preset.temperature}): {result['mean_at_k']:.3f}   "
          f"greedy pass@1: {result['greedy']:.3f}")
    for bucket, acc in result["buckets"].items():
        print(f"  {bucket:6s} mean@{args.samples} {acc:.3f}")
    if args.ship:
        target = ship(path, preset, result, args.samples, len(held_out))
        print(f"shipped to {target} ({sum(f.stat().st_size for f in target.iterdir()) / 1e6:.1f} MB)")
    return 0


def ship(path: Path, preset, result: dict, samples: int, prompts: int) -> Path:
    """Copy the warm start at ``path`` to the assets with its hashes and held-out accuracy."""
    import shutil
    info = json.loads((path / "warmstart.json").read_text())
    info["sha256"] = file_hashes(path)
    info["held_out"] = {"samples": samples, "temperature": preset.temperature,
                        "max_new_tokens": preset.max_new_tokens, "seed": 0,
                        "prompts": prompts,
                        "mean_at_k": result["mean_at_k"], "greedy": result["greedy"]}
    target = shipped_dir(preset.warm_start)
    tmp = target.with_name(target.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    for name in HASHED_FILES:
        shutil.copy2(path / name, tmp / name)
    (tmp / "warmstart.json").write_text(json.dumps(info, indent=2) + "\n")
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)
    return target


if __name__ == "__main__":
    sys.exit(main())
