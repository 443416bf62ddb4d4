"""Uniform GRPO (DeepSeekMath, arXiv 2402.03300, docs/ALGORITHMS.md §GRPO): the reference allocation.

Every prompt gets ``round_half_up(b * G)`` rollouts (docs/DESIGN.md §Budget); a budget that gives
fewer than one is refused.  At b = 1 this is
GRPO's fixed group of G; at lower budgets it is the "uniform G = b*8" baseline DUET's README
implies for its reduced-budget GRPO rows (docs/ALGORITHMS.md §Unknowns, [inferred]).
"""
from __future__ import annotations

from allocators import register
from allocators.base import Allocator, Request, round_half_up


@register("grpo")
class UniformGRPO(Allocator):
    def per_prompt(self) -> int:
        s = self.setting
        n = round_half_up(s.budget_fraction * s.group_size)
        if n < 1:
            raise ValueError(f"budget fraction {s.budget_fraction} gives {n} rollouts per prompt "
                             f"at G = {s.group_size}; uniform GRPO needs at least 1")
        return n

    def plan(self, step, candidates, stats, budget):
        n = self.per_prompt()
        return [Request(p.pid, n) for p in candidates]
