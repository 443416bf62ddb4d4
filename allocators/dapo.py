"""DAPO dynamic sampling (docs/ALGORITHMS.md §DAPO).

Paper: "DAPO: An Open-Source LLM Reinforcement Learning System at Scale", Yu et al., ByteDance
Seed / Tsinghua AIR, arXiv 2503.14476.

What this module implements (sampling only, see "Departures"):

* Dynamic sampling: the constraint ``0 < |{o_i : o_i correct}| < G`` of the DAPO objective, i.e.
  groups whose rewards are all equal (accuracy exactly 0 or 1) are dropped and sampling continues
  until the training batch holds ``M`` mixed groups (the paper's Algorithm 1: sample a batch,
  filter, append to the dynamic-sampling buffer, repeat while it holds fewer than ``M`` prompts).
  Pure function: :func:`mixed_groups`.
* Soft overlong punishment (switch ``overlong``): ``R_length(y) = 0`` for
  ``|y| <= L_max - L_cache``, ``((L_max - L_cache) - |y|) / L_cache`` inside the last ``L_cache``
  tokens, ``-1`` beyond ``L_max``; added to the verifier reward.  Pure function:
  :func:`overlong_penalty`.
* Refill sizing shared with GRESO: :func:`refill_size`.

Per step: round 0 generates ``n = round_half_up(b*G)`` rollouts (uniform GRPO's group at budget
``b``, docs/DESIGN.md §Budget) for ``ceil(oversample*M)`` candidates; every later round draws fresh candidates
while fewer than ``M`` mixed groups exist, up to ``max_rounds`` rounds; ``select`` keeps the first
``M`` mixed groups in generation order.  Every generated row, filtered or not, is charged by the
loop.

Defaults and provenance:

* ``oversample = 1.0`` - harness choice; source silent on the ratio in the paper.  Round 0 draws
  ``M`` candidates, i.e. Algorithm 1 with the sampled batch equal to the training batch, and the
  refill rounds make up the deficit.  The released verl DAPO recipe and Pilot-Commit's DAPO baseline
  draw ``3*M`` per round ([code] ``train_scripts/dapo_qwen2.5-1.5b_n128.sh``); that triples the
  round-0 cost even when few groups are all-equal, which the token ledger would charge to DAPO's
  sampling rule rather than to the algorithm.  Reproduce the recipe with ``oversample=3,
  refill_batch="fixed"``.
* ``refill_batch = "adaptive"`` - harness choice: a refill round draws the deficit scaled by the
  step's observed keep rate (mixed / generated groups so far) times ``refill_headroom``, at least
  the deficit and at most ``ceil(refill_cap*M)`` (:func:`refill_size`); with no mixed group yet it
  draws the cap.  This is the sizing of GRESO's dynamic-sampling baseline ([code] GRESO
  ``ray_trainer.py`` L1153-1162: ``remainder / (1 - zero_variance_ratio) * 1.25``, floor 64
  prompts, cap = sampling batch; there the keep rate is the last round's, here the step's so far).
  ``"fixed"`` draws ``ceil(oversample*M)`` every round as verl's recipe does.
* ``refill_headroom = 1.25`` - [code] (GRESO, above).  Without headroom a refill only meets the
  deficit on average, so about half the steps need another small round (measured: 2-7 rounds at
  M = 512 vs 2 with 1.25); the headroom's surplus mixed groups are generated, charged and dropped.
* ``refill_cap = 3.0`` - harness choice: the largest per-round batch a released DAPO config uses
  (3x, [code]).
* A refill round never looks at more than one pool epoch of candidates (pool size from
  ``attach_pool`` or ``setting.pool_size``), so no prompt is drawn twice in a round - harness
  choice; the released configs draw far fewer prompts per round than their datasets hold.
* ``max_rounds = 10`` - [code] ``max_num_gen_batches=10`` (Pilot-Commit's DAPO script); the loop's
  own ``ctx.max_rounds`` also applies.
* ``tol = 1e-6`` - harness choice: rewards within ``tol`` count as equal (float rewards).
* ``refill = True`` - [paper] (docs/ALGORITHMS.md §Conventions).  ``refill=False`` is DUET's
  comparator form ([code] DUET ``ray_trainer.py`` ~L4153-4245): no refill, zero-variance groups
  stay in the batch and simply give no gradient; ``select`` then returns every generated group.
* ``overlong = False`` - harness choice, so that only the sampling rule differs from the shared
  loop's GRPO.  The paper and DUET's comparator use it ([paper]; [code] DUET: buffer 512 of 3,072,
  penalty factor 1.0); switch it on for paper reproductions.
* ``overlong_cache_fraction = 1/6`` - docs/ALGORITHMS.md §Scaling: 512 of 3,072 [code], resolved as
  ``min(L_max, max(1, round_half_up(L_max/6)))``; ``overlong_cache_tokens`` is the absolute
  override.
* ``overlong_penalty_factor = 1.0`` - [code] (DUET comparator, Pilot-Commit scripts).

How the shaped reward flows: the loop records accuracy from the verifier rewards before ``select``.
``select`` then writes the shaped reward into ``Rollout.reward`` of the returned rows (keeping the
verifier reward in ``Rollout.flags["verifier_reward"]``), so the shaping only moves the advantages.
The filter itself tests the verifier reward (verl's ``filter_groups.metric=acc``).  Note that the
shared prompt-statistics store is updated from the returned rows, i.e. with shaped rewards.

Departures:

* Only the sampling differs from the loop: the paper also uses clip-higher (``eps_low = 0.2``,
  ``eps_high = 0.28``), token-mean loss aggregation and no KL term; AllocBench keeps the loop's
  shared loss configuration for every method (set the clip and KL there to reproduce DAPO fully).
* When ``max_rounds`` is reached with fewer than ``M`` mixed groups, the step trains on the mixed
  groups it has; verl's DAPO recipe raises an error instead ([code] Pilot-Commit's copy,
  ``recipe/dapo/dapo_ray_trainer.py``).
* Mixed groups generated beyond the first ``M`` are discarded, as in that recipe (it keeps the
  first ``train_batch_size - filled`` mixed prompts of each round); they are still charged.
* Groups need ``n >= 2`` rollouts (construction fails otherwise); the recipe would keep
  single-response groups as "mixed".
* Rows aborted by a length controller are left out of the filter's reward test (they never enter
  the gradient).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from allocators import register
from allocators.base import Allocator, PromptInfo, Request, Rollout, group_rows, round_half_up
from core.options import Options, option

VERIFIER_REWARD_FLAG = "verifier_reward"


def mixed_groups(rewards_per_group: Sequence[Sequence[float]], tol: float = 1e-6) -> np.ndarray:
    """True for each group whose rewards (array or list) are not all equal up to ``tol``.

    DAPO's keep test: a group of all-equal rewards (accuracy 0 or 1) has no GRPO signal.

    Same rule as :func:`allocators.base.rewards_all_equal`, in plain Python because groups are
    small and numpy's per-call overhead dominates at hundreds of groups per round.
    """
    return np.array([len(r) > 0 and float(max(r)) - float(min(r)) > tol
                     for r in rewards_per_group], dtype=bool)


def overlong_penalty(length, max_len: int, cache_len: int):
    """DAPO's soft overlong punishment in [-1, 0]: linear over the last ``cache_len`` tokens."""
    if cache_len <= 0:
        raise ValueError(f"overlong cache length must be positive, got {cache_len}")
    penalty = np.clip(((max_len - cache_len) - np.asarray(length, dtype=np.float64)) / cache_len,
                      -1.0, 0.0)
    return float(penalty) if np.ndim(penalty) == 0 else penalty


