"""The embedded task mixes: reasoning-gym ``chain_sum`` at several difficulty levels.

The mixes are declared by their testbeds (``trainer/testbeds/``; :func:`get_mix`, chosen by
``Preset.task_mix`` and ``WarmStartConfig.task_mix``); the two embedded ones:

* ``chain_sum`` (preset ``tiny``, the first default): two- and three-term sums of one- and
  two-digit numbers with exact worked solutions.  Measured (issue 14): little headroom, the
  2-digit buckets never move under RL, responses of near-constant length.
* ``noisy_chain`` (preset ``noisy-chain``, the default): two- to five-term sums of one-digit
  numbers whose warm-start solutions carry *injected step errors* at a known per-bucket rate
  and an optional check line after the answer.  The warm start therefore samples correct
  answers often but not reliably (it has learnt to err at that rate while its greedy answer is
  nearly always right), which is the headroom RLVR exploits on real models: sharpening toward
  what the policy already samples.  Difficulty follows the number of steps at which an error
  can happen and the bucket's error rate, from nearly always solved (``t2``) to nearly never
  (``t5``).  The check line (``check 3+4-5=2``, written with probability ``check_rate``) makes
  response length vary within a prompt and puts tokens after the answer marker for DUET's stop
  rule to cut; with the preset's length limit it truncates part of the hardest bucket.

Each difficulty bucket is a ``chain_sum`` configuration (number of terms x digits per term).  The
prompt is the generator's expression followed by `` =`` and a newline (the generator's English
preamble "State the final answer to ..." is a constant 60-character prefix that would only cost
the tiny character-level policy compute, so it is dropped; the expression, gold answer and
``score_answer`` are reasoning-gym's).  The worked solution used for the supervised warm start is
a left-to-right chain of partial sums ending in ``\\boxed{answer}``::

    12 + 7 - 3 =          (prompt)
    12+7=19               (response: one line per intermediate step)
    19-3=16
    \\boxed{16}

so rollouts have a length that grows with the number of terms and a final-answer marker that
DUET's stop rule can detect.  Training and held-out sets come from seeds 10^9 apart
(reasoning-gym item i of seed s is generated from s + i, docs/DESIGN.md §Facts), duplicates inside the
training pool are dropped and any training question that also occurs in the held-out set is
removed, so the sets share no question.  The held-out set is drawn first and the training pool
excludes its questions, because the smallest bucket (two one-digit terms) has only 200 distinct
questions; that bucket's training share is therefore smaller than the others'.
"""
from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass

import reasoning_gym

from trainer import legs
from trainer.mixes import (BUCKET_SEED_STRIDE, ERROR_OFFSETS, Bucket, LegMix,  # noqa: F401
                           TaskMix, get_mix, pool_counts)
from trainer.testbeds.chain_sum import DEFAULT_BUCKETS

TRAIN_SEED = 0
EVAL_SEED = 1_000_000_000


@dataclass(frozen=True)
class Task:
    """One prompt with everything needed to score a response to it."""

    prompt: str
    answer: str
    bucket: str
    solution: str            # worked solution for the warm start (response text, no EOS)
    scorer: str              # "module:function" scoring rule run in the verifier pool
    gold: dict               # what the scorer needs besides the response (picklable)


def worked_solution(expression: str, rng=None, step_error_rate: float = 0.0,
                    check_rate: float = 0.0) -> str:
    """Left-to-right partial sums of a ``chain_sum`` expression, ending in ``\\boxed{}``.

    Given a numpy ``rng``, each partial sum is miswritten with probability ``step_error_rate``
    (off by one of :data:`ERROR_OFFSETS`) and the chain goes on from the miswritten value, as a
    careless solver's would, so the boxed answer is wrong; with probability ``check_rate`` a
    check line restating the expression and the boxed value follows the answer."""
    tokens = expression.split()
    total = int(tokens[0])
    lines = []
    for op, term in zip(tokens[1::2], tokens[2::2]):
        value = int(term)
        new_total = total + value if op == "+" else total - value
        if rng is not None and rng.random() < step_error_rate:
            new_total += int(rng.choice(ERROR_OFFSETS))
        lines.append(f"{total}{op}{value}={new_total}")
        total = new_total
    lines.append(f"\\boxed{{{total}}}")
    if rng is not None and rng.random() < check_rate:
        lines.append(f"check {expression.replace(' ', '')}={total}")
    return "\n".join(lines)


def _bucket_items(bucket: Bucket, index: int, seed_base: int, size: int) -> list[dict]:
    ds = reasoning_gym.create_dataset(
        "chain_sum", seed=seed_base + index * BUCKET_SEED_STRIDE, size=size,
        min_terms=bucket.terms, max_terms=bucket.terms,
        min_digits=bucket.digits, max_digits=bucket.digits)
    return [ds[i] for i in range(size)]


def _to_task(item: dict, bucket: Bucket) -> Task:
    expression = item["metadata"]["expression"]
    return Task(prompt=f"{expression} =\n", answer=item["answer"], bucket=bucket.name,
                solution=worked_solution(expression), scorer="trainer.verifier:score_reasoning_gym",
                gold={"answer": item["answer"], "metadata": {"source_dataset": "chain_sum"}})


