"""The step-0 evaluation, computed once per seed and shared by every run of a sweep.

At step 0 every method holds the same policy (the warm start) and evaluation sampling seeds
depend only on (run seed, prompt, sample), so the step-0 evaluation is the same for every method
at a seed; a sweep of 30 runs at one seed computed it 30 times (~14 CPU s each on noisy-chain).
The first run of a seed computes it and stores it in ``<sweep>/initial-evals/<key>.json``; the
others read it.  The key hashes the seed, the policy's weights hash and every preset field except
those that only training reads (:data:`TRAINING_ONLY`), so a run whose evaluation could differ
never reads another's (a field added later is in the key by default: the safe direction).  A
lock file serialises the first computation, so two runs of a seed started together compute it
once.  The record's clock fields are zero, as they are at step 0 of any run.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
from pathlib import Path

from trainer.rundir import atomic_write_json, read_json

CACHE_DIR = "initial-evals"
TRAINING_ONLY = frozenset({
    "name", "description", "prompts_per_step", "group_size", "steps", "temperature", "lr",
    "warmup_steps", "schedule", "updates_per_step", "micro_batch_rows", "grad_clip", "clip_low",
    "clip_high", "dual_clip", "kl_coef", "normalize_std", "eval_every", "checkpoint_every",
    "max_rounds", "max_rollout_weight", "score_truncated", "protocol", "token_budget",
    "budget_unit", "eval_points", "step_cap", "greedy_at"})


def cache_key(preset_dict: dict, seed: int, weights_hash: str | None) -> str:
    data = {k: v for k, v in preset_dict.items() if k not in TRAINING_ONLY}
    text = json.dumps({"preset": data, "seed": seed, "weights": weights_hash}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def shared_initial_eval(cache_root: Path, key: str, compute) -> tuple[dict, bool]:
    """(the step-0 record, whether this call computed it): read from ``cache_root`` if a run
    of the same key stored it, else ``compute()`` it and store it."""
    folder = Path(cache_root) / CACHE_DIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{key}.json"
    with open(folder / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)        # released when the file closes
        if path.is_file():
            try:
                return read_json(path), False
            except (json.JSONDecodeError, UnicodeDecodeError):
                pass                             # a torn file: compute it again
        record = compute()
        atomic_write_json(path, record)
        return record, True
