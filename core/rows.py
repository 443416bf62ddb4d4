"""The shared GRPO loop's row and statistics types (docs/DESIGN.md §Loop), at the bottom of the imports.

Rollouts are flat :class:`Rollout` rows keyed by prompt id (``pid``) and group id; nothing
assumes a fixed group size.  ``allocators`` (the methods), ``lengthctl`` (the stop rules),
``trainer`` (the loop) and ``bench`` all read these types; they live here, below both method
packages, so that neither imports the other.  Plain Python/numpy, no torch.

A row's fields that change what the loop does are typed (``recompute_logprobs``,
``baseline_rewards``, ``pruned``, ``kept_by_chance``); ``flags`` carries diagnostics only.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

FINISH_REASONS = ("eos", "max_len", "stopped", "aborted")

@dataclass(frozen=True)
class PromptInfo:
    """What an allocator may read about a prompt before any rollout of it."""

    pid: int                      # stable index in the training pool; all state is keyed by it
    text: str
    token_ids: tuple[int, ...]
    bucket: str = ""              # difficulty bucket (embedded tasks) or subject/level
    features: dict = field(default_factory=dict, compare=False, hash=False)


@dataclass
class Request:
    """Draw ``n`` rollouts of prompt ``pid`` now (``n = 0`` means skip)."""

    pid: int
    n: int
    tag: str = "main"
    weight: float = 1.0           # multiplies every rollout's advantage (DUET: 1 / p_pre)
    control: dict | None = None   # per-prompt options for the length controller (DUET: tau_q)


@dataclass
class Rollout:
    """One generated response, flat, with everything the loss and the methods need."""

    pid: int
    group: int                    # rows of one prompt drawn in one step/round share it
    tag: str
    step: int                     # training step that generated the row
    round: int
    tokens: np.ndarray            # generated token ids (int64), EOS included when sampled/forced
    logprobs: np.ndarray          # log pi_old of each generated token (float32)
    finish: str                   # one of FINISH_REASONS
    reward: float = 0.0
    weight: float = 1.0           # per-rollout advantage multiplier
    flags: dict = field(default_factory=dict)   # diagnostics only: saw_marker, verifier, ...
    advantage: float = 0.0        # filled after group normalisation
    # -- what changes the loop (typed; class-level defaults, so old pickles read as unset) --
    # set by ``select``: the loop recomputes the row's old log-probs with the current policy
    # before the update (trainer.grpo.recompute_old_logprobs), charged to the logprob phase
    recompute_logprobs: bool = False
    # every reward a method drew for the row's prompt this step, when the group's advantage
    # baseline must come from more rows than the group trains on (Reinforce-Ada's global
    # statistics); read on the group's first kept row by the advantage function, nothing else
    baseline_rewards: tuple[float, ...] | None = None
    # set by the stop rule (ARRoL's pruning): the loop takes the row out of its group after
    # ``select``, so it enters neither the gradient nor the group's baseline (still charged)
    pruned: bool = False
    # set by the stop rule (DUET's abort gate): kept by chance, its weight carries 1 / eps
    kept_by_chance: bool = False

    @property
    def n_tokens(self) -> int:
        return int(len(self.tokens))

    @property
    def kept(self) -> bool:
        """Aborted rows are charged to the budget but never enter the gradient."""
        return self.finish != "aborted"

    @property
    def logprob_sum(self) -> float:
        return float(np.sum(self.logprobs, dtype=np.float64))


@dataclass(frozen=True)
class Setting:
    """Run-level constants an allocator is constructed with."""

    prompts_per_step: int         # M
    group_size: int               # G (uniform GRPO's rollouts per prompt at b = 1)
    budget_fraction: float        # b
    max_response_tokens: int      # L_max
    steps: int
    seed: int
    pool_size: int = 0

    @property
    def rollouts_per_step(self) -> int:
        """C = round(b * M * G) (docs/DESIGN.md §Budget)."""
        return int(round(self.budget_fraction * self.prompts_per_step * self.group_size))


@dataclass(frozen=True)
class StepBudget:
    """The budget of one step: rollout methods read ``rollouts``, token methods ``tokens``."""

    rollouts: int                 # C = round(b*M*G)
    tokens: float                 # B = b*M*G*Lbar
    mean_length: float            # Lbar, running mean rollout length


class PromptStats:
    """The one prompt-statistics store every allocator reads (kept by the trainer).

    Per prompt: visits, the reward list of each visit, the kept lengths.  Allocators must not
    keep a second copy of this history; method-specific state (GP means, Welford spreads,
    buffers) lives in the allocator.
    """

    # this step's unbilled pass-rate estimates {pid: mean reward} and their step, recorded by
    # the step protocol for a method whose ``needs().pass_rate_estimates`` is positive
    estimates: dict = {}
    estimate_step: int | None = None

    def __init__(self) -> None:
        self.visits: dict[int, list[tuple[int, np.ndarray]]] = defaultdict(list)
        self.length_sum: dict[int, float] = defaultdict(float)
        self.length_count: dict[int, int] = defaultdict(int)
        self._global_length_sum = 0.0
        self._global_length_count = 0

    def update(self, step: int, groups: list[list[Rollout]]) -> None:
        for group in groups:
            if not group:
                continue
            pid = group[0].pid
            kept = [r for r in group if r.kept]
            rewards = np.array([r.reward for r in kept], dtype=np.float64)
            if len(rewards):
                self.visits[pid].append((step, rewards))
            for r in kept:
                self.length_sum[pid] += r.n_tokens
                self.length_count[pid] += 1
                self._global_length_sum += r.n_tokens
                self._global_length_count += 1

    def record_estimates(self, step: int, estimates: dict[int, float]) -> None:
        self.estimates, self.estimate_step = dict(estimates), step

    def estimate(self, pid: int, step: int) -> float:
        """The unbilled pass-rate estimate of ``pid`` recorded for ``step``."""
        if self.estimate_step != step:
            raise RuntimeError(f"no pass-rate estimates for step {step}; the step protocol "
                               f"records them before plan for a method that declares "
                               f"needs().pass_rate_estimates")
        return self.estimates[pid]

    def n_visits(self, pid: int) -> int:
        return len(self.visits.get(pid, ()))

    def last_pass_rate(self, pid: int) -> float | None:
        v = self.visits.get(pid)
        return float(v[-1][1].mean()) if v else None

    def last_rewards(self, pid: int) -> np.ndarray:
        v = self.visits.get(pid)
        return v[-1][1] if v else np.zeros(0)

    def recent_rewards(self, pid: int, k: int) -> np.ndarray:
        """The last ``k`` rewards of ``pid`` across visits, oldest first."""
        v = self.visits.get(pid)
        if not v:
            return np.zeros(0)
        return np.concatenate([r for _, r in v])[-k:]

    def n_samples(self, pid: int) -> int:
        return int(sum(len(r) for _, r in self.visits.get(pid, ())))

    def visit_means(self, pid: int) -> list[float]:
        return [float(r.mean()) for _, r in self.visits.get(pid, ())]

    def mean_length(self, pid: int) -> float | None:
        c = self.length_count.get(pid, 0)
        return self.length_sum[pid] / c if c else None

    def global_mean_length(self, default: float) -> float:
        if not self._global_length_count:
            return float(default)
        return self._global_length_sum / self._global_length_count


@dataclass
class FollowUpContext:
    """What a multi-round method may use to ask for more rollouts inside one step."""

    draw: Callable[[int], list[PromptInfo]]    # next k candidates from the epoch-shuffled pool
    stats: PromptStats
    budget: StepBudget
    max_rounds: int


def group_rows(rollouts: list[Rollout]) -> list[list[Rollout]]:
    """Rows grouped by group id, in order of first appearance."""
    groups: dict[int, list[Rollout]] = {}
    for r in rollouts:
        groups.setdefault(r.group, []).append(r)
    return list(groups.values())


def rewards_all_equal(rewards: np.ndarray, tol: float = 1e-6) -> bool:
    """True when a group's rewards carry no GRPO signal (all equal up to ``tol``)."""
    rewards = np.asarray(rewards, dtype=np.float64)
    return len(rewards) == 0 or float(rewards.max() - rewards.min()) <= tol


def round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))
