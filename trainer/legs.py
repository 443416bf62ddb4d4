"""The ``leg_counting`` task family (reasoning-gym): how many legs do these animals have?

A question names two or three kinds of animal with a count each (``3 spiders, 2 woodlouses``:
the list part of reasoning-gym's question; its constant English preamble would only cost the
character-level policy compute, as for ``chain_sum`` in ``trainer.tasks``).  The answer,
reasoning-gym's, is the total; its ``score_answer`` scores the last ``\\boxed{}``.  The worked
solution the warm start learns multiplies each count by the animal's legs, then sums left to
right::

    3 spiders, 2 woodlouses     (prompt)
    3*8=24                      (response: one product per animal ...)
    2*14=28
    24+28=52                    (... then the partial sums)
    \\boxed{52}

Where the difficulty comes from (``trainer.mixes.LegMix``): a few animals are **hard facts**, whose
warm-start solutions write a consistent wrong leg count (the ``decoy``) with a per-animal rate, so
the warm start samples the true count of a hard animal only 1 - rate of the time; every other
product and sum is miswritten with a small ``step_error_rate``.  A question's pass rate is then
about the product of its hard facts' rates: near 1 without one, spread over about (0.01, 0.1) with one,
near 0 with two -- a property of the question, so it persists across epochs, and one RL can change
only by finding a correct sample of a hard fact (which then transfers to every question naming
that animal).  Buckets fix the number of animal kinds and of hard facts among them.

Training and held-out questions come from seeds 10^9 apart and share none (as ``trainer.tasks``);
within a bucket, items are reasoning-gym's ``leg_counting`` items of that animal count, kept when
they contain exactly the bucket's number of hard facts.
"""
from __future__ import annotations

import itertools
import re
from collections.abc import Sequence

import reasoning_gym
from reasoning_gym.arithmetic.leg_counting import ANIMALS

from trainer.mixes import BUCKET_SEED_STRIDE, ERROR_OFFSETS, LegMix

_ITEM = re.compile(r"^(\d+) (.+)$")


def parse_prompt(prompt: str) -> list[tuple[int, str]]:
    """``[(count, animal), ...]`` of a prompt (reasoning-gym pluralises by adding ``s`` when the
    count is above one)."""
    out = []
    for part in prompt.strip().split(", "):
        match = _ITEM.match(part)
        if match is None:
            raise ValueError(f"not a leg-counting item: {part!r}")
        count, name = int(match.group(1)), match.group(2)
        if count > 1 and name not in ANIMALS:
            name = name[:-1]
        if name not in ANIMALS:
            raise ValueError(f"unknown animal in {part!r}")
        out.append((count, name))
    return out


def worked_solution(prompt: str, mix: LegMix | None = None, rng=None) -> str:
    """Products, then left-to-right partial sums, then ``\\boxed{}`` (and, with probability
    ``mix.check_rate``, a check line restating the sum).  Given ``mix`` and a numpy ``rng``, a
    hard fact's legs are written as its decoy with its error rate and every product or partial
    sum is miswritten with ``mix.step_error_rate``; the chain goes on from what was written, as a
    careless solver's would.  Without ``rng`` the solution is exact."""
    facts = {f.animal: f for f in mix.hard_facts} if mix is not None else {}
    noisy = rng is not None and mix is not None

    def slip(value: int) -> int:
        if noisy and rng.random() < mix.step_error_rate:
            return value + int(rng.choice(ERROR_OFFSETS))
        return value

    lines, products = [], []
    for count, animal in parse_prompt(prompt):
        legs = ANIMALS[animal]
        fact = facts.get(animal)
        if noisy and fact is not None and rng.random() < fact.error_rate:
            legs = fact.decoy
        product = slip(count * legs)
        lines.append(f"{count}*{legs}={product}")
        products.append(product)
    total = products[0]
    for value in products[1:]:
        new_total = slip(total + value)
        lines.append(f"{total}+{value}={new_total}")
        total = new_total
    lines.append(f"\\boxed{{{total}}}")
    if noisy and rng.random() < mix.check_rate:
        lines.append(f"check {'+'.join(str(p) for p in products)}={total}")
    return "\n".join(lines)


def _items(mix: LegMix, index: int, seed_base: int):
    """reasoning-gym items of bucket ``index``'s animal count, in order, without end."""
    bucket = mix.buckets[index]
    chunk, start = 512, 0
    while True:
        ds = reasoning_gym.create_dataset(
            "leg_counting", seed=seed_base + index * BUCKET_SEED_STRIDE + start, size=chunk,
            min_animals=bucket.animals, max_animals=bucket.animals, min_instances=1,
            max_instances=mix.max_instances)
        for i in range(chunk):
            yield ds[i]
        start += chunk


def _prompt(item: dict) -> str:
    question = item["question"]
    body = question[question.index("if you have ") + len("if you have "):question.rindex("?")]
    return body + "\n"


def _distinct_questions(mix: LegMix, index: int, seed_base: int, wanted: int,
                        exclude: frozenset[str]) -> list[tuple[str, str]]:
    bucket = mix.buckets[index]
    hard = {f.animal for f in mix.hard_facts}
    seen, out = set(exclude), []
    # the rarest bucket (two hard facts of three animals) keeps ~1 item in 10; the bound only
    # stops a mix whose bucket cannot be filled from looping for ever
    for item in itertools.islice(_items(mix, index, seed_base), 400 * wanted + 4096):
        if sum(a in hard for a in item["metadata"]["animals"]) != bucket.hard:
            continue
        prompt = _prompt(item)
        if prompt in seen:
            continue
        seen.add(prompt)
        out.append((prompt, item["answer"]))
        if len(out) == wanted:
            return out
    raise ValueError(f"task mix {mix.name!r}: bucket {bucket.name!r} has fewer than {wanted} "
                     f"distinct questions")


def questions(mix: LegMix, per_bucket: int | Sequence[int], seed_base: int,
              exclude: frozenset[str] = frozenset()) -> list[tuple[str, str, str]]:
    """``(bucket, prompt, answer)`` of ``per_bucket`` distinct questions of each bucket (or
    ``per_bucket[i]`` of bucket ``i``), interleaved, none in ``exclude`` (``trainer.tasks``
    makes them tasks).  A bucket's questions are the first of its own seeded stream, so
    asking for more of one bucket leaves the others' unchanged."""
    counts = [per_bucket] * len(mix.buckets) if isinstance(per_bucket, int) else list(per_bucket)
    per = [[(b.name, prompt, answer) for prompt, answer in
            _distinct_questions(mix, i, seed_base, n, exclude)] if n else []
           for i, (b, n) in enumerate(zip(mix.buckets, counts))]
    return [q for row in itertools.zip_longest(*per) for q in row if q is not None]
