"""One run of the shared GRPO loop (DESIGN.md §3): one method, one budget fraction, one seed.

Per step::

    candidates = sampler.draw(allocator.candidates_per_step())
    requests   = allocator.plan(step, candidates, stats, budget)
    rows       = generate + score(requests)          # rounds 1.. via allocator.follow_up
    groups     = allocator.select(step, rows)
    advantages, one update of ``updates_per_step`` optimizer steps
    allocator.observe; stats.update; lengthctl.observe; ledger record; every E steps: evaluate

Every generated row is charged to the ledger and enters the prompt statistics, including rows of
groups that the method then drops (dynamic sampling) — history is history, whichever method
produced it.  Rows get their random streams from (run seed, step, round, prompt, index), so two
methods that ask for the same rollout see the same sample (common random numbers).

Responses cut at the maximum length (finish ``max_len``) score 0 unless the preset sets
``score_truncated``: a harness choice (the shared GRPO config is silent) that keeps GRPO on the
tiny policy from learning to run past its answer, since the verifier reads the last ``\boxed{}``.
"""
from __future__ import annotations

import contextlib
import copy
import json
import math
import subprocess
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

import allocators
import lengthctl
from allocators.base import (RECOMPUTE_OLD_LOGPROBS, FollowUpContext, PromptInfo, PromptStats,
                             Request, Rollout, Setting, StepBudget, group_rows)
from trainer.data import DataError, check_data_file, load_eval_sets, load_tasks
from trainer.engine import HFEngine, RowSpec
from trainer.evaluate import evaluate_policy
from trainer.features import compute_features
from trainer.grpo import LossConfig, assign_advantages, policy_loss, recompute_old_logprobs
from trainer.ledger import Ledger
from trainer.policy import load_policy, save_policy
from trainer.rundir import (atomic_torch_save, atomic_write_json, atomic_write_jsonl, read_json,
                            read_jsonl)
from trainer.sampler import PoolSampler
from trainer.seeding import derive_seed
from trainer.sft import initial_policy_dir
from trainer.tasks import build_splits
from trainer.verifier import VerifierPool


class RunError(RuntimeError):
    """A problem with the run's inputs, reported as a one-line error."""


@dataclass(frozen=True)
class RunSpec:
    method: str
    budget: float
    seed: int
    preset: object                      # bench.presets.Preset
    method_options: dict = field(default_factory=dict)
    length_options: dict = field(default_factory=dict)
    embedding: str = "minilm"

    def config(self) -> dict:
        return {"method": self.method, "budget": self.budget, "seed": self.seed,
                "preset": self.preset.to_dict(), "method_options": self.method_options,
                "length_options": self.length_options, "embedding": self.embedding}

    def run_name(self) -> str:
        return f"{self.method}__b{self.budget:g}__s{self.seed}"


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, cwd=Path(__file__).parent, timeout=5).stdout.strip()
    except Exception:
        return "unknown"


def validate_spec(spec: RunSpec) -> None:
    """Errors a user can fix, raised before any work (one line each)."""
    if not 0.0 < spec.budget <= 1.0:
        raise RunError(f"budget fraction {spec.budget} is outside (0, 1]")
    try:
        cls = allocators.get(spec.method)
    except KeyError as exc:
        raise RunError(exc.args[0]) from None
    p = spec.preset
    setting = Setting(p.prompts_per_step, p.group_size, spec.budget, p.max_new_tokens, p.steps,
                      spec.seed)
    if setting.rollouts_per_step < p.prompts_per_step:
        raise RunError(f"budget fraction {spec.budget} gives {setting.rollouts_per_step} rollouts "
                       f"per step, fewer than the {p.prompts_per_step} prompts (one rollout each) "
                       f"it must cover")
    if p.model_dir is not None:
        check_model_dir(p.model_dir)
    check_real_inputs(p)
    try:
        allocator = cls(setting, **spec.method_options)
        lengthctl.get(cls.length_control)(
            p.max_new_tokens, spec.seed,
            **{**allocator.length_control_options(), **spec.length_options})
    except KeyError as exc:
        raise RunError(exc.args[0]) from None
    except (TypeError, ValueError) as exc:
        raise RunError(f"{spec.method} at budget {spec.budget:g}: {exc}") from None


