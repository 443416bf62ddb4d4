"""One run of the shared GRPO loop (docs/DESIGN.md §Loop): one method, one budget fraction, one seed.

Per step, :func:`trainer.step.run_step` orders the allocator's calls (plan, follow-up rounds,
select, advantages, update, observe) and this module supplies the parts::

    rows       = self._sample(requests, step, round)   # seeds, length controllers, engine, ledger
    rewards    = self._score(rows)                      # decode, verifier pool, truncation rule
    advantages = assign_advantages(groups)              # trainer.grpo
    update     = self._update(groups, step)             # updates_per_step optimizer steps
    then the stop rule's step_metrics / observe (run_step); ledger record; every E steps: evaluate

Every generated row is charged to the ledger and enters the prompt statistics, including rows of
groups that the method then drops (dynamic sampling) — history is history, whichever method
produced it.  Rows get their random streams from (run seed, step, round, prompt, index), so two
methods that ask for the same rollout see the same sample (common random numbers).

Responses cut at the maximum length (finish ``max_len``) score 0 unless the preset sets
``score_truncated``: a harness choice (the shared GRPO config is silent) that keeps GRPO on the
tiny policy from learning to run past its answer, since the verifier reads the last ``\boxed{}``.

A run stops in one line, without a summary, rather than finish with a number that only looks
like a result: when the verifier fails on most items of a call, or the policy diverges (the
constants and their reasons are below the imports).
"""
from __future__ import annotations

import contextlib
import copy
import math
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from core.rows import PromptInfo, PromptStats, Request, Rollout, StepBudget, group_rows
from trainer.data import DataError, load_eval_sets, load_tasks
from trainer.budget import budget_clock, last_point
from trainer.dirlock import DirLock, DirLocked
from trainer.engine import Engine, HFEngine, RowSpec
from trainer.estimates import estimate_pass_rates
from trainer.evaluate import evaluate_policy
from trainer.features import compute_features
from trainer.initial_eval import cache_key, shared_initial_eval
from trainer.grpo import LossConfig, assign_advantages, policy_loss, recompute_old_logprobs
from trainer.ledger import Ledger
from trainer.policy import load_policy, save_policy
from trainer.rundir import (CheckpointError, atomic_torch_save, atomic_write_json,
                            atomic_write_jsonl, read_checkpoint,
                            read_summary, remove_stale_temp_files)
from trainer.sampler import PoolSampler
from trainer.spec import (DTYPE_NAMES, RunError, RunSpec, check_pool_size, check_resume,
                          check_run_dir, checkpoint_meta, make_controllers, run_setting,
                          validate_spec)
from trainer.seeding import derive_seed
from trainer.provenance import environment
from trainer.sft import initial_policy_dir, warm_start_hash
from trainer.step import StepResult, run_step, step_budget
from trainer.tasks import build_splits
from trainer.tracking import Tracking
from trainer.verifier import VerifierPool


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, cwd=Path(__file__).parent, timeout=5).stdout.strip()
    except Exception:
        return "unknown"


DTYPES = {name: getattr(torch, name) for name in DTYPE_NAMES}


def compute_dtype(p) -> torch.dtype:
    """The preset's compute dtype where the device supports it, else float32.

    Master weights stay float32 whatever this is (verl's FSDP mixed precision): at the
    reference learning rate of 3e-6 a bf16 weight would round most updates away."""
    dtype = DTYPES[p.dtype]
    if dtype == torch.bfloat16 and str(p.device).startswith("cuda") and \
            not torch.cuda.is_bf16_supported():
        return torch.float32
    return dtype


# A run stops, in one line, instead of finishing with numbers that look like results:
# - when the verifier fails (timeout, error, crash) on more than this share of the items of one
#   call of at least VERIFIER_MIN_ITEMS items: every such item scores 0, so accuracy and
#   rewards would measure the verifier, not the policy (a verifier_timeout that overflowed the
#   timer once gave 256/256 failures, accuracy 0.0 and exit 0);
# - when the loss or gradient is non-finite in NONFINITE_LIMIT optimizer steps in a row: the
#   policy diverged.  A single non-finite step is skipped and counted (``nan_skipped``), as
#   before: a rare overflow is not a divergence.  (No pass over the weights after each update:
#   with a finite clipped gradient and lr <= 1, the bound the planner checks, AdamW's step is
#   finite, and non-finite weights would make the next losses non-finite anyway.)
# And, under the token protocol, a run ends short of T (not an error: reported as "short" and
# left out of every Δ) when STARVED_STEPS steps in a row charged nothing: its method has nothing
# left to spend on (Pilot-Commit evicts every prompt its pilots place outside the band, and on
# noisy-chain's 480-prompt pool it had evicted them all after ~40 steps, then idled to the
# 600-step cap; no step can charge again once the pool is gone).
# Module constants, not preset fields: a preset field would change every run's identity
# (config.json), and no legitimate run is near either limit.
VERIFIER_FAILURE_SHARE = 0.5
VERIFIER_MIN_ITEMS = 16
NONFINITE_LIMIT = 3
STARVED_STEPS = 10


