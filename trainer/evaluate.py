"""Held-out evaluation: mean@k at the evaluation temperature, greedy pass@1, per-bucket accuracy.

Sampling seeds depend only on (run seed, prompt index, sample index), not on the training step,
so successive evaluations of one run and evaluations of different methods use common random
numbers: differences between them come from the policies, not from sampling noise.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from trainer.engine import HFEngine, RowSpec
from trainer.seeding import derive_seed
from trainer.tasks import Task
from trainer.verifier import VerifierPool

EVAL_STREAM = 7_000_003


def evaluate_policy(model, tokenizer, tasks: list[Task], *, samples: int, temperature: float,
                    max_new_tokens: int, seed: int, top_p: float = 1.0,
                    verifier: VerifierPool | None = None, max_batch_rows: int = 512,
                    greedy: bool = True) -> dict:
    """``greedy=False`` skips the greedy decode (its pass@1 is then None): the token protocol's
    intermediate evaluations, whose tables read mean@k only."""
    own_pool = verifier is None
    verifier = verifier or VerifierPool(workers=1)
    try:
        prompt_ids = [tuple(tokenizer(t.prompt)["input_ids"]) for t in tasks]
        sampled = HFEngine(model, tokenizer, max_new_tokens=max_new_tokens, temperature=temperature,
                           top_p=top_p, max_batch_rows=max_batch_rows)
        rows = [RowSpec(prompt_ids[i], derive_seed(seed, EVAL_STREAM, i, k))
                for i in range(len(tasks)) for k in range(samples)]
        sampled_rewards = _score(verifier, tokenizer, tasks, sampled.generate(rows), samples)
        greedy_rewards = None
        if greedy:
            engine = HFEngine(model, tokenizer, max_new_tokens=max_new_tokens, temperature=0.0,
                              max_batch_rows=max_batch_rows)
            greedy_rewards = _score(verifier, tokenizer, tasks,
                                    engine.generate([RowSpec(p, 0) for p in prompt_ids]), 1)
    finally:
        if own_pool:
            verifier.close()
    per_prompt = sampled_rewards.reshape(len(tasks), samples).mean(axis=1)
    buckets = defaultdict(list)
    for t, acc in zip(tasks, per_prompt):
        buckets[t.bucket].append(acc)
    return {
        "mean_at_k": float(per_prompt.mean()),
        "greedy": float(greedy_rewards.mean()) if greedy_rewards is not None else None,
        "k": samples,
        "buckets": {b: float(np.mean(v)) for b, v in sorted(buckets.items())},
        "pass_rate_spread": float(np.mean((per_prompt > 0) & (per_prompt < 1))),
    }


def _score(verifier, tokenizer, tasks, generations, samples) -> np.ndarray:
    items = [(tasks[i // samples].scorer, tokenizer.decode(g.tokens, skip_special_tokens=True),
              tasks[i // samples].gold) for i, g in enumerate(generations)]
    return verifier.score(items).rewards
