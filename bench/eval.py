"""``python -m bench.eval RUN_DIR``: evaluate a run's final policy with lm-eval (extra ``eval``).

Fully offline.  The run's policy is a Hugging Face directory: ``RUN_DIR/policy`` (the loop saves
it at the end of a run); for a run without one -- unfinished, or from before the loop saved it --
it is rebuilt from the run's starting weights (the preset's ``model_dir``, or the embedded warm
start named by ``config.json``, rebuilt if not cached) and the model ``state_dict`` of
``RUN_DIR/checkpoint.pt``, then saved there.  Either is first checked against the sha256 that
training stored with it (the checkpoint's trailer, the policy's ``allocbench-weights.json``): a
corrupt file is refused in one line rather than evaluated.

Every task set is exported to JSONL in a temporary folder with a generated lm-eval task YAML
(``dataset_path: json`` + ``dataset_kwargs.data_files``, ``output_type: generate_until``, the
prompt as ``doc_to_text``) whose ``process_results`` scores each response with the task's own
scorer (math-verify or reasoning-gym) in this package's verifier pool -- the same rewards as
training, with the same timeouts.  Task sets: the run's held-out sets (the embedded held-out set
of an embedded preset; the preset's ``eval_data`` files of a real one) and each ``--tasks`` file
(MATH or GSM8K schema, ``trainer.data``).

``--samples 1`` (default) is greedy pass@1; ``--samples k`` samples k responses per problem at the
preset's evaluation temperature and top-p and reports mean@k.  Scores go to
``RUN_DIR/lm_eval.json`` (written atomically) and are printed.
"""
from __future__ import annotations

import argparse
import atexit
import importlib.util
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

from trainer.data import DataError, export_tasks_jsonl, load_eval_sets, load_tasks
from trainer.rundir import CheckpointError, atomic_write_json, read_json, verify_checkpoint
from trainer.spec import DEVICE


class EvalError(RuntimeError):
    """A problem with the run directory or the inputs, reported as a one-line error."""


# ------------------------------------------------------------------ scoring (lm-eval side) ------
_POOL = None


def _pool():
    global _POOL
    if _POOL is None:
        from trainer.verifier import VerifierPool
        _POOL = VerifierPool(workers=1, timeout=float(os.environ.get("ALLOCBENCH_EVAL_TIMEOUT",
                                                                     "10")))
        atexit.register(_POOL.close)
    return _POOL


def process_results(doc: dict, results: list) -> dict:
    """lm-eval's per-document hook: mean reward of the document's responses (k of them with
    the ``take_first_k`` filter, one otherwise), scored by the task's own scorer."""
    responses = results[0] if results and isinstance(results[0], (list, tuple)) else results
    items = [(doc["scorer"], str(r), doc["gold"]) for r in responses]
    report = _pool().score(items)
    return {"acc": float(report.rewards.mean()) if len(items) else 0.0}


# ------------------------------------------------------------------ the run's policy ------------
def _preset(config: dict):
    from trainer.config import Preset
    return Preset.from_dict(config["run"]["preset"])


def policy_dir(run_dir: Path, preset, log=print) -> Path:
    """``RUN_DIR/policy``, rebuilt from the starting weights + ``checkpoint.pt`` if absent;
    either is refused when its bytes differ from the checksum training stored with it."""
    from trainer.policy import PolicyLoadError, load_policy, save_policy, verify_policy
    target = run_dir / "policy"
    if (target / "config.json").is_file():
        try:
            verify_policy(target)
        except PolicyLoadError as exc:
            raise EvalError(str(exc)) from None
        return target
    checkpoint = run_dir / "checkpoint.pt"
    if not checkpoint.is_file():
        raise EvalError(f"{run_dir} has neither a saved policy (policy/) nor checkpoint.pt")
    try:
        verify_checkpoint(checkpoint)
    except CheckpointError as exc:
        raise EvalError(str(exc)) from None
    import torch
    from trainer.sft import initial_policy_dir
    start = initial_policy_dir(preset, log=log)
    try:
        model, tokenizer = load_policy(start)
    except PolicyLoadError as exc:
        raise EvalError(str(exc)) from None
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
    except Exception as exc:
        raise EvalError(f"cannot restore the policy from {checkpoint}: "
                        f"{(str(exc).splitlines() or [type(exc).__name__])[0]}") from None
    log(f"rebuilt the policy from {start} + {checkpoint.name} (step {state['next_step']})")
    save_policy(model, tokenizer, target)
    return target