class CheckedVerifier:
    """The run's verifier pool behind the failure-share stop rule (above)."""

    def __init__(self, pool: VerifierPool, timeout: float):
        self.pool, self.timeout = pool, timeout

    def score(self, items):
        report = self.pool.score(items)
        failed = report.timeouts + report.failures
        if len(items) >= VERIFIER_MIN_ITEMS and failed > VERIFIER_FAILURE_SHARE * len(items):
            raise RunError(f"the verifier failed on {failed} of {len(items)} items "
                           f"({report.timeouts} timeouts, {report.failures} errors), more than "
                           f"{VERIFIER_FAILURE_SHARE:.0%}: the rewards would be zeros, not "
                           f"scores; check the scorer and preset.verifier_timeout "
                           f"({self.timeout:g} s)")
        return report

    def close(self) -> None:
        self.pool.close()


class Run:
    def __init__(self, spec: RunSpec, run_dir: Path, log=print, progress=None):
        validate_spec(spec)
        self.spec, self.dir, self.log, self.progress = spec, Path(run_dir), log, progress
        self.p = spec.preset
        self.clock = budget_clock(self.p)      # None under the per-step protocol

    # ------------------------------------------------------------------ set-up -----------
    def _check_dir(self) -> None:
        check_run_dir(self.spec, self.dir)

    def _autocast(self):
        """Mixed precision for every forward pass when the compute dtype is not float32."""
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=torch.device(self.p.device).type, dtype=self.dtype)

    def _load_tasks(self) -> None:
        """Training pool and held-out sets: local JSONL when the preset names files (MATH or
        GSM8K schema, math-verify rewards), else the embedded chain_sum mix."""
        p = self.p
        if p.train_data is None:
            self.train_tasks, self.held_out = build_splits(p.train_per_bucket, p.eval_per_bucket,
                                                           p.task_mix, p.pool_weights)
            self.eval_sets = {"held_out": self.held_out}
        else:
            try:
                tasks = load_tasks(p.train_data, p.train_limit)
                self.eval_sets = {name: ts[:p.eval_limit] for name, ts in
                                  load_eval_sets(p.eval_data).items()}
            except DataError as exc:
                raise RunError(str(exc)) from None
            if p.max_prompt_tokens is not None:
                # verl's filter_overlong_prompts: prompts that do not fit are not trained on
                kept = [t for t in tasks
                        if len(self.tokenizer(t.prompt)["input_ids"]) <= p.max_prompt_tokens]
                if len(kept) < len(tasks):
                    self.log(f"dropped {len(tasks) - len(kept)} training prompts longer than "
                             f"{p.max_prompt_tokens} tokens")
                tasks = kept
            if not tasks:
                raise RunError(f"no usable training problems in {p.train_data}")
            self.train_tasks = tasks
            self.held_out = next(iter(self.eval_sets.values()))
        # the planner checked an upper bound; small buckets and dropped prompts can leave fewer
        check_pool_size(p, len(self.train_tasks), p.train_data or f"the {p.task_mix} mix")

    def setup(self) -> None:
        p, spec = self.p, self.spec
        torch.set_num_threads(p.threads)
        torch.manual_seed(spec.seed)
        self._check_dir()
        self.dtype = compute_dtype(p)
        self.policy_dir = initial_policy_dir(self.p, progress=self.progress is not None,
                                             log=self.log)
        self.model, self.tokenizer = load_policy(self.policy_dir)
        self.model.to(p.device)
        self.ref_model = copy.deepcopy(self.model).eval() if p.kl_coef > 0 else None
        if self.ref_model is not None and self.dtype != torch.float32:
            self.ref_model.to(self.dtype)     # never trained: compute-dtype weights suffice
        self._load_tasks()
        self.prompt_ids = {i: tuple(self.tokenizer(t.prompt)["input_ids"])
                           for i, t in enumerate(self.train_tasks)}
        self.setting = run_setting(spec, pool_size=len(self.train_tasks))
        try:
            self.allocator, self.lengthctl = make_controllers(spec, self.setting)
        except (TypeError, ValueError) as exc:
            raise RunError(f"{spec.label}: {exc}") from None
        self.needs = self.allocator.needs()       # read once: what the method needs of the loop
        with self._autocast():
            features = compute_features(self.needs.features, self.model, self.tokenizer,
                                        [t.prompt for t in self.train_tasks])
        self.pool = [PromptInfo(i, t.prompt, self.prompt_ids[i], t.bucket,
                                {k: v[i] for k, v in features.items()})
                     for i, t in enumerate(self.train_tasks)]
        self.allocator.attach_pool(self.pool)
        self.stats = PromptStats()
        self.ledger = Ledger()
        self.sampler = PoolSampler(len(self.pool), spec.seed)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=p.lr, betas=(0.9, 0.999),
                                           weight_decay=0.0)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        self.engine = self._make_engine()
        self.engine.phase = self.ledger.phase    # an engine's recompute is charged to logprob
        self.verifier = CheckedVerifier(VerifierPool(p.verifier_workers, p.verifier_timeout),
                                        p.verifier_timeout)
        self.loss_cfg = LossConfig(p.clip_low, p.clip_high, p.dual_clip, p.kl_coef, p.temperature)
        self.metrics: list[dict] = []
        self.evals: list[dict] = []
        self.next_step = 0
        self.nan_skipped = 0
        self.nonfinite_streak = 0
        self._load_checkpoint()
        if self.next_step > 0:        # resumed: the engine loaded the initial weights
            self._sync_engine()

    def _make_engine(self) -> Engine:
        p = self.p
        if p.engine == "vllm":
            from trainer.vllm_engine import VLLMEngine
            return VLLMEngine(self.policy_dir, self.model, self.tokenizer,
                              max_new_tokens=p.max_new_tokens, temperature=p.temperature,
                              top_p=p.top_p, dtype=self.dtype, seed=self.spec.seed,
                              **p.engine_options)
        return HFEngine(self.model, self.tokenizer, max_new_tokens=p.max_new_tokens,
                        temperature=p.temperature, top_p=p.top_p, **p.engine_options)

    def _sync_engine(self) -> None:
        """Push the trainer's weights to an engine that holds its own copy (vLLM); the hf
        engine samples from the trainer's model itself."""
        self.engine.sync_weights(self.model)

    def _token_lr(self) -> dict:
        """Token protocol: the update's learning rate from the fraction of T spent once the
        step's rollouts are generated (trainer.budget, "Schedule decision"); it overrides the
        per-step scheduler's and is recorded as the step's ``lr``."""
        if self.clock is None:
            return {}
        lr = self.p.lr * self.clock.lr_factor(self.clock.spent(self.ledger))
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return {"lr": lr}

    def _lr_factor(self, step: int) -> float:
        p = self.p
        warm = min(1.0, (step + 1) / p.warmup_steps) if p.warmup_steps else 1.0
        if p.schedule == "cosine":
            return warm * 0.5 * (1 + math.cos(math.pi * min(1.0, step / max(1, p.steps))))
        return warm

    # ------------------------------------------------------------------ checkpoints ------
    def _state(self) -> dict:
        return {"next_step": self.next_step, "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "allocator": self.allocator, "lengthctl": self.lengthctl, "stats": self.stats,
                "ledger": self.ledger, "sampler": self.sampler, "nan_skipped": self.nan_skipped,
                "nonfinite_streak": self.nonfinite_streak}

    def _save_checkpoint(self) -> None:
        atomic_torch_save(self.dir / "checkpoint.pt", self._state(),
                          checkpoint_meta(self.spec, self.next_step, self.metrics, self.evals))

    def _load_checkpoint(self) -> None:
        remove_stale_temp_files(self.dir)
        path = self.dir / "checkpoint.pt"
        resumed = check_resume(self.spec, self.dir)      # before any weights are read
        if resumed is None:
            return
        try:
            state = read_checkpoint(path)
        except CheckpointError as exc:
            raise RunError(str(exc)) from None
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        for key in ("allocator", "lengthctl", "stats", "ledger", "sampler"):
            setattr(self, key, state[key])
        self.next_step, self.nan_skipped = state["next_step"], state["nan_skipped"]
        self.nonfinite_streak = state.get("nonfinite_streak", 0)
        # steps after the checkpoint are recomputed, identically
        _, self.metrics, self.evals = resumed
        self.log(f"resuming {self.dir.name} at step {self.next_step}")

    # ------------------------------------------------------------------ the step ---------
    def _budget(self) -> StepBudget:
        return step_budget(self.setting, self.stats)

    def _sample(self, requests: list[Request], step: int, round_index: int,
                budget: StepBudget) -> list[Rollout]:
        """Generate every requested rollout (rewards are :meth:`_score`'s) and charge them.

        Each row gets its random stream and its length controller's stream from (run seed,
        step, round, prompt, request index among the prompt's requests this round, row index),
        so that two methods asking for the same rollout see the same sample."""
        specs, owners = [], []
        seen: Counter = Counter()
        for req in requests:
            if req.n <= 0:
                continue
            dup = seen[req.pid]
            seen[req.pid] += 1
            group = derive_seed(self.spec.seed, step, round_index, req.pid, dup, 17)
            for i in range(req.n):
                key = (self.spec.seed, step, round_index, req.pid, dup, i)
                controller = self.lengthctl.row_controller(step, req.control, derive_seed(*key, 1),
                                                           group=group)
                specs.append(RowSpec(self.prompt_ids[req.pid], derive_seed(*key), controller))
                owners.append((req, group))
        self.ledger.plan(len(specs), len(specs) * budget.mean_length)
        with self.ledger.phase("generate"):
            self.model.eval()
            with self._autocast():
                generations = self.engine.generate(specs)
        rows = []
        for (req, group), spec, gen in zip(owners, specs, generations):
            # the length controller may reweight its row (DUET: 1 / eps_abort when kept by chance)
            row_weight = gen.weight
            rows.append(Rollout(req.pid, group, req.tag, step, round_index, gen.tokens,
                                gen.logprobs, gen.finish, 0.0,
                                min(req.weight * row_weight, self.p.max_rollout_weight),
                                dict(gen.flags), **gen.fields))
        self.ledger.charge(rows)
        return rows

    def _advantages(self, groups: list[list[Rollout]]):
        with self.ledger.phase("advantage"):
            return assign_advantages(groups, normalize_std=self.p.normalize_std,
                                     **self.allocator.advantage_options())

    def _recompute_then_update(self, groups: list[list[Rollout]], step: int) -> dict:
        """Pilot-Commit's stale rows get their old log-probs from the current policy (charged to
        ``logprob``) before the update reads them."""
        self._recompute_flagged_logprobs(groups)
        return self._update(groups, step)

    def _recompute_flagged_logprobs(self, groups: list[list[Rollout]]) -> None:
        flagged = [r for g in groups for r in g if r.kept and r.recompute_logprobs]
        if flagged:
            with self.ledger.phase("logprob"), self._autocast():
                self.model.eval()
                recompute_old_logprobs(self.model, flagged, self.prompt_ids, self.engine.pad_id,
                                       self.p.temperature, self.p.micro_batch_rows)

    def _score(self, rows: list[Rollout]) -> list[float]:
        """The verifier's reward of each row; a verifier timeout or crash scores 0 and is
        flagged on the row."""
        with self.ledger.phase("reward"):
            rewards, status = self._verify([r.pid for r in rows], rows)
        for row, state in zip(rows, status):
            if state != "ok":
                row.flags["verifier"] = state
        return [float(reward) for reward in rewards]

    def _verify(self, pids: list[int], generated: list) -> tuple[np.ndarray, list[str]]:
        """Rewards and verifier statuses of generated responses (rows or generations, with
        ``tokens`` and ``finish``): decode, verify, and 0 for a response cut at the length limit
        unless the preset scores those -- it has no final answer of its own, and scoring a stray
        early \\boxed{} in it rewards rambling past the answer."""
        texts = [self.tokenizer.decode(g.tokens, skip_special_tokens=True) for g in generated]
        report = self.verifier.score([(self.train_tasks[pid].scorer, text,
                                       self.train_tasks[pid].gold)
                                      for pid, text in zip(pids, texts)])
        truncated = np.array([g.finish == "max_len" for g in generated], dtype=bool)
        rewards = np.where(truncated & (not self.p.score_truncated), 0.0,
                           np.asarray(report.rewards, dtype=np.float64))
        return rewards, list(report.status)

    def _estimate(self, step: int, candidates: list[PromptInfo]) -> dict[int, float]:
        def generate(specs):
            self.model.eval()
            with self._autocast():
                return self.engine.generate(specs)

        return estimate_pass_rates(step, [c.pid for c in candidates],
                                   self.needs.pass_rate_estimates,
                                   seed=self.spec.seed, prompt_ids=self.prompt_ids,
                                   generate=generate,
                                   score=lambda pids, gens: self._verify(pids, gens)[0],
                                   ledger=self.ledger)

    def _update(self, groups: list[list[Rollout]], step: int) -> dict:
        """``updates_per_step`` optimizer steps over the kept rows, shuffled into equal
        mini-batches.  A mini-batch whose loss or gradient norm is not finite is skipped and
        counted.  ``grad_norm`` is the mean pre-clip gradient norm over the step's optimizer
        steps that were taken, ``grad_norm_max`` their maximum (0 when none was)."""
        self.engine.sleep()          # an engine with its own GPU memory frees it meanwhile
        kept = [r for g in groups for r in g if r.kept]
        order = np.random.default_rng(derive_seed(self.spec.seed, step, 5)).permutation(len(kept))
        batches = np.array_split(order, self.p.updates_per_step) if len(kept) else \
            [np.zeros(0, dtype=int)] * self.p.updates_per_step
        lr = self._token_lr()
        self.model.train()
        losses, norms = [], []
        micro_stats: list[tuple[float, float]] = []     # (kl, clip fraction) per micro-batch
        for batch in batches:
            result = self._optimizer_step([kept[i] for i in batch], micro_stats)
            self.nonfinite_streak = self.nonfinite_streak + 1 if result is None else 0
            if self.nonfinite_streak >= NONFINITE_LIMIT:
                raise RunError(f"step {step}: the loss or gradient was not finite in "
                               f"{self.nonfinite_streak} optimizer steps in a row: the policy "
                               f"diverged (lower preset.lr = {self.p.lr:g}?)")
            if result is None:
                self.nan_skipped += 1
                self.optimizer.zero_grad(set_to_none=True)
                losses.append(float("nan"))
                continue
            loss_value, norm = result
            losses.append(loss_value)
            norms.append(norm)
        stats = {"kl": 0.0, "clip_fraction": 0.0}
        if micro_stats:
            stats["kl"], stats["clip_fraction"] = (float(v) for v in np.mean(micro_stats, axis=0))
        self.scheduler.step()
        self.model.eval()
        self._sync_engine()
        return {"loss": float(np.mean(losses)) if losses else 0.0, **stats, **lr,
                "grad_norm": float(np.mean(norms)) if norms else 0.0,
                "grad_norm_max": float(np.max(norms)) if norms else 0.0}

    def _optimizer_step(self, rows: list[Rollout], micro_stats: list) -> tuple[float, float] | None:
        """One optimizer step on one mini-batch: (loss, pre-clip gradient norm), or None when
        the loss or the norm is not finite (then nothing was applied)."""
        denominator = sum(r.n_tokens for r in rows)
        active = rows if self.p.kl_coef > 0 else \
            [r for r in rows if r.advantage * r.weight != 0.0]
        self.optimizer.zero_grad(set_to_none=True)
        loss_value = 0.0
        # micro-batches bound activation memory; each is divided by the whole mini-batch's
        # token count, so their gradients sum to the mini-batch's token-mean exactly
        for start in range(0, len(active), self.p.micro_batch_rows):
            micro = active[start:start + self.p.micro_batch_rows]
            with self._autocast():
                loss, s = policy_loss(self.model, micro, self.prompt_ids, self.engine.pad_id,
                                      denominator, self.loss_cfg, self.ref_model)
            if not torch.isfinite(loss):
                return None
            loss.backward()
            loss_value += float(loss.detach())
            micro_stats.append((s["kl"], s["clip_fraction"]))
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.p.grad_clip)
        if not torch.isfinite(norm):
            return None
        self.optimizer.step()
        return loss_value, float(norm)

    def train_step(self, step: int) -> dict:
        with self.ledger.step():          # the whole step, so time outside any phase shows
            budget = self._budget()
            result = run_step(
                step, self.allocator, self.stats, budget,
                draw=lambda k: [self.pool[i] for i in self.sampler.draw(k)],
                generate=lambda requests, round_index: self._sample(requests, step,
                                                                    round_index, budget),
                score=self._score,
                advantages=self._advantages,
                update=lambda groups: self._recompute_then_update(groups, step),
                max_rounds=self.p.max_rounds, phase=self.ledger.phase,
                # controls only: unbilled, untrained pass-rate estimates before the plan
                estimate=(lambda candidates: self._estimate(step, candidates))
                if self.needs.pass_rate_estimates else None,
                lengthctl=self.lengthctl)
        return self._step_record(step, result)

    def _step_record(self, step: int, result: StepResult) -> dict:
        rows, adv = result.rows, result.advantages
        finish = Counter(r.finish for r in rows)
        by_bucket = spend_by_bucket(rows, lambda pid: self.pool[pid].bucket)
        # the cut rows keep their older place in the record: [rows cut at max_len, rows]
        truncated = {b: [c.pop("max_len"), c["rows"]] for b, c in by_bucket.items()}
        spreads = [float(np.std([r.n_tokens for r in g])) for g in group_rows(rows) if len(g) > 1]
        signal = adv.groups - adv.no_gradient - adv.zero_variance
        return {
            "step": step,
            **self.ledger.step_record(),
            "rounds": result.rounds,
            "train_reward": float(np.mean([r.reward for r in rows])) if rows else 0.0,
            "groups_generated": len(group_rows(rows)),
            "groups_trained": adv.groups,
            "zero_variance_groups": adv.zero_variance,
            "no_gradient_groups": adv.no_gradient,
            "effective_groups": signal,
            "effective_ratio": signal / adv.groups if adv.groups else 0.0,
            "counts": result.counts,
            "group_sizes": [len(g) for g in result.groups],
            "finish": {k: finish.get(k, 0) for k in ("eos", "max_len", "stopped", "aborted")},
            # rows a stop rule kept by chance (DUET's abort gate; their weight carries 1 / eps)
            "kept_by_chance": sum(r.kept_by_chance for r in rows),
            "mean_length": float(np.mean([r.n_tokens for r in rows])) if rows else 0.0,
            "length_sd_within": float(np.mean(spreads)) if spreads else 0.0,
            "max_len_by_bucket": truncated,
            "by_bucket": by_bucket,
            "verifier_timeouts": sum(r.flags.get("verifier") == "timeout" for r in rows),
            "verifier_failures": sum(r.flags.get("verifier") in ("error", "crash") for r in rows),
            "nan_skipped": self.nan_skipped,
            "lr": self.scheduler.get_last_lr()[0],
            "method": _numbers(self.allocator.step_metrics),
            "length": _numbers(result.length_metrics),
            **result.update,
        }

    # ------------------------------------------------------------------ evaluation -------
    def evaluate(self, step: int, greedy: bool = True) -> dict:
        """Every held-out set; the first one's numbers are the record's top-level accuracy
        (the one tables read), all of them are under ``sets`` when there are several."""
        greedy = greedy or self.p.greedy_at == "every"
        results = {}
        with self.ledger.phase("evaluate"), self._autocast():
            for name, tasks in self.eval_sets.items():
                results[name] = evaluate_policy(
                    self.model, self.tokenizer, tasks, samples=self.p.eval_samples,
                    temperature=self.p.eval_temperature, max_new_tokens=self.p.max_new_tokens,
                    seed=self.spec.seed, top_p=self.p.top_p, verifier=self.verifier,
                    max_batch_rows=self.p.engine_options.get("max_batch_rows", 512),
                    greedy=greedy)
        first = next(iter(results.values()))
        extra = {"sets": results} if len(results) > 1 else {}
        return {"step": step, "cum_tokens": self.ledger.cumulative_tokens,
                "cum_rollouts": self.ledger.cumulative_rollouts,
                "cum_train_seconds": round(self.ledger.training_seconds(), 4),
                "cum_train_cpu_seconds": round(self.ledger.training_cpu_seconds(), 4),
                **first, **extra}

    def _initial_evaluation(self) -> dict:
        """The step-0 evaluation, computed once per seed for the whole sweep
        (:mod:`trainer.initial_eval`): the sweep directory is the run directory's parent, or
        the one above a grouped run's (``RunSpec.group``)."""
        root = self.dir.parent
        for _ in Path(self.spec.group).parts:
            root = root.parent
        key = cache_key(self.p.to_dict(), self.spec.seed, warm_start_hash(self.policy_dir))
        record, computed = shared_initial_eval(root, key, lambda: self.evaluate(0))
        if not computed:
            self.log(f"{self.dir.name}: step-0 evaluation shared ({key})")
        return record

    def _after_step(self, done: int) -> tuple[bool, dict | None]:
        """(whether the run is finished, the evaluation due after ``done`` steps or None).
        Per step: every ``eval_every`` steps and at the last.  Token protocol
        (:mod:`trainer.budget`): when the charge first reaches a new fraction j T / K, and at
        the end (a run stopped by the step cap is evaluated where it stopped)."""
        if self.clock is None:
            finished = done == self.p.steps
            due = done % self.p.eval_every == 0 or finished
            return finished, self.evaluate(done, greedy=finished) if due else None
        spent = self.clock.spent(self.ledger)
        starved = idle_steps_at_end(self.metrics) >= STARVED_STEPS
        if starved:
            self.log(f"{self.dir.name}: the last {STARVED_STEPS} steps charged nothing (the "
                     f"method has nothing left to spend on); the run ends short of T")
        finished = self.clock.finished(spent, done) or starved
        point = self.clock.reached(spent)
        if point <= last_point(self.evals) and not finished:
            return False, None
        record = self.evaluate(done, greedy=finished)
        record.update(self.clock.eval_fields(spent, point if point > last_point(self.evals)
                                             else None))
        return finished, record

    # ------------------------------------------------------------------ driver -----------
    def execute(self) -> dict:
        """Run (or resume) to the end; returns the summary, also written to summary.json.
        A finished run is only read; training holds the run directory's lock, so a second
        process on the same directory refuses in one line instead of interleaving writes."""
        if not (self.dir / "summary.json").is_file():
            try:
                # numpy's BLAS gets the preset's thread count too, as torch does: left at the
                # machine's cores, OpenBLAS threads spin beside the other runs of a sweep
                # (ARRoL's head training: 0.71 CPU s a step on 2 threads vs 0.08 s on 1,
                # identical results, measured on the 2-core box with a sweep running)
                with DirLock(self.dir, "run directory"), \
                        threadpool_limits(limits=self.p.threads, user_api="blas"):
                    return self._execute()
            except DirLocked as exc:
                raise RunError(str(exc)) from None
        return self._execute()

    def _execute(self) -> dict:
        summary_path = self.dir / "summary.json"
        if summary_path.is_file():
            self._check_dir()
            summary = read_summary(summary_path)
            if summary is not None:
                return summary
            self.log(f"warning: {summary_path} was unreadable (kept as summary.json.corrupt); "
                     f"finishing the run again from its checkpoint")
        self.setup()
        config = {
            "run": self.spec.config(), "commit": git_commit(),
            "allocator_options": self.allocator.resolved_options(),
            "length_options": self.lengthctl.resolved_options(),
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "environment": environment(), "warm_start_sha256": warm_start_hash(self.policy_dir),
            "pool_size": len(self.train_tasks), "held_out_size": len(self.held_out)}
        atomic_write_json(self.dir / "config.json", config)
        tracking = None
        try:
            if self.spec.log_to:
                tracking = Tracking(self.spec.log_to, self.dir, config)
            if self.next_step == 0 and not self.evals:
                # tens of seconds with nothing else on screen: say what is happening
                self.log(f"{self.dir.name}: evaluating the initial policy on "
                         f"{sum(len(t) for t in self.eval_sets.values())} held-out prompts "
                         f"x {self.p.eval_samples} samples (step 0)")
                self.evals.append(self._initial_evaluation())
                atomic_write_jsonl(self.dir / "eval.jsonl", self.evals)
            last = self.p.steps if self.clock is None else self.clock.step_cap
            for step in range(self.next_step, last):
                record = self.train_step(step)
                self.metrics.append(record)
                done = step + 1
                finished, evaluation = self._after_step(done)
                if evaluation is not None:
                    self.evals.append(evaluation)
                    atomic_write_jsonl(self.dir / "eval.jsonl", self.evals)
                atomic_write_jsonl(self.dir / "metrics.jsonl", self.metrics)
                self.next_step = done
                if done % self.p.checkpoint_every == 0 or finished or \
                        (evaluation is not None and self.clock is not None):
                    self._save_checkpoint()
                if tracking is not None:
                    tracking.publish(self.metrics, self.evals)
                if self.progress is not None:
                    self.progress(record, self.evals[-1])
                if finished:
                    break
        finally:
            self.verifier.close()
            if tracking is not None:
                tracking.close()
        # the final policy as a Hugging Face directory (bench.eval, or any HF tool, reads it);
        # written before summary.json, so a finished run always has it
        save_policy(self.model, self.tokenizer, self.dir / "policy")
        self.engine.close()
        summary = summarize(self.spec, self.metrics, self.evals, self.ledger)
        atomic_write_json(summary_path, summary)
        return summary


