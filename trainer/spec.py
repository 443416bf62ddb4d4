"""What one run is (:class:`RunSpec`: method, budget fraction, seed, preset, options) and the
checks a user's inputs get before any work, each failing in one line (:class:`RunError`).

Kept apart from :mod:`trainer.loop` and free of torch at import, so that ``python -m bench.run``
answers a bad argument at once instead of after the seconds torch takes to load; torch is asked
only about a CUDA device, and the data reader only when a preset names data files.

A resume is checked here too (:func:`check_resume`), from the checkpoint's record of the run it
belongs to, read without torch: a checkpoint of another config, or metric and evaluation files
that disagree with it, are refused before any work, naming the file.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import allocators
import lengthctl
from core.options import OptionError, check_instance
from core.rows import Setting
from trainer.budget import ProtocolError, check_protocol
from trainer.config import Preset
from trainer.rundir import (CheckpointError, RunFileError, read_checkpoint_meta, read_json,
                            read_jsonl, records_digest, verify_checkpoint)

DTYPE_NAMES = ("float32", "bfloat16", "float16")
ENGINES = ("hf", "vllm")
# the keyword options each engine takes from ``preset.engine_options`` (the rest of their
# arguments come from the preset); kept here, torch-free, so that a typo is refused before any
# work -- tests/test_bad_input.py checks these against the engines' signatures
ENGINE_OPTIONS = {
    "hf": ("max_batch_rows", "compact_fraction"),
    "vllm": ("old_logprobs", "gpu_memory_utilization", "max_model_len", "enforce_eager",
             "sleep_level", "recompute_tokens"),
}
DEVICE = re.compile(r"cpu|cuda(:\d+)?|mps")
# a seed is a numpy SeedSequence entropy word and torch.manual_seed's argument
MAX_SEED = 2**32 - 1


class RunError(RuntimeError):
    """A problem with the run's inputs, reported as a one-line error."""


@dataclass(frozen=True)
class RunSpec:
    method: str
    budget: float
    seed: int
    preset: Preset
    method_options: dict = field(default_factory=dict)
    length_options: dict = field(default_factory=dict)
    # experiment trackers (trainer.tracking); not part of the run's identity or config
    log_to: tuple[str, ...] = field(default=(), compare=False)
    # the stop rule, when not the method's own (``--set METHOD.length=RULE``); None = its own
    length: str | None = None
    # a sub-directory of the sweep the run lives in (e.g. the tuned-uniform grid's
    # "uniform-grid/M64xG4"), so that it never enters the sweep's own tables
    group: str = field(default="", compare=False)

    def config(self) -> dict:
        # "length" only when set: a run of a method's own stop rule keeps the config it had
        # before the rule became an option, so finished runs still match
        chosen = {"length": self.length} if self.length is not None else {}
        return {"method": self.method, "budget": self.budget, "seed": self.seed,
                "preset": self.preset.to_dict(), "method_options": self.method_options,
                "length_options": self.length_options, **chosen}

    @property
    def label(self) -> str:
        """The method as tables name it: ``METHOD``, or ``METHOD+RULE`` with another stop rule."""
        return self.method if self.length is None else f"{self.method}+{self.length}"

    def run_name(self) -> str:
        name = f"{self.label}__b{self.budget:g}__s{self.seed}"
        return f"{self.group}/{name}" if self.group else name

    def config_sha256(self) -> str:
        """The run's identity as a checkpoint records it (:func:`check_resume`)."""
        return hashlib.sha256(json.dumps(self.config(), sort_keys=True).encode()).hexdigest()


def validate_preset(p: Preset) -> None:
    """The preset's own errors (no method, budget or seed involved), one line each."""
    try:
        check_instance(p, "preset")     # every field's declared type and range
    except OptionError as exc:
        raise RunError(str(exc)) from None
    try:
        check_protocol(p)
    except ProtocolError as exc:
        raise RunError(str(exc)) from None
    if p.model_dir is not None:
        check_model_dir(p.model_dir)
    check_task_mix(p)
    check_real_inputs(p)


