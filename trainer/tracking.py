"""Experiment tracking: each run's steps and evaluations streamed to Weights & Biases and/or
TensorBoard (``bench.run --log-to wandb,tensorboard``; extra ``track``, imported only when asked).

One tracker run per run directory, i.e. per (method, budget, seed): named after the run, grouped
by the sweep directory (wandb ``group``), with the run's config.  Names are stable:

* ``train/*``     loss, reward, grad norm, KL, clip fraction, lr, group counts, rounds, ...;
* ``budget/*``    ``tokens``, ``rollouts``, ``planned_*`` of the step and ``*_cumulative``;
* ``timing_s/*``  seconds by phase (``timing_s/generate``, ...), ``*_cumulative``,
                  ``train_cumulative``;
* ``finish/*``    rows per finish reason; ``method/*`` the allocator's own step metrics;
* ``eval/*``      ``mean_at_k``, ``greedy``, ``pass_rate_spread``, ``bucket/NAME``,
                  ``pass_at_K`` (K = 1, 4, 8 where the samples allow), with the
                  ``tokens_cumulative`` / ``rollouts_cumulative`` / ``train_seconds_cumulative`` at
                  which it was taken (``eval/SET/...`` per held-out set when there are several).

The x axis is the ``step`` of ``metrics.jsonl`` (train step ``s``) and of ``eval.jsonl`` (steps
done), so a tracker's curves and the files agree.

Resume-safe: ``tracking.json`` in the run directory keeps the tracker run id and the last step
and evaluation each backend was given.  A resumed run reopens the same wandb run (same id,
``resume="allow"``) and the same TensorBoard directory, and logs only what comes after: the steps
it recomputes after its checkpoint were logged already (identical, the run being deterministic).
wandb runs offline (files under ``RUN_DIR/wandb``, ``wandb sync`` uploads them) unless
``WANDB_MODE`` says otherwise; ``WANDB_PROJECT`` names the project (default ``allocbench``).
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from pathlib import Path

from trainer.rundir import atomic_write_json, read_json

BACKENDS = {"wandb": "wandb", "tensorboard": "tensorboard"}    # backend -> module it needs
STATE_FILE = "tracking.json"


class TrackingError(RuntimeError):
    pass


def check_backends(names) -> tuple[str, ...]:
    """``names`` validated: known backends whose package is installed (one-line errors)."""
    names = tuple(names)
    for name in names:
        if name not in BACKENDS:
            raise TrackingError(f"unknown tracker {name!r}; choose from {', '.join(BACKENDS)}")
        if importlib.util.find_spec(BACKENDS[name]) is None:
            raise TrackingError(f"--log-to {name} needs the {BACKENDS[name]!r} package: "
                                f"pip install -e '.[track]'")
    if len(set(names)) < len(names):
        raise TrackingError(f"--log-to names a tracker twice: {', '.join(names)}")
    return names


# ------------------------------------------------------------------------------ names
def _numbers(prefix: str, values: dict) -> dict:
    return {f"{prefix}{k}": float(v) for k, v in values.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def step_scalars(record: dict) -> dict:
    """A ``metrics.jsonl`` record under the stable names (lists such as counts are left out)."""
    out = {}
    for key in ("tokens", "rollouts", "planned_tokens", "planned_rollouts"):
        out[f"budget/{key}"] = float(record[key])
        out[f"budget/{key}_cumulative"] = float(record[f"cum_{key}"])
    out.update(_numbers("timing_s/", record.get("seconds", {})))
    out.update({f"timing_s/{k}_cumulative": float(v)
                for k, v in record.get("cum_seconds", {}).items()})
    out["timing_s/train_cumulative"] = float(record["cum_train_seconds"])
    out.update(_numbers("finish/", record.get("finish", {})))
    out.update(_numbers("method/", record.get("method", {})))
    done = {"step", "tokens", "rollouts", "planned_tokens", "planned_rollouts", "seconds",
            "cum_seconds", "cum_train_seconds", "finish", "method", "train_reward"}
    out.update(_numbers("train/", {k: v for k, v in record.items()
                                   if k not in done and not k.startswith("cum_")}))
    out["train/reward"] = float(record["train_reward"])
    return out


def _eval_numbers(prefix: str, result: dict) -> dict:
    out = _numbers(prefix, {k: v for k, v in result.items()
                            if k not in ("step", "cum_tokens", "cum_rollouts",
                                         "cum_train_seconds")})
    out.update(_numbers(f"{prefix}bucket/", result.get("buckets", {})))
    out.update(_numbers(f"{prefix}pass_at_", result.get("pass_at_k", {})))
    return out


def eval_scalars(record: dict) -> dict:
    """An ``eval.jsonl`` record under the stable names."""
    out = _eval_numbers("eval/", record)
    for name, result in record.get("sets", {}).items():
        out.update(_eval_numbers(f"eval/{name}/", result))
    out["eval/tokens_cumulative"] = float(record["cum_tokens"])
    out["eval/rollouts_cumulative"] = float(record["cum_rollouts"])
    out["eval/train_seconds_cumulative"] = float(record["cum_train_seconds"])
    return out


# ------------------------------------------------------------------------------ backends
class TensorBoardBackend:
    def __init__(self, run_dir: Path, run_id: str, config: dict, fresh: bool) -> None:
        from torch.utils.tensorboard import SummaryWriter
        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
        if fresh:
            self.writer.add_text("config", "```\n" + json.dumps(config, indent=1) + "\n```", 0)

    def log(self, scalars: dict, step: int) -> None:
        for name, value in scalars.items():
            self.writer.add_scalar(name, value, step)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbBackend:
    def __init__(self, run_dir: Path, run_id: str, config: dict, fresh: bool) -> None:
        import wandb
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "allocbench"), id=run_id, resume="allow",
            name=run_dir.name, group=run_dir.parent.name, dir=str(run_dir), config=config,
            mode=os.environ.get("WANDB_MODE", "offline"),
            settings=wandb.Settings(console="off", x_disable_stats=True, silent=True))

    def log(self, scalars: dict, step: int) -> None:
        self.run.log(scalars, step=step)

    def flush(self) -> None:
        pass                    # wandb writes its run file as it goes

    def close(self) -> None:
        self.run.finish()


ADAPTERS = {"wandb": WandbBackend, "tensorboard": TensorBoardBackend}


def stable_run_id(run_dir: Path) -> str:
    """The same id for the same run directory, whichever process (re)runs it."""
    return hashlib.sha256(str(Path(run_dir).resolve()).encode()).hexdigest()[:16]


class Tracking:
    """The run's trackers and what each has been given (``tracking.json``)."""

    def __init__(self, backends, run_dir: Path, config: dict) -> None:
        self.path = Path(run_dir) / STATE_FILE
        state = read_json(self.path) if self.path.is_file() else {}
        self.run_id = state.get("run_id") or stable_run_id(run_dir)
        self.logged = {"metrics": state.get("metrics", -1), "eval": state.get("eval", -1)}
        self.backends = []
        try:
            for name in check_backends(backends):
                self.backends.append(ADAPTERS[name](Path(run_dir), self.run_id, config,
                                                    fresh=not state))
        except BaseException:
            self.close()
            raise

    def publish(self, metrics: list[dict], evals: list[dict]) -> None:
        """Log every step and evaluation after the ones logged before, in step order."""
        items = [(e["step"], 0, "eval", eval_scalars(e)) for e in evals
                 if e["step"] > self.logged["eval"]]
        items += [(m["step"], 1, "metrics", step_scalars(m)) for m in metrics
                  if m["step"] > self.logged["metrics"]]
        if not items:
            return
        for step, _, kind, scalars in sorted(items, key=lambda item: item[:2]):
            for backend in self.backends:
                backend.log(scalars, step)
            self.logged[kind] = step
        for backend in self.backends:
            backend.flush()
        atomic_write_json(self.path, {"run_id": self.run_id, **self.logged})

    def close(self) -> None:
        for backend in self.backends:
            backend.close()
        self.backends = []
