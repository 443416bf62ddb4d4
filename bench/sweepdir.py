"""A sweep directory's one writer and the command-line lines around it, shared by
``bench.run``, ``bench.calibrate`` and ``bench.report``: :func:`locked` holds the directory's lock
while a command writes it (a second writer, a directory that cannot be written, Ctrl-C and
SIGTERM each end in one line), and :func:`parse_target` checks a cost-to-target accuracy."""
from __future__ import annotations

import contextlib
import signal
import sys
from pathlib import Path

from trainer.dirlock import DirLock, DirLocked


class UsageError(Exception):
    pass


def parse_target(value: float | None) -> float | None:
    if value is not None and not 0.0 <= value <= 1.0:
        raise UsageError(f"--target is an accuracy in [0, 1], got {value}")
    return value


INTERRUPTED = "interrupted: finished runs are kept; re-run the same command to resume"


def _terminated(signum, frame):
    raise KeyboardInterrupt


@contextlib.contextmanager
def sigterm_as_ctrl_c():
    """SIGTERM (``kill``, a scheduler's time limit) ends a sweep as Ctrl-C does, with the same
    line, instead of silently; the previous handler is restored after."""
    try:
        previous = signal.signal(signal.SIGTERM, _terminated)
    except ValueError:          # not the main thread: signals cannot be handled here
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def locked(out: Path, body) -> int:
    """``body()`` while this process holds the sweep directory ``out`` (:class:`DirLock`): two
    sweeps writing one directory is refused in one line, as is a directory that cannot be
    written (finished runs stay on disk); both exit 2.  Ctrl-C or SIGTERM: one line, exit 130."""
    try:
        with sigterm_as_ctrl_c(), DirLock(out, "sweep directory"):
            return body()
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        return 130
    except DirLocked as exc:
        print(f"error: {exc}", file=sys.stderr)
    except OSError as exc:       # no permission, no space, ...: finished runs stay on disk
        where = f": {exc.filename}" if exc.filename else ""
        print(f"error: cannot write the sweep directory {out} "
              f"({exc.strerror or exc}{where}); finished runs are kept", file=sys.stderr)
    return 2