def refill_size(deficit: int, kept: int, generated: int, *, headroom: float = 1.0,
                cap: int) -> int:
    """Candidates to draw for a refill round: the deficit over the observed keep rate.

    ``kept / generated`` is the fraction of this step's generated groups that passed the filter.
    The result is at least ``deficit`` (a keep rate above 1 is impossible) and at most
    ``max(cap, deficit)``; with nothing kept yet the keep rate is unknown and the cap is drawn.
    """
    if deficit <= 0:
        return 0
    upper = max(int(cap), deficit)
    if kept <= 0 or generated <= 0:
        return upper
    wanted = math.ceil(deficit * headroom * generated / kept - 1e-9)
    return int(min(max(wanted, deficit), upper))


def resolve_cache_len(max_len: int, fraction: float, tokens: int | None) -> int:
    """L_cache per docs/ALGORITHMS.md §Scaling: a fraction of L_max unless an absolute override is given."""
    if tokens is not None:
        resolved = int(tokens)
    else:
        resolved = max(1, round_half_up(fraction * max_len))
    return int(min(max_len, max(1, resolved)))


def kept_rewards(group: list[Rollout]) -> list[float]:
    """Verifier rewards of the rows that can enter the gradient (shaping never feeds the filter)."""
    return [r.flags.get(VERIFIER_REWARD_FLAG, r.reward) for r in group if r.kept]