def validate_spec(spec: RunSpec, check_preset: bool = True) -> None:
    """Errors a user can fix, raised before any work (one line each); ``check_preset=False``
    where the caller checked the preset once for a whole sweep (:func:`validate_preset`)."""
    if check_preset:
        validate_preset(spec.preset)
    if not 0.0 < spec.budget <= 1.0:
        raise RunError(f"budget fraction {spec.budget} is outside (0, 1]")
    if not 0 <= spec.seed <= MAX_SEED:
        raise RunError(f"seed {spec.seed} is outside [0, {MAX_SEED}]")
    try:
        allocators.get(spec.method)               # an unknown method fails here, first
    except KeyError as exc:
        raise RunError(exc.args[0]) from None
    p = spec.preset
    setting = run_setting(spec)
    if setting.rollouts_per_step < p.prompts_per_step:
        raise RunError(f"budget fraction {spec.budget} gives {setting.rollouts_per_step} rollouts "
                       f"per step, fewer than the {p.prompts_per_step} prompts (one rollout each) "
                       f"it must cover")
    try:                  # the method, its stop rule and the pair's fit to the engine
        make_controllers(spec, setting)
    except KeyError as exc:
        raise RunError(exc.args[0]) from None
    except (TypeError, ValueError) as exc:
        raise RunError(f"{spec.label} at budget {spec.budget:g}: {exc}") from None


def check_task_mix(p) -> None:
    """An embedded policy is tested on the task mix it was warm-started for."""
    if p.model_dir is None and p.warm_start is not None and p.warm_start.task_mix != p.task_mix:
        raise RunError(f"preset task_mix {p.task_mix!r} differs from the warm start's "
                       f"({p.warm_start.task_mix!r}): the policy would be tested on tasks it was "
                       f"not warm-started for")


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


def check_real_inputs(p) -> None:
    """Data files, dtype, device and engine of a preset, checked before any work (one line each)."""
    if p.train_data is not None:
        if not p.eval_data:
            raise RunError(f"preset {p.name!r} has train_data but no eval_data (held-out JSONL)")
        if p.pool_weights:
            raise RunError(f"preset {p.name!r}: pool_weights weigh the embedded mix's buckets; "
                           f"a train_data file has none (leave pool_weights empty)")
        from trainer.data import DataError, check_data_file     # reasoning_gym: seconds to load
        tokenizer, room = prompt_room(p)
        for path in (p.train_data, *p.eval_data):
            # training prompts over max_prompt_tokens are dropped (verl), not refused
            dropped = path == p.train_data and p.max_prompt_tokens is not None
            try:
                problems = check_data_file(path, None if dropped else tokenizer, room)
            except DataError as exc:
                raise RunError(str(exc)) from None
            if path == p.train_data:
                pool = min(problems, p.train_limit or problems)
        # after every file: a file's own error says more than the size of the pool
        check_pool_size(p, pool, p.train_data)
    elif p.eval_data:
        raise RunError(f"preset {p.name!r} has eval_data but no train_data; the embedded task "
                       f"mix has its own held-out set")
    else:
        from trainer.mixes import pool_counts      # the mix's declaration, not reasoning-gym
        try:
            pool = sum(pool_counts(p.train_per_bucket, p.pool_weights, p.task_mix))
        except ValueError as exc:
            raise RunError(str(exc)) from None
        weights = f", pool_weights = {list(p.pool_weights)}" if p.pool_weights else ""
        check_pool_size(p, pool, f"the {p.task_mix} mix at train_per_bucket = "
                                 f"{p.train_per_bucket}{weights}")
    if not DEVICE.fullmatch(str(p.device)):
        raise RunError(f"preset.device = {p.device!r}: expected cpu, cuda, cuda:N or mps")
    unknown = sorted(set(p.engine_options) - set(ENGINE_OPTIONS.get(p.engine, ())))
    if unknown:
        raise RunError(f"preset.engine_options: unknown option(s) {', '.join(unknown)} of the "
                       f"{p.engine} engine; known: {', '.join(ENGINE_OPTIONS[p.engine])}")
    if p.dtype not in DTYPE_NAMES:
        raise RunError(f"unknown dtype {p.dtype!r}; choose one of {', '.join(DTYPE_NAMES)}")
    if p.engine not in ENGINES:
        raise RunError(f"unknown engine {p.engine!r}; choose one of {', '.join(ENGINES)}")
    if str(p.device).startswith("cuda"):
        import torch
        if not torch.cuda.is_available():
            raise RunError(f"preset {p.name!r} wants device {p.device!r} but CUDA is not "
                           f"available (override it with --config "
                           f"'{{\"preset\": {{\"device\": \"cpu\"}}}}')")
    if p.engine == "vllm":
        from trainer.vllm_engine import VLLMUnavailable, check_vllm
        try:
            check_vllm(p.device)
        except VLLMUnavailable as exc:
            raise RunError(str(exc)) from None


