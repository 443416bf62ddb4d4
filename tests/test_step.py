"""The step protocol (trainer.step.run_step): order of calls, what each call sees."""
from __future__ import annotations

import numpy as np
import pytest

from allocators.base import (Allocator, PromptInfo, PromptStats, Request, Rollout, Setting,
                             StepBudget)
from trainer.step import run_step


class Recording(Allocator):
    """Two rounds of two prompts; select returns an empty group and drops prompt 1's group."""

    def __init__(self, setting):
        super().__init__(setting)
        self.calls, self.observed = [], None

    def plan(self, step, candidates, stats, budget):
        self.calls.append(("plan", [c.pid for c in candidates]))
        return [Request(c.pid, 2) for c in candidates] + [Request(99, 0)]

    def follow_up(self, step, round_index, rollouts, ctx):
        self.calls.append(("follow_up", round_index, len(rollouts),
                           [r.reward for r in rollouts]))
        if round_index == 1:
            return [Request(c.pid, 3, tag="refill") for c in ctx.draw(1)]
        return []

    def select(self, step, rollouts):
        self.calls.append(("select", len(rollouts)))
        keep = [r for r in rollouts if r.pid != 1]
        by_group = {}
        for r in keep:
            by_group.setdefault(r.group, []).append(r)
        return [[]] + list(by_group.values())

    def observe(self, step, groups, stats):
        self.calls.append(("observe",))
        self.observed = [[r.advantage for r in g] for g in groups]


def pool_draw():
    state = {"next": 0}

    def draw(k):
        out = [PromptInfo(state["next"] + i, "", ()) for i in range(k)]
        state["next"] += k
        return out

    return draw


def test_calls_come_in_protocol_order_and_observe_sees_the_advantages():
    setting = Setting(prompts_per_step=2, group_size=2, budget_fraction=1.0,
                      max_response_tokens=8, steps=1, seed=0)
    allocator, stats, events = Recording(setting), PromptStats(), []
    groups_made = iter(range(100))

    def generate(requests, round_index):
        events.append(("generate", round_index, [(r.pid, r.n) for r in requests]))
        rows = []
        for req in requests:
            group = next(groups_made)
            rows += [Rollout(req.pid, group, req.tag, 0, round_index, np.zeros(3, np.int64),
                             np.zeros(3, np.float32), "eos") for _ in range(req.n)]
        return rows

    def score(rows):
        events.append(("score", len(rows)))
        return [float(r.pid == 0) + 0.5 * i for i, r in enumerate(rows)]

    def advantages(groups):
        events.append(("advantages", [len(g) for g in groups]))
        for g in groups:
            for r in g:
                r.advantage = r.reward + 10.0
        return "report"

    def update(groups):
        events.append(("update", allocator.calls[-1][0]))
        return {"loss": 0.0}

    result = run_step(0, allocator, stats, StepBudget(4, 0.0, 3.0), draw=pool_draw(),
                      generate=generate, score=score, advantages=advantages, update=update,
                      max_rounds=10)
    # round 0 of candidates 0, 1 (the n = 0 request reaches generate, which skips it); a refill
    # of candidate 2 in round 1; follow_up sees scored rows; round 2 asks for nothing
    assert [c[0] for c in allocator.calls] == ["plan", "follow_up", "follow_up", "select",
                                              "observe"]
    assert allocator.calls[0] == ("plan", [0, 1])
    assert allocator.calls[1] == ("follow_up", 1, 4, [1.0, 1.5, 1.0, 1.5])
    assert allocator.calls[2][1:3] == (2, 7)
    assert events[0] == ("generate", 0, [(0, 2), (1, 2), (99, 0)])
    assert events[1] == ("score", 4) and events[2] == ("generate", 1, [(2, 3)])
    # the empty group is dropped before advantages; the update runs before observe
    assert events[4] == ("advantages", [2, 3])
    assert events[5] == ("update", "select")
    assert allocator.observed == [[11.0, 11.5], [10.0, 10.5, 11.0]]
    assert result.rounds == 2 and result.counts == [2, 2] and result.update == {"loss": 0.0}
    assert result.advantages == "report" and len(result.rows) == 7
    # prompt statistics take every generated group, the dropped prompt 1 included
    assert stats.n_visits(1) == 1 and stats.last_rewards(1).tolist() == [1.0, 1.5]
    assert stats.n_visits(2) == 1


def test_max_rounds_caps_the_follow_ups_and_a_short_score_is_an_error():
    setting = Setting(2, 2, 1.0, 8, 1, 0)

    class Greedy(Recording):
        def follow_up(self, step, round_index, rollouts, ctx):
            return [Request(0, 1)]

    def generate(requests, round_index):
        return [Rollout(r.pid, round_index, "main", 0, round_index, np.zeros(1, np.int64),
                        np.zeros(1, np.float32), "eos") for r in requests for _ in range(r.n)]

    result = run_step(0, Greedy(setting), PromptStats(), StepBudget(4, 0.0, 1.0),
                      draw=pool_draw(), generate=generate, score=lambda rows: [0.0] * len(rows),
                      advantages=lambda groups: None, max_rounds=3)
    assert result.rounds == 3 and result.update is None
    with pytest.raises(ValueError, match="1 rewards for 4 rows"):
        run_step(0, Greedy(setting), PromptStats(), StepBudget(4, 0.0, 1.0), draw=pool_draw(),
                 generate=generate, score=lambda rows: [0.0], advantages=lambda g: None)
