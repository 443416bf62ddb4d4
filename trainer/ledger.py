"""The budget ledger: planned and realised tokens and rollouts, and seconds by phase.

Every generated token is charged: pilot rollouts, groups that dynamic sampling throws away, and
aborted rollouts up to the abort point (docs/DESIGN.md §Loop).  Phases are the fixed set of docs/DESIGN.md §Budget;
training seconds (for speed-ups) are everything but ``evaluate``.  ``logprob`` holds old-policy
log-probs recomputed by the trainer's model (the vLLM engine's recompute path; the hf engine's
come with sampling, so its runs charge 0 there); ``advantage`` the group-normalised advantages.

Each phase is charged twice: wall seconds, and CPU seconds of this process plus its child
processes (the verifier pool's workers, live ones read through psutil).  On a machine shared with
other work the wall seconds absorb the load and the CPU seconds do not, so speed ratios on CPU
presets use CPU seconds; :func:`shared_machine` flags a run whose wall seconds exceed its CPU
seconds per thread by more than :data:`SHARED_RATIO`.  A phase may run inside another (the
engine's recompute inside ``generate``): its seconds are charged to it and not to the outer one.

The one exception to charging is the controls' pass-rate estimation (``trainer.estimates``):
its rollouts, tokens and seconds are kept apart under ``unbilled`` and enter no cumulative
cost, no phase and no training seconds.
"""
from __future__ import annotations

import resource
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import psutil

PHASES = ("allocate", "generate", "reward", "logprob", "advantage", "update", "evaluate", "other")
SHARED_RATIO = 1.5      # wall / (CPU / threads) above this: the run waited for the CPU


def cpu_seconds() -> float:
    """CPU seconds (user + system) of this process, its live children and its reaped ones."""
    own = time.process_time()
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = own + reaped.ru_utime + reaped.ru_stime
    try:
        for child in psutil.Process().children(recursive=True):
            try:
                times = child.cpu_times()
                total += times.user + times.system
            except psutil.Error:
                pass                       # a worker that ended meanwhile
    except psutil.Error:
        pass
    return total


def shared_machine(wall: float, cpu: float, threads: int) -> bool:
    """Whether a CPU run's wall seconds show that it shared the machine (module docstring)."""
    return cpu > 0 and wall > SHARED_RATIO * cpu / max(1, threads)


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
    cpu_seconds: dict = field(default_factory=lambda: {p: 0.0 for p in PHASES})
    step_seconds: float = 0.0     # the whole step (Ledger.step), phases or not
    step_cpu_seconds: float = 0.0


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
        self.cumulative_cpu_seconds = {p: 0.0 for p in PHASES}
        self.current = StepCharge()
        self._open: list[list[float]] = []    # per open phase: seconds of phases inside it

    def begin_step(self) -> None:
        self.current = StepCharge()

    @contextmanager
    def step(self):
        """One training step, begun here and timed whole (verl's ``marked_timer("step")``): the
        step record's ``unphased_seconds`` is what no phase and no unbilled work took, so a
        cost that escapes the phases shows instead of vanishing.  Not in training seconds."""
        self.begin_step()
        start, start_cpu = time.perf_counter(), cpu_seconds()
        try:
            yield
        finally:
            self.current.step_seconds = time.perf_counter() - start
            self.current.step_cpu_seconds = cpu_seconds() - start_cpu

    @contextmanager
    def phase(self, name: str):
        if name not in PHASES:
            raise ValueError(f"unknown ledger phase {name!r}; phases: {', '.join(PHASES)}")
        start, start_cpu = time.perf_counter(), cpu_seconds()
        inner = [0.0, 0.0]
        self._open.append(inner)
        try:
            yield
        finally:
            self._open.pop()
            wall, cpu = time.perf_counter() - start, cpu_seconds() - start_cpu
            if self._open:                 # the enclosing phase does not charge these again
                self._open[-1][0] += wall
                self._open[-1][1] += cpu
            self.charge_seconds(name, wall - inner[0], cpu - inner[1])

    def charge_seconds(self, name: str, seconds: float, cpu: float = 0.0) -> None:
        self.current.seconds[name] += seconds
        self.cumulative_seconds[name] += seconds
        self.current.cpu_seconds[name] += cpu
        self.cumulative_cpu_seconds[name] += cpu

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

    def training_cpu_seconds(self) -> float:
        return sum(v for k, v in self.cumulative_cpu_seconds.items() if k != "evaluate")

    def timing(self, threads: int, device: str = "cpu") -> dict:
        """A run's seconds: wall and CPU by phase, and which of the two its speed ratios use."""
        wall, cpu = self.training_seconds(), self.training_cpu_seconds()
        on_cpu = str(device).startswith("cpu")
        return {"train_seconds": round(wall, 3),
                **{k: round(v, 3) for k, v in self.cumulative_seconds.items()},
                "cpu_train_seconds": round(cpu, 3),
                **{f"cpu_{k}": round(v, 3) for k, v in self.cumulative_cpu_seconds.items()},
                "clock": "cpu" if on_cpu else "wall",
                "shared_machine": bool(on_cpu and shared_machine(wall, cpu, threads))}

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
            "cpu_seconds": {k: round(v, 4) for k, v in c.cpu_seconds.items()},
            "cum_train_seconds": round(self.training_seconds(), 4),
            "cum_train_cpu_seconds": round(self.training_cpu_seconds(), 4),
            "cum_seconds": {k: round(v, 4) for k, v in self.cumulative_seconds.items()},
            "unbilled": {"rollouts": c.unbilled_rollouts, "tokens": c.unbilled_tokens,
                         "seconds": round(c.unbilled_seconds, 4)},
            "step_seconds": round(c.step_seconds, 4),
            "unphased_seconds": round(c.step_seconds - sum(c.seconds.values())
                                      - c.unbilled_seconds, 4),
        }
