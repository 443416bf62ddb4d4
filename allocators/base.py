"""The allocator interface of the shared GRPO loop (docs/DESIGN.md §Loop), torch-free.

Every rollout-allocation method is a subclass of :class:`Allocator` registered with
:func:`allocators.register`.  The loop calls, per training step (``trainer/step.py``)::

    plan(step, candidates, stats, budget)          -> requests for round 0
    follow_up(step, round, rollouts, ctx)          -> more requests (or [] to stop)
    select(step, rollouts)                         -> the groups that train
    observe(step, groups, stats)                   -> update cross-step state

What a method needs beyond that protocol (prompt features, unbilled pass-rate estimates,
options for its own stop rule) it declares once in :meth:`Allocator.needs`,
which the loop reads at set-up.  The row and statistics types live in :mod:`core.rows` (below
this package and ``lengthctl``) and are re-exported here for method modules.  Everything here
is plain Python/numpy so that allocators can be unit-tested and reused without torch.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from core.options import Options
from core.rows import (FINISH_REASONS, FollowUpContext, PromptInfo, PromptStats,  # noqa: F401
                       Request, Rollout, Setting, StepBudget, group_rows, rewards_all_equal,
                       round_half_up)


@dataclass(frozen=True)
class Needs:
    """What a method needs from the loop beyond the step protocol, declared once."""

    # prompt features computed into PromptInfo.features before attach_pool, each with the
    # keywords of its computation: "embedding" (np.ndarray, VIP: {"embedding": "minilm"}) and/or
    # "prompt_logprob_mean" (float, DUET's cold start)
    features: dict = field(default_factory=dict)
    # k > 0: before plan, k unbilled rollouts of every candidate; their mean rewards are
    # recorded in the prompt statistics (PromptStats.estimate) -- only the controls ask
    pass_rate_estimates: int = 0
    # options handed to the method's own stop rule (``default_length``); users may override
    # them, and they are not passed to another rule chosen with ``--set METHOD.length=RULE``
    length_options: dict = field(default_factory=dict)


class Allocator:
    """Base class: uniform counts, one round, every group trains.

    Subclasses override what their paper changes.  ``default_length`` names the registered
    stop rule the method runs with unless the run chooses another (``--set METHOD.length=RULE``;
    ``max_len`` = no early stop).
    """

    name: ClassVar[str] = ""
    default_length: ClassVar[str] = "max_len"
    # ablations (e.g. a paper table's fixed-shape rows) run when named, not in ``--methods all``
    ablation: ClassVar[bool] = False
    # the method's options (core.options): defaults, help, ranges, read as self.opts.NAME
    Options: ClassVar[type[Options]] = Options
    # controls (oracle, anti-oracle) are reference rows, never contenders (allocators/controls.py)
    control: ClassVar[bool] = False

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

    def needs(self) -> Needs:
        """What this method needs from the loop beyond the protocol (:class:`Needs`), read
        once at set-up.  Default: nothing."""
        return Needs()

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

    def advantage_options(self) -> dict:
        """Keywords of ``trainer.grpo.assign_advantages`` this method sets (its released
        small-group rule, an advantage clip); the advantage function applies them, no method
        re-implements them.  Default: the harness rule for every method."""
        return {}

    def resolved_options(self) -> dict:
        """Resolved hyper-parameters, logged in the run's config.json: the options, plus what
        subclasses derive from them and the setting."""
        return self.opts.to_dict()


def check_count_bounds(name: str, prompts: int, total: int, low: int, high: int) -> None:
    """Fail loudly when ``prompts * low <= total <= prompts * high`` cannot hold (docs/ALGORITHMS.md §Scaling)."""
    if prompts * low > total:
        raise ValueError(f"{name}: budget of {total} rollouts is below {prompts} prompts x "
                         f"minimum {low} per prompt")
    if prompts * high < total:
        raise ValueError(f"{name}: budget of {total} rollouts exceeds {prompts} prompts x "
                         f"maximum {high} per prompt")


def two_stage_split(n: int, fraction: float, minimum: int, first: int | None = None,
                    second: int | None = None) -> tuple[int, int]:
    """(first, second) stage rollouts of a group of ``n`` drawn in two stages (Pilot-Commit's
    pilot and commit, SPEED-RL's screen and continuation): ``first`` as given, else
    ``max(minimum, round_half_up(fraction * n))``; ``second`` as given, else the rest.  The
    caller checks the pair against its own rule."""
    a = first if first is not None else max(minimum, round_half_up(fraction * n))
    b = second if second is not None else n - a
    return int(a), int(b)
