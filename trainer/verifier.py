"""Verifiers in a pool of worker processes with a per-call timeout that is a hard bound.

A scorer is named ``"module:function"`` and called as ``function(response_text, gold) -> float``
inside a worker process's main thread (math-verify's timeouts use signals, which only work
there).  A call that times out, raises, or takes its worker down scores 0 and is counted, and the
run goes on.

Work is sent in one chunk per worker to keep inter-process overhead per step small (one future
per item costs ~0.3 ms of IPC each, ~75 ms for 256 rollouts, against ~2 ms for one chunk).  Each
item gets ``timeout`` seconds twice over:

* inside the worker, ``SIGALRM`` interrupts Python code (sympy's loops) at ``timeout``: cheap,
  the worker goes on with the next item;
* from the parent, which watches a shared board (one record per item: when it started, its
  result, the worker's pid): an item still running at ``timeout + kill_margin`` -- stuck in C
  code, which no alarm interrupts (``9**999999``, a regex) -- gets its worker SIGKILLed, scores 0
  as a timeout, and the rest of its chunk goes to a fresh worker.  So no item holds a worker
  longer than ``timeout + kill_margin`` plus the parent's poll interval.

A worker that crashes on an item costs only that item ("crash"); its neighbours are re-sent.
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import logging
import math
import multiprocessing
import os
import re
import shutil
import signal
import tempfile
import time
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass

import numpy as np
from pebble import ProcessPool

from trainer.lifetime import die_with_parent
from trainer.tasks import extract_boxed

REASONING_GYM = "trainer.verifier:score_reasoning_gym"
MATH_VERIFY = "trainer.verifier:score_math_verify"


@functools.lru_cache(maxsize=None)
def _rg_score_fn(source: str):
    import reasoning_gym
    return reasoning_gym.get_score_answer_fn(source)


def score_reasoning_gym(response: str, gold: dict) -> float:
    """1.0 when reasoning-gym's own ``score_answer`` calls the last ``\\boxed{}`` of the
    response exactly correct, else 0.0.

    reasoning-gym gives partial credit (``chain_sum``: ``len(gold) / len(answer)`` when the gold
    string occurs inside a wrong answer, so ``-3`` and ``13`` score 0.5 against ``3``); RLVR's
    reward is verifiable correctness, and every pass-rate estimate downstream reads it as
    pass/fail, so its score is thresholded at 1.  Its parsing (sign, leading zeros, trailing
    decimals, commas) is kept."""
    answer = extract_boxed(response)
    if answer is None:
        return 0.0
    score = float(_rg_score_fn(gold["metadata"]["source_dataset"])(answer.strip(), gold))
    return 1.0 if score >= 1.0 else 0.0


def score_math_verify(response: str, gold: dict) -> float:
    """math-verify: ``verify(parse(gold), parse(response))``, 1.0 or 0.0 (gold parsed once, cached).

    math-verify's own timeouts are switched off (``parsing_timeout=None``,
    ``timeout_seconds=None``): they use ``signal.alarm``, which shares the process's one
    ITIMER_REAL with the pool's per-call ``setitimer`` -- their ``alarm(0)`` on return would cancel
    the pool's timer, and their handler swap would replace the pool's.  The pool's per-call timeout
    is the only one; it raises a ``BaseException`` so that math-verify's and sympy's many
    ``except Exception`` blocks cannot swallow it.

    A timer cannot interrupt C code, and CPython's integer power is C: ``\\boxed{9^{9^{9^9}}}``
    would run for minutes inside one ``pow`` call, past any alarm, until the pool kills the worker.
    :func:`check_magnitude` refuses such power towers before math-verify sees the text
    (:class:`AnswerTooLarge`, scored 0 and counted as a verifier error).
    """
    check_magnitude(response)               # before math-verify is even imported
    from math_verify import verify
    gold_parsed = _parse_gold(gold["answer"])
    pred = _parse_prediction(response)
    if not pred:
        return 0.0
    return float(verify(gold_parsed, pred, timeout_seconds=None))


def _drop_timeout_notice(record: logging.LogRecord) -> bool:
    """math-verify warns once per process that its timeouts are off: they are, on purpose (the
    pool's timer is the one; see :func:`score_math_verify`), and the notice printed before the
    one-line error of a bad data file (issue 29)."""
    return not str(record.msg).startswith("Timeout is disabled")


def _extraction_config():
    from math_verify import ExprExtractionConfig, LatexExtractionConfig
    for name in ("math_verify.parser", "math_verify.grader"):
        logger = logging.getLogger(name)
        if _drop_timeout_notice not in logger.filters:
            logger.addFilter(_drop_timeout_notice)
    return [LatexExtractionConfig(), ExprExtractionConfig()]


@functools.lru_cache(maxsize=65536)
def _parse_gold(answer: str):
    from math_verify import parse
    check_magnitude(answer)
    # a bare gold answer ("\frac{14}{3}", "(-\infty, 3]") is boxed so that the LaTeX extractor
    # takes all of it as one expression instead of searching it for the last number
    text = answer if "\\boxed" in answer else f"\\boxed{{{answer}}}"
    parsed = parse(text, extraction_config=_extraction_config(), parsing_timeout=None)
    # math-verify returns [value, text] when it parses and just [text] when it cannot: a gold of
    # text alone would match only responses with the same characters
    if len(parsed) < 2:
        raise ValueError(f"gold answer does not parse: {answer!r}")
    return parsed


def _parse_prediction(response: str):
    from math_verify import parse
    return parse(response, extraction_config=_extraction_config(), parsing_timeout=None)


class AnswerTooLarge(ValueError):
    """A number too large to evaluate in bounded time (see :func:`check_magnitude`)."""


# Texts whose powers add up to more digits than this are refused.  10**999999 took a worker
# 1.8 s (math-verify converts it), 9**999999 / 7**999999 over 10 s; no MATH/GSM8K gold answer
# has a power of more than a few dozen digits.
MAX_DIGITS = 10_000
MAX_DEPTH = 50
_SUPERSCRIPT = re.compile(r"\^|\*\*")
# LaTeX spacing and delimiter sizing: they do not change a value, so they must not hide one
# from the guard (``9^{\,9^{9}}``, ``\left(9^{9}\right)^{9^{9}}``)
_NEUTRAL = re.compile(r"\\(?:left|right|[bB]ig{1,2}[lr]?|[,;:! ]|quad|qquad)|\s")
_CLOSE = {"{": "}", "(": ")", "[": "]"}
_OPEN = {v: k for k, v in _CLOSE.items()}
_NUMBER = re.compile(r"\d+(?:\.\d*)?")
_PRODUCT = re.compile(r"\*(?!\*)|\\cdot|\\times")


def check_magnitude(text: str, max_digits: int = MAX_DIGITS) -> None:
    """Raise :class:`AnswerTooLarge` if the numeric powers in ``text`` add up to more than
    ``max_digits`` digits, counting a symbolic base raised to a numeric exponent by the digits of
    the exponent (``x^{9^{9^9}}``: sympy evaluates the exponent).  A base or exponent may be a
    group (``{}``, ``()``, ``[]``) of numbers, powers, sums and products; anything else (``x^{n+1}``)
    is not numeric and not counted.  This is a fast path only: an answer that slips past it is
    still stopped by the pool's kill at the timeout."""
    text = _NEUTRAL.sub("", text)
    total = 0.0
    for match in _SUPERSCRIPT.finditer(text):
        parsed = _expr(text, match.end(), 0)
        if parsed is None:
            continue
        exponent = parsed[0]
        base = _base_value(text, match.start())
        if base is not None and base > 1:
            total += exponent * math.log10(base)
        elif exponent > 1:
            total += math.log10(exponent)
        if not total <= max_digits:               # also catches inf / nan
            raise AnswerTooLarge(f"powers of about {total:.3g} digits (limit {max_digits})")


def _power(base: float, exponent: float) -> float:
    if base > 1 and exponent * math.log10(base) > 300:
        return math.inf
    try:
        return base ** exponent
    except (OverflowError, ZeroDivisionError):
        return math.inf


def _atom(text: str, i: int, depth: int) -> tuple[float, int] | None:
    """A number or a bracketed numeric expression at ``i``: (value, end) or None."""
    if i >= len(text) or depth > MAX_DEPTH:
        return None
    if text[i] in _CLOSE:
        inner = _sum(text, i + 1, depth + 1)
        if inner is None or not text.startswith(_CLOSE[text[i]], inner[1]):
            return None
        return inner[0], inner[1] + 1
    match = _NUMBER.match(text, i)
    return (float(match.group()), match.end()) if match else None


def _expr(text: str, i: int, depth: int) -> tuple[float, int] | None:
    """An atom raised to an optional (right-associative) power."""
    atom = _atom(text, i, depth)
    if atom is None:
        return None
    value, j = atom
    hat = _SUPERSCRIPT.match(text, j)
    if hat is None:
        return value, j
    exponent = _expr(text, hat.end(), depth + 1)
    return None if exponent is None else (_power(value, exponent[0]), exponent[1])


def _sum(text: str, i: int, depth: int) -> tuple[float, int] | None:
    """Powers joined by + - * \\cdot \\times; a sum is bounded by the sum of its terms' sizes."""
    term = _expr(text, i, depth)
    if term is None:
        return None
    value, j = abs(term[0]), term[1]
    while j < len(text):
        product = _PRODUCT.match(text, j)
        if product is None and text[j] not in "+-":
            break
        nxt = _expr(text, product.end() if product else j + 1, depth)
        if nxt is None:
            return None
        value = value * abs(nxt[0]) if product else value + abs(nxt[0])
        j = nxt[1]
    return value, j


def _base_value(text: str, end: int) -> float | None:
    """The number or numeric group written right before position ``end`` (``12`` in ``12^``,
    ``{12}^``, ``(9^{9})^``)."""
    if end > 0 and text[end - 1] in _OPEN:
        depth, j = 0, end - 1
        for j in range(end - 1, max(-1, end - 1 - 4096), -1):
            depth += (text[j] in _OPEN) - (text[j] in _CLOSE)
            if depth == 0:
                break
        if depth != 0:
            return None
        group = _atom(text, j, 0)
        return group[0] if group is not None and group[1] == end else None
    j = end
    while j > 0 and (text[j - 1].isdigit() or text[j - 1] == "."):
        j -= 1
    try:
        return float(text[j:end]) if j < end else None
    except ValueError:
        return None


@functools.lru_cache(maxsize=None)
def _resolve(name: str):
    module, _, function = name.partition(":")
    return getattr(importlib.import_module(module), function)


class _CallTimeout(BaseException):
    """Raised by the per-call alarm; a BaseException so that a scorer's own ``except Exception``
    (math-verify and sympy have dozens) cannot swallow it and return a score after the deadline."""


def _on_alarm(signum, frame):
    raise _CallTimeout()


# The board: one record per item of a score() call, in a file both sides map.  The worker writes
# ``started`` before an item and ``status`` last; the parent reads it to see which item a chunk
# is on and since when, so it can kill a worker that overruns one item's deadline.
BOARD = np.dtype([("started", "f8"), ("seconds", "f8"), ("reward", "f8"), ("pid", "i8"),
                  ("status", "i1")])
STATUSES = ("pending", "ok", "timeout", "error", "crash")
_CODE = {name: i for i, name in enumerate(STATUSES)}


def _score_chunk(board_path: str, size: int, chunk: list[int],
                 items: list[tuple[str, str, dict]], timeout: float) -> None:
    """Runs in a worker's main thread; writes each item's reward and status to the board."""
    board = np.memmap(board_path, dtype=BOARD, mode="r+", shape=(size,))
    signal.signal(signal.SIGALRM, _on_alarm)
    for i, (scorer, response, gold) in zip(chunk, items):
        started = time.monotonic()
        board["pid"][i] = os.getpid()
        board["started"][i] = started
        try:
            signal.setitimer(signal.ITIMER_REAL, timeout)
            try:
                reward = float(_resolve(scorer)(response, gold))
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            reward, status = (reward if np.isfinite(reward) else 0.0), "ok"
        except _CallTimeout:
            reward, status = 0.0, "timeout"
        except Exception:
            reward, status = 0.0, "error"
        board["seconds"][i] = time.monotonic() - started
        board["reward"][i] = reward
        board["status"][i] = _CODE[status]
    board.flush()


@dataclass
class ScoreReport:
    rewards: np.ndarray
    status: list[str]       # ok / timeout / error / crash, per item
    seconds: np.ndarray | None = None      # how long each item held its worker

    @property
    def timeouts(self) -> int:
        return self.status.count("timeout")

    @property
    def failures(self) -> int:
        return sum(s in ("error", "crash") for s in self.status)


# How long past its timeout an item may hold a worker before the parent kills that worker: the
# in-worker alarm cannot interrupt C code (a huge integer power, a regex), a kill can.
KILL_MARGIN = 1.0
POLL_SECONDS = 0.02


class VerifierPool:
    """A process pool scoring (scorer, response, gold) items; see the module docstring."""

    def __init__(self, workers: int = 1, timeout: float = 5.0, kill_margin: float = KILL_MARGIN):
        self.workers = max(1, int(workers))
        self.timeout = float(timeout)
        self.kill_margin = float(kill_margin)
        self._pool: ProcessPool | None = None
        self._dir: str | None = None
        self._calls = 0

    def _ensure(self) -> ProcessPool:
        if self._pool is None:
            # spawn: forking a process that holds torch's thread pools can deadlock
            self._pool = ProcessPool(max_workers=self.workers,
                                     context=multiprocessing.get_context("spawn"),
                                     initializer=die_with_parent, initargs=(os.getpid(),))
            self._dir = tempfile.mkdtemp(prefix="allocbench-verifier-")
        return self._pool

    def score(self, items: list[tuple[str, str, dict]]) -> ScoreReport:
        if not items:
            return ScoreReport(np.zeros(0), [], np.zeros(0))
        pool = self._ensure()
        # a fresh file per call: a worker killed late may still write to the board it mapped
        self._calls += 1
        path = os.path.join(self._dir, f"board-{self._calls}")
        board = np.memmap(path, dtype=BOARD, mode="w+", shape=(len(items),))
        board[:] = 0
        board.flush()
        size = -(-len(items) // self.workers)
        running = {}
        for lo in range(0, len(items), size):
            self._schedule(pool, running, path, board, list(range(lo, min(lo + size, len(items)))),
                           items)
        deadline = self.timeout + self.kill_margin
        while running:
            done, _ = futures_wait(running, timeout=POLL_SECONDS)
            now = time.monotonic()
            for future in list(running):
                chunk = running[future]
                current = [i for i in chunk if board["status"][i] == 0 and board["started"][i]]
                if future in done:
                    del running[future]
                    error = future.exception()
                    if error is None:
                        continue
                    # the worker died (or was killed) on its current item; the rest go on
                    for i in current:
                        board["seconds"][i] = now - board["started"][i]
                        board["status"][i] = _CODE["timeout" if isinstance(error, FutureTimeout)
                                                   else "crash"]
                elif current and now - board["started"][current[0]] > deadline:
                    i = current[0]
                    # SIGKILL at once: pebble's own stop sends SIGTERM, whose Python handler
                    # waits for the C call to return, and escalates only 3 s later
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(board["pid"][i]), signal.SIGKILL)
                    future.cancel()          # pebble starts another worker
                    del running[future]
                    board["seconds"][i] = now - board["started"][i]
                    board["status"][i] = _CODE["timeout"]
                else:
                    continue
                rest = [i for i in chunk if board["status"][i] == 0 and not board["started"][i]]
                if rest:
                    self._schedule(pool, running, path, board, rest, items)
        report = ScoreReport(np.array(board["reward"]),
                             [STATUSES[c] for c in board["status"]], np.array(board["seconds"]))
        del board
        os.unlink(path)
        return report

    def _schedule(self, pool, running, path, board, chunk, items) -> None:
        # pebble's own timeout is a backstop for a worker that hangs between items
        future = pool.schedule(_score_chunk, args=(path, len(board), chunk,
                                                   [items[i] for i in chunk], self.timeout),
                               timeout=(self.timeout + self.kill_margin) * len(chunk) + 30.0)
        running[future] = chunk

    def close(self) -> None:
        if self._pool is not None:
            self._pool.stop()
            self._pool.join()
            self._pool = None
            shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
