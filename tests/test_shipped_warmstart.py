"""The warm starts shipped in trainer/assets: they match their recorded hashes, a cache miss
installs them instead of training, a tampered copy is refused, and (slow, opt-in) rebuilding the
default one reproduces its recorded held-out accuracy within sampling noise."""
import json
import math
import os
import shutil

import pytest

from bench.presets import DEFAULT_PRESET, get_preset
from trainer import sft
from trainer.config import WarmStartConfig
from trainer.policy import load_policy
from trainer.provenance import weights_sha256


def shipped_presets():
    return [name for name in ("smoke", "tiny", "noisy-chain", "leg-facts")
            if (sft.shipped_dir(get_preset(name).warm_start) / "warmstart.json").is_file()]


def test_the_default_preset_and_the_committed_results_presets_ship_their_warm_starts():
    assert DEFAULT_PRESET == "noisy-chain"
    assert {"tiny", DEFAULT_PRESET, "leg-facts"} <= set(shipped_presets())
    # adding the task_mix field kept the first default's key (and so its shipped copy) valid
    assert get_preset("tiny").warm_start.key() == "9f3d4987bcc3c440"


@pytest.mark.parametrize("name", shipped_presets())
def test_shipped_copy_matches_its_hashes_and_is_what_a_run_starts_from(name, tmp_path, monkeypatch):
    preset = get_preset(name)
    source = sft.shipped_dir(preset.warm_start)
    info = json.loads((source / "warmstart.json").read_text())
    assert WarmStartConfig.from_dict(info["config"]) == preset.warm_start
    assert sft.file_hashes(source) == info["sha256"] and "model.safetensors" in info["sha256"]
    monkeypatch.setenv("ALLOCBENCH_CACHE", str(tmp_path))
    messages = []
    path = sft.initial_policy_dir(preset, log=messages.append)
    assert path == sft.warm_start_dir(preset.warm_start) and str(tmp_path) in str(path)
    assert "shipped" in messages[0]
    # the first run from a fresh cache already sees the weights' hash (its config records it)
    assert sft.warm_start_hash(path) == weights_sha256(path)
    assert (path / "model.safetensors").read_bytes() == (source / "model.safetensors").read_bytes()
    model, tokenizer = load_policy(path)
    assert sum(p.numel() for p in model.parameters()) == info["parameters"]
    assert sft.initial_policy_dir(preset, log=messages.append) == path and len(messages) == 1


def test_two_installs_at_once_both_succeed_and_leave_one_copy(tmp_path, monkeypatch):
    """Two sweeps started side by side on a fresh cache once failed here: both copied into one
    ``<key>.tmp``, the second deleted the first's half-made copy and the first's rename found
    nothing.  This replays it: while our copy is being made, another install runs from start
    to finish; both must succeed, with one complete copy and no temporary directory left."""
    preset = get_preset(shipped_presets()[0])
    monkeypatch.setenv("ALLOCBENCH_CACHE", str(tmp_path))
    path = sft.warm_start_dir(preset.warm_start)
    path.parent.mkdir(parents=True)
    real_copytree, copies = shutil.copytree, []

    def copy_while_another_installs(source, target, **kw):
        copies.append(target)
        real_copytree(source, target, **kw)
        if len(copies) == 1:                            # the other process, start to finish
            assert sft._install_shipped(preset.warm_start, path)
        return target

    monkeypatch.setattr(shutil, "copytree", copy_while_another_installs)
    messages = []
    assert sft.initial_policy_dir(preset, log=messages.append) == path
    assert "shipped" in messages[0] and sft.warm_start_hash(path) == weights_sha256(path)
    assert len(copies) == 2 and len(set(copies)) == 2 and path not in copies
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]     # no .tmp left


def test_a_tampered_shipped_copy_is_refused(tmp_path, monkeypatch):
    preset = get_preset(shipped_presets()[0])
    assets = tmp_path / "assets"
    shutil.copytree(sft.shipped_dir(preset.warm_start), assets / preset.warm_start.key())
    weights = assets / preset.warm_start.key() / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    monkeypatch.setattr(sft, "ASSETS", assets)
    monkeypatch.setenv("ALLOCBENCH_CACHE", str(tmp_path / "cache"))
    with pytest.raises(sft.ShippedWarmStartError, match="SHA-256"):
        sft.ensure_warm_start(preset.warm_start, log=lambda *a: None)


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("ALLOCBENCH_SLOW") != "1",
                    reason="rebuilds the default warm start: ~9 min on 2 idle cores (more on "
                           "a busy box); run with ALLOCBENCH_SLOW=1")
def test_rebuilding_the_default_warm_start_reproduces_its_held_out_accuracy(tmp_path, monkeypatch):
    import torch
    from trainer.evaluate import evaluate_policy
    from trainer.tasks import build_splits
    preset = get_preset(DEFAULT_PRESET)
    recorded = json.loads((sft.shipped_dir(preset.warm_start) / "warmstart.json").read_text())
    held = recorded["held_out"]
    monkeypatch.setenv("ALLOCBENCH_CACHE", str(tmp_path))
    path = sft.ensure_warm_start(preset.warm_start, progress=False, shipped=False)
    model, tokenizer = load_policy(path)
    torch.set_num_threads(preset.warm_start.threads)
    _, held_out = build_splits(preset.warm_start.train_per_bucket,
                               preset.warm_start.eval_per_bucket, preset.warm_start.task_mix)
    result = evaluate_policy(model, tokenizer, held_out, samples=held["samples"],
                             temperature=held["temperature"],
                             max_new_tokens=held["max_new_tokens"], seed=held["seed"])
    # two independent mean@k estimates over the same prompts: 4 standard errors of a difference
    p = (result["mean_at_k"] + held["mean_at_k"]) / 2
    se = math.sqrt(2 * p * (1 - p) / (held["prompts"] * held["samples"]))
    assert abs(result["mean_at_k"] - held["mean_at_k"]) < 4 * se + 1e-9
