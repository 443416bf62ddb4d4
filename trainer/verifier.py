"""Verifiers in a pool of worker processes with a per-call timeout.

A scorer is named ``"module:function"`` and called as ``function(response_text, gold) -> float``
inside a worker process's main thread (math-verify's timeouts use signals, which only work
there).  Each call gets ``timeout`` seconds (SIGALRM inside the worker); a call that times out,
raises, or takes its worker down scores 0 and is counted, and the run goes on.

Work is sent in one chunk per worker to keep inter-process overhead per step small; if a chunk
dies (a scorer hung in C code past the alarm, or crashed the process), its items are re-scored one
by one with a pool-level timeout, so one hostile response never costs its neighbours their score.
"""
from __future__ import annotations

import functools
import importlib
import math
import multiprocessing
import re
import signal
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

import numpy as np
from pebble import ProcessPool

from trainer.tasks import extract_boxed

REASONING_GYM = "trainer.verifier:score_reasoning_gym"
MATH_VERIFY = "trainer.verifier:score_math_verify"


@functools.lru_cache(maxsize=None)
def _rg_score_fn(source: str):
    import reasoning_gym
    return reasoning_gym.get_score_answer_fn(source)


def score_reasoning_gym(response: str, gold: dict) -> float:
    """reasoning-gym's own ``score_answer`` on the last ``\\boxed{}`` of the response."""
    answer = extract_boxed(response)
    if answer is None:
        return 0.0
    return float(_rg_score_fn(gold["metadata"]["source_dataset"])(answer.strip(), gold))


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
    from math_verify import verify
    gold_parsed = _parse_gold(gold["answer"])
    check_magnitude(response)
    pred = _parse_prediction(response)
    if not pred:
        return 0.0
    return float(verify(gold_parsed, pred, timeout_seconds=None))


def _extraction_config():
    from math_verify import ExprExtractionConfig, LatexExtractionConfig
    return [LatexExtractionConfig(), ExprExtractionConfig()]


@functools.lru_cache(maxsize=65536)
def _parse_gold(answer: str):
    from math_verify import parse
    check_magnitude(answer)
    # a bare gold answer ("\frac{14}{3}", "(-\infty, 3]") is boxed so that the LaTeX extractor
    # takes all of it as one expression instead of searching it for the last number
    text = answer if "\\boxed" in answer else f"\\boxed{{{answer}}}"
    parsed = parse(text, extraction_config=_extraction_config(), parsing_timeout=None)
    if not parsed:
        raise ValueError(f"gold answer does not parse: {answer!r}")
    return parsed


def _parse_prediction(response: str):
    from math_verify import parse
    return parse(response, extraction_config=_extraction_config(), parsing_timeout=None)


class AnswerTooLarge(ValueError):
    """A number too large to evaluate in bounded time (see :func:`check_magnitude`)."""


# Results of more digits than this are refused: 10**(10**6) takes CPython ~0.1 s, and the cost of
# integer powers grows faster than linearly beyond.  No MATH/GSM8K answer comes near it.
MAX_DIGITS = 1_000_000
_SUPERSCRIPT = re.compile(r"\^|\*\*")


def check_magnitude(text: str, max_digits: int = MAX_DIGITS) -> None:
    """Raise :class:`AnswerTooLarge` if ``text`` holds a numeric power whose value has more than
    ``max_digits`` digits, or a symbolic base raised to a numeric exponent that is itself that
    large (``x^{9^{9^9}}``: sympy evaluates the exponent).  Linear in ``len(text)``."""
    for match in _SUPERSCRIPT.finditer(text):
        exponent = _numeric_power(text, match.end())
        if exponent is None:
            continue
        base = _numeric_base(text, match.start())
        digits = exponent * math.log10(base) if base is not None and base > 1 else \
            (math.log10(exponent) if exponent > 1 else 0.0)
        if not digits <= max_digits:               # also catches inf / nan
            raise AnswerTooLarge(f"a power of about {digits:.3g} digits (limit {max_digits})")


_NUMBER = re.compile(r"\s*(\d+(?:\.\d*)?)")


def _numeric_base(text: str, end: int) -> float | None:
    """The number written right before position ``end`` (``12`` in ``12^``, ``{12}^``)."""
    i = end
    while i > 0 and text[i - 1] in " }":
        i -= 1
    j = i
    while j > 0 and (text[j - 1].isdigit() or text[j - 1] == "."):
        j -= 1
    if j == i:
        return None
    try:
        return float(text[j:i])
    except ValueError:
        return None