def _distinct_tasks(bucket: Bucket, index: int, seed_base: int, wanted: int,
                    exclude: frozenset[str]) -> list[Task]:
    """Up to ``wanted`` distinct questions; small buckets (2 one-digit terms) may have fewer."""
    size = wanted
    while True:
        tasks, seen = [], set(exclude)
        for item in _bucket_items(bucket, index, seed_base, size):
            task = _to_task(item, bucket)
            if task.prompt not in seen:
                seen.add(task.prompt)
                tasks.append(task)
        if len(tasks) >= wanted or size >= 16 * wanted:
            return tasks[:wanted]
        size *= 2


def build_pool(per_bucket: int | Sequence[int], buckets=DEFAULT_BUCKETS,
               seed_base: int = TRAIN_SEED, exclude: frozenset[str] = frozenset(),
               cycle: bool = False) -> list[Task]:
    """``per_bucket`` distinct prompts of each bucket (or ``per_bucket[i]`` of bucket ``i``),
    interleaved, none of them in ``exclude``; with ``cycle``, a bucket with fewer distinct
    questions repeats them up to its count."""
    counts = [per_bucket] * len(buckets) if isinstance(per_bucket, int) else list(per_bucket)
    per = [_distinct_tasks(b, i, seed_base, n, exclude)
           for i, (b, n) in enumerate(zip(buckets, counts))]
    if cycle:
        per = [list(itertools.islice(itertools.cycle(row), n)) for row, n in zip(per, counts)]
    return [t for row in itertools.zip_longest(*per) for t in row if t is not None]


def build_splits(train_per_bucket: int, eval_per_bucket: int, mix: str = "chain_sum",
                 pool_weights: Sequence[int] = ()) -> tuple[list[Task], list[Task]]:
    """The seeded training pool and the held-out set of ``mix``, disjoint by construction.
    ``pool_weights`` (the preset's) scale each bucket's share of the training pool only: the
    held-out set, drawn first and the same whatever the weights, stays balanced."""
    family = get_mix(mix)
    counts = pool_counts(train_per_bucket, pool_weights, mix)
    if isinstance(family, LegMix):
        held_out = _leg_tasks(family, eval_per_bucket, EVAL_SEED)
        train = _leg_tasks(family, counts, TRAIN_SEED,
                           exclude=frozenset(t.prompt for t in held_out))
        return train, held_out
    buckets = family.buckets
    # Held-out first: the 2-term one-digit bucket has only 200 distinct questions, and a training
    # pool drawn first would leave none of them for evaluation.
    held_out = build_pool(eval_per_bucket, buckets, EVAL_SEED)
    train = build_pool(counts, buckets, TRAIN_SEED,
                       exclude=frozenset(t.prompt for t in held_out))
    return train, held_out


def _leg_tasks(mix: LegMix, per_bucket: int | Sequence[int], seed_base: int,
               exclude: frozenset[str] = frozenset()) -> list[Task]:
    return [Task(prompt=prompt, answer=answer, bucket=bucket,
                 solution=legs.worked_solution(prompt),
                 scorer="trainer.verifier:score_reasoning_gym",
                 gold={"answer": answer, "metadata": {"source_dataset": "leg_counting"}})
            for bucket, prompt, answer in legs.questions(mix, per_bucket, seed_base, exclude)]


def warm_start_examples(mix_name: str, per_bucket: int, seed_base: int,
                        exclude: frozenset[str], stream) -> list[tuple[str, str]]:
    """``(prompt, noisy worked solution)`` for the supervised warm start: ``per_bucket``
    questions of each bucket of the mix (none in ``exclude``), each solution written with the
    mix's injected errors from ``stream(i)``, example ``i``'s own random generator (so the
    noise of one example does not depend on the others)."""
    mix = get_mix(mix_name)
    if isinstance(mix, LegMix):
        tasks = _leg_tasks(mix, per_bucket, seed_base, exclude=exclude)
        return [(t.prompt, legs.worked_solution(t.prompt, mix, stream(i)))
                for i, t in enumerate(tasks)]
    tasks = build_pool(per_bucket, mix.buckets, seed_base, exclude=exclude, cycle=mix.balanced)
    rates = {b.name: b.step_error_rate for b in mix.buckets}
    # at zero rates the solution is the exact one, so chain_sum's warm start is unchanged
    return [(t.prompt, worked_solution(t.prompt.rstrip(" =\n"), stream(i), rates[t.bucket],
                                       mix.check_rate)) for i, t in enumerate(tasks)]


_BOXED = re.compile(r"\\boxed\{")


def extract_boxed(text: str) -> str | None:
    """Content of the last complete ``\\boxed{...}`` (brace-balanced), or None."""
    result = None
    for match in _BOXED.finditer(text):
        depth, start = 1, match.end()
        for i in range(start, len(text)):
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
                if depth == 0:
                    result = text[start:i]
                    break
    return result
