"""MATH-style tasks from local JSON Lines files, scored by ``math-verify``.

Two schemas are accepted, detected per file from its first record:

* **MATH** (MATH, MATH-500, DUET's ``math_train_clean.jsonl``): ``problem`` (str) and ``answer``
  (str, the final answer in LaTeX, without ``\\boxed``) are required; optional ``solution`` (a
  worked solution, kept as the task's warm-start target), ``id`` or ``unique_id``, ``level`` (1-5
  or ``"Level 3"``) and ``subject``.
* **GSM8K**: ``question`` (str) and ``answer`` (str), whose last line is ``#### N``; the gold
  answer is ``N`` with thousands separators removed (``1,600`` -> ``1600``), and the solution is
  the worked answer with the ``<<expr=value>>`` calculator annotations removed and the ``#### N``
  line replaced by ``\\boxed{N}``.

Every other key is ignored.  Each record becomes a :class:`trainer.tasks.Task` with

* ``prompt``: the problem text, a space, then DUET's suffix "Please reason step by step, and put
  your final answer within \\boxed{}." -- plain text, **no chat template**: the real presets train
  base models (Qwen3-*-Base), as DUET's GRPO reference config does, and a base model has no chat
  format to follow;
* ``bucket``: ``level{N}`` when the record has a level, else the subject (lower-cased, spaces to
  ``_``), else ``"all"`` -- the per-difficulty-bucket accuracy in evaluation reads it;
* ``scorer``: ``trainer.verifier:score_math_verify`` with ``gold = {"answer": answer}``.

Problems are never deduplicated or reordered: the line order of the file is the task order (the
pool's prompt ids), so a run is reproducible from the file alone.

Errors are one line each (:class:`DataError`, a ``ValueError``): a missing file, invalid JSON or
bytes that are not UTF-8 (with the line number), a record that is not an object, a missing or
non-string field, an empty file, a gold answer that math-verify cannot parse (file and line
number; checked when the file is loaded, so that no problem whose every response would score 0
reaches training or evaluation).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from trainer.tasks import Task

PROMPT_SUFFIX = "Please reason step by step, and put your final answer within \\boxed{}."
MATH_VERIFY = "trainer.verifier:score_math_verify"

_GSM8K_FINAL = re.compile(r"^####\s*(.+?)\s*$", re.MULTILINE)
_GSM8K_CALC = re.compile(r"<<[^<>]*>>")


# One record's bytes: a 30 MB record once passed every check and then grew a worker to ~24 GB
# (tokenised, batched, padded) until the kernel killed it.  Real MATH/GSM8K records are < 10 kB.
MAX_RECORD_BYTES = 1 << 20


class DataError(ValueError):
    """A data file that cannot be used, reported as a one-line error."""


def build_prompt(problem: str) -> str:
    return f"{problem.strip()} {PROMPT_SUFFIX}"


def detect_schema(record: dict) -> str:
    """``"math"`` or ``"gsm8k"`` from the keys of a file's first record."""
    if "problem" in record:
        return "math"
    if "question" in record:
        return "gsm8k"
    raise DataError(f"unknown schema with keys {sorted(record)[:8]}: expected 'problem' + "
                    f"'answer' (MATH) or 'question' + 'answer' (GSM8K)")


def _bucket(record: dict) -> str:
    level = record.get("level")
    if level is not None and str(level).strip():
        text = str(level).strip()
        digits = re.search(r"\d+", text)
        return f"level{digits.group(0)}" if digits else f"level_{text.lower()}"
    subject = record.get("subject")
    if isinstance(subject, str) and subject.strip():
        return subject.strip().lower().replace(" ", "_")
    return "all"


def gsm8k_gold(answer: str) -> str:
    """The number after the last ``####`` line, without thousands separators."""
    finals = _GSM8K_FINAL.findall(answer)
    if not finals:
        raise ValueError("has no final '#### N' line")
    return finals[-1].replace(",", "").strip()


def gsm8k_solution(answer: str, gold: str) -> str:
    body = _GSM8K_FINAL.sub("", _GSM8K_CALC.sub("", answer)).rstrip()
    return f"{body}\nThe final answer is \\boxed{{{gold}}}."