def prompt_room(p) -> tuple[object, int | None]:
    """(tokenizer, most prompt tokens) of a preset's model directory: its context length less
    ``max_new_tokens``; (None, None) without a model directory."""
    if p.model_dir is None:
        return None, None
    from transformers import AutoConfig, AutoTokenizer
    config = AutoConfig.from_pretrained(p.model_dir, local_files_only=True)
    context = getattr(config, "max_position_embeddings", None)
    if context is None:
        return None, None
    if context <= p.max_new_tokens:
        raise RunError(f"preset.max_new_tokens = {p.max_new_tokens} leaves no room for a prompt "
                       f"in the model's context of {context} tokens")
    return AutoTokenizer.from_pretrained(p.model_dir, local_files_only=True), \
        context - p.max_new_tokens


def check_pool_size(p, pool: int, source: str) -> None:
    """A step draws ``prompts_per_step`` distinct prompts: more than the pool holds would train
    on repeats of every prompt in each step, which no method asked for."""
    if p.prompts_per_step > pool:
        raise RunError(f"preset.prompts_per_step = {p.prompts_per_step} is more than the "
                       f"{pool} training prompts of {source}")


def run_setting(spec: RunSpec, pool_size: int = 0) -> Setting:
    """The run-level constants the method is constructed with."""
    p = spec.preset
    return Setting(p.prompts_per_step, p.group_size, spec.budget, p.max_new_tokens, p.steps,
                   spec.seed, pool_size=pool_size)


def make_controllers(spec: RunSpec, setting: Setting):
    """(allocator, stop rule) of ``spec``: the one place both are built, for the checks before
    a run, the run itself and the comparison with a finished run's options.

    The stop rule is the method's own (``default_length``, with the options the method
    declares in ``needs().length_options``) unless ``spec.length`` names another; any allocator
    runs with any rule the preset's engine can run (a ``ValueError`` otherwise, which
    :func:`validate_spec` turns into a one-line error before any work)."""
    allocator = allocators.get(spec.method)(setting, **spec.method_options)
    own = allocator.default_length
    rule = lengthctl.get(spec.length or own)
    if rule.hf_engine_only and spec.preset.engine != "hf":
        raise ValueError(f"stop rule {rule.name!r} needs the hf engine (log-probs and hidden "
                         f"states at its position), not {spec.preset.engine!r}")
    declared = allocator.needs().length_options if rule.name == own else {}
    controller = rule(spec.preset.max_new_tokens, spec.seed,
                      **{**declared, **spec.length_options})
    return allocator, controller


def resolved_options(spec: RunSpec, pool_size: int = 0) -> dict:
    """The options the method and its length controller resolve to for ``spec`` (defaults
    filled in), as the loop records them in ``config.json``."""
    allocator, controller = make_controllers(spec, run_setting(spec, pool_size))
    return {"allocator_options": allocator.resolved_options(),
            "length_options": controller.resolved_options()}


