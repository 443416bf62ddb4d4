"""The embedded task mixes' definitions (buckets, error rates, check rate), free of
reasoning-gym, so that ``trainer.config`` (a warm start's key hashes its mix) and
``trainer.tasks`` (which generates the mixes' questions) both import them without a circle.
``trainer.tasks``'s docstring describes the mixes."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Bucket:
    name: str
    terms: int
    digits: int
    step_error_rate: float = 0.0     # warm-start solutions: chance each partial sum is miswritten


@dataclass(frozen=True)
class TaskMix:
    name: str
    buckets: tuple[Bucket, ...]
    check_rate: float = 0.0          # warm-start solutions: chance of a check line after the answer
    # warm start: a bucket with fewer distinct questions than examples_per_bucket (two one-digit
    # terms: 200) repeats them, with fresh noise, so that every bucket weighs the same; without
    # it that bucket is under-learnt (noisy_chain's first build: t2 sampled 0.55 correct)
    balanced: bool = False


# Easy to hard for a ~1M-parameter policy after a few minutes of warm start.
DEFAULT_BUCKETS = (
    Bucket("t2d1", 2, 1),
    Bucket("t3d1", 3, 1),
    Bucket("t2d2", 2, 2),
    Bucket("t3d2", 3, 2),
)

# Warm-start pass rates these rates aim at (measured ones in the preset's warmstart.json):
# t2 ~0.97, t3 ~0.7, t4 ~0.35, t5 ~0.1 -- a mix of nearly always, in between and nearly never.
NOISY_BUCKETS = (
    Bucket("t2", 2, 1, 0.02),
    Bucket("t3", 3, 1, 0.15),
    Bucket("t4", 4, 1, 0.30),
    Bucket("t5", 5, 1, 0.45),
)

MIXES = {m.name: m for m in [
    TaskMix("chain_sum", DEFAULT_BUCKETS),
    TaskMix("noisy_chain", NOISY_BUCKETS, check_rate=0.5, balanced=True),
]}


def get_mix(name: str) -> TaskMix:
    if name not in MIXES:
        raise KeyError(f"unknown task mix {name!r}; known: {', '.join(MIXES)}")
    return MIXES[name]
