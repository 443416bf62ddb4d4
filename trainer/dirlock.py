"""One writer per directory: an advisory lock file that names its holder.

Two ``bench.run`` sweeps on one ``--out``, or two processes training one run directory (a Ray
task retried while the first attempt still runs, two people sharing a results folder), would
interleave their atomic writes into a directory that belongs to neither.  :class:`DirLock` makes
the second writer refuse, in one line that names the holder (pid, host, start time, command).

The lock is ``flock`` on ``DIR/.lock``.  The kernel drops it when the holding process dies, however
it dies, so a lock left by a dead process (``kill -9``, out of memory, a lost node) is simply
taken over: no pid guessing, no timeouts.  The holder's record is written into the file after
the lock is taken and the file is removed on release.  Removal races with a process that opened
the old file just before, so a taker checks, after locking, that the path still names the file it
locked, and retries otherwise.

Where the file system has no working ``flock`` (some FUSE mounts; NFS before Linux 2.6.12) the
lock is skipped, not enforced: refusing every run there would be worse than the race.
"""
from __future__ import annotations

import errno
import json
import os
import socket
import sys
import time
from pathlib import Path

try:
    import fcntl
except ImportError:          # not on a POSIX system: no locking
    fcntl = None

LOCK_NAME = ".lock"
_BUSY = (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK)


class DirLocked(RuntimeError):
    """Another live process holds the directory's lock; the message names it in one line."""


def holder_record() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            "command": " ".join([os.path.basename(sys.argv[0] or "python"), *sys.argv[1:]])[:200]}


def describe(record: dict | None) -> str:
    if not record:
        return "another process (it has not written its name yet)"
    text = f"pid {record.get('pid', '?')} on {record.get('host', '?')} since " \
           f"{record.get('started', '?')}"
    return text + (f" ({record['command']})" if record.get("command") else "")


def _read_record(handle) -> dict | None:
    try:
        handle.seek(0)
        text = handle.read().decode("utf-8", "replace")
        return json.loads(text) if text.strip() else None
    except (OSError, ValueError):
        return None


class DirLock:
    """``with DirLock(path, what="sweep directory"):`` -- hold ``path/.lock`` or raise
    :class:`DirLocked`.  ``taken_over`` is the record of a dead holder whose lock file was found,
    else None."""

    def __init__(self, directory: str | Path, what: str = "directory"):
        self.dir, self.what = Path(directory), what
        self.path = self.dir / LOCK_NAME
        self.taken_over: dict | None = None
        self._handle = None

    def acquire(self) -> "DirLock":
        if fcntl is None:
            return self
        self.dir.mkdir(parents=True, exist_ok=True)
        for _ in range(100):             # retries only when a releasing holder removed the file
            handle = open(self.path, "a+b")
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in _BUSY:
                    record = _read_record(handle)
                    handle.close()
                    raise DirLocked(f"{self.what} {self.dir} is in use by {describe(record)}; "
                                    f"wait for it to finish or use another directory") from None
                handle.close()           # no flock on this file system: run unlocked
                return self
            try:
                same = os.path.samestat(os.fstat(handle.fileno()), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if not same:                 # locked a file its releaser had just removed
                handle.close()
                continue
            self.taken_over = _read_record(handle)
            handle.seek(0)
            handle.truncate()
            handle.write(json.dumps(holder_record()).encode())
            handle.flush()
            self._handle = handle
            return self
        raise DirLocked(f"{self.what} {self.dir}: could not take {self.path}")

    def release(self) -> None:
        if self._handle is None:
            return
        try:
            os.unlink(self.path)         # while still locked, so no one else's file is removed
        except FileNotFoundError:
            pass
        self._handle.close()             # closing drops the flock
        self._handle = None

    def __enter__(self) -> "DirLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
