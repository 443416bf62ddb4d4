"""Pilot-Commit: a small pilot group screens each candidate, the rest of the group goes only to
prompts whose pilot pass rate lies in an informative band (docs/ALGORITHMS.md §Pilot-Commit).

Paper: "Spend Your Rollouts Where It Counts: Rollout Allocation for Group-Based RL Post-Training",
Kim, Yang, Yan, Liu (Databricks / Cornell), arXiv 2605.26606.  Only the abstract and the opening
of the introduction were available; the released code is the reference ([code]
``databricks/pilot-commit@6def20e``: ``recipe/pc/pc_ray_trainer.py``
``fit``/``filter_batch``/``exclude_batch``, ``recipe/pc/replay_buffer.py``,
``recipe/pc/config/pc_trainer.yaml``, ``train_scripts/pc_*.sh``).

Per training step (docs/ALGORITHMS.md §Pilot-Commit), round ``r = 0, 1, ...``:

a. Pilot requests (tag ``"pilot"``, ``n_p`` rollouts) for the round's fresh candidates: in round 0
   the ``ceil(3*M)`` the loop drew, later ``ctx.draw(ceil(3*M))``.  Evicted prompts among them are
   not piloted.
b. Commit requests (tag ``"commit"``, ``n_c`` rollouts) for ``c = min(M - filled, |buffer|)``
   buffered prompts, chosen by the highest pilot reward std (population std, as the code), ties to
   the higher pilot step, then buffer insertion order (``max_variance``), or uniformly at random
   (``random``); they leave the buffer.  Commits are always for prompts piloted in an earlier round
   or step, never the same round, since the round's pilots are classified only once their rewards
   exist.  ``filled += c``.
c. Pilot and commit requests are generated together.
d. Once the round's rewards are in (next ``follow_up``, or ``select`` for the last round), each
   pilot is classified by its mean reward ``p_hat``: ``p_hat > band_upper`` too correct (dropped),
   ``p_hat < band_lower`` too incorrect (dropped now; the pool brings it back next epoch),
   otherwise the prompt and its pilot rows enter the buffer tagged with the step (re-piloting a
   buffered prompt replaces its entry).  Independently ``p_hat >= evict_threshold`` marks it for
   eviction from the next pool epoch on.
e. Stop when ``filled >= M`` or after ``max_rounds`` rounds.

``select`` returns, per committed prompt, its stored pilot rows (``n_p``, sampled by an older
policy, this step or up to ``buffer_max_off_steps`` steps earlier) together with its fresh commit
rows (``n_c``): one training group of ``n_p + n_c`` rows.  Then buffer entries piloted more than
``buffer_max_off_steps`` steps ago are dropped.

Stale pilot rows and the loss (``stale_logprobs``): the official code recomputes ``old_log_prob``
with the current policy before every update ([code] ``pc_ray_trainer.py`` "recompute
old_log_probs"), so with one update per step a pilot row sampled in an earlier step has a PPO
ratio of exactly 1 at the start of the update: it is treated as an on-policy sample, with no
correction for its staleness.  ``stale_logprobs="recompute"`` (default) follows it: ``select``
marks each pilot row of a training group that an earlier step sampled
(``Rollout.recompute_logprobs``), and the loop recomputes those rows' log-probs
with the current policy before the update, charged to the ledger's ``logprob`` phase.  Rows of the
current step are not flagged: the policy has not changed since they were sampled, so their
engine log-probs are already the current policy's.  ``stale_logprobs="sampler"`` keeps each
row's sampling log-probs as ``pi_old``, so stale rows get the clipped ratio ``pi_theta /
pi_sampler`` to the policy that actually sampled them (a clipped importance correction; the
harness's earlier behaviour).  The step's ``stale_rows`` metric counts the flagged rows.

Defaults and provenance:

* Group size ``n = round_half_up(b*G)`` (uniform GRPO's group at budget ``b``; [code] ``n_p + n_c =
  n``).
* ``pilot_fraction = 0.25`` [code: (32, 96) and (16, 48) splits], ``n_p = max(min_pilot,
  round_half_up(pilot_fraction*n))``, ``n_c = n - n_p`` (at least 1, else construction fails).
  ``min_pilot = 2`` harness choice, source silent: with ``n_p = 1`` the only pilot means are 0 and 1
  and the band ``[0.125, 0.75]`` admits nothing.  The band lives on the ``1/n_p`` grid; the
  admissible ``p_hat`` values are logged as ``effective_band`` (``n_p = 2``: only 0.5; ``n_p = 4``:
  0.25, 0.5, 0.75).  ``pilot_size`` / ``commit_size`` override the split (e.g. 16 / 48).
* ``candidate_multiplier = 3`` [code: gen batch 384 = 3 x 128]; capped at the pool size (from
  ``attach_pool`` or ``setting.pool_size``) so that no prompt is piloted twice in a round - harness
  choice for small pools.
* ``band_lower = 0.125`` [code: ``diversity_threshold_lower``], ``band_upper = 0.75`` [code:
  ``1 - diversity_threshold_upper``, 0.25]; ``evict_threshold = 1.0`` [code:
  ``exclude_threshold_upper`` in both scripts; the yaml default ``null`` = ``None`` here, disables].
* ``buffer_max_off_steps = 4`` [code]; ``buffer_sampling = "max_variance"`` [code: 1.5B script;
  the 4B script and the yaml use ``"random"``]; ``max_rounds = 10`` [code: ``max_num_gen_batches``];
  the loop's ``ctx.max_rounds`` also applies.
* ``flush_buffer_at_epoch_end = True`` [code: the buffer is emptied when the dataloader's epoch
  ends].
* Random buffer sampling draws from a numpy Generator seeded with ``setting.seed``.

Departures from the code:

* The epoch is not given to allocators: it is counted from the candidates this allocator is shown
  (:class:`allocators.greso.EpochTracker`).  At the first candidate of a new epoch the pending
  evictions take effect and (by default) the buffer is emptied; the code also discards the partial
  training batch of the step in progress, whereas here the step keeps the commits it already made.
  Pilots drawn before the boundary but classified after it are treated as the code would: they do
  not enter the emptied buffer, and their eviction marks apply at once.
* Evicted prompts are filtered from the candidates this allocator receives and simply not piloted,
  so a round pilots fewer than ``3*M`` prompts once evictions accumulate; the code removes them
  from the dataset, so each of its rounds pilots a full ``3*M``.
* When ``max_rounds`` rounds leave ``filled < M``, the step trains on the ``filled`` groups it has
  (possibly none: the first round of step 0 always has an empty buffer, so step 0 trains only on
  commits made in its later rounds); the code raises an error.  The loop handles empty training
  sets.
* No GPU-divisibility trimming of the commit count, no within-prompt down-sampling of pilot rows
  (the code's default ``n_effective = n_p`` uses them all), no buffer size cap (declared but not
  enforced in the code), no overlong shaping (the 1.5B script's reward option; not part of the
  allocation).
* The buffer persists across steps inside the allocator (plain dicts of :class:`Rollout` rows), so
  checkpoints that pickle the allocator carry the pilot rows of up to ``buffer_max_off_steps + 1``
  steps.
"""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

