"""A scripted stand-in for the shared loop (no model): rewards and lengths come from functions.

It calls plan / follow_up / select / observe in the order ``trainer.loop.Run.train_step`` does,
and, like it, records every generated group in the prompt statistics (not only trained ones), so
the multi-round methods' control flow can be driven through its branches by hand-picked rewards.
"""
from __future__ import annotations

import numpy as np

from allocators.base import FollowUpContext, PromptInfo, PromptStats, Rollout, StepBudget, group_rows


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
    def __init__(self, allocator, pool, reward, max_rounds: int = 10, length=None) -> None:
        self.allocator, self.pool, self.reward = allocator, pool, reward
        self.max_rounds = max_rounds
        self.length = length or (lambda pid, i: 4)
        self.stats, self.next_group = PromptStats(), 0
        self.first_requests = []

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
                                    finish="eos", reward=float(self.reward(request.pid, i))))
            self.next_group += 1
        return rows

    def step(self, step: int):
        budget = StepBudget(rollouts=self.allocator.setting.rollouts_per_step, tokens=0.0,
                            mean_length=4.0)
        candidates = self.pool.draw(self.allocator.candidates_per_step())
        self.first_requests = self.allocator.plan(step, candidates, self.stats, budget)
        rows = self.generate(self.first_requests, step, 0)
        ctx = FollowUpContext(self.pool.draw, self.stats, budget, self.max_rounds)
        rounds = 1
        while rounds < self.max_rounds:
            more = self.allocator.follow_up(step, rounds, rows, ctx)
            if not more:
                break
            rows += self.generate(more, step, rounds)
            rounds += 1
        groups = self.allocator.select(step, rows)
        self.allocator.observe(step, groups, self.stats)
        self.stats.update(step, group_rows(rows))
        return rows, groups, rounds