# ------------------------------------------------------------------ task files ------------------
def task_sets(preset, extra_files) -> dict[str, list]:
    """Name -> tasks: the run's held-out sets, then each ``--tasks`` file (by its stem)."""
    sets: dict[str, list] = {}
    try:
        if preset.train_data is None:
            from trainer.tasks import build_splits
            sets["held_out"] = build_splits(preset.train_per_bucket, preset.eval_per_bucket,
                                             preset.task_mix)[1]
        else:
            for name, tasks in load_eval_sets(preset.eval_data).items():
                sets[name] = tasks[:preset.eval_limit]
        for path in extra_files:
            name = Path(path).stem
            if name in sets:
                name = f"{name}_{len(sets)}"
            sets[name] = load_tasks(path)
    except DataError as exc:
        raise EvalError(str(exc)) from None
    return sets


def _task_name(name: str) -> str:
    return "allocbench_" + re.sub(r"[^A-Za-z0-9_]", "_", name)


def write_task_yaml(folder: Path, name: str, data_file: Path, *, samples: int, temperature: float,
                    top_p: float, max_new_tokens: int, eos: str) -> str:
    """One lm-eval task over a local JSONL file; returns the task's name."""
    task = _task_name(name)
    sampling = {"do_sample": samples > 1, "temperature": temperature if samples > 1 else 0.0,
                "max_gen_toks": int(max_new_tokens), "until": [eos]}
    if samples > 1 and top_p < 1.0:
        sampling["top_p"] = top_p
    lines = [
        f"task: {task}",
        "dataset_path: json",
        "dataset_kwargs:",
        "  data_files:",
        f"    test: {json.dumps(str(data_file))}",
        "test_split: test",
        "output_type: generate_until",
        "doc_to_text: \"{{prompt}}\"",
        "doc_to_target: \"{{answer}}\"",
        # lm-eval resolves !function against the YAML's folder: a two-line shim module there
        "process_results: !function allocbench_lmeval.process_results",
        f"generation_kwargs: {json.dumps(sampling)}",
        f"repeats: {int(samples)}",
        "num_fewshot: 0",
        "filter_list:",
        "  - name: all",
        "    filter:",
        f"      - {{function: take_first_k, k: {int(samples)}}}",
        "metric_list:",
        "  - metric: acc",
        "    aggregation: mean",
        "    higher_is_better: true",
        "metadata:",
        "  version: 1.0",
    ]
    (folder / f"{task}.yaml").write_text("\n".join(lines) + "\n")
    return task