import numpy as np

from allocators import register
from allocators.base import (Allocator, PromptInfo, Request, Rollout, group_rows,
                             round_half_up, two_stage_split)
from core.options import Options, option
from allocators.dapo import RowCursor
from allocators.greso import EpochTracker

PILOT, COMMIT = "pilot", "commit"
STALE_LOGPROBS = ("recompute", "sampler")


@dataclass
class PilotEntry:
    """An in-band pilot waiting in the buffer for its commit."""

    step: int
    std: float
    rows: list[Rollout]


def pilot_split(n: int, *, pilot_fraction: float = 0.25, min_pilot: int = 2,
                pilot_size: int | None = None, commit_size: int | None = None) -> tuple[int, int]:
    """(n_p, n_c): pilot and commit rollouts per prompt for a group of ``n``."""
    n_pilot, n_commit = two_stage_split(n, pilot_fraction, min_pilot, pilot_size, commit_size)
    if n_pilot < 1 or n_commit < 1:
        raise ValueError(f"pilot-commit: a group of {n} gives pilot {n_pilot} / commit {n_commit}; "
                         f"both must be >= 1 (raise the budget fraction or set pilot_size/"
                         f"commit_size)")
    return n_pilot, n_commit


def effective_band(n_pilot: int, lower: float, upper: float) -> list[float]:
    """The pilot means on the 1/n_p grid that fall inside ``[lower, upper]``."""
    return [k / n_pilot for k in range(n_pilot + 1) if lower <= k / n_pilot <= upper]


def population_std(values: list[float], mean: float) -> float:
    """np.std of a few pilot rewards (the code's buffer statistic), without numpy's overhead."""
    return math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))


def classify_pilot(p_hat: float, lower: float, upper: float) -> str:
    """``"in_band"``, ``"too_correct"`` or ``"too_incorrect"`` (the code's ``filter_batch``)."""
    if p_hat > upper:
        return "too_correct"
    if p_hat < lower:
        return "too_incorrect"
    return "in_band"