def _numeric_power(text: str, start: int, depth: int = 0) -> float | None:
    """Value (as a float, possibly inf) of the numeric exponent starting at ``start``: a number,
    or a brace group holding a number optionally raised to a further numeric exponent; None
    when the exponent is not purely numeric (``x^{n+1}``), so sympy will not evaluate it."""
    if depth > 50:
        return math.inf
    i = start
    while i < len(text) and text[i] == " ":
        i += 1
    braced = i < len(text) and text[i] == "{"
    if braced:
        i += 1
    match = _NUMBER.match(text, i)
    if match is None:
        return None
    value = float(match.group(1))
    i = match.end()
    while i < len(text) and text[i] == " ":
        i += 1
    if text.startswith("^", i) or text.startswith("**", i):
        inner = _numeric_power(text, i + (1 if text[i] == "^" else 2), depth + 1)
        if inner is None:
            return None
        try:
            value = math.inf if inner > 1e6 and value > 1 else value ** inner
        except OverflowError:
            value = math.inf
    return value


@functools.lru_cache(maxsize=None)
def _resolve(name: str):
    module, _, function = name.partition(":")
    return getattr(importlib.import_module(module), function)


class _CallTimeout(BaseException):
    """Raised by the per-call alarm; a BaseException so that a scorer's own ``except Exception``
    (math-verify and sympy have dozens) cannot swallow it and return a score after the deadline."""


def _on_alarm(signum, frame):
    raise _CallTimeout()


def _score_chunk(items: list[tuple[str, str, dict]], timeout: float) -> list[tuple[float, str]]:
    """Runs in a worker's main thread: (reward, status) per item, status ok/timeout/error."""
    signal.signal(signal.SIGALRM, _on_alarm)
    results = []
    for scorer, response, gold in items:
        try:
            signal.setitimer(signal.ITIMER_REAL, timeout)
            try:
                reward = float(_resolve(scorer)(response, gold))
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            results.append((reward if np.isfinite(reward) else 0.0, "ok"))
        except _CallTimeout:
            results.append((0.0, "timeout"))
        except Exception:
            results.append((0.0, "error"))
    return results


@dataclass
class ScoreReport:
    rewards: np.ndarray
    status: list[str]       # ok / timeout / error / crash, per item

    @property
    def timeouts(self) -> int:
        return self.status.count("timeout")

    @property
    def failures(self) -> int:
        return sum(s in ("error", "crash") for s in self.status)


class VerifierPool:
    """A process pool scoring (scorer, response, gold) items; see the module docstring."""

    def __init__(self, workers: int = 1, timeout: float = 5.0):
        self.workers = max(1, int(workers))
        self.timeout = float(timeout)
        self._pool: ProcessPool | None = None

    def _ensure(self) -> ProcessPool:
        if self._pool is None:
            # spawn: forking a process that holds torch's thread pools can deadlock
            self._pool = ProcessPool(max_workers=self.workers,
                                     context=multiprocessing.get_context("spawn"))
        return self._pool

    def score(self, items: list[tuple[str, str, dict]]) -> ScoreReport:
        if not items:
            return ScoreReport(np.zeros(0), [])
        pool = self._ensure()
        size = -(-len(items) // self.workers)
        chunks = [list(range(i, min(i + size, len(items)))) for i in range(0, len(items), size)]
        futures = [pool.schedule(_score_chunk, args=([items[i] for i in c], self.timeout),
                                 timeout=self.timeout * len(c) + 30.0) for c in chunks]
        rewards = np.zeros(len(items))
        status = ["ok"] * len(items)
        for chunk, future in zip(chunks, futures):
            try:
                results = future.result()
            except Exception:
                results = [self._score_alone(items[i]) for i in chunk]
            for i, (reward, state) in zip(chunk, results):
                rewards[i], status[i] = reward, state
        return ScoreReport(rewards, status)

    def _score_alone(self, item) -> tuple[float, str]:
        future = self._ensure().schedule(_score_chunk, args=([item], self.timeout),
                                         timeout=self.timeout + 10.0)
        try:
            return future.result()[0]
        except FutureTimeout:
            return 0.0, "timeout"
        except Exception:
            return 0.0, "crash"

    def close(self) -> None:
        if self._pool is not None:
            self._pool.stop()
            self._pool.join()
            self._pool = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
