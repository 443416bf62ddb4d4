"""Scorers that misbehave on purpose, for the verifier-pool tests (imported by worker processes)."""
import os
import time


def sleepy(response: str, gold: dict) -> float:
    if response == "hang":
        time.sleep(60)
    return 1.0 if response == gold["answer"] else 0.0


def crashy(response: str, gold: dict) -> float:
    if response == "crash":
        os._exit(3)
    if response == "raise":
        raise RuntimeError("bad scorer")
    return 1.0 if response == gold["answer"] else 0.0