def run_lm_eval(policy: Path, sets: dict[str, list], *, samples: int, temperature: float,
                top_p: float, max_new_tokens: int, device: str, dtype: str, batch_size: int,
                limit: int | None = None) -> dict:
    """lm-eval's ``simple_evaluate`` on the sets; returns name -> {acc, acc_stderr, n, ...}."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    try:
        import lm_eval
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise EvalError("lm-eval is not installed: pip install 'allocbench[eval]'") from None
    from transformers import AutoTokenizer
    eos = AutoTokenizer.from_pretrained(policy, local_files_only=True).eos_token
    with tempfile.TemporaryDirectory(prefix="allocbench-lmeval-") as tmp:
        folder = Path(tmp)
        (folder / "allocbench_lmeval.py").write_text(
            "# generated by bench.eval: lm-eval's process_results hook\n"
            "from bench.eval import process_results  # noqa: F401\n")
        names = {}
        for name, tasks in sets.items():
            data = export_tasks_jsonl(tasks[:limit], folder / f"{_task_name(name)}.jsonl")
            names[name] = write_task_yaml(folder, name, data, samples=samples,
                                          temperature=temperature, top_p=top_p,
                                          max_new_tokens=max_new_tokens, eos=eos)
        sys.path.insert(0, tmp)
        try:
            out = lm_eval.simple_evaluate(
                model="hf", model_args={"pretrained": str(policy), "dtype": dtype,
                                        "device": device},
                tasks=list(names.values()), batch_size=batch_size,
                task_manager=TaskManager(include_path=tmp, include_defaults=False),
                log_samples=False, bootstrap_iters=0)
        finally:
            sys.path.remove(tmp)
    scores = {}
    for name, task in names.items():
        metrics = out["results"][task]
        scores[name] = {"acc": float(metrics["acc,all"]),
                        "n": len(sets[name][:limit]), "samples": samples,
                        "metric": "greedy pass@1" if samples == 1 else f"mean@{samples}"}
        stderr = metrics.get("acc_stderr,all")
        if isinstance(stderr, (int, float)):
            scores[name]["acc_stderr"] = float(stderr)
    return {"tasks": scores, "lm_eval_version": getattr(lm_eval, "__version__", "unknown")}


# ------------------------------------------------------------------ CLI -------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.eval",
        description="Evaluate a run's final policy with lm-eval, offline, on local JSONL task "
                    "files scored by the run's own verifiers; writes RUN_DIR/lm_eval.json.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("run_dir", help="a run directory written by bench.run / trainer.loop")
    parser.add_argument("--tasks", nargs="*", default=[],
                        help="extra MATH- or GSM8K-schema JSONL files to evaluate on")
    parser.add_argument("--samples", type=int, default=1,
                        help="responses per problem: 1 = greedy pass@1, k > 1 = mean@k sampled "
                             "at the preset's evaluation temperature and top-p")
    parser.add_argument("--limit", type=int, default=None,
                        help="evaluate only the first N problems of each set")
    parser.add_argument("--max-new-tokens", type=int, default=None,
                        help="response length limit (default: the preset's)")
    parser.add_argument("--device", default=None, help="default: the preset's device")
    parser.add_argument("--batch-size", type=int, default=16)
    return parser


def check_arguments(args) -> None:
    """Every plain value, before anything is read or loaded (lm-eval's absence included)."""
    for flag, value, low, high in (("--samples", args.samples, 1, 1024),
                                   ("--limit", args.limit, 1, None),
                                   ("--max-new-tokens", args.max_new_tokens, 1, 131_072),
                                   ("--batch-size", args.batch_size, 1, 65_536)):
        if value is not None and (value < low or high is not None and value > high):
            bound = f"in [{low}, {high}]" if high is not None else f"at least {low}"
            raise EvalError(f"{flag} must be {bound}, got {value}")
    if args.device is not None and not DEVICE.fullmatch(args.device):
        raise EvalError(f"--device {args.device!r}: expected cpu, cuda, cuda:N or mps")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    started = time.perf_counter()
    run_dir = Path(args.run_dir)
    try:
        check_arguments(args)
        if not (run_dir / "config.json").is_file():
            raise EvalError(f"{run_dir} is not a run directory (no config.json)")
        try:
            config = read_json(run_dir / "config.json")
            preset = _preset(config)
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise EvalError(f"{run_dir / 'config.json'} is not a run config: {exc}") from None
        if importlib.util.find_spec("lm_eval") is None:     # before the sets and the policy
            raise EvalError("lm-eval is not installed: pip install 'allocbench[eval]'")
        sets = task_sets(preset, args.tasks)
        policy = policy_dir(run_dir, preset)
        result = run_lm_eval(policy, sets, samples=args.samples,
                             temperature=preset.eval_temperature, top_p=preset.top_p,
                             max_new_tokens=args.max_new_tokens or preset.max_new_tokens,
                             device=args.device or preset.device, dtype=preset.dtype,
                             batch_size=args.batch_size, limit=args.limit)
    except EvalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result.update({"policy": str(policy), "run": config["run"].get("method"),
                   "seconds": round(time.perf_counter() - started, 1)})
    atomic_write_json(run_dir / "lm_eval.json", result)
    for name, score in result["tasks"].items():
        print(f"{name:24s} {score['metric']:14s} {score['acc']:.4f}  (n={score['n']})")
    print(f"wrote {run_dir / 'lm_eval.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
