"""Held-out evaluation: mean@k at the evaluation temperature, greedy pass@1, per-bucket accuracy,
and pass@k for k in :data:`PASS_AT_K` from the same samples (no extra generation).

pass@k is the unbiased estimator of Chen et al. 2021 ("Evaluating Large Language Models Trained
on Code", arXiv 2107.03374, eq. 1): with ``n`` samples of a problem of which ``c`` are correct,
``pass@k = 1 - C(n-c, k) / C(n, k)``, averaged over problems; computed as the product
``1 - prod_{i=n-c+1}^{n} (1 - k/i)`` (their numerically stable form).  A sample is correct when
its reward is ``>= SUCCESS_REWARD`` (rewards are 0/1 here; MoPPS's ``acc >= 1``).  Only
``k <= n`` is defined, so a preset with ``eval_samples = 4`` reports pass@1 and pass@4; with
binary rewards pass@1 equals mean@k.

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
PASS_AT_K = (1, 4, 8)
SUCCESS_REWARD = 1.0


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one problem with ``c`` correct among ``n`` samples (Chen et al.)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n; got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1, dtype=np.float64)))


def pass_at_k_table(rewards: np.ndarray, ks=PASS_AT_K) -> dict[str, float]:
    """``{"k": mean pass@k over problems}`` from a (problems, samples) reward matrix, for every
    ``k`` in ``ks`` that the sample count allows."""
    rewards = np.asarray(rewards, dtype=np.float64)
    n = rewards.shape[1]
    correct = (rewards >= SUCCESS_REWARD).sum(axis=1)
    return {str(k): float(np.mean([pass_at_k(n, int(c), k) for c in correct]))
            for k in ks if k <= n}


def evaluate_policy(model, tokenizer, tasks: list[Task], *, samples: int, temperature: float,
                    max_new_tokens: int, seed: int, top_p: float = 1.0,
                    verifier: VerifierPool | None = None, max_batch_rows: int = 512,
                    greedy: bool = True, per_prompt: bool = False) -> dict:
    """``greedy=False`` skips the greedy decode (its pass@1 is then None): the token protocol's
    intermediate evaluations, whose tables read mean@k only.  ``per_prompt=True`` adds each
    task's mean reward (``"per_prompt"``, in task order: the warm start's pass-rate
    distribution)."""
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
    per_sample = sampled_rewards.reshape(len(tasks), samples)
    prompt_means = per_sample.mean(axis=1)
    buckets = defaultdict(list)
    for t, acc in zip(tasks, prompt_means):
        buckets[t.bucket].append(acc)
    extra = {"per_prompt": [float(x) for x in prompt_means]} if per_prompt else {}
    return {
        "mean_at_k": float(prompt_means.mean()),
        "greedy": float(greedy_rewards.mean()) if greedy_rewards is not None else None,
        "k": samples,
        "buckets": {b: float(np.mean(v)) for b, v in sorted(buckets.items())},
        "pass_rate_spread": float(np.mean((prompt_means > 0) & (prompt_means < 1))),
        "pass_at_k": pass_at_k_table(per_sample),
        **extra,
    }


def _score(verifier, tokenizer, tasks, generations, samples) -> np.ndarray:
    items = [(tasks[i // samples].scorer, tokenizer.decode(g.tokens, skip_special_tokens=True),
              tasks[i // samples].gold) for i, g in enumerate(generations)]
    return verifier.score(items).rewards
