"""A worker process ends when the process that started it does.

A sweep's coordinator (``bench.run``) killed with SIGKILL cannot tell its workers anything; an
orphaned worker would go on training and write ``summary.json`` for a sweep nobody watches --
and a second coordinator started on the same directory would race it.  :func:`die_with_parent`,
called first thing in a worker, makes the kernel send the worker SIGKILL when its parent dies
(Linux ``prctl(PR_SET_PDEATHSIG)``), and, on every platform, starts a daemon thread that exits
the process once its parent pid changes (re-parented to init or a subreaper).  Both, because
PR_SET_PDEATHSIG is Linux-only and the thread cannot interrupt a long C call (it needs the GIL);
a process that outlives the check interval of the thread is ended by whichever comes first.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading

PR_SET_PDEATHSIG = 1
CHECK_SECONDS = 1.0


def _set_parent_death_signal() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch(parent_pid: int) -> None:
    while True:
        if os.getppid() != parent_pid:
            os._exit(1)        # no clean-up: the coordinator that would read it is gone
        threading.Event().wait(CHECK_SECONDS)


def die_with_parent(parent_pid: int) -> None:
    """End this process when ``parent_pid`` (the process that started it) is gone."""
    _set_parent_death_signal()
    # the parent may have died before the signal was armed: then the pid has changed already
    if os.getppid() != parent_pid:
        os._exit(1)
    threading.Thread(target=_watch, args=(parent_pid,), name="die-with-parent",
                     daemon=True).start()
