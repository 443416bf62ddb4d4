"""The run configuration types (trainer.config) and the warm-start command (bench.warmstart)."""
from __future__ import annotations

import json

import pytest

from bench.presets import PRESETS
from bench.warmstart import main as warmstart_main
from trainer.config import Preset, WarmStartConfig


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_a_preset_survives_its_config_json_round_trip(name):
    preset = PRESETS[name]
    restored = Preset.from_dict(json.loads(json.dumps(preset.to_dict())))
    assert restored == preset
    if preset.warm_start is not None:
        assert isinstance(restored.warm_start, WarmStartConfig)
        assert restored.warm_start.key() == preset.warm_start.key()


def test_from_dict_ignores_fields_a_newer_checkout_added():
    data = {**PRESETS["smoke"].to_dict(), "field_from_the_future": 1}
    assert Preset.from_dict(data) == PRESETS["smoke"]


def test_warm_start_key_follows_the_values():
    base = WarmStartConfig()
    assert WarmStartConfig.from_dict(json.loads(json.dumps(
        {"arch": vars(base.arch), **{k: v for k, v in vars(base).items() if k != "arch"}}))
    ).key() == base.key()
    assert WarmStartConfig(steps=501).key() != base.key()


def test_a_task_mix_other_than_the_warm_starts_is_refused_before_any_work(capsys):
    from bench.run import main
    assert WarmStartConfig(task_mix="noisy_chain").key() != WarmStartConfig().key()
    code = main(["--preset", "smoke", "--set", "preset.task_mix=noisy_chain", "--out", "/nonexistent/x"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "differs from the warm start's" in err
    assert main(["--preset", "smoke", "--set", "preset.task_mix=nope"]) == 2
    assert "task_mix" in capsys.readouterr().err


def test_warmstart_command_reports_the_smoke_policy_and_refuses_bad_presets(capsys, smoke_policy):
    assert warmstart_main(["--preset", "smoke", "--samples", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"warm start {PRESETS['smoke'].warm_start.key()}: ")
    assert "held-out mean@1" in out and "t2d1" in out
    assert warmstart_main(["--preset", "huge"]) == 2
    assert "unknown preset 'huge'" in capsys.readouterr().err
    assert warmstart_main(["--preset", "qwen3-0.6b-math"]) == 2
    assert "loads a model directory" in capsys.readouterr().err


def test_a_finished_run_of_a_changed_default_is_refused_not_reused(tmp_path):
    from trainer.spec import RunError, RunSpec, check_run_dir, resolved_options
    spec = RunSpec("oracle", 0.5, 0, PRESETS["smoke"])
    run_dir = tmp_path / spec.run_name()
    run_dir.mkdir()
    now = resolved_options(spec)
    assert now["allocator_options"]["n_min"] == 0

    def write(allocator_options):
        (run_dir / "config.json").write_text(json.dumps(
            {"run": spec.config(), "allocator_options": allocator_options,
             "length_options": now["length_options"]}))

    write(now["allocator_options"])
    check_run_dir(spec, run_dir)                       # same resolution: reused
    write({**now["allocator_options"], "n_min": 2})    # made when the default was 2
    with pytest.raises(RunError, match=r"oracle options resolve differently now \(n_min 2 -> 0"):
        check_run_dir(spec, run_dir)
    # asked for explicitly, the old bound is the same run again
    explicit = RunSpec("oracle", 0.5, 0, PRESETS["smoke"], method_options={"n_min": 2})
    (run_dir / "config.json").write_text(json.dumps(
        {"run": explicit.config(), **resolved_options(explicit)}))
    check_run_dir(explicit, run_dir)


def test_options_derived_during_the_run_are_not_compared(tmp_path):
    from trainer.spec import RunSpec, check_run_dir, resolved_options
    spec = RunSpec("vip", 1.0, 0, PRESETS["smoke"])
    run_dir = tmp_path / spec.run_name()
    run_dir.mkdir()
    now = resolved_options(spec)
    assert now["allocator_options"]["length_scale"] is None      # set from the pool in the run
    (run_dir / "config.json").write_text(json.dumps(
        {"run": spec.config(), "length_options": now["length_options"],
         "allocator_options": {**now["allocator_options"], "length_scale": 0.87}}))
    check_run_dir(spec, run_dir)


def test_pass_rate_histogram_by_hand():
    from bench.warmstart import pass_rate_histogram
    got = dict(pass_rate_histogram([0.0, 0.0, 0.05, 0.1, 0.5, 0.95, 1.0, 1.0, 1.0, 0.8]))
    assert got == {"=0": 0.2, "(0,.1]": 0.2, "(.1,.3]": 0.0, "(.3,.7]": 0.1, "(.7,.9]": 0.1,
                   "(.9,1)": 0.1, "=1": 0.3}
    assert sum(got.values()) == 1.0
