"""Run-directory files, all written atomically (temp file in the same folder, then rename).

A run directory holds ``config.json``, ``metrics.jsonl`` (one line per step), ``eval.jsonl``,
``summary.json`` and ``checkpoint.pt``; a killed run leaves either the old or the new version of
each file, never a torn one.

``checkpoint.pt`` ends with a trailer holding the sha256 of everything before it (torch.load
ignores bytes after the zip archive); :func:`read_checkpoint` refuses, in one line, a file whose
bytes do not match, so a flipped bit in a tensor cannot resume a run silently.  Before the
trailer, one JSON line records what the checkpoint belongs to (the run's config hash, its step,
the number and hash of the metric and evaluation lines written so far): readable without torch
(:func:`read_checkpoint_meta`) and checked by :func:`trainer.spec.check_resume` before a resume.  A temp file left
by a kill during a write (``.NAME.*.tmp``) is removed by :func:`remove_stale_temp_files` when the
run resumes.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from pathlib import Path


def atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def atomic_write_jsonl(path: Path, records: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))


class RunFileError(ValueError):
    """A run file that cannot be read, as one line naming the file (and line)."""


def read_jsonl(path: Path) -> list[dict]:
    """The records of a JSON Lines run file ([] when it is absent); a line that is not a JSON
    object raises :class:`RunFileError` naming the file and line."""
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for lineno, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise RunFileError(f"{path}:{lineno}: not valid JSON ({exc.msg}); the file was cut "
                               f"or edited") from None
        if not isinstance(record, dict):
            raise RunFileError(f"{path}:{lineno}: expected a JSON object")
        records.append(record)
    return records


def records_digest(records: list[dict]) -> str:
    """sha256 of records as :func:`atomic_write_jsonl` writes them (a checkpoint's record of
    the metric and evaluation lines it follows)."""
    text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
    return hashlib.sha256(text.encode()).hexdigest()


def read_json(path: Path):
    return json.loads(Path(path).read_text())


def read_summary(path: Path) -> dict | None:
    """A finished run's summary.json, or None when it is absent or unreadable -- a torn or
    corrupt summary means the run has to be finished again, not that the sweep must stop.  An
    unreadable one is kept beside, as ``summary.json.corrupt``."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        summary = json.loads(path.read_text())
        if isinstance(summary, dict):
            return summary
    except (json.JSONDecodeError, UnicodeDecodeError):
        pass
    os.replace(path, path.with_name(path.name + ".corrupt"))
    return None


CHECKSUM_TAG = b"\n#allocbench-sha256:"
TRAILER_BYTES = len(CHECKSUM_TAG) + 64 + 1
META_TAG = b"\n#allocbench-run:"
META_TAIL_BYTES = 16384          # the meta line and the trailer are far shorter


class CheckpointError(ValueError):
    """A checkpoint that cannot be trusted, reported as a one-line error."""


def _sha256(path: Path, length: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while length > 0:
            block = handle.read(min(length, 1 << 20))
            if not block:
                break
            digest.update(block)
            length -= len(block)
    return digest.hexdigest()


class _OSWriter(io.RawIOBase):
    """The file torch.save writes through, keeping the operating system's error: torch turns a
    failed write into "unexpected pos 24512 vs 24406", which says neither what nor where."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self.fd, self.error = fd, None

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        done = 0
        try:
            while done < len(view):
                done += os.write(self.fd, view[done:])
        except OSError as exc:
            self.error = exc
            raise
        return done


def atomic_torch_save(path: Path, obj, meta: dict | None = None) -> None:
    """torch.save, then ``meta`` (one JSON line, :func:`read_checkpoint_meta` reads it without
    torch), then the checksum trailer over both, then the rename.  A write the system refuses
    (no space left, a file-size limit) raises OSError naming ``path``; no temp file is left."""
    import torch        # here, not above: reading a run's JSON files must not load torch
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    writer = _OSWriter(fd)
    try:
        try:
            torch.save(obj, writer)
            if meta is not None:
                writer.write(META_TAG + json.dumps(meta, sort_keys=True).encode() + b"\n")
        except (OSError, RuntimeError) as exc:
            if writer.error is None:
                raise
            raise OSError(writer.error.errno, writer.error.strerror, str(path)) from exc
        finally:
            os.close(fd)
        digest = _sha256(Path(tmp), os.path.getsize(tmp))
        try:
            with open(tmp, "ab") as handle:
                handle.write(CHECKSUM_TAG + digest.encode() + b"\n")
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_checkpoint_meta(path: Path) -> dict | None:
    """The ``meta`` a checkpoint was written with (None when it has none), read from its last
    bytes without torch and without hashing the file (:func:`verify_checkpoint` does that)."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as handle:
        handle.seek(max(0, size - META_TAIL_BYTES))
        tail = handle.read()
    end = len(tail) - TRAILER_BYTES
    start = tail.rfind(META_TAG, 0, end)
    if start < 0 or tail[end - 1:end] != b"\n":
        return None
    try:
        meta = json.loads(tail[start + len(META_TAG):end - 1])
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return meta if isinstance(meta, dict) else None


def verify_checkpoint(path: Path) -> None:
    """Raise :class:`CheckpointError` unless ``path`` ends with a checksum its bytes match."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as handle:
        handle.seek(max(0, size - TRAILER_BYTES))
        trailer = handle.read()
    if size < TRAILER_BYTES or not trailer.startswith(CHECKSUM_TAG):
        raise CheckpointError(f"checkpoint {path} has no checksum (truncated, or not written by "
                              f"this harness); delete it to restart the run from step 0")
    stored = trailer[len(CHECKSUM_TAG):-1].decode("ascii", "replace")
    if _sha256(path, size - TRAILER_BYTES) != stored:
        raise CheckpointError(f"checkpoint {path} is corrupt (sha256 does not match the one "
                              f"stored when it was written); delete it to restart the run "
                              f"from step 0")


def read_checkpoint(path: Path):
    """The verified contents of a checkpoint written by :func:`atomic_torch_save`."""
    import torch
    verify_checkpoint(path)
    try:
        return torch.load(path, weights_only=False)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(f"cannot read checkpoint {path}: {first}") from None


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Delete the temp files of writes that a kill interrupted (``.NAME.*.tmp``)."""
    stale = sorted(Path(folder).glob(".*.tmp"))
    for path in stale:
        path.unlink(missing_ok=True)
    return stale
