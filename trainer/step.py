"""The protocol of one training step (docs/DESIGN.md §Loop), torch-free, shared by the loop and the tests.

::

    candidates = draw(allocator.candidates_per_step())
    stats.record_estimates(step, estimate(candidates))           # only with ``estimate``
    requests   = allocator.plan(step, candidates, stats, budget)
    rows       = generate(requests, 0); rewards = score(rows)
    more       = allocator.follow_up(step, round, rows, ctx)     # rounds 1 .. max_rounds - 1
    groups     = allocator.select(step, rows), pruned rows and empty groups dropped
    adv        = advantages(groups)                             # fills Rollout.advantage
    update(groups)                                              # the policy update, if any
    allocator.observe(step, groups, stats); stats.update(step, every generated group)
    length_metrics = lengthctl.step_metrics(rows); lengthctl.observe(step, rows)

This is the only place that orders those calls: ``trainer.loop.Run.train_step`` runs it with the
real engine, verifier, advantage function and optimizer, and ``tests/scripted_loop.py`` with
scripted rewards, so an allocator tested on the scripted loop sees exactly what it sees in a
run.  Generation, scoring, advantages and the update are injected callables, which keeps this
module free of torch.  Rows the stop rule pruned (``Rollout.pruned``, ARRoL's) leave their
groups after ``select``, whatever the allocator: pruned rows never train and never enter a
group's baseline (the loop's rule, so any allocator can run any stop rule).  The stop rule's
``step_metrics`` (from the state the rows were generated with) come before its ``observe``, and
both see every generated row.  ``observe`` comes after the advantages are filled in (the
``allocators.base`` contract; DUET's ``observe`` reads them), and the prompt statistics take
every generated group, dropped ones included: history is history, whichever method produced it.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, ContextManager

from allocators.base import Allocator
from core.rows import (FollowUpContext, PromptInfo, PromptStats, Request, Rollout, StepBudget,
                       group_rows)


@dataclass
class StepResult:
    requests: list[Request]          # round 0's plan, as the allocator returned it
    counts: list[int]                # round 0's non-zero counts, as planned (before any round)
    rows: list[Rollout]              # every row generated this step, all rounds, in order
    groups: list[list[Rollout]]      # the groups that trained (never an empty one)
    advantages: Any                  # what ``advantages(groups)`` returned
    update: Any                      # what ``update(groups)`` returned (None without one)
    rounds: int                      # generation rounds, round 0 included
    length_metrics: dict             # the stop rule's step_metrics ({} without one)


def _no_phase(name: str) -> ContextManager:
    return contextlib.nullcontext()


def run_step(step: int, allocator: Allocator, stats: PromptStats, budget: StepBudget, *,
             draw: Callable[[int], list[PromptInfo]],
             generate: Callable[[list[Request], int], list[Rollout]],
             score: Callable[[list[Rollout]], list[float]],
             advantages: Callable[[list[list[Rollout]]], Any],
             update: Callable[[list[list[Rollout]]], Any] | None = None,
             max_rounds: int = 10,
             phase: Callable[[str], ContextManager] = _no_phase,
             estimate: Callable[[list[PromptInfo]], dict[int, float]] | None = None,
             lengthctl=None) -> StepResult:
    """One step of the shared loop.

    ``draw(k)``: the next ``k`` candidates of the epoch-shuffled pool; ``generate(requests,
    round)``: one row per requested rollout (rewards not yet set); ``score(rows)``: their
    rewards, in order; ``phase(name)``: a context manager timing the allocator's work
    (``allocate``), the update (``update``) and the bookkeeping after it (``other``);
    ``estimate(candidates)``: unbilled pass-rate estimates ``{pid: p}``, recorded in ``stats``
    between the draw and the plan (given for a method whose ``needs().pass_rate_estimates`` is
    positive; ``trainer.estimates`` in a run); ``lengthctl``: the run's stop rule
    (``lengthctl.base.LengthController``), whose ``step_metrics`` and ``observe`` close the step.
    """

    def generate_and_score(requests: list[Request], round_index: int) -> list[Rollout]:
        rows = generate(requests, round_index)
        rewards = score(rows)
        if len(rewards) != len(rows):
            raise ValueError(f"score returned {len(rewards)} rewards for {len(rows)} rows")
        for row, reward in zip(rows, rewards):
            row.reward = float(reward)
        return rows

    with phase("allocate"):
        candidates = draw(allocator.candidates_per_step())
    if estimate is not None:
        stats.record_estimates(step, estimate(candidates))
    with phase("allocate"):
        requests = allocator.plan(step, candidates, stats, budget)
    counts = [r.n for r in requests if r.n > 0]
    rows = generate_and_score(requests, 0)
    ctx = FollowUpContext(draw, stats, budget, max_rounds)
    rounds = 1
    while rounds < max_rounds:
        with phase("allocate"):
            more = allocator.follow_up(step, rounds, rows, ctx)
        if not more:
            break
        rows += generate_and_score(more, rounds)
        rounds += 1
    with phase("allocate"):
        groups = [[r for r in g if not r.pruned] for g in allocator.select(step, rows)]
        groups = [g for g in groups if g]
    adv = advantages(groups)
    updated = None
    if update is not None:
        with phase("update"):
            updated = update(groups)
    with phase("other"):
        allocator.observe(step, groups, stats)
        stats.update(step, group_rows(rows))
        length_metrics = {}
        if lengthctl is not None:
            length_metrics = lengthctl.step_metrics(rows)
            lengthctl.observe(step, rows)
    return StepResult(requests, counts, rows, groups, adv, updated, rounds, length_metrics)
