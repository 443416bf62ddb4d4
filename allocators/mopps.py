"""MoPPS: Model Predictive Prompt Selection - a Beta posterior per prompt over its pass rate,
Thompson sampling to pick the step's prompts, no extra rollouts (docs/METHODS.md §MoPPS).

Paper: "Can Prompt Difficulty be Online Predicted for Accelerating RL Finetuning of Reasoning
Models?", Qu, Wang, Mao, Hu, Ji (v5 adds Ommer) - Tsinghua / LMU Munich, arXiv 2507.04632.  Released
code: [code] ``thu-rllab/MoPPS@a883f51``: ``recipe/ours/mopps.py`` (``PosteriorSampler``),
``recipe/ours/our_ray_trainer.py`` (``our_group_reward``, the candidate batch),
``recipe/ours/config/our_trainer.yaml``, ``recipe/ours/scripts/*/*.sh``.

Equations implemented:

* Posterior per prompt ``i``: ``theta_i ~ Beta(alpha_i, beta_i)``, prior ``Beta(alpha_0, beta_0)``
  = ``Beta(1, 1)`` [code].
* Streaming update after a visit with ``s_i`` successes among ``n_i`` rollouts (binary rewards,
  ``r >= 1`` counts as a success as the code's ``acc >= 1``), with decay ``lambda``::

      alpha_i <- lambda * alpha_i + (1 - lambda) * alpha_0 + s_i
      beta_i  <- lambda * beta_i  + (1 - lambda) * beta_0  + (n_i - s_i)

  (the code writes ``s_i`` as the group's success rate times ``rollout.n``; here the count of the
  group's kept rows, which is the same number for full groups).
* Selection (:func:`mopps_select`): draw ``theta_i`` for each of the ``K`` candidates, keep the
  ``M`` closest to the target ``mu* = 0.5``: ``argsort((theta - mu*)^2)[:M]`` ("topk", the
  released default).  Options: "threshold" (uniformly among draws inside ``[0.3, 0.7]``, falling
  back to the draws nearest the band) and "uniform" (MoPPS off: a random ``M`` of ``K``).

Per step: the loop draws ``K = candidate_ratio * M`` candidates (capped at one pool epoch), ``plan``
asks for ``n = round_half_up(b*G)`` rollouts of each of the ``M`` selected (uniform GRPO's group
at budget ``b``), ``observe`` updates the posteriors of the trained prompts.  Nothing else is
generated, so MoPPS spends exactly uniform GRPO's rollouts; the unselected candidates cost no
tokens.

Defaults and provenance:

* ``candidate_ratio = 16`` [code: ``tasksampler.ts_ratio=16`` in the MATH scripts; 8 for
  Countdown and Geometry3k].  Capped at the pool size (harness: a step never sees a prompt twice).
* ``strategy = "topk"`` [code: yaml default and every released MoPPS script but one], ``target =
  0.5``, ``lower = 0.3``, ``upper = 0.7`` [code].
* ``decay = 1.0`` [code: yaml default, MATH scripts]; the Countdown / Geometry3k scripts use 0.5.
* ``prior_alpha = prior_beta = 1.0`` [code].
* Scale-free: no token or count constant needs the docs/ALGORITHMS.md §Scaling rule.

Departures:

* The posterior draws use a numpy ``Generator`` seeded with ``setting.seed`` instead of numpy's
  global ``RandomState``; :func:`mopps_select` takes any generator with ``beta``/``shuffle``/
  ``choice``, so with a seeded ``RandomState`` it reproduces the code's draws exactly (checked
  side by side outside the project).
* The code's optional warm start of the posteriors from an offline evaluation file
  (``bandit_init``, successes x 3) is not used: it needs rollouts outside the budget.  The
  released ``*_noinit`` scripts run without it too.
* Posteriors are updated from the groups that trained (every selected prompt trains: one round, no
  filter), rows aborted by a length controller left out.
* ``argsort`` is stable here (the code's default quicksort may order exact ties differently; with
  continuous draws ties have probability 0).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from allocators import register
from allocators.base import Allocator, PromptInfo, Request, round_half_up
from core.options import Options, option

STRATEGIES = ("topk", "threshold", "uniform")


def mopps_select(alpha, beta, k: int, rng, *, strategy: str = "topk", target: float = 0.5,
                 lower: float = 0.3, upper: float = 0.7) -> tuple[np.ndarray, np.ndarray]:
    """(indices of the ``k`` chosen candidates, every candidate's posterior draw).

    ``alpha``/``beta`` are the candidates' Beta parameters; ``rng`` is a numpy Generator or
    RandomState (the draws are ``rng.beta(alpha, beta)``, then ``rng.shuffle`` / ``rng.choice``
    where the strategy needs them).
    """
    alpha = np.asarray(alpha, dtype=np.float64)
    beta = np.asarray(beta, dtype=np.float64)
    m = len(alpha)
    if not 0 <= k <= m:
        raise ValueError(f"mopps: cannot select {k} of {m} candidates")
    if strategy not in STRATEGIES:
        raise ValueError(f"mopps: strategy must be one of {STRATEGIES}, got {strategy!r}")
    theta = rng.beta(alpha, beta)
    if strategy == "uniform":
        return np.asarray(rng.choice(m, size=k, replace=False), dtype=np.int64), theta
    if strategy == "topk":
        return np.argsort((theta - target) ** 2, kind="stable")[:k], theta
    inside = np.flatnonzero((theta >= lower) & (theta <= upper))
    if len(inside) >= k:
        rng.shuffle(inside)
        return inside[:k], theta
    # too few draws in the band: the nearest to it (distance 0 inside)
    distance = np.maximum(lower - theta, 0.0) + np.maximum(theta - upper, 0.0)
    return np.argsort(distance, kind="stable")[:k], theta


def beta_update(alpha, beta, successes, trials, *, decay: float = 1.0, prior_alpha: float = 1.0,
                prior_beta: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """One streaming posterior update with decay toward the prior (equations above)."""
    alpha = np.asarray(alpha, dtype=np.float64)
    beta = np.asarray(beta, dtype=np.float64)
    successes = np.asarray(successes, dtype=np.float64)
    failures = np.asarray(trials, dtype=np.float64) - successes
    return (decay * alpha + (1.0 - decay) * prior_alpha + successes,
            decay * beta + (1.0 - decay) * prior_beta + failures)


@dataclass(frozen=True)
class MoPPSOptions(Options):
    candidate_ratio: float = option(16.0, "candidates drawn per step, as a multiple of M "
                                    "(capped at the pool)", ge=1)
    strategy: str = option("topk", "selection rule: topk (draws nearest target), threshold "
                           "(draws inside [lower, upper]) or uniform (MoPPS off)",
                           choices=STRATEGIES)
    target: float = option(0.5, "topk: the pass rate the selected draws should be near",
                           ge=0, le=1)
    lower: float = option(0.3, "threshold: lowest draw inside the band", ge=0, le=1)
    upper: float = option(0.7, "threshold: highest draw inside the band", ge=0, le=1)
    decay: float = option(1.0, "posterior decay toward the prior per update (1 = none)",
                          ge=0, le=1)
    prior_alpha: float = option(1.0, "Beta prior alpha_0", gt=0)
    prior_beta: float = option(1.0, "Beta prior beta_0", gt=0)
    success_threshold: float = option(1.0, "a reward at or above this counts as a success")


@register("mopps")
class MoPPS(Allocator):
    Options = MoPPSOptions

    def __init__(self, setting, **options) -> None:
        super().__init__(setting, **options)
        self.group_size = round_half_up(setting.budget_fraction * setting.group_size)
        if self.group_size < 1:
            raise ValueError(f"mopps: budget fraction {setting.budget_fraction} gives no rollout "
                             f"per prompt at G = {setting.group_size}")
        self.pool_size = int(setting.pool_size)
        self.rng = np.random.default_rng(setting.seed)
        self.alpha: dict[int, float] = {}
        self.beta: dict[int, float] = {}

    def attach_pool(self, pool: list[PromptInfo]) -> None:
        self.pool_size = len(pool)

    def candidates_per_step(self) -> int:
        wanted = math.ceil(self.opts.candidate_ratio * self.setting.prompts_per_step)
        wanted = max(wanted, self.setting.prompts_per_step)
        return min(wanted, self.pool_size) if self.pool_size else wanted

    def plan(self, step, candidates, stats, budget):
        o = self.opts
        pids = [c.pid for c in candidates]
        alpha = [self.alpha.get(p, o.prior_alpha) for p in pids]
        beta = [self.beta.get(p, o.prior_beta) for p in pids]
        k = min(self.setting.prompts_per_step, len(pids))
        chosen, theta = mopps_select(alpha, beta, k, self.rng, strategy=o.strategy,
                                     target=o.target, lower=o.lower, upper=o.upper)
        self.step_metrics = {"candidates": len(pids), "selected": int(k),
                             "theta_selected_mean": float(theta[chosen].mean()) if k else 0.0,
                             "theta_candidates_mean": float(theta.mean()) if len(pids) else 0.0,
                             "seen_prompts": len(self.alpha)}
        return [Request(pids[i], self.group_size) for i in chosen.tolist()]

    def observe(self, step, groups, stats):
        o = self.opts
        for group in groups:
            kept = [r for r in group if r.kept]
            if not kept:
                continue
            pid = kept[0].pid
            successes = sum(r.reward >= o.success_threshold for r in kept)
            a, b = beta_update(self.alpha.get(pid, o.prior_alpha),
                               self.beta.get(pid, o.prior_beta), successes, len(kept),
                               decay=o.decay, prior_alpha=o.prior_alpha,
                               prior_beta=o.prior_beta)
            self.alpha[pid], self.beta[pid] = float(a), float(b)

    def resolved_options(self) -> dict:
        return {**super().resolved_options(), "group_size": self.group_size,
                "candidates_per_step": self.candidates_per_step()}