@dataclass(frozen=True)
class PilotCommitOptions(Options):
    candidate_multiplier: float = option(3.0, "fresh candidates per round, as a multiple of M",
                                         gt=0)
    pilot_fraction: float = option(0.25, "pilot rollouts as a fraction of the group", gt=0,
                                   le=1)
    min_pilot: int = option(2, "fewest pilot rollouts per prompt", ge=1)
    pilot_size: int | None = option(None, "pilot rollouts per prompt (wins over the fraction)",
                                    ge=1)
    commit_size: int | None = option(None, "commit rollouts per prompt; null = the rest of "
                                     "the group", ge=1)
    band_lower: float = option(0.125, "lowest pilot mean that commits", ge=0, le=1)
    band_upper: float = option(0.75, "highest pilot mean that commits", ge=0, le=1)
    evict_threshold: float | None = option(1.0, "pilot mean at or above which a prompt is "
                                           "evicted for the next epoch; null = never",
                                           ge=0)
    buffer_max_off_steps: int = option(4, "steps a buffered prompt may wait", ge=0)
    buffer_sampling: str = option("max_variance", "which buffered prompts refill first",
                                  choices=("max_variance", "random"))
    flush_buffer_at_epoch_end: bool = option(True, "drop buffered prompts piloted in a past "
                                             "epoch")
    max_rounds: int = option(10, "rounds per step, round 0 included", ge=1)
    stale_logprobs: str = option("recompute", "old log-probs of pilot rows from an earlier step: "
                                 "recompute = with the current policy before the update, as "
                                 "released; sampler = keep the sampling log-probs",
                                 choices=STALE_LOGPROBS)