def idle_steps_at_end(metrics: list[dict]) -> int:
    """How many of the last steps charged no rollout and no token."""
    n = 0
    for m in reversed(metrics):
        if m["rollouts"] or m["tokens"]:
            break
        n += 1
    return n


def _numbers(metrics: dict) -> dict:
    """The JSON-able scalars of a component's per-step metrics."""
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float, str, bool))}


def summarize(spec: RunSpec, metrics: list[dict], evals: list[dict], ledger: Ledger) -> dict:
    """Final numbers of a run; wall-clock figures live under ``timing`` (they vary run to run)."""
    final, first = evals[-1], evals[0]
    rows = sum(m["rollouts"] for m in metrics) or 1
    finish = Counter()
    for m in metrics:
        finish.update(m["finish"])
    counts = [c for m in metrics for c in m["counts"]]
    trained = sum(m["groups_trained"] for m in metrics) or 1
    return {
        "method": spec.label, "budget": spec.budget, "seed": spec.seed,
        "preset": spec.preset.name, "steps": len(metrics),
        "final_accuracy": final["mean_at_k"], "final_greedy": final["greedy"],
        "initial_accuracy": first["mean_at_k"], "initial_greedy": first["greedy"],
        "final_buckets": final["buckets"],
        **budget_summary(spec.preset, ledger),
        "tokens": ledger.cumulative_tokens, "rollouts": ledger.cumulative_rollouts,
        "planned_tokens": round(ledger.cumulative_planned_tokens, 1),
        "planned_rollouts": ledger.cumulative_planned_rollouts,
        "zero_variance_fraction": sum(m["zero_variance_groups"] for m in metrics) / trained,
        "no_gradient_fraction": sum(m["no_gradient_groups"] for m in metrics) / trained,
        "effective_ratio": sum(m["effective_groups"] for m in metrics) / trained,
        "mean_rounds": float(np.mean([m["rounds"] for m in metrics])),
        "count_mean": float(np.mean(counts)) if counts else 0.0,
        "count_std": float(np.std(counts)) if counts else 0.0,
        "stopped_fraction": finish["stopped"] / rows,
        "aborted_fraction": finish["aborted"] / rows,
        # a stable diagnostics column for every method; only DUET's stop rule keeps rows by chance
        # (runs recorded before the typed row field kept the count under the rule's metrics)
        "eps_kept_fraction": sum(m.get("kept_by_chance", m.get("length", {}).get("eps_kept", 0))
                                 for m in metrics) / rows,
        "verifier_timeouts": sum(m["verifier_timeouts"] for m in metrics),
        "verifier_failures": sum(m["verifier_failures"] for m in metrics),
        "nan_skipped": metrics[-1]["nan_skipped"] if metrics else 0,
        # the controls' estimation rollouts: never charged, read by no cost table
        "unbilled_rollouts": ledger.unbilled_rollouts, "unbilled_tokens": ledger.unbilled_tokens,
        # within-prompt spread of response length, relative to the mean length (calibration)
        "length_sd_ratio": (float(np.mean([m.get("length_sd_within", 0.0) for m in metrics]))
                            / max(1e-9, float(np.mean([m.get("mean_length", 0.0)
                                                       for m in metrics])))) if metrics else 0.0,
        "truncation_by_bucket": truncation_by_bucket(metrics),
        # steps at the end that charged nothing (STARVED_STEPS of them end a token-protocol run)
        "idle_steps_at_end": idle_steps_at_end(metrics),
        "timing": {**ledger.timing(spec.preset.threads, spec.preset.device),
                   "unbilled": round(ledger.unbilled_seconds, 3)},
    }


