"""The budget ledger: planned and realised tokens and rollouts, and wall-clock by phase.

Every generated token is charged: pilot rollouts, groups that dynamic sampling throws away, and
aborted rollouts up to the abort point (DESIGN.md §3).  Phases are the fixed set of DESIGN.md §4;
training wall-clock (for speed-ups) is everything but ``evaluate``.

The one exception to charging is the controls' pass-rate estimation (``trainer.estimates``):
its rollouts, tokens and seconds are kept apart under ``unbilled`` and enter no cumulative
cost, no phase and no training seconds.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field

PHASES = ("allocate", "generate", "reward", "logprob", "update", "evaluate", "other")


@dataclass
class StepCharge:
    planned_rollouts: int = 0
    planned_tokens: float = 0.0
    rollouts: int = 0
    tokens: int = 0
    seconds: dict = field(default_factory=lambda: {p: 0.0 for p in PHASES})
    unbilled_rollouts: int = 0
    unbilled_tokens: int = 0
    unbilled_seconds: float = 0.0


class Ledger:
    # class defaults: ledgers pickled in checkpoints before these existed still load
    unbilled_rollouts = 0
    unbilled_tokens = 0
    unbilled_seconds = 0.0

    def __init__(self) -> None:
        self.cumulative_rollouts = 0
        self.cumulative_tokens = 0
        self.cumulative_planned_rollouts = 0
        self.cumulative_planned_tokens = 0.0
        self.cumulative_seconds = {p: 0.0 for p in PHASES}
        self.current = StepCharge()

    def begin_step(self) -> None:
        self.current = StepCharge()

    @contextmanager
    def phase(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.charge_seconds(name, time.perf_counter() - start)

    def charge_seconds(self, name: str, seconds: float) -> None:
        self.current.seconds[name] += seconds
        self.cumulative_seconds[name] += seconds

    def plan(self, rollouts: int, tokens: float) -> None:
        self.current.planned_rollouts += int(rollouts)
        self.current.planned_tokens += float(tokens)
        self.cumulative_planned_rollouts += int(rollouts)
        self.cumulative_planned_tokens += float(tokens)

    def charge(self, rows) -> None:
        """Charge generated rows (every row, whether or not it ends up training)."""
        n_tokens = sum(r.n_tokens for r in rows)
        self.current.rollouts += len(rows)
        self.current.tokens += n_tokens
        self.cumulative_rollouts += len(rows)
        self.cumulative_tokens += n_tokens

    def record_unbilled(self, rollouts: int, tokens: int, seconds: float) -> None:
        """Rollouts generated for the controls' estimates: counted here only, never charged."""
        self.current.unbilled_rollouts += int(rollouts)
        self.current.unbilled_tokens += int(tokens)
        self.current.unbilled_seconds += float(seconds)
        self.unbilled_rollouts += int(rollouts)
        self.unbilled_tokens += int(tokens)
        self.unbilled_seconds += float(seconds)

    def training_seconds(self) -> float:
        return sum(v for k, v in self.cumulative_seconds.items() if k != "evaluate")

    def step_record(self) -> dict:
        c = self.current
        return {
            "planned_rollouts": c.planned_rollouts,
            "planned_tokens": round(c.planned_tokens, 1),
            "rollouts": c.rollouts,
            "tokens": c.tokens,
            "cum_rollouts": self.cumulative_rollouts,
            "cum_tokens": self.cumulative_tokens,
            "cum_planned_rollouts": self.cumulative_planned_rollouts,
            "cum_planned_tokens": round(self.cumulative_planned_tokens, 1),
            "seconds": {k: round(v, 4) for k, v in c.seconds.items()},
            "cum_train_seconds": round(self.training_seconds(), 4),
            "cum_seconds": {k: round(v, 4) for k, v in self.cumulative_seconds.items()},
            "unbilled": {"rollouts": c.unbilled_rollouts, "tokens": c.unbilled_tokens,
                         "seconds": round(c.unbilled_seconds, 4)},
        }