def _string_field(record: dict, key: str, where: str) -> str:
    if key not in record:
        raise DataError(f"{where}: missing field {key!r}")
    value = record[key]
    if not isinstance(value, str):
        raise DataError(f"{where}: field {key!r} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise DataError(f"{where}: field {key!r} is empty")
    return value


def read_jsonl_records(path: str | Path) -> list[tuple[int, dict]]:
    """(line number, record) for every record of a JSON Lines file (blank lines skipped)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file {str(path)!r} does not exist")
    records = []
    with path.open("rb") as handle:
        for lineno, raw in enumerate(handle, 1):
            if len(raw) > MAX_RECORD_BYTES:
                raise DataError(f"{path}:{lineno}: a record of {len(raw):,} bytes; at most "
                                f"{MAX_RECORD_BYTES:,} are read (a problem, its answer and a "
                                f"worked solution take a few kB)")
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(f"{path}:{lineno}: not UTF-8 text (byte 0x{raw[exc.start]:02x} "
                                f"at column {exc.start + 1})") from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{lineno}: invalid JSON ({exc.msg})") from None
            if not isinstance(record, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object, got "
                                f"{type(record).__name__}")
            records.append((lineno, record))
    if not records:
        raise DataError(f"data file {str(path)!r} is empty")
    return records


def task_lines(path: str | Path, limit: int | None = None) -> list[tuple[int, Task]]:
    """(line number, task) of :func:`load_tasks`, for errors that name the line."""
    records = read_jsonl_records(path)
    return list(zip((lineno for lineno, _ in records), load_tasks(path, limit, records)))


def load_tasks(path: str | Path, limit: int | None = None,
               records: list[tuple[int, dict]] | None = None) -> list[Task]:
    """Tasks of one MATH- or GSM8K-schema JSONL file, in file order (first ``limit`` if given)."""
    path = Path(path)
    records = read_jsonl_records(path) if records is None else records
    try:
        schema = detect_schema(records[0][1])
    except DataError as exc:
        raise DataError(f"{path}:{records[0][0]}: {exc}") from None
    tasks = []
    for lineno, record in records[:limit]:
        where = f"{path}:{lineno}"
        if schema == "math":
            problem = _string_field(record, "problem", where)
            answer = _string_field(record, "answer", where).strip()
            solution = record.get("solution")
            solution = solution if isinstance(solution, str) else ""
        else:
            problem = _string_field(record, "question", where)
            worked = _string_field(record, "answer", where)
            try:
                answer = gsm8k_gold(worked)
            except ValueError as exc:
                raise DataError(f"{where}: GSM8K field 'answer' {exc}") from None
            solution = gsm8k_solution(worked, answer)
        check_gold(answer, where)
        tasks.append(Task(prompt=build_prompt(problem), answer=answer, bucket=_bucket(record),
                          solution=solution, scorer=MATH_VERIFY, gold={"answer": answer}))
    return tasks


def check_gold(answer: str, where: str) -> None:
    """Refuse a gold answer that math-verify cannot parse: every response to its problem would
    score 0 with status "ok", a wrong number that nothing reports."""
    from trainer.verifier import AnswerTooLarge, _parse_gold
    try:
        _parse_gold(answer)
    except AnswerTooLarge as exc:
        raise DataError(f"{where}: gold answer {answer!r} is too large to verify ({exc})") from None
    except Exception:
        raise DataError(f"{where}: gold answer {answer!r} does not parse (math-verify)") from None


def load_eval_sets(paths) -> dict[str, list[Task]]:
    """Held-out sets by name (the file's stem; ``math500.jsonl`` -> ``math500``)."""
    sets: dict[str, list[Task]] = {}
    for path in paths:
        name = Path(path).stem
        if name in sets:
            raise DataError(f"two evaluation files are named {name!r}; rename one")
        sets[name] = load_tasks(path)
    return sets


def check_data_file(path: str | Path, tokenizer=None, max_prompt_tokens: int | None = None
                    ) -> int:
    """Fail early (one line) on a missing or unusable data file; reads the whole file and
    returns its number of problems.  With a tokenizer, a prompt longer than
    ``max_prompt_tokens`` tokens is an error naming its line."""
    lines = task_lines(path)
    if tokenizer is not None and max_prompt_tokens is not None:
        for lineno, task in lines:
            n = len(tokenizer(task.prompt)["input_ids"])
            if n > max_prompt_tokens:
                raise DataError(f"{path}:{lineno}: a prompt of {n} tokens; at most "
                                f"{max_prompt_tokens} fit the model's context beside the "
                                f"response")
    return len(lines)


def export_tasks_jsonl(tasks: list[Task], path: str | Path) -> Path:
    """Write tasks as the evaluation schema of ``bench.eval`` (one object per task: the full
    ``prompt``, ``answer``, ``bucket``, the ``scorer`` name and its ``gold``), so any task set --
    the embedded held-out set or a MATH/GSM8K file -- is scored by lm-eval with our own scorer."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for i, task in enumerate(tasks):
            handle.write(json.dumps({"prompt": task.prompt, "answer": task.answer,
                                     "bucket": task.bucket, "scorer": task.scorer,
                                     "gold": task.gold, "id": str(i)}) + "\n")
    return path