def budget_summary(p, ledger: Ledger) -> dict:
    """Token protocol: T, what was spent of it (a run stopped by the step cap spends less;
    the last step overshoots by at most its own charge)."""
    clock = budget_clock(p)
    if clock is None:
        return {}
    spent = clock.spent(ledger)
    return {"protocol": "tokens", "budget_total": clock.total, "budget_unit": clock.unit,
            "budget_spent": spent, "budget_overshoot": spent - clock.total,
            "budget_reached": spent >= clock.total}


def spend_by_bucket(rows, bucket_of) -> dict[str, dict[str, int]]:
    """What a step spent on each difficulty bucket and what it found there: generated rows and
    tokens (pilots, discarded and pruned rows included, as the ledger charges them), rows cut at
    the length limit, correct rows, distinct prompts drawn and prompts with at least one correct
    row (a "first positive").  The step record keeps the cut rows in ``max_len_by_bucket``.
    The regime diagnostics (the hardest bucket's budget share and solve rate over training,
    issue 27) read these; nothing in training does."""
    out: dict[str, dict[str, int]] = {}
    solved: dict[str, set[int]] = {}
    drawn: dict[str, set[int]] = {}
    for r in rows:
        b = bucket_of(r.pid)
        cell = out.setdefault(b, {"rows": 0, "tokens": 0, "correct": 0, "max_len": 0})
        cell["rows"] += 1
        cell["max_len"] += r.finish == "max_len"
        cell["tokens"] += r.n_tokens
        cell["correct"] += r.reward > 0.5
        drawn.setdefault(b, set()).add(r.pid)
        if r.reward > 0.5:
            solved.setdefault(b, set()).add(r.pid)
    for b, cell in out.items():
        cell["prompts"] = len(drawn[b])
        cell["solved_prompts"] = len(solved.get(b, ()))
    return {b: out[b] for b in sorted(out)}


def truncation_by_bucket(metrics: list[dict]) -> dict[str, float]:
    """Fraction of generated rows cut at the length limit, per difficulty bucket, over the run."""
    cut, total = Counter(), Counter()
    for m in metrics:
        for bucket, (k, n) in m.get("max_len_by_bucket", {}).items():
            cut[bucket] += k
            total[bucket] += n
    return {b: cut[b] / total[b] for b in sorted(total) if total[b]}
