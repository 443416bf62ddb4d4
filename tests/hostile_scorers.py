"""Scorers that misbehave on purpose, for the verifier-pool tests (imported by worker processes)."""
import hashlib
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



def c_hang(response: str, gold: dict) -> float:
    """Hangs inside one C call that never checks for signals (OpenSSL's PBKDF2, ~10^9 rounds):
    the in-worker alarm is only handled when it returns, as with CPython's long division or gcd
    on huge integers."""
    if response == "hang":
        hashlib.pbkdf2_hmac("sha256", b"x", b"y", 10 ** 9)
    return 1.0 if response == gold["answer"] else 0.0


def unguarded_math_verify(response: str, gold: dict) -> float:
    """The math-verify scorer without the size guard, so that only the pool's kill bounds it."""
    from math_verify import parse, verify
    from trainer.verifier import _extraction_config
    return float(verify(parse(gold["answer"], extraction_config=_extraction_config(),
                              parsing_timeout=None),
                        parse(response, extraction_config=_extraction_config(),
                              parsing_timeout=None), timeout_seconds=None))


def broken(response: str, gold: dict) -> float:
    """A scorer that fails on every item, as a verifier whose timer overflowed did."""
    raise RuntimeError("broken scorer")
