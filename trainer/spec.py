"""What one run is (:class:`RunSpec`: method, budget fraction, seed, preset, options) and the
checks a user's inputs get before any work, each failing in one line (:class:`RunError`).

Kept apart from :mod:`trainer.loop` and free of torch at import, so that ``python -m bench.run``
answers a bad argument at once instead of after the seconds torch takes to load; torch is asked
only about a CUDA device, and the data reader only when a preset names data files.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import allocators
import lengthctl
from allocators.base import Setting
from allocators.options import OptionError, check_instance
from trainer.config import Preset
from trainer.rundir import read_json

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

    def config(self) -> dict:
        return {"method": self.method, "budget": self.budget, "seed": self.seed,
                "preset": self.preset.to_dict(), "method_options": self.method_options,
                "length_options": self.length_options}

    def run_name(self) -> str:
        return f"{self.method}__b{self.budget:g}__s{self.seed}"


def validate_preset(p: Preset) -> None:
    """The preset's own errors (no method, budget or seed involved), one line each."""
    try:
        check_instance(p, "preset")     # every field's declared type and range
    except OptionError as exc:
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
    try:
        make_controllers(spec, setting)
    except KeyError as exc:
        raise RunError(exc.args[0]) from None
    except (TypeError, ValueError) as exc:
        raise RunError(f"{spec.method} at budget {spec.budget:g}: {exc}") from None


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
        from trainer.data import DataError, check_data_file     # reasoning_gym: seconds to load
        for path in (p.train_data, *p.eval_data):
            try:
                problems = check_data_file(path)
            except DataError as exc:
                raise RunError(str(exc)) from None
            if path == p.train_data:
                check_pool_size(p, min(problems, p.train_limit or problems), p.train_data)
    elif p.prompts_per_step > p.train_per_bucket:
        # only then is reasoning-gym (seconds to import) asked how many buckets the mix has
        from trainer.tasks import get_mix
        check_pool_size(p, len(get_mix(p.task_mix).buckets) * p.train_per_bucket,
                        f"the {p.task_mix} mix at train_per_bucket = {p.train_per_bucket}")
    elif p.eval_data:
        raise RunError(f"preset {p.name!r} has eval_data but no train_data; the embedded task "
                       f"mix has its own held-out set")
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
    """(allocator, length controller) of ``spec``: the one place both are built, for the
    checks before a run, the run itself and the comparison with a finished run's options."""
    allocator = allocators.get(spec.method)(setting, **spec.method_options)
    controller = lengthctl.get(allocator.length_control)(
        spec.preset.max_new_tokens, spec.seed,
        **{**allocator.length_control_options(), **spec.length_options})
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
    # the pool's lengths), so its recorded value cannot be compared before the run
    changed = [f"{key} {old.get(part, {}).get(key)!r} -> {now[part].get(key)!r}"
               for part in now for key in sorted(set(now[part]) | set(old.get(part, {})))
               if now[part].get(key) is not None
               and old.get(part, {}).get(key) != now[part].get(key)]
    if changed:
        raise RunError(f"{run_dir} holds a run whose {spec.method} options resolve differently "
                       f"now ({'; '.join(changed)}: a default changed since it ran); use "
                       f"another --out or delete it")
