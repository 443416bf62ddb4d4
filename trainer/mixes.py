"""The embedded task mixes' types (buckets, error rates, check rate) and their registry, free of
reasoning-gym, so that ``trainer.config`` (a warm start's key hashes its mix) and
``trainer.tasks`` (which generates the mixes' questions) both read them without a circle.

Each mix is declared by its testbed (``trainer/testbeds/<name>.py``) and registered with it;
the testbeds are imported with the ``trainer`` package itself (``trainer/__init__.py``), so the
registry is full before any module of the loop reads it.  ``trainer.tasks``'s
docstring describes how a mix's questions and worked solutions are made."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


# Conventions every embedded family's generator follows (trainer.tasks, trainer.legs):
# bucket i of a mix draws reasoning-gym items from seed base + i * BUCKET_SEED_STRIDE, and a
# miswritten number in a warm-start solution is off by one of ERROR_OFFSETS (a slip of one or
# two, or a carry error of ten).
BUCKET_SEED_STRIDE = 10_000_000
ERROR_OFFSETS = (-10, -2, -1, 1, 2, 10)


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


@dataclass(frozen=True)
class LegBucket:
    """Questions of ``animals`` animal kinds of which exactly ``hard`` are hard facts."""
    name: str
    animals: int
    hard: int = 0


@dataclass(frozen=True)
class HardFact:
    """An animal whose leg count the warm start half-knows: its worked solutions write
    ``decoy`` instead of the true count with probability ``error_rate`` (a consistent
    misconception, not noise, so the warm start samples the true count at about 1 - rate)."""
    animal: str
    decoy: int
    error_rate: float


@dataclass(frozen=True)
class LegMix:
    """A reasoning-gym ``leg_counting`` mix (``trainer.legs`` generates it): difficulty comes
    from the hard facts a question contains, not from its length."""
    name: str
    buckets: tuple[LegBucket, ...]
    hard_facts: tuple[HardFact, ...]
    max_instances: int = 9           # animals of one kind per question: 1..max_instances
    step_error_rate: float = 0.0     # warm-start solutions: chance each product or sum is miswritten
    check_rate: float = 0.0          # warm-start solutions: chance of a check line after the answer


# filled by trainer.testbeds.register, in the testbeds' discovery order
MIXES: dict[str, "TaskMix | LegMix"] = {}


def register_mix(mix: "TaskMix | LegMix") -> None:
    if MIXES.get(mix.name, mix) != mix:
        raise ValueError(f"task mix {mix.name!r} declared twice, differently")
    MIXES[mix.name] = mix


def mix_names() -> tuple[str, ...]:
    """Every declared task mix (the choices of ``Preset.task_mix``)."""
    return tuple(MIXES)


def get_mix(name: str) -> "TaskMix | LegMix":
    if name not in mix_names():
        raise KeyError(f"unknown task mix {name!r}; known: {', '.join(MIXES)}")
    return MIXES[name]


def pool_counts(train_per_bucket: int, weights: Sequence[int], mix: str) -> list[int]:
    """Training prompts per bucket of ``mix``: ``train_per_bucket`` x each weight (``weights``
    empty: 1 each).  A clear error for a weight list that does not match the mix's buckets."""
    buckets = get_mix(mix).buckets
    if not weights:
        return [train_per_bucket] * len(buckets)
    if len(weights) != len(buckets) or min(weights) < 0 or sum(weights) == 0:
        names = ", ".join(b.name for b in buckets)
        raise ValueError(f"pool_weights = {list(weights)}: the {mix} mix has {len(buckets)} "
                         f"buckets ({names}); give one weight >= 0 each, not all 0")
    return [train_per_bucket * w for w in weights]
