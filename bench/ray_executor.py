"""Sweeps on Ray (extra ``dist``): every (method, budget, seed) run as an independent Ray task.

``run_on_ray(specs, out_dir, address=None, progress=None)`` runs each :class:`RunSpec` as one task
executing ``trainer.loop.Run(spec, out_dir / spec.run_name()).execute()`` -- the same code as the
local runner, so finished runs are skipped and unfinished ones resume from their checkpoint --
and returns the summaries, keyed by run name in the order of ``specs``.  A task asks Ray for
``num_cpus = preset.threads`` and, for a CUDA preset, ``num_gpus = 1``; each run stays on one node
(docs/DESIGN.md §Scale).

``address=None`` starts a local Ray instance (``num_cpus`` caps it; default: all cores) and shuts
it down afterwards; an address (``"auto"``, ``"ray://head:10001"``) joins an existing cluster,
whose nodes must have this package installed and ``out_dir`` on a shared filesystem.  The
variables that steer the harness (``ALLOCBENCH_*``, ``HF_HUB_OFFLINE``, ``HF_HOME``) are passed
to the workers.  ``progress(spec, summary)`` is called as each run finishes.  A run that fails does
not stop the others; when all are done the first failure is raised as a one-line ``RunError``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from trainer.spec import RunError, RunSpec

FORWARDED_ENV = ("ALLOCBENCH_CACHE", "ALLOCBENCH_MODELS", "ALLOCBENCH_DATA", "HF_HUB_OFFLINE",
                 "HF_DATASETS_OFFLINE", "HF_HOME")


def _execute(spec: RunSpec, run_dir: str) -> dict:
    """The body of one Ray task (module-level so that Ray can pickle it by reference)."""
    from trainer.loop import Run
    return Run(spec, Path(run_dir), log=lambda *args: None).execute()


def _first_line(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None) or exc      # RayTaskError wraps the task's exception
    text = str(cause).strip()
    return f"{type(cause).__name__}: {text.splitlines()[0]}" if text else type(cause).__name__


def run_on_ray(specs: list[RunSpec], out_dir, address: str | None = None,
               progress: Callable[[RunSpec, dict], None] | None = None, *,
               num_cpus: int | None = None) -> dict[str, dict]:
    try:
        import ray
    except ImportError:
        raise RunError("--executor ray needs Ray: pip install 'allocbench[dist]'") from None
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
    started_here = not ray.is_initialized()
    if started_here:
        options = dict(address=address, include_dashboard=False, logging_level="ERROR",
                       runtime_env={"env_vars": env} if env else None)
        if address is None and num_cpus is not None:
            options["num_cpus"] = int(num_cpus)
        try:
            ray.init(**options)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise RunError(f"cannot start or reach Ray at {address or 'a local instance'}: "
                           f"{_first_line(exc)}") from None
    try:
        remote = ray.remote(_execute)
        pending = {}
        for spec in specs:
            gpus = 1 if str(spec.preset.device).startswith("cuda") else 0
            ref = remote.options(num_cpus=spec.preset.threads, num_gpus=gpus,
                                 max_retries=0).remote(spec, str(out_dir / spec.run_name()))
            pending[ref] = spec
        summaries: dict[str, dict] = {}
        failures: list[str] = []
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            spec = pending.pop(done[0])
            try:
                summary = ray.get(done[0])
            except Exception as exc:               # a run's error never stops the others
                failures.append(f"{spec.run_name()}: {_first_line(exc)}")
                continue
            summaries[spec.run_name()] = summary
            if progress is not None:
                progress(spec, summary)
    finally:
        if started_here:
            ray.shutdown()
    if failures:
        more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
        raise RunError(f"{len(failures)} of {len(specs)} runs failed on Ray; first: "
                       f"{failures[0]}{more}")
    return {spec.run_name(): summaries[spec.run_name()] for spec in specs}
