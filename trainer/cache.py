"""Where AllocBench caches what it builds once and reuses (warm-start policies, embeddings).

``$ALLOCBENCH_CACHE``, else ``~/.cache/allocbench``; read at each call, so a test or a sweep
can point it elsewhere by setting the variable.
"""
from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    return Path(os.environ.get("ALLOCBENCH_CACHE", Path.home() / ".cache" / "allocbench"))