class RowCursor:
    """Hands out the rows appended to a step's row list since the previous call.

    The loop grows one list per step (``rows += new round``), so each row is looked at once per
    step instead of once per round.  If the list handed in does not extend the one seen before
    (another list, or a copy after unpickling), the cursor restarts and says so.
    """

    def __init__(self) -> None:
        self.count = 0
        self.last: Rollout | None = None

    def new_rows(self, rollouts: list[Rollout]) -> tuple[list[Rollout], bool]:
        """(rows not handed out yet, whether the cursor restarted from the first row)."""
        extends = self.count <= len(rollouts) and (
            self.count == 0 or rollouts[self.count - 1] is self.last)
        start = self.count if extends else 0
        self.count = len(rollouts)
        self.last = rollouts[-1] if rollouts else None
        return rollouts[start:], not extends


class StepGroups:
    """The step's generated groups in generation order, with their keep flags, built per round."""

    def __init__(self, tol: float) -> None:
        self.tol = tol
        self.cursor = RowCursor()
        self.groups: list[list[Rollout]] = []
        self.rewards: list[list[float]] = []      # kept verifier rewards per group
        self.mixed: list[bool] = []

    def update(self, rollouts: list[Rollout]) -> "StepGroups":
        new, restarted = self.cursor.new_rows(rollouts)
        if restarted:
            self.groups, self.rewards, self.mixed = [], [], []
        fresh = group_rows(new)
        rewards = [kept_rewards(g) for g in fresh]
        self.groups += fresh
        self.rewards += rewards
        self.mixed += mixed_groups(rewards, self.tol).tolist()
        return self

    @property
    def n_mixed(self) -> int:
        return sum(self.mixed)


@dataclass(frozen=True)
class DAPOOptions(Options):
    oversample: float = option(1.0, "round-0 candidates per step, as a multiple of M", gt=0)
    refill: bool = option(True, "draw more prompts until M mixed groups (false = keep every "
                          "group, no filter)")
    refill_batch: str = option("adaptive", "refill size: adaptive (deficit / mixed rate) or "
                               "fixed (the round-0 batch)", choices=("adaptive", "fixed"))
    refill_headroom: float = option(1.25, "adaptive refill: margin over the expected need",
                                    gt=0)
    refill_cap: float = option(3.0, "adaptive refill: at most this many times M per round",
                               gt=0)
    max_rounds: int = option(10, "rounds per step, round 0 included", ge=1)
    tol: float = option(1e-6, "rewards within tol count as equal (zero-variance group)", ge=0)
    overlong: bool = option(False, "DAPO's soft overlong punishment on the reward")
    overlong_cache_fraction: float = option(1.0 / 6.0, "L_cache as a fraction of L_max",
                                            ge=0, le=1)
    overlong_cache_tokens: int | None = option(None, "L_cache in tokens (wins over the "
                                               "fraction); null = use the fraction", ge=1)
    overlong_penalty_factor: float = option(1.0, "scale of the overlong penalty", ge=0)


