"""What a run's numbers depend on besides its config: library versions, torch threads, the
exact weights it started from.

A committed result reproduces bit for bit only where all of these match: the same seed and
config on the same thread count, the same versions of torch (kernels and their reduction order),
transformers (model code), reasoning-gym (task generation and scoring) and numpy (sampling), and
the same warm-start weights.  :func:`environment` is recorded in every run's ``config.json``;
:func:`weights_sha256` identifies a warm start (stored beside it at build, checked on load and
compared on rebuild, :mod:`trainer.sft`).
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import sys
from pathlib import Path

PACKAGES = ("torch", "transformers", "reasoning-gym", "numpy", "math-verify")
WEIGHT_SUFFIXES = (".safetensors", ".bin")


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment() -> dict:
    """Versions, torch's thread count now, and the machine, for ``config.json``."""
    import torch
    return {"python": platform.python_version(), **{p: _version(p) for p in PACKAGES},
            "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
            "machine": platform.machine(), "platform": sys.platform}


def weights_sha256(folder: Path) -> str:
    """sha256 over a model directory's weight files (name and bytes, in name order)."""
    digest = hashlib.sha256()
    files = sorted(p for p in Path(folder).iterdir() if p.suffix in WEIGHT_SUFFIXES)
    for path in files:
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
