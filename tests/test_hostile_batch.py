"""Hostile model output at scale (issue 17): a batch mixing normal answers with hostile ones, for
both scorers (reasoning-gym's chain_sum and math-verify), through the real verifier pool.

Checked: every normal answer is still scored right, every hostile one scores 0, no hostile item
takes longer than the per-call timeout plus a margin (each is also timed alone), and the pool
scores normally afterwards.  The margin is generous because the development machine is shared
and the alarm can only fire between bytecodes: this checks that the timeout bounds an item, not
how fast the pool is.
"""
import random
import time

import pytest

from trainer.tasks import build_pool
from trainer.verifier import MATH_VERIFY, REASONING_GYM, VerifierPool

TIMEOUT = 2.0
MARGIN = 5.0
GOLD = {MATH_VERIFY: {"answer": "3"},
        REASONING_GYM: {"answer": "3", "metadata": {"source_dataset": "chain_sum"}}}


def hostile_texts() -> dict[str, str]:
    rng = random.Random(0)
    garbage = "".join(rng.choice("abc{}\\^_$()[]0123456789+-*/ =\n") for _ in range(10_000))
    return {
        "10k characters of garbage": garbage,
        "\\boxed{ nested 50 deep, never closed": "\\boxed{" * 50 + "4",
        "a million-digit number, boxed": "\\boxed{" + "7" * 1_000_000 + "}",
        "a million-digit number, bare": "7" * 1_000_000,
        "a power tower": "\\boxed{9^{9^{9^{9}}}}",
        "the factorial of 10^7": "\\boxed{(10^{7})!}",
        "NUL bytes": "\x00" * 100 + "\\boxed{\x00}" + "\x00",
        "lone surrogates": "\\boxed{\ud800}\udfff",
        "unicode junk": "\u202e\u0301\u200b\U0001F600\ufeff\\boxed{\U0001F600\u0301}\u0000",
    }


def normal_items() -> list[tuple[tuple, float]]:
    """(item, expected reward): real chain_sum tasks answered right and wrong, and math-verify
    answers whose scores are documented behaviour (equivalent forms count, hedges do not)."""
    items = []
    for task in build_pool(3):
        items.append(((task.scorer, task.solution, task.gold), 1.0))
        items.append(((task.scorer, f"so \\boxed{{{int(task.answer) + 1}}}", task.gold), 0.0))
    for response, answer, expected in [
            ("\\boxed{\\frac{1}{2}}", "0.5", 1.0), ("we get $\\boxed{2\\sqrt{2}}$", "\\sqrt{8}", 1.0),
            ("\\boxed{(-\\infty, 3]}", "(-\\infty,3]", 1.0), ("\\boxed{7}", "8", 0.0),
            ("The answer is \\boxed{\\dfrac{3}{2}}.", "1.5", 1.0), ("no answer", "3", 0.0)]:
        items.append(((MATH_VERIFY, response, {"answer": answer}), expected))
    return items


def test_a_hostile_batch_leaves_normal_answers_scored_right_and_the_pool_usable():
    normal = normal_items()
    hostile = [((scorer, text, GOLD[scorer]), name) for name, text in hostile_texts().items()
               for scorer in (REASONING_GYM, MATH_VERIFY)]
    batch = [(item, "normal", expected) for item, expected in normal] + \
            [(item, name, 0.0) for item, name in hostile]
    random.Random(1).shuffle(batch)
    with VerifierPool(workers=2, timeout=TIMEOUT) as pool:
        pool.score([normal[0][0]])                            # start-up is not the items' time
        started = time.perf_counter()
        report = pool.score([item for item, _, _ in batch])
        elapsed = time.perf_counter() - started
        wrong = [(name, item[0].split(":")[1], item[1][:40], report.rewards[i], report.status[i])
                 for i, (item, name, expected) in enumerate(batch)
                 if report.rewards[i] != expected or (name == "normal" and report.status[i] != "ok")]
        assert not wrong, wrong
        # a loose bound on the whole batch: every hostile item at most one timeout plus slack
        assert elapsed <= len(hostile) * TIMEOUT + 3 * MARGIN, elapsed

        slow = []
        for item, name in hostile:
            started = time.perf_counter()
            alone = pool.score([item])
            took = time.perf_counter() - started
            assert alone.rewards.tolist() == [0.0] and alone.status[0] in ("ok", "error",
                                                                          "timeout")
            if took > TIMEOUT + MARGIN:
                slow.append((name, item[0].split(":")[1], round(took, 1)))
        assert not slow, f"items past the {TIMEOUT} s timeout + {MARGIN} s margin: {slow}"

        again = pool.score([item for item, _ in normal])
        assert again.rewards.tolist() == [expected for _, expected in normal]
        assert again.status == ["ok"] * len(normal)
