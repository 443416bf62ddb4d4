"""Epoch-shuffled prompt ids: the loop's source of candidate prompts.

Each epoch is a fresh permutation seeded by (run seed, epoch); ``draw(k)`` continues across
epoch boundaries, so multi-round methods can keep asking for candidates.  Its state is two
integers, saved in checkpoints.
"""
from __future__ import annotations

import numpy as np

from trainer.seeding import derive_seed


class PoolSampler:
    def __init__(self, pool_size: int, seed: int) -> None:
        if pool_size <= 0:
            raise ValueError("the training pool is empty")
        self.pool_size = pool_size
        self.seed = seed
        self.epoch = 0
        self.position = 0

    def _order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng(derive_seed(self.seed, 99, epoch)).permutation(self.pool_size)

    def draw(self, k: int) -> list[int]:
        out: list[int] = []
        while len(out) < k:
            order = self._order(self.epoch)
            take = min(k - len(out), self.pool_size - self.position)
            out.extend(int(i) for i in order[self.position:self.position + take])
            self.position += take
            if self.position == self.pool_size:
                self.epoch, self.position = self.epoch + 1, 0
        return out
