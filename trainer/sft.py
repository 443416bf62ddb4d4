"""Supervised warm start of the embedded policy on worked solutions, cached by its config.

:func:`ensure_warm_start` builds the character-level Qwen3 policy, trains it for a fixed number
of steps (not a fixed time, so the result is deterministic for a seed on a given thread count) on
worked ``chain_sum`` solutions drawn from their own seed range with every held-out question
removed, and caches the model under :func:`trainer.cache.cache_root` keyed by a hash of its
config.  Later runs with the same config reuse it.  ``python -m bench.warmstart [--preset tiny]``
builds it from the command line and reports its held-out accuracy per difficulty bucket.  The
sha256 of its weights is stored beside it and checked on load; ``--force`` rebuilds and reports
whether the new weights equal the old ones.

A first run should start at once, so built copies ship with the code: ``trainer/assets/
warmstart/<config key>/`` holds a warm start (safetensors weights, config, tokenizer) with
``warmstart.json`` recording its training config, the SHA-256 of its files and its held-out
accuracy when it was shipped.  On a cache miss :func:`ensure_warm_start` copies a shipped copy
whose key matches (after checking its hashes) instead of training; any preset whose config key
has a shipped copy gets it, and a changed config trains as before.  ``python -m bench.warmstart
--force`` retrains into the cache regardless; ``--ship`` then replaces the shipped copy with the
cache's build (run it after changing the default warm start, then commit the directory).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from trainer.cache import cache_root
from trainer.config import WarmStartConfig
from trainer.policy import PolicyLoadError, build_model, build_tokenizer, load_policy, save_policy
from trainer.provenance import environment, weights_sha256
from trainer.tasks import build_splits, warm_start_examples

SFT_SEED = 2_000_000_000


ASSETS = Path(__file__).resolve().parent / "assets" / "warmstart"
HASHED_FILES = ("model.safetensors", "config.json", "generation_config.json", "tokenizer.json",
                "tokenizer_config.json")


def warm_start_dir(cfg: WarmStartConfig) -> Path:
    return cache_root() / "warmstart" / cfg.key()


def _examples(cfg: WarmStartConfig, tokenizer) -> list[tuple[list[int], int]]:
    """(prompt+solution+EOS ids, prompt length) for every warm-start example."""
    _, held_out = build_splits(cfg.train_per_bucket, cfg.eval_per_bucket, cfg.task_mix)
    pairs = warm_start_examples(cfg.task_mix, cfg.examples_per_bucket, SFT_SEED,
                                frozenset(t.prompt for t in held_out),
                                lambda i: np.random.default_rng([cfg.seed, SFT_SEED, i]))
    out = []
    for prompt, solution in pairs:
        p = tokenizer(prompt)["input_ids"]
        r = tokenizer(solution)["input_ids"] + [tokenizer.eos_token_id]
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


def _write_info(path: Path, info: dict) -> None:
    # a name of this process's own: two runs starting at once may both record the hash
    tmp = path / f"warmstart.json.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(info, indent=2))
    os.replace(tmp, path / "warmstart.json")


def warm_start_hash(path: Path) -> str | None:
    """The weights hash recorded when the warm start at ``path`` was built (None: not one)."""
    info = Path(path) / "warmstart.json"
    return json.loads(info.read_text()).get("weights_sha256") if info.is_file() else None


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
                                    "`python -m bench.warmstart --force --ship`")
    import shutil
    import tempfile
    # Sweeps started side by side on a fresh cache all install the same copy at once, so each
    # copies into a directory of its own and renames it into place; the first rename wins and
    # the others find the complete copy there (a shared ".tmp" name made one of them fail).
    tmp = Path(tempfile.mkdtemp(prefix=f"{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        shutil.copytree(source, tmp, dirs_exist_ok=True)
        if path.exists() and not (path / "warmstart.json").is_file():
            shutil.rmtree(path)               # an incomplete build left by a killed process
        try:
            os.replace(tmp, path)
        except OSError:
            if not (path / "warmstart.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return True


def ensure_warm_start(cfg: WarmStartConfig, progress: bool = True, log=print,
                      previous_hash: str | None = None, shipped: bool = True) -> Path:
    """The cached warm-start directory for ``cfg``: the shipped copy on a cache miss where one
    exists (``shipped=False`` skips it), else trained first.

    The sha256 of its weights is stored beside them and checked on every load: a cached policy
    whose bytes changed is refused (:class:`PolicyLoadError`, one line).  Given ``previous_hash``
    (a rebuild), a build that comes out different says so: the same config and seed gave other
    weights, so results made with the old build will not reproduce."""
    path = warm_start_dir(cfg)
    if (path / "warmstart.json").is_file():
        info = json.loads((path / "warmstart.json").read_text())
        actual = weights_sha256(path)
        if "weights_sha256" not in info:          # built before hashes were recorded
            info["weights_sha256"] = actual
            _write_info(path, info)
        elif info["weights_sha256"] != actual:
            raise PolicyLoadError(f"warm start {path} has weights of sha256 {actual[:16]}, not "
                                  f"the {info['weights_sha256'][:16]} it was built with; "
                                  f"rebuild it (python -m bench.warmstart --force)")
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    if shipped and _install_shipped(cfg, path):
        log(f"warm start: using the shipped policy {cfg.key()} (cached at {path})")
        # through the cache-hit branch once, so that the weights' hash is recorded before the
        # first run reads it (the shipped info holds file hashes only; a fresh clone's first
        # run recorded warm_start_sha256 = None)
        return ensure_warm_start(cfg, progress, log, shipped=False)
    log(f"warm start: training the embedded policy ({cfg.steps} steps), cached at {path}")
    start = time.perf_counter()
    model, tokenizer = train_warm_start(cfg, progress)
    seconds = time.perf_counter() - start
    save_policy(model, tokenizer, path)
    digest = weights_sha256(path)
    info = {"config": asdict(cfg), "key": cfg.key(), "train_seconds": round(seconds, 1),
            "parameters": sum(p.numel() for p in model.parameters()), "weights_sha256": digest,
            "sha256": file_hashes(path), "environment": environment()}
    _write_info(path, info)
    if previous_hash is not None and previous_hash != digest:
        log(f"warning: the rebuilt warm start differs from the previous build (sha256 "
            f"{digest[:16]}, was {previous_hash[:16]}): same config and seed, other weights "
            f"-- compare the 'environment' of both builds")
    elif previous_hash is not None:
        log(f"rebuilt warm start is identical to the previous build (sha256 {digest[:16]})")
    return path


def initial_policy_dir(preset, progress: bool = False, log=print) -> Path:
    """Where a run of ``preset`` starts from: its model directory if it names one, else the
    cached warm start (trained first if absent)."""
    if preset.model_dir is not None:
        return Path(preset.model_dir)
    return ensure_warm_start(preset.warm_start, progress=progress, log=log)


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