@register("pilot-commit")
class PilotCommit(Allocator):
    Options = PilotCommitOptions

    def __init__(self, setting, **options) -> None:
        super().__init__(setting, **options)
        o = self.opts
        self.group_size = round_half_up(setting.budget_fraction * setting.group_size)
        self.n_pilot, self.n_commit = pilot_split(
            self.group_size, pilot_fraction=o.pilot_fraction, min_pilot=o.min_pilot,
            pilot_size=o.pilot_size, commit_size=o.commit_size)
        self.band = effective_band(self.n_pilot, o.band_lower, o.band_upper)
        if not self.band:
            raise ValueError(f"pilot-commit: no pilot mean on the 1/{self.n_pilot} grid lies in "
                             f"[{o.band_lower}, {o.band_upper}]; nothing could ever be committed")
        self.rng = np.random.default_rng(setting.seed)
        self.pool_size = int(setting.pool_size)   # 0 = unknown until attach_pool
        # cross-step state
        self.buffer: dict[int, PilotEntry] = {}
        self.evicted: set[int] = set()
        self.evict_next_epoch: set[int] = set()
        self.epochs = EpochTracker()
        # state of the step in progress
        self.committed: list[tuple[int, int, list[Rollout]]] = []   # (pid, round, pilot rows)
        self.pilot_epoch: dict[tuple[int, int], int] = {}          # (round, pid) -> pool epoch
        self.classified_rounds: set[int] = set()
        self.commit_rows: dict[tuple[int, int], list[Rollout]] = {}  # (pid, round) -> rows
        self.cursor = RowCursor()
        self.step_metrics: dict = {}

    def attach_pool(self, pool: list[PromptInfo]) -> None:
        self.pool_size = len(pool)

    def candidates_per_step(self) -> int:
        """3M fresh candidates a round, never more than one pool epoch (no repeats in a round)."""
        wanted = math.ceil(self.opts.candidate_multiplier * self.setting.prompts_per_step)
        return min(wanted, self.pool_size) if self.pool_size else wanted

    # -- the step --------------------------------------------------------------------------
    def plan(self, step, candidates, stats, budget):
        self.reset_step_state()
        self.step_metrics = {key: 0 for key in ("pilots", "not_piloted_evicted", "commits",
                                                "in_band", "too_correct", "too_incorrect")}
        self.step_metrics["rounds"] = 1
        return self.round_requests(0, candidates)

    def follow_up(self, step, round_index, rollouts, ctx):
        self.absorb(step, rollouts)
        if self.filled >= self.setting.prompts_per_step:
            return []
        if round_index >= min(self.opts.max_rounds, ctx.max_rounds):
            return []
        self.step_metrics["rounds"] = round_index + 1
        return self.round_requests(round_index, ctx.draw(self.candidates_per_step()))

    def select(self, step, rollouts):
        self.absorb(step, rollouts)
        groups = [list(pilot_rows) + self.commit_rows.get((pid, rnd), [])
                  for pid, rnd, pilot_rows in self.committed]
        stale = [r for _, _, pilot_rows in self.committed for r in pilot_rows if r.step < step]
        if self.opts.stale_logprobs == "recompute":
            for row in stale:
                row.recompute_logprobs = True
        dropped = self.drop_stale(step)
        self.step_metrics.update(trained_groups=len(groups), stale_dropped=dropped,
                                 stale_rows=len(stale),
                                 buffer_size=len(self.buffer), evicted_total=len(self.evicted),
                                 epoch=self.epochs.epoch)
        return groups

    def observe(self, step, groups, stats):
        # the step's rows are no longer needed; keep them out of checkpoints (the buffer stays)
        self.reset_step_state()

    def reset_step_state(self) -> None:
        self.committed, self.pilot_epoch, self.classified_rounds = [], {}, set()
        self.commit_rows, self.cursor = {}, RowCursor()

    @property
    def filled(self) -> int:
        return len(self.committed)

    # -- one round's requests ----------------------------------------------------------------
    def round_requests(self, round_index: int, candidates: list[PromptInfo]) -> list[Request]:
        pilots = self.fresh_pilots(round_index, candidates)
        commits = self.take_commits(self.setting.prompts_per_step - self.filled)
        self.committed.extend((pid, round_index, entry.rows) for pid, entry in commits)
        self.step_metrics["pilots"] += len(pilots)
        self.step_metrics["commits"] += len(commits)
        return ([Request(pid, self.n_pilot, tag=PILOT) for pid in pilots]
                + [Request(pid, self.n_commit, tag=COMMIT) for pid, _ in commits])

    def fresh_pilots(self, round_index: int, candidates: list[PromptInfo]) -> list[int]:
        """Candidate ids to pilot: not evicted; tracks pool epochs on the way."""
        pilots = []
        for candidate in candidates:
            if self.epochs.advance(candidate.pid):
                self.start_epoch()
            if candidate.pid in self.evicted:
                self.step_metrics["not_piloted_evicted"] += 1
                continue
            pilots.append(candidate.pid)
            self.pilot_epoch[(round_index, candidate.pid)] = self.epochs.epoch
        return pilots

    def start_epoch(self) -> None:
        self.evicted |= self.evict_next_epoch
        self.evict_next_epoch = set()
        if self.opts.flush_buffer_at_epoch_end:
            self.buffer.clear()

    def take_commits(self, wanted: int) -> list[tuple[int, PilotEntry]]:
        """Remove and return up to ``wanted`` buffered prompts, best first."""
        count = min(max(wanted, 0), len(self.buffer))
        if count == len(self.buffer):
            chosen = list(self.buffer)
        elif self.opts.buffer_sampling == "max_variance":
            # nlargest == sorted(reverse=True)[:count], stable: equal (std, step) keep buffer order
            chosen = heapq.nlargest(count, self.buffer, key=self.variance_key)
        else:
            pids = list(self.buffer)
            chosen = [pids[i] for i in self.rng.choice(len(pids), size=count, replace=False)]
        return [(pid, self.buffer.pop(pid)) for pid in chosen]

    def variance_key(self, pid: int) -> tuple[float, int]:
        entry = self.buffer[pid]
        return entry.std, entry.step

    # -- after rewards -----------------------------------------------------------------------
    def absorb(self, step: int, rollouts: list[Rollout]) -> None:
        """Take in the rows generated since the last call: file commit rows, classify pilots."""
        new, restarted = self.cursor.new_rows(rollouts)
        if restarted:
            self.commit_rows = {}
        pilots = []
        for row in new:
            if row.step != step:
                continue
            if row.tag == COMMIT:
                self.commit_rows.setdefault((row.pid, row.round), []).append(row)
            elif row.tag == PILOT and row.round not in self.classified_rounds:
                pilots.append(row)
        for group in group_rows(pilots):
            self.classify_group(step, group)
        self.classified_rounds.update(r.round for r in pilots)

    def classify_group(self, step: int, rows: list[Rollout]) -> None:
        rewards = [r.reward for r in rows if r.kept]
        if not rewards:
            return
        pid, round_index = rows[0].pid, rows[0].round
        p_hat = sum(rewards) / len(rewards)
        piloted_in_past_epoch = (self.pilot_epoch.get((round_index, pid), self.epochs.epoch)
                                 < self.epochs.epoch)
        o = self.opts
        if o.evict_threshold is not None and p_hat >= o.evict_threshold:
            (self.evicted if piloted_in_past_epoch else self.evict_next_epoch).add(pid)
        verdict = classify_pilot(p_hat, o.band_lower, o.band_upper)
        self.step_metrics[verdict] += 1
        if verdict == "in_band" and not (piloted_in_past_epoch and o.flush_buffer_at_epoch_end):
            self.buffer[pid] = PilotEntry(step=step, std=population_std(rewards, p_hat),
                                          rows=list(rows))

    def drop_stale(self, step: int) -> int:
        stale = [pid for pid, entry in self.buffer.items()
                 if step - entry.step > self.opts.buffer_max_off_steps]
        for pid in stale:
            del self.buffer[pid]
        return len(stale)

    def resolved_options(self) -> dict:
        return {**super().resolved_options(), "group_size": self.group_size,
                "n_pilot": self.n_pilot, "n_commit": self.n_commit,
                "candidates_per_step": self.candidates_per_step(), "effective_band": self.band}