@register("dapo")
class DAPODynamicSampling(Allocator):
    Options = DAPOOptions

    def __init__(self, setting, **options) -> None:
        super().__init__(setting, **options)
        o = self.opts
        self.overlong_cache_len = resolve_cache_len(setting.max_response_tokens,
                                                    o.overlong_cache_fraction,
                                                    o.overlong_cache_tokens)
        # candidates a refill may look at per admitted one: DAPO admits every candidate
        self.draw_limit = 1.0
        self.group_size = self.per_prompt()
        self.pool_size = int(setting.pool_size)   # 0 = unknown until attach_pool
        self.step_metrics: dict = {}
        self.step_groups = StepGroups(o.tol)

    # -- sizes ---------------------------------------------------------------------------
    def per_prompt(self) -> int:
        s = self.setting
        n = round_half_up(s.budget_fraction * s.group_size)
        if n < 2:
            raise ValueError(f"{type(self).__name__}: budget fraction {s.budget_fraction} gives "
                             f"{n} rollout(s) per prompt at G = {s.group_size}; a group needs at "
                             f"least 2 rollouts to ever have mixed rewards")
        return n

    def base_batch(self) -> int:
        """Prompts a round-0 (and a fixed-size refill) batch should roll out."""
        return math.ceil(self.opts.oversample * self.setting.prompts_per_step)

    def candidates_per_step(self) -> int:
        return self.base_batch()

    def attach_pool(self, pool: list[PromptInfo]) -> None:
        self.pool_size = len(pool)

    # -- which candidates get rollouts (GRESO overrides) ------------------------------------
    def admit(self, step: int, candidates: list[PromptInfo]) -> list[PromptInfo]:
        return list(candidates)

    def draw_admitted(self, step: int, wanted: int, ctx) -> list[PromptInfo]:
        """Draw fresh candidates until ``wanted`` are admitted or the draw limit is reached."""
        admitted: list[PromptInfo] = []
        drawn = 0
        limit = max(wanted, math.ceil(self.draw_limit * wanted))
        if self.pool_size:      # one round never looks at a prompt twice
            limit = min(limit, self.pool_size)
        while len(admitted) < wanted and drawn < limit:
            missing = wanted - len(admitted)
            # scale the next draw by the admission rate seen so far (doubling while it is 0)
            chunk = missing if not drawn else math.ceil(missing * drawn / max(len(admitted), 1))
            fresh = ctx.draw(min(chunk, limit - drawn))
            if not fresh:
                break
            drawn += len(fresh)
            admitted.extend(self.admit(step, fresh))
        return admitted

    def requests_for(self, prompts: list[PromptInfo]) -> list[Request]:
        return [Request(p.pid, self.group_size) for p in prompts]

    # -- the step --------------------------------------------------------------------------
    def plan(self, step, candidates, stats, budget):
        self.step_metrics = {"rounds": 1}
        self.step_groups = StepGroups(self.opts.tol)
        return self.requests_for(self.admit(step, candidates))

    def follow_up(self, step, round_index, rollouts, ctx):
        if not self.opts.refill or round_index >= min(self.opts.max_rounds, ctx.max_rounds):
            return []
        table = self.step_groups.update(rollouts)
        deficit = self.setting.prompts_per_step - table.n_mixed
        if deficit <= 0:
            return []
        wanted = self.refill_candidates(deficit, table.n_mixed, len(table.groups))
        requests = self.requests_for(self.draw_admitted(step, wanted, ctx))
        if requests:
            self.step_metrics["rounds"] = round_index + 1
        return requests

    def refill_candidates(self, deficit: int, kept: int, generated: int) -> int:
        cap = math.ceil(self.opts.refill_cap * self.setting.prompts_per_step)
        if self.opts.refill_batch == "fixed":
            return self.base_batch()
        return refill_size(deficit, kept, generated, headroom=self.opts.refill_headroom,
                           cap=cap)

    def select(self, step, rollouts):
        return self.choose(self.step_groups.update(rollouts))

    def observe(self, step, groups, stats):
        # the step's rows are no longer needed; keep them out of checkpoints
        self.step_groups = StepGroups(self.opts.tol)

    def choose(self, table: StepGroups) -> list[list[Rollout]]:
        """The training groups among the step's generated ones, shaped if ``overlong`` is on."""
        if self.opts.refill:
            chosen = [g for g, keep in zip(table.groups, table.mixed) if keep]
            chosen = chosen[: self.setting.prompts_per_step]
        else:
            chosen = list(table.groups)
        self.step_metrics.update(generated_groups=len(table.groups), mixed_groups=table.n_mixed,
                                 trained_groups=len(chosen))
        if self.opts.overlong:
            self.shape_overlong(chosen)
        return chosen

    def shape_overlong(self, groups: list[list[Rollout]]) -> None:
        """Add the overlong penalty to each returned row's verifier reward (idempotent)."""
        max_len = self.setting.max_response_tokens
        for group in groups:
            for row in group:
                verifier = row.flags.setdefault(VERIFIER_REWARD_FLAG, float(row.reward))
                penalty = overlong_penalty(row.n_tokens, max_len, self.overlong_cache_len)
                row.reward = verifier + self.opts.overlong_penalty_factor * penalty

    def resolved_options(self) -> dict:
        return {**super().resolved_options(), "group_size": self.group_size,
                "base_batch": self.base_batch(), "overlong_cache_len": self.overlong_cache_len}
