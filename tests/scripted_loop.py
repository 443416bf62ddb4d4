"""A scripted stand-in for the shared loop (no model): rewards and lengths come from functions.

It drives :func:`trainer.step.run_step`, the protocol ``trainer.loop.Run.train_step`` runs
(plan, follow-up rounds, select, advantages, observe, prompt statistics over every generated
group), with a generator and a scorer that read the scripted functions instead of a policy and a
verifier, so the multi-round methods' control flow can be driven through its branches by
hand-picked rewards and every method sees the order of calls it sees in a run.
"""
from __future__ import annotations

from collections import Counter

import numpy as np

from allocators.base import PromptInfo, PromptStats, Rollout, StepBudget
from trainer.grpo import assign_advantages
from trainer.step import run_step


class ScriptedPool:
    """Prompts 0..size-1 in a fixed order, cycling epochs like the loop's pool."""

    def __init__(self, size: int) -> None:
        self.size, self.cursor = size, 0

    def draw(self, k: int) -> list[PromptInfo]:
        out = [PromptInfo(pid=(self.cursor + i) % self.size, text="", token_ids=())
               for i in range(k)]
        self.cursor += k
        return out


class Loop:
    """``reward(pid, i)`` and ``length(pid, i)`` script the ``i``-th rollout of a request."""

    def __init__(self, allocator, pool, reward, max_rounds: int = 10, length=None) -> None:
        self.allocator, self.pool, self.reward = allocator, pool, reward
        self.max_rounds = max_rounds
        self.length = length or (lambda pid, i: 4)
        self.stats, self.next_group = PromptStats(), 0
        self.first_requests = []
        self.last = None                # the last step's trainer.step.StepResult

    def generate(self, requests, step, round_index):
        rows = []
        for request in requests:
            for i in range(request.n):
                n = self.length(request.pid, i)
                # log-probs carry the step so that tests can tell stale rows from fresh ones
                rows.append(Rollout(pid=request.pid, group=self.next_group, tag=request.tag,
                                    step=step, round=round_index,
                                    tokens=np.zeros(n, dtype=np.int64),
                                    logprobs=np.full(n, -float(step), np.float32),
                                    finish="eos", weight=request.weight))
            self.next_group += 1
        return rows

    def score(self, rows):
        """Row ``i`` of its group (one request per group within a round) gets ``reward(pid, i)``."""
        index: Counter = Counter()
        rewards = []
        for row in rows:
            rewards.append(float(self.reward(row.pid, index[row.group])))
            index[row.group] += 1
        return rewards

    def step(self, step: int):
        budget = StepBudget(rollouts=self.allocator.setting.rollouts_per_step, tokens=0.0,
                            mean_length=4.0)
        self.last = run_step(step, self.allocator, self.stats, budget, draw=self.pool.draw,
                             generate=lambda requests, r: self.generate(requests, step, r),
                             score=self.score, advantages=assign_advantages,
                             max_rounds=self.max_rounds)
        self.first_requests = self.last.requests
        return self.last.rows, self.last.groups, self.last.rounds
