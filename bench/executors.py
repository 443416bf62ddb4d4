"""How a sweep's independent runs are executed.

:data:`EXECUTORS` maps a name (``bench.run --executor NAME``) to a function
``execute(specs, out_dir, progress, **options) -> Outcome``: it runs every
:class:`trainer.loop.RunSpec` into ``out_dir / spec.run_name()``, reports steps to ``progress``
(a :class:`SweepProgress`) and returns the summaries of the runs that finished and a one-line
error per run that failed.  ``options`` are the CLI's executor options (``jobs`` today); an
executor ignores the ones it does not use, so adding one (e.g. Ray) is one entry.

Resume semantics are the run's own (:meth:`trainer.loop.Run.execute`): a finished run returns
its summary.json, an unfinished one resumes from its checkpoint, whichever executor runs it.
"""
from __future__ import annotations

import os
import queue as queue_module
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from tqdm.auto import tqdm

from trainer.budget import expected_steps
from trainer.lifetime import die_with_parent
from trainer.rundir import read_summary
from trainer.spec import RunError, RunSpec

POLL_SECONDS = 0.5


def run_errors() -> tuple[type[BaseException], ...]:
    """Errors of a run's inputs or files (OSError: no space, no permission): reported in one
    line, never with a traceback, and the other runs' results are kept.  Imported when runs
    start, not with this module: two of them live beside torch, and ``bench.run`` needs the
    executors' names and the progress bar before it knows that its arguments are good."""
    from trainer.features import FeatureError
    from trainer.policy import PolicyLoadError
    return RunError, PolicyLoadError, FeatureError, OSError


@dataclass
class Outcome:
    summaries: dict[str, dict] = field(default_factory=dict)   # run name -> summary.json
    errors: list[str] = field(default_factory=list)            # "run name: one-line error"


class StepBar(tqdm):
    """tqdm whose rate and remaining time count from ``timed_from`` (time, steps), the first
    step a run reported, and are left out until a step has followed it.

    tqdm's own rate starts at the bar's creation, so its first estimate divides the whole sweep
    by the start-up (spawning workers, importing torch, building the warm start): hundreds of
    hours for a sweep of a few.  Finished runs read back from disk are not steps either."""

    WITHOUT_ESTIMATE = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]"
    timed_from: tuple[float, float] | None = None

    def start_timing(self) -> None:
        """Count the rate from here on (the first call only)."""
        if self.timed_from is None and hasattr(self, "unit"):
            self.timed_from = (self._time(), self.n)

    def skip(self, steps: int) -> None:
        """``steps`` just added to the bar were not trained now (a run resumed past them, or
        read back finished): they leave the rate, and so the ETA, alone."""
        if self.timed_from is not None:
            self.timed_from = (self.timed_from[0], self.timed_from[1] + steps)

    @property
    def format_dict(self):
        fields = super().format_dict
        # a bar made disabled has no fields; close() sets disable too but draws the last line
        if self.disable and not hasattr(self, "unit"):
            return fields
        if self.timed_from is None or self.n <= self.timed_from[1]:
            fields["bar_format"] = self.WITHOUT_ESTIMATE
        else:
            started, steps = self.timed_from
            fields["rate"] = (self.n - steps) / max(self._time() - started, 1e-9)
        return fields