def check_model_dir(path: str) -> None:
    """Fail early, in one line, on a missing or unreadable model directory."""
    from transformers import AutoConfig
    folder = Path(path)
    if not folder.is_dir():
        raise RunError(f"model directory {str(folder)!r} does not exist")
    try:
        AutoConfig.from_pretrained(folder, local_files_only=True)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise RunError(f"cannot load model from {str(folder)!r}: {first}") from None


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
ENGINES = ("hf", "vllm")


def check_real_inputs(p) -> None:
    """Data files, dtype, device and engine of a preset, checked before any work (one line each)."""
    if p.train_data is not None:
        if not p.eval_data:
            raise RunError(f"preset {p.name!r} has train_data but no eval_data (held-out JSONL)")
        for path in (p.train_data, *p.eval_data):
            try:
                check_data_file(path)
            except DataError as exc:
                raise RunError(str(exc)) from None
    elif p.eval_data:
        raise RunError(f"preset {p.name!r} has eval_data but no train_data; the embedded task "
                       f"mix has its own held-out set")
    if p.dtype not in DTYPES:
        raise RunError(f"unknown dtype {p.dtype!r}; choose one of {', '.join(DTYPES)}")
    if p.engine not in ENGINES:
        raise RunError(f"unknown engine {p.engine!r}; choose one of {', '.join(ENGINES)}")
    if str(p.device).startswith("cuda") and not torch.cuda.is_available():
        raise RunError(f"preset {p.name!r} wants device {p.device!r} but CUDA is not available "
                       f"(override it with --config '{{\"preset\": {{\"device\": \"cpu\"}}}}')")
    if p.engine == "vllm":
        from trainer.vllm_engine import VLLMUnavailable, check_vllm
        try:
            check_vllm(p.device)
        except VLLMUnavailable as exc:
            raise RunError(str(exc)) from None


def compute_dtype(p) -> torch.dtype:
    """The preset's compute dtype where the device supports it, else float32.

    Master weights stay float32 whatever this is (verl's FSDP mixed precision): at the
    reference learning rate of 3e-6 a bf16 weight would round most updates away."""
    dtype = DTYPES[p.dtype]
    if dtype == torch.bfloat16 and str(p.device).startswith("cuda") and \
            not torch.cuda.is_bf16_supported():
        return torch.float32
    return dtype


def check_run_dir(spec: RunSpec, run_dir: Path) -> None:
    """Refuse a run directory that holds a run of another config (nothing in it is touched)."""
    config_path = Path(run_dir) / "config.json"
    if not config_path.is_file():
        return
    try:
        old = read_json(config_path)
    except json.JSONDecodeError:
        raise RunError(f"{config_path} is not valid JSON; move the directory away") from None
    if old.get("run") != spec.config():
        raise RunError(f"{run_dir} holds a run with a different config; "
                       f"use another --out or delete it")


