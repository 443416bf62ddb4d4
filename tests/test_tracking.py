"""Experiment tracking (trainer/tracking.py) with the real backends: TensorBoard event files read
back with TensorBoard's own reader, wandb offline run files read record by record; a run killed
after a checkpoint and resumed continues the same tracker run with no step logged twice."""
import struct
from pathlib import Path

import numpy as np
import pytest

from bench.presets import with_overrides
from trainer.loop import Run, RunSpec
from trainer.rundir import read_json, read_jsonl
from trainer.tracking import eval_scalars, stable_run_id, step_scalars

pytest.importorskip("tensorboard")
pytest.importorskip("wandb")


def test_records_get_stable_names():
    record = {"step": 3, "tokens": 100, "rollouts": 8, "planned_tokens": 120.0,
              "planned_rollouts": 8, "cum_tokens": 400, "cum_rollouts": 32,
              "cum_planned_tokens": 480.0, "cum_planned_rollouts": 32,
              "seconds": {"generate": 1.5, "update": 0.5}, "cum_seconds": {"generate": 6.0},
              "cum_train_seconds": 8.0, "finish": {"eos": 7, "max_len": 1},
              "method": {"alpha": 2.5, "note": "text"}, "train_reward": 0.25, "loss": -0.1,
              "counts": [4, 4], "normalize": True}
    scalars = step_scalars(record)
    assert scalars == {
        "budget/tokens": 100.0, "budget/tokens_cumulative": 400.0, "budget/rollouts": 8.0,
        "budget/rollouts_cumulative": 32.0, "budget/planned_tokens": 120.0,
        "budget/planned_tokens_cumulative": 480.0, "budget/planned_rollouts": 8.0,
        "budget/planned_rollouts_cumulative": 32.0, "timing_s/generate": 1.5,
        "timing_s/update": 0.5, "timing_s/generate_cumulative": 6.0,
        "timing_s/train_cumulative": 8.0, "finish/eos": 7.0, "finish/max_len": 1.0,
        "method/alpha": 2.5, "train/reward": 0.25, "train/loss": -0.1}
    evaluation = {"step": 4, "cum_tokens": 400, "cum_rollouts": 32, "cum_train_seconds": 8.0,
                  "mean_at_k": 0.5, "greedy": 0.25, "k": 2, "buckets": {"t2d1": 0.75},
                  "sets": {"math500": {"mean_at_k": 0.4, "greedy": 0.3, "k": 2, "buckets": {}}}}
    assert eval_scalars(evaluation) == {
        "eval/mean_at_k": 0.5, "eval/greedy": 0.25, "eval/k": 2.0, "eval/bucket/t2d1": 0.75,
        "eval/math500/mean_at_k": 0.4, "eval/math500/greedy": 0.3, "eval/math500/k": 2.0,
        "eval/tokens_cumulative": 400.0, "eval/rollouts_cumulative": 32.0,
        "eval/train_seconds_cumulative": 8.0}


# ------------------------------------------------------------------------------ readers
def tensorboard_scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar event of every event file in ``log_dir`` (duplicates kept)."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.util import tensor_util
    out: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(log_dir.glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == "scalars":
                    number = float(tensor_util.make_ndarray(value.tensor))
                    out.setdefault(value.tag, []).append((event.step, number))
    return out


def wandb_records(path: Path):
    """The protobuf records of a ``.wandb`` file (a LevelDB-style log of 32 KiB blocks)."""
    from wandb.proto import wandb_internal_pb2
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, pending = 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:             # a block tail too short for a header: padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == 0 and length == 0:
            continue
        if kind in (1, 2):                      # full / first
            pending = chunk
        else:                                   # middle / last
            pending += chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record


class Killed(Exception):
    pass


def test_both_trackers_log_each_step_once_across_a_kill_and_resume(smoke_preset, tmp_path,
                                                                   monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)        # offline is the default
    monkeypatch.setenv("WANDB_PROJECT", "allocbench-test")
    preset = with_overrides(smoke_preset, prompts_per_step=4, group_size=4, eval_samples=1,
                            steps=4, eval_every=2, checkpoint_every=2)
    run_dir = tmp_path / "sweep-a" / "grpo__b1__s0"
    spec = RunSpec("grpo", 1.0, 0, preset, log_to=("tensorboard", "wandb"))

    def kill_after_step_2(record, last_eval):
        if record["step"] == 2:             # one step past the checkpoint at 2 steps done
            raise Killed()

    with pytest.raises(Killed):
        Run(spec, run_dir, log=lambda *a: None, progress=kill_after_step_2).execute()
    assert read_json(run_dir / "tracking.json")["metrics"] == 2
    Run(spec, run_dir, log=lambda *a: None).execute()

    metrics = read_jsonl(run_dir / "metrics.jsonl")
    evals = read_jsonl(run_dir / "eval.jsonl")
    assert [m["step"] for m in metrics] == [0, 1, 2, 3] and [e["step"] for e in evals] == [0, 2, 4]

    scalars = tensorboard_scalars(run_dir / "tensorboard")
    assert len(list((run_dir / "tensorboard").glob("events.out.tfevents.*"))) == 2   # 2 processes
    # TensorBoard stores float32
    assert scalars["train/loss"] == [(m["step"], float(np.float32(m["loss"]))) for m in metrics]
    assert scalars["budget/tokens_cumulative"] == [(m["step"], m["cum_tokens"]) for m in metrics]
    assert [s for s, _ in scalars["timing_s/generate"]] == [0, 1, 2, 3]
    assert scalars["eval/mean_at_k"] == [(e["step"], float(np.float32(e["mean_at_k"])))
                                         for e in evals]

    files = sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 2                              # the first process and the resumed one
    run_id = stable_run_id(run_dir)
    assert all(f.name == f"run-{run_id}.wandb" for f in files)
    logged: list[tuple[int, str]] = []
    groups = set()
    for path in files:
        for record in wandb_records(path):
            if record.HasField("run"):
                groups.add(record.run.run_group)
                assert record.run.run_id == run_id and record.run.display_name == run_dir.name
            if record.HasField("history"):
                keys = {item.key or "/".join(item.nested_key) for item in record.history.item}
                logged += [(record.history.step.num, key) for key in keys
                           if key in ("train/loss", "eval/mean_at_k")]
    assert groups == {"sweep-a"}
    assert sorted(logged) == sorted([(m["step"], "train/loss") for m in metrics]
                                    + [(e["step"], "eval/mean_at_k") for e in evals])
