"""The per-bucket spend each step records (trainer.loop.spend_by_bucket), on a hand-built batch."""
import numpy as np

from core.rows import Rollout
from trainer.loop import spend_by_bucket


def _row(pid, group, n_tokens, reward, finish="eos"):
    return Rollout(pid=pid, group=group, tag="x", step=0, round=0,
                   tokens=np.arange(n_tokens, dtype=np.int64),
                   logprobs=np.zeros(n_tokens, dtype=np.float32), finish=finish, reward=reward)


def test_spend_by_bucket_counts_rows_tokens_and_first_positives():
    bucket = {0: "t2", 1: "t5", 2: "t5"}
    rows = [_row(0, 0, 3, 1.0), _row(0, 0, 4, 0.0),            # t2: one prompt, solved
            _row(1, 1, 10, 0.0), _row(1, 1, 12, 0.0, "max_len"),  # t5: prompt 1 never solved
            _row(2, 2, 7, 1.0), _row(2, 3, 5, 0.0)]            # t5: prompt 2 solved (2 groups)
    got = spend_by_bucket(rows, bucket.__getitem__)
    assert got == {"t2": {"rows": 2, "tokens": 7, "correct": 1, "max_len": 0, "prompts": 1,
                          "solved_prompts": 1},
                   "t5": {"rows": 4, "tokens": 34, "correct": 1, "max_len": 1, "prompts": 2,
                          "solved_prompts": 1}}
    assert list(got) == ["t2", "t5"]
    assert spend_by_bucket([], bucket.__getitem__) == {}