class SweepProgress:
    """The sweep's one progress bar, in training steps over every run; runs report the steps
    they have done (absolute, so a resumed run jumps to where it is)."""

    def __init__(self, specs: list[RunSpec], disable: bool = False, file=None):
        self.total = {s.run_name(): expected_steps(s.preset, s.budget) for s in specs}
        self.done = dict.fromkeys(self.total, 0)
        self.reported: set[str] = set()
        self.bar = StepBar(total=sum(self.total.values()), desc="sweep", unit="step",
                           dynamic_ncols=True, disable=disable, file=file)

    def set_steps(self, name: str, steps: int, accuracy: float | None = None,
                  tokens: int | None = None) -> None:
        """Run ``name`` has trained ``steps`` steps (reported by the run as it goes)."""
        if accuracy is not None:     # before the update, which redraws the bar with it
            self.bar.set_postfix(run=name, acc=f"{accuracy:.3f}", tok=tokens, refresh=False)
        if name not in self.reported:
            # a run's first report is one trained step; before it, the steps it resumed past
            # (counted as throughput they made the ETA after a resume twice too optimistic)
            self.reported.add(name)
            self._advance(name, steps - 1, trained=False)
        self._advance(name, steps)
        self.bar.start_timing()

    def finish(self, name: str) -> None:
        """Run ``name`` is done, whether it just trained or was read back finished."""
        self._advance(name, self.total[name], trained=name in self.reported)

    def _advance(self, name: str, steps: int, trained: bool = True) -> None:
        steps = min(steps, self.total[name])
        jump = max(0, steps - self.done[name])
        self.bar.update(jump)
        if not trained:
            self.bar.skip(jump)
        self.done[name] = max(steps, self.done[name])

    def describe(self, text: str) -> None:
        self.bar.set_description(text)

    def log(self, text: str) -> None:
        self.bar.write(text)

    def close(self) -> None:
        self.bar.close()


def one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


# ------------------------------------------------------------------------------ serial
def run_serial(specs: list[RunSpec], out_dir: Path, progress: SweepProgress, **_options) -> Outcome:
    """One run after another in this process; stops at the first run that fails (as the runner
    always has), keeping the finished runs."""
    from trainer.loop import Run
    errors = run_errors()
    outcome = Outcome()
    for spec in specs:
        name = spec.run_name()
        progress.describe(f"{spec.method} b={spec.budget:g} s={spec.seed}")

        def on_step(record, last_eval, _name=name):
            progress.set_steps(_name, record["step"] + 1, last_eval["mean_at_k"],
                               record["cum_tokens"])

        try:
            outcome.summaries[name] = Run(spec, Path(out_dir) / name, log=progress.log,
                                          progress=on_step).execute()
        except errors as exc:
            outcome.errors.append(f"{name}: {one_line(exc)}")
            return outcome
        progress.finish(name)
    return outcome


# ------------------------------------------------------------------------------ local processes
def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:             # not on Linux
        return os.cpu_count() or 1


