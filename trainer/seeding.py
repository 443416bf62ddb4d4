"""Seeds derived from structured keys, so every random stream is independent of batch layout."""
from __future__ import annotations

import numpy as np


def derive_seed(*keys: int) -> int:
    """A 63-bit seed from non-negative integer keys (e.g. run seed, step, group, row)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(2, np.uint64)[0] >> 1)