class Run:
    def __init__(self, spec: RunSpec, run_dir: Path, log=print, progress=None):
        validate_spec(spec)
        self.spec, self.dir, self.log, self.progress = spec, Path(run_dir), log, progress
        self.p = spec.preset

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
            self.train_tasks, self.held_out = build_splits(p.train_per_bucket, p.eval_per_bucket)
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
        self.setting = Setting(p.prompts_per_step, p.group_size, spec.budget, p.max_new_tokens,
                               p.steps, spec.seed, pool_size=len(self.train_tasks))
        try:
            self.allocator = allocators.get(spec.method)(self.setting, **spec.method_options)
            self.lengthctl = lengthctl.get(self.allocator.length_control)(
                p.max_new_tokens, spec.seed,
                **{**self.allocator.length_control_options(), **spec.length_options})
        except (TypeError, ValueError) as exc:
            raise RunError(f"{spec.method}: {exc}") from None
        with self._autocast():
            features = compute_features(self.allocator.needs_features, self.model,
                                        self.tokenizer, [t.prompt for t in self.train_tasks],
                                        spec.embedding)
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
        if hasattr(self.engine, "phase"):
            self.engine.phase = self.ledger.phase    # the engine charges its recompute to logprob
        self.verifier = VerifierPool(p.verifier_workers, p.verifier_timeout)
        self.loss_cfg = LossConfig(p.clip_low, p.clip_high, p.dual_clip, p.kl_coef, p.temperature)
        self.metrics: list[dict] = []
        self.evals: list[dict] = []
        self.next_step = 0
        self.nan_skipped = 0
        self._load_checkpoint()
        if self.next_step > 0:        # resumed: the engine loaded the initial weights
            self._sync_engine()

    def _make_engine(self):
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
        sync = getattr(self.engine, "sync_weights", None)
        if sync is not None:
            sync(self.model)

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
                "ledger": self.ledger, "sampler": self.sampler, "nan_skipped": self.nan_skipped}

    def _save_checkpoint(self) -> None:
        atomic_torch_save(self.dir / "checkpoint.pt", self._state())

    def _load_checkpoint(self) -> None:
        path = self.dir / "checkpoint.pt"
        if not path.is_file():
            return
        try:
            state = torch.load(path, weights_only=False)
        except Exception as exc:
            raise RunError(f"cannot read checkpoint {path}: {exc}") from None
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        for key in ("allocator", "lengthctl", "stats", "ledger", "sampler"):
            setattr(self, key, state[key])
        self.next_step, self.nan_skipped = state["next_step"], state["nan_skipped"]
        # steps after the checkpoint are recomputed, identically
        self.metrics = [m for m in read_jsonl(self.dir / "metrics.jsonl")
                        if m["step"] < self.next_step]
        self.evals = [e for e in read_jsonl(self.dir / "eval.jsonl") if e["step"] <= self.next_step]
        self.log(f"resuming {self.dir.name} at step {self.next_step}")

    # ------------------------------------------------------------------ the step ---------
    def _budget(self) -> StepBudget:
        s = self.setting
        mean_len = self.stats.global_mean_length(default=s.max_response_tokens)
        return StepBudget(rollouts=s.rollouts_per_step,
                          tokens=s.budget_fraction * s.prompts_per_step * s.group_size * mean_len,
                          mean_length=mean_len)

    def _generate(self, requests: list[Request], step: int, round_index: int,
                  budget: StepBudget) -> list[Rollout]:
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
                controller = self.lengthctl.row_controller(step, req.control, derive_seed(*key, 1))
                specs.append(RowSpec(self.prompt_ids[req.pid], derive_seed(*key), controller))
                owners.append((req, group))
        self.ledger.plan(len(specs), len(specs) * budget.mean_length)
        with self.ledger.phase("generate"):
            self.model.eval()
            with self._autocast():
                generations = self.engine.generate(specs)
        with self.ledger.phase("reward"):
            texts = [self.tokenizer.decode(g.tokens, skip_special_tokens=True) for g in generations]
            report = self.verifier.score([(self.train_tasks[req.pid].scorer, text,
                                           self.train_tasks[req.pid].gold)
                                          for (req, _), text in zip(owners, texts)])
        rows = []
        for (req, group), gen, reward, status in zip(owners, generations, report.rewards,
                                                     report.status):
            weight = min(req.weight * gen.flags.get("weight_multiplier", 1.0),
                         self.p.max_rollout_weight)
            flags = dict(gen.flags)
            if status != "ok":
                flags["verifier"] = status
            if gen.finish == "max_len" and not self.p.score_truncated:
                # a response cut at the length limit has no final answer of its own; scoring a
                # stray early \boxed{} in it rewards rambling past the answer
                reward = 0.0
            rows.append(Rollout(req.pid, group, req.tag, step, round_index, gen.tokens,
                                gen.logprobs, gen.finish, float(reward), weight, flags))
        self.ledger.charge(rows)
        return rows

    def _recompute_flagged_logprobs(self, groups: list[list[Rollout]]) -> None:
        flagged = [r for g in groups for r in g if r.kept and r.flags.get(RECOMPUTE_OLD_LOGPROBS)]
        if flagged:
            with self.ledger.phase("logprob"), self._autocast():
                self.model.eval()
                recompute_old_logprobs(self.model, flagged, self.prompt_ids, self.engine.pad_id,
                                       self.p.temperature, self.p.micro_batch_rows)

    def _update(self, groups: list[list[Rollout]], step: int) -> dict:
        sleep = getattr(self.engine, "sleep", None)
        if sleep is not None:
            sleep()                  # an engine with its own GPU memory frees it meanwhile
        kept = [r for g in groups for r in g if r.kept]
        order = np.random.default_rng(derive_seed(self.spec.seed, step, 5)).permutation(len(kept))
        batches = np.array_split(order, self.p.updates_per_step) if len(kept) else \
            [np.zeros(0, dtype=int)] * self.p.updates_per_step
        self.model.train()
        losses, stats = [], {"kl": 0.0, "clip_fraction": 0.0, "grad_norm": 0.0}
        micro_stats: list[tuple[float, float]] = []     # (kl, clip fraction) per micro-batch
        for batch in batches:
            rows = [kept[i] for i in batch]
            denominator = sum(r.n_tokens for r in rows)
            active = rows if self.p.kl_coef > 0 else \
                [r for r in rows if r.advantage * r.weight != 0.0]
            self.optimizer.zero_grad(set_to_none=True)
            loss_value, finite = 0.0, True
            # micro-batches bound activation memory; each is divided by the whole mini-batch's
            # token count, so their gradients sum to the mini-batch's token-mean exactly
            for start in range(0, len(active), self.p.micro_batch_rows):
                micro = active[start:start + self.p.micro_batch_rows]
                with self._autocast():
                    loss, s = policy_loss(self.model, micro, self.prompt_ids,
                                          self.engine.pad_id, denominator, self.loss_cfg,
                                          self.ref_model)
                if not torch.isfinite(loss):
                    finite = False
                    break
                loss.backward()
                loss_value += float(loss.detach())
                micro_stats.append((s["kl"], s["clip_fraction"]))
            if not finite:
                self.nan_skipped += 1
                self.optimizer.zero_grad(set_to_none=True)
                losses.append(float("nan"))
                continue
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.p.grad_clip)
            if not torch.isfinite(norm):
                self.nan_skipped += 1
                self.optimizer.zero_grad(set_to_none=True)
                losses.append(float("nan"))
                continue
            stats["grad_norm"] = float(norm)
            self.optimizer.step()
            losses.append(loss_value)
        if micro_stats:
            stats["kl"], stats["clip_fraction"] = (float(v) for v in np.mean(micro_stats, axis=0))
        self.scheduler.step()
        self.model.eval()
        self._sync_engine()
        return {"loss": float(np.mean(losses)) if losses else 0.0, **stats}

    def train_step(self, step: int) -> dict:
        self.ledger.begin_step()
        budget = self._budget()
        with self.ledger.phase("allocate"):
            candidates = [self.pool[i] for i in self.sampler.draw(self.allocator.candidates_per_step())]
            requests = self.allocator.plan(step, candidates, self.stats, budget)
        first_counts = [r.n for r in requests if r.n > 0]
        rows = self._generate(requests, step, 0, budget)
        ctx = FollowUpContext(lambda k: [self.pool[i] for i in self.sampler.draw(k)], self.stats,
                              budget, self.p.max_rounds)
        rounds = 1
        while rounds < self.p.max_rounds:
            with self.ledger.phase("allocate"):
                more = self.allocator.follow_up(step, rounds, rows, ctx)
            if not more:
                break
            rows += self._generate(more, step, rounds, budget)
            rounds += 1
        with self.ledger.phase("allocate"):
            groups = [g for g in self.allocator.select(step, rows) if g]
        self._recompute_flagged_logprobs(groups)
        with self.ledger.phase("advantage"):
            adv = assign_advantages(groups, normalize_std=self.p.normalize_std,
                                    **self.allocator.advantage_options())
        with self.ledger.phase("update"):
            update = self._update(groups, step)
        with self.ledger.phase("other"):
            self.allocator.observe(step, groups, self.stats)
            self.stats.update(step, group_rows(rows))
            self.lengthctl.observe(step, rows)
        return self._step_record(step, rows, groups, adv, update, rounds, first_counts)

    def _step_record(self, step, rows, groups, adv, update, rounds, first_counts) -> dict:
        finish = Counter(r.finish for r in rows)
        trained_sizes = [len(g) for g in groups]
        signal = adv.groups - adv.no_gradient - adv.zero_variance
        return {
            "step": step,
            **self.ledger.step_record(),
            "rounds": rounds,
            "train_reward": float(np.mean([r.reward for r in rows])) if rows else 0.0,
            "groups_generated": len(group_rows(rows)),
            "groups_trained": adv.groups,
            "zero_variance_groups": adv.zero_variance,
            "no_gradient_groups": adv.no_gradient,
            "effective_groups": signal,
            "effective_ratio": signal / adv.groups if adv.groups else 0.0,
            "counts": first_counts,
            "group_sizes": trained_sizes,
            "finish": {k: finish.get(k, 0) for k in ("eos", "max_len", "stopped", "aborted")},
            "eps_kept": sum(bool(r.flags.get("eps_kept")) for r in rows),
            "verifier_timeouts": sum(r.flags.get("verifier") == "timeout" for r in rows),
            "verifier_failures": sum(r.flags.get("verifier") in ("error", "crash") for r in rows),
            "nan_skipped": self.nan_skipped,
            "lr": self.scheduler.get_last_lr()[0],
            "method": {k: v for k, v in self.allocator.step_metrics.items()
                       if isinstance(v, (int, float, str, bool))},
            **update,
        }

    # ------------------------------------------------------------------ evaluation -------
    def evaluate(self, step: int) -> dict:
        """Every held-out set; the first one's numbers are the record's top-level accuracy
        (the one tables read), all of them are under ``sets`` when there are several."""
        results = {}
        with self.ledger.phase("evaluate"), self._autocast():
            for name, tasks in self.eval_sets.items():
                results[name] = evaluate_policy(
                    self.model, self.tokenizer, tasks, samples=self.p.eval_samples,
                    temperature=self.p.eval_temperature, max_new_tokens=self.p.max_new_tokens,
                    seed=self.spec.seed, top_p=self.p.top_p, verifier=self.verifier,
                    max_batch_rows=self.p.engine_options.get("max_batch_rows", 512))
        first = next(iter(results.values()))
        extra = {"sets": results} if len(results) > 1 else {}
        return {"step": step, "cum_tokens": self.ledger.cumulative_tokens,
                "cum_rollouts": self.ledger.cumulative_rollouts,
                "cum_train_seconds": round(self.ledger.training_seconds(), 4),
                "cum_train_cpu_seconds": round(self.ledger.training_cpu_seconds(), 4),
                **first, **extra}

    # ------------------------------------------------------------------ driver -----------
    def execute(self) -> dict:
        """Run (or resume) to the end; returns the summary, also written to summary.json."""
        summary_path = self.dir / "summary.json"
        if summary_path.is_file():
            self._check_dir()
            return read_json(summary_path)
        self.setup()
        atomic_write_json(self.dir / "config.json", {
            "run": self.spec.config(), "commit": git_commit(),
            "allocator_options": self.allocator.resolved_options(),
            "length_options": self.lengthctl.resolved_options(),
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "pool_size": len(self.train_tasks), "held_out_size": len(self.held_out)})
        try:
            if self.next_step == 0 and not self.evals:
                self.evals.append(self.evaluate(0))
                atomic_write_jsonl(self.dir / "eval.jsonl", self.evals)
            for step in range(self.next_step, self.p.steps):
                record = self.train_step(step)
                self.metrics.append(record)
                done = step + 1
                if done % self.p.eval_every == 0 or done == self.p.steps:
                    self.evals.append(self.evaluate(done))
                    atomic_write_jsonl(self.dir / "eval.jsonl", self.evals)
                atomic_write_jsonl(self.dir / "metrics.jsonl", self.metrics)
                self.next_step = done
                if done % self.p.checkpoint_every == 0 or done == self.p.steps:
                    self._save_checkpoint()
                if self.progress is not None:
                    self.progress(record, self.evals[-1])
        finally:
            self.verifier.close()
        # the final policy as a Hugging Face directory (bench.eval, or any HF tool, reads it);
        # written before summary.json, so a finished run always has it
        save_policy(self.model, self.tokenizer, self.dir / "policy")
        close = getattr(self.engine, "close", None)
        if close is not None:
            close()
        summary = summarize(self.spec, self.metrics, self.evals, self.ledger)
        atomic_write_json(summary_path, summary)
        return summary


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
        "method": spec.method, "budget": spec.budget, "seed": spec.seed,
        "preset": spec.preset.name, "steps": len(metrics),
        "final_accuracy": final["mean_at_k"], "final_greedy": final["greedy"],
        "initial_accuracy": first["mean_at_k"], "initial_greedy": first["greedy"],
        "final_buckets": final["buckets"],
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
        "eps_kept_fraction": sum(m["eps_kept"] for m in metrics) / rows,
        "verifier_timeouts": sum(m["verifier_timeouts"] for m in metrics),
        "verifier_failures": sum(m["verifier_failures"] for m in metrics),
        "nan_skipped": metrics[-1]["nan_skipped"] if metrics else 0,
        "timing": ledger.timing(spec.preset.threads, spec.preset.device),
    }