def default_jobs(threads: int) -> int:
    """As many runs as fit: cores // torch threads per run, at least one."""
    return max(1, available_cores() // max(1, threads))


def _worker(spec: RunSpec, run_dir: str, messages, parent_pid: int) -> None:
    """One run in a spawned process; everything it has to say goes through ``messages``.  It
    ends with its coordinator (:mod:`trainer.lifetime`), so no orphan finishes a run."""
    die_with_parent(parent_pid)
    from trainer.loop import Run
    errors = run_errors()
    name = spec.run_name()

    def on_step(record, last_eval):
        messages.put(("step", name, record["step"] + 1, last_eval["mean_at_k"],
                      record["cum_tokens"]))

    try:
        summary = Run(spec, Path(run_dir), log=lambda text: messages.put(("log", name, str(text))),
                      progress=on_step).execute()
        messages.put(("done", name, summary))
    except errors as exc:
        messages.put(("error", name, one_line(exc)))
    except KeyboardInterrupt:
        messages.put(("error", name, "interrupted"))
    except BaseException as exc:       # a bug in one run must not hide the others' results
        messages.put(("error", name, f"{type(exc).__name__}: {one_line(exc)}"))


def _readable_summary(run_dir: Path, progress: SweepProgress) -> bool:
    if read_summary(run_dir / "summary.json") is not None:
        return True
    progress.log(f"warning: {run_dir / 'summary.json'} was unreadable (kept as "
                 f"summary.json.corrupt); the run is finished again")
    return False


def _prebuild_warm_start(specs: list[RunSpec], out_dir: Path, progress: SweepProgress) -> None:
    """Build the embedded policy once here, so that workers never race to train the same
    cached warm start."""
    from trainer.sft import ensure_warm_start
    for config in {s.preset.warm_start for s in specs if s.preset.model_dir is None
                   and s.preset.warm_start is not None}:
        ensure_warm_start(config, progress=True, log=progress.log)


def run_local(specs: list[RunSpec], out_dir: Path, progress: SweepProgress, *,
              jobs: int | None = None, **_options) -> Outcome:
    """Runs in parallel worker processes (multiprocessing "spawn": torch and fork do not mix),
    at most ``jobs`` at a time (default :func:`default_jobs`), each with the preset's torch
    threads.  A failing run is reported and the others go on."""
    import multiprocessing

    from trainer.loop import Run
    errors = run_errors()
    if not specs:
        return Outcome()
    jobs = jobs or default_jobs(max(s.preset.threads for s in specs))
    outcome = Outcome()
    # finished runs only read their summary.json: no worker (and its start-up) for them
    unfinished = []
    for spec in specs:
        run_dir = Path(out_dir) / spec.run_name()
        if (run_dir / "summary.json").is_file() and not _readable_summary(run_dir, progress):
            unfinished.append(spec)
        elif (run_dir / "summary.json").is_file():
            try:
                outcome.summaries[spec.run_name()] = Run(spec, run_dir).execute()
            except errors as exc:
                outcome.errors.append(f"{spec.run_name()}: {one_line(exc)}")
            progress.finish(spec.run_name())
        else:
            unfinished.append(spec)
    _prebuild_warm_start(unfinished, out_dir, progress)
    context = multiprocessing.get_context("spawn")
    messages = context.Queue()
    todo, running = deque(unfinished), {}
    try:
        while todo or running:
            while todo and len(running) < jobs:
                spec = todo.popleft()
                process = context.Process(target=_worker, name=f"allocbench-{spec.run_name()}",
                                          args=(spec, str(Path(out_dir) / spec.run_name()),
                                                messages, os.getpid()))
                process.start()
                running[spec.run_name()] = process
            progress.describe(f"{len(running)} running, {len(outcome.summaries)}/{len(specs)} "
                              f"runs done")
            _drain(messages, running, outcome, progress, timeout=POLL_SECONDS)
            for name, process in list(running.items()):
                if not process.is_alive():      # died without a word (killed, out of memory)
                    _drain(messages, running, outcome, progress, timeout=1.0)
                    if name in running:
                        running.pop(name).join()
                        outcome.errors.append(f"{name}: worker exited with code "
                                              f"{process.exitcode} before finishing")
        progress.describe(f"{len(outcome.summaries)}/{len(specs)} runs done")
    except KeyboardInterrupt:
        for process in running.values():       # only the workers this executor started
            process.terminate()
        for process in running.values():
            process.join(timeout=10)
        raise
    finally:
        messages.close()
    return outcome


def _drain(messages, running: dict, outcome: Outcome, progress: SweepProgress,
           timeout: float) -> None:
    """Handle every message waiting (the first one waited for up to ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            message = messages.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue_module.Empty:
            return
        kind, name = message[0], message[1]
        if kind == "step":
            progress.set_steps(name, *message[2:])
        elif kind == "log":
            progress.log(f"[{name}] {message[2]}")
        elif kind in ("done", "error"):
            if kind == "done":
                outcome.summaries[name] = message[2]
                progress.finish(name)
            else:
                outcome.errors.append(f"{name}: {message[2]}")
            process = running.pop(name, None)
            if process is not None:
                process.join()
        deadline = min(deadline, time.monotonic())      # then only what is already there


# name -> execute(specs, out_dir, progress, **options); one line per executor
def run_ray(specs: list[RunSpec], out_dir: Path, progress: SweepProgress, *,
            ray_address: str | None = None, **_options) -> Outcome:
    """Each run as a Ray task (:mod:`bench.ray_executor`), on a local instance or ``ray_address``;
    progress advances per finished run.  Finished runs are on disk whatever fails."""
    from bench.ray_executor import run_on_ray
    errors = run_errors()
    outcome = Outcome()
    try:
        outcome.summaries = run_on_ray(specs, out_dir, ray_address,
                                       lambda spec, summary: progress.finish(spec.run_name()))
    except errors as exc:
        outcome.errors.append(str(exc))
        for spec in specs:
            summary_path = Path(out_dir) / spec.run_name() / "summary.json"
            if summary_path.is_file():
                import json
                outcome.summaries[spec.run_name()] = json.loads(summary_path.read_text())
    return outcome


EXECUTORS: dict[str, Callable[..., Outcome]] = {
    "serial": run_serial,
    "local": run_local,
    "ray": run_ray,
}
