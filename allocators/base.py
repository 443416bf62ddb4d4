"""The allocator interface of the shared GRPO loop (docs/DESIGN.md §Loop), torch-free.

Every rollout-allocation method is a subclass of :class:`Allocator` registered with
:func:`allocators.register`.  The loop calls, per training step::

    plan(step, candidates, stats, budget)          -> requests for round 0
    follow_up(step, round, rollouts, ctx)          -> more requests (or [] to stop)
    select(step, rollouts)                         -> the groups that train
    observe(step, groups, stats)                   -> update cross-step state

Rollouts are flat :class:`Rollout` rows keyed by prompt id (``pid``) and group id; nothing
assumes a fixed group size.  Everything here is plain Python/numpy so that allocators can be
unit-tested and reused without torch.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import numpy as np

from allocators.options import Options

FINISH_REASONS = ("eos", "max_len", "stopped", "aborted")
# a row flag set by ``select``: the loop recomputes the row's old log-probs with the current
# policy before the update (trainer.grpo.recompute_old_logprobs), charged to the logprob phase
RECOMPUTE_OLD_LOGPROBS = "recompute_old_logprobs"

# Rollout.flags key: every reward a method drew for the row's prompt this step (a tuple), when
# the group's advantage baseline must come from more rows than the group trains on
# (Reinforce-Ada's global statistics).  The loop's advantage function reads it; nothing else.
BASELINE_REWARDS_FLAG = "baseline_rewards"


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
    flags: dict = field(default_factory=dict)   # e.g. saw_marker, eps_kept, verifier_timeout
    advantage: float = 0.0        # filled after group normalisation

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


class Allocator:
    """Base class: uniform counts, one round, every group trains.

    Subclasses override what their paper changes.  ``length_control`` names the registered
    length controller the method runs with (``max_len`` = no early stop).
    """

    name: ClassVar[str] = ""
    length_control: ClassVar[str] = "max_len"
    # ablations (e.g. a paper table's fixed-shape rows) run when named, not in ``--methods all``
    ablation: ClassVar[bool] = False
    # prompt features the trainer must compute into PromptInfo.features before attach_pool:
    # "embedding" (np.ndarray, VIP) and/or "prompt_logprob_mean" (float, DUET's cold start)
    needs_features: ClassVar[tuple[str, ...]] = ()
    # the method's options (allocators.options): defaults, help, ranges, read as self.opts.NAME
    Options: ClassVar[type[Options]] = Options
    # controls (oracle, anti-oracle) are reference rows, never contenders (allocators/controls.py)
    control: ClassVar[bool] = False
    # k > 0: before plan, the loop draws k unbilled rollouts of every candidate and passes their
    # mean rewards to receive_pass_rates (trainer/estimates.py); only controls ask for them
    wants_pass_rate_estimates: int = 0

    def __init__(self, setting: Setting, **options: Any) -> None:
        self.setting = setting
        self.opts = self.Options.parse(options, self.name or type(self).__name__)
        # diagnostics of the step in progress (numbers only); the loop logs them per step
        self.step_metrics: dict = {}

    # -- before generation -------------------------------------------------------------
    def attach_pool(self, pool: list[PromptInfo]) -> None:
        """Called once before step 0 with the whole training pool (index = pid)."""

    def candidates_per_step(self) -> int:
        """How many fresh candidate prompts the loop draws before ``plan``."""
        return self.setting.prompts_per_step

    def receive_pass_rates(self, step: int, estimates: dict[int, float]) -> None:
        """This step's unbilled pass-rate estimates (pid -> mean reward), just before ``plan``;
        called only when ``wants_pass_rate_estimates > 0``."""

    def plan(self, step: int, candidates: list[PromptInfo], stats: PromptStats,
             budget: StepBudget) -> list[Request]:
        raise NotImplementedError

    # -- inside the step ---------------------------------------------------------------
    def follow_up(self, step: int, round_index: int, rollouts: list[Rollout],
                  ctx: FollowUpContext) -> list[Request]:
        """Requests for round ``round_index`` (>= 1) given every row so far; [] ends the step."""
        return []

    def select(self, step: int, rollouts: list[Rollout]) -> list[list[Rollout]]:
        """The groups that train this step (default: every group generated this step)."""
        return group_rows(rollouts)

    # -- after the update --------------------------------------------------------------
    def observe(self, step: int, groups: list[list[Rollout]], stats: PromptStats) -> None:
        """Update method state from the trained groups (advantages are filled in)."""

    def length_control_options(self) -> dict:
        """Options this method passes to its length controller (users may override them)."""
        return {}

    def advantage_options(self) -> dict:
        """Keywords of ``trainer.grpo.assign_advantages`` this method sets (its released
        small-group rule, an advantage clip); the advantage function applies them, no method
        re-implements them.  Default: the harness rule for every method."""
        return {}

    def feature_options(self) -> dict:
        """How the trainer computes ``needs_features`` (VIP: which ``embedding``)."""
        return {}

    def resolved_options(self) -> dict:
        """Resolved hyper-parameters, logged in the run's config.json: the options, plus what
        subclasses derive from them and the setting."""
        return self.opts.to_dict()


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


def check_count_bounds(name: str, prompts: int, total: int, low: int, high: int) -> None:
    """Fail loudly when ``prompts * low <= total <= prompts * high`` cannot hold (docs/ALGORITHMS.md §Scaling)."""
    if prompts * low > total:
        raise ValueError(f"{name}: budget of {total} rollouts is below {prompts} prompts x "
                         f"minimum {low} per prompt")
    if prompts * high < total:
        raise ValueError(f"{name}: budget of {total} rollouts exceeds {prompts} prompts x "
                         f"maximum {high} per prompt")


def round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))