def check_run_dir(spec: RunSpec, run_dir: Path) -> None:
    """Refuse a run directory that holds a run of another config (nothing in it is touched).

    Two checks: the run as asked (method, budget, seed, preset, the options the user set) and
    the options the method resolved to.  The second catches a default changed since the run was
    made, which the first cannot see (the user set nothing either time), so that a finished run
    of the old default is never reused as if it were the new one.  Options that resolve to None
    before the run are derived during it and are not compared."""
    if not (Path(run_dir) / "summary.json").is_file():
        check_resume(spec, run_dir)       # a finished run is only read, never resumed
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
    if "allocator_options" not in old:
        return
    now = json.loads(json.dumps(resolved_options(spec, old.get("pool_size", 0)), sort_keys=True))
    # an option that resolves to None now is derived during the run (VIP's length scale from
    # the pool's lengths), so its recorded value cannot be compared before the run; an option
    # the run did not record did not exist then (added since, its default the old behaviour)
    changed = [f"{key} {old.get(part, {}).get(key)!r} -> {now[part].get(key)!r}"
               for part in now for key in sorted(set(now[part]) | set(old.get(part, {})))
               if now[part].get(key) is not None and key in old.get(part, {})
               and old.get(part, {}).get(key) != now[part].get(key)]
    if changed:
        raise RunError(f"{run_dir} holds a run whose {spec.method} options resolve differently "
                       f"now ({'; '.join(changed)}: a default changed since it ran); use "
                       f"another --out or delete it")


CHECKPOINT_META = ("config_sha256", "step", "metric_lines", "metrics_sha256", "eval_lines",
                   "evals_sha256")


def checkpoint_meta(spec: RunSpec, step: int, metrics: list[dict], evals: list[dict]) -> dict:
    """What a checkpoint records about the run it belongs to: the run's config hash, its step,
    and the number and hash of the metric and evaluation lines written up to it."""
    return {"config_sha256": spec.config_sha256(), "step": step,
            "metric_lines": len(metrics), "metrics_sha256": records_digest(metrics),
            "eval_lines": len(evals), "evals_sha256": records_digest(evals)}


def check_resume(spec: RunSpec, run_dir: Path) -> tuple[int, list[dict], list[dict]] | None:
    """(step, metric records, evaluation records) to resume ``run_dir`` from, checked against
    what its checkpoint recorded; None when there is no checkpoint.

    Resume used to trust whatever it found: a metrics.jsonl cut to one line "finished" a run of
    one step, another run's checkpoint copied in was continued, a deleted config.json let a
    run go on under another learning rate.  Now a checkpoint from another config, or files
    that disagree with it, are refused in one line naming the file.  Steps after the checkpoint
    (written before a kill) are dropped and recomputed, identically, as before."""
    path = Path(run_dir) / "checkpoint.pt"
    if not path.is_file():
        return None
    restart = "delete it to restart the run from step 0"
    meta = read_checkpoint_meta(path)
    if meta is None:
        try:            # a cut or damaged file says so first (hashes the file: only here)
            verify_checkpoint(path)
        except CheckpointError as exc:
            raise RunError(str(exc)) from None
    if meta is None or not set(CHECKPOINT_META) <= set(meta):
        raise RunError(f"checkpoint {path} does not record which run it belongs to (written "
                       f"by an older version, or not by this harness); {restart}")
    if meta["config_sha256"] != spec.config_sha256():
        raise RunError(f"checkpoint {path} belongs to a run with another config than "
                       f"{spec.run_name()} as asked now; use another --out, or {restart}")
    step = meta["step"]
    kept = []
    for name, upto in (("metrics.jsonl", lambda s: s < step), ("eval.jsonl", lambda s: s <= step)):
        try:
            records = read_jsonl(Path(run_dir) / name)
        except RunFileError as exc:
            raise RunError(f"{exc}; cannot resume from checkpoint {path}") from None
        kept.append([r for r in records if isinstance(r.get("step"), int) and upto(r["step"])])
    for name, records, count, digest in (
            ("metrics.jsonl", kept[0], meta["metric_lines"], meta["metrics_sha256"]),
            ("eval.jsonl", kept[1], meta["eval_lines"], meta["evals_sha256"])):
        if len(records) != count or records_digest(records) != digest:
            how = f"has {len(records)} line(s) up to step {step} where" if len(records) != count \
                else "differs from the lines that"
            raise RunError(f"{Path(run_dir) / name} {how} checkpoint {path} recorded "
                           f"{count} (cut, edited or from another run); restore it, or delete "
                           f"the checkpoint to restart the run from step 0")
    return step, kept[0], kept[1]
