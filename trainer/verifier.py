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
import multiprocessing
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
    """math-verify: ``verify(parse(gold), parse(response))`` (gold parsed once and cached)."""
    from math_verify import verify
    gold_parsed = _parse_gold(gold["answer"])
    pred = _parse_prediction(response)
    if not pred:
        return 0.0
    return float(verify(gold_parsed, pred, timeout_seconds=None))


@functools.lru_cache(maxsize=65536)
def _parse_gold(answer: str):
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse
    text = answer if "\\boxed" in answer else f"\\boxed{{{answer}}}"
    parsed = parse(text, extraction_config=[LatexExtractionConfig(), ExprExtractionConfig()],
                   parsing_timeout=None)
    if not parsed:
        raise ValueError(f"gold answer does not parse: {answer!r}")
    return parsed


def _parse_prediction(response: str):
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse
    return parse(response, extraction_config=[LatexExtractionConfig(), ExprExtractionConfig()],
                 parsing_timeout=None)


@functools.lru_cache(maxsize=None)
def _resolve(name: str):
    module, _, function = name.partition(":")
    return getattr(importlib.import_module(module), function)


class _CallTimeout(Exception):
    pass


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
