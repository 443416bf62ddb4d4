"""The documented example run (examples/qwen3-1.7b-math.sh) composes against verl 0.9.1's own
Hydra config, passes the plugin's checks and carries the ``qwen3-1.7b-math`` preset's settings.
The script is run for real with ``python`` on PATH replaced by a recorder of its arguments (the
run itself needs GPUs)."""
from __future__ import annotations

import pytest

pytest.importorskip("verl", reason="the verl plugin's tests run in its own environment "
                                   "(README, 'Running a method inside verl')")

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import verl
from verl.utils.config import validate_config
from verl.trainer.ppo.utils import need_critic, need_reference_policy
from hydra import compose, initialize_config_dir

from allocbench_verl.adapter import AllocationSession
from allocbench_verl.config import check_config, session_options

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "qwen3-1.7b-math.sh"


def example_overrides(tmp_path, **env) -> list[str]:
    shim = tmp_path / "python"
    shim.write_text(f"#!{sys.executable}\nimport json, sys\n"
                    f"open({str(tmp_path / 'argv.json')!r}, 'w').write(json.dumps(sys.argv[1:]))\n")
    shim.chmod(shim.stat().st_mode | stat.S_IEXEC)
    run_env = {**os.environ, **env, "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run(["bash", str(EXAMPLE)], env=run_env, check=True, timeout=60)
    argv = json.loads((tmp_path / "argv.json").read_text())
    assert argv[:2] == ["-m", "verl.trainer.main_ppo"]
    return argv[2:]


def test_example_run_composes_in_verl_and_matches_the_preset(tmp_path):
    overrides = example_overrides(tmp_path, METHOD="dapo", BUDGET="0.5")
    config_dir = str(Path(verl.__file__).parent / "trainer" / "config")
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        cfg = compose(config_name="ppo_trainer", overrides=overrides)
    session = AllocationSession(**session_options(cfg))
    check_config(cfg, session)
    # verl's own check of a run's config (main_ppo calls it before starting Ray)
    validate_config(config=cfg, use_reference_policy=need_reference_policy(cfg),
                    use_critic=need_critic(cfg))
    s = session.setting
    # bench/presets.py, qwen3-1.7b-math
    assert (s.prompts_per_step, s.group_size, s.max_response_tokens, s.steps) == (128, 8, 3072, 232)
    assert (session.method, s.budget_fraction, s.rollouts_per_step) == ("dapo", 0.5, 512)
    actor, rollout = cfg.actor_rollout_ref.actor, cfg.actor_rollout_ref.rollout
    assert actor.optim.lr == 3e-6 and actor.optim.lr_warmup_steps == 23
    assert (actor.clip_ratio_low, actor.clip_ratio_high, actor.clip_ratio_c) == (0.2, 0.2, 3.0)
    assert actor.use_kl_loss and actor.kl_loss_coef == 0.001 and actor.kl_loss_type == "low_var_kl"
    assert (rollout.temperature, rollout.top_p, rollout.gpu_memory_utilization) == (0.9, 0.95, 0.35)
    assert (rollout.val_kwargs.n, cfg.trainer.test_freq, cfg.trainer.save_freq) == (4, 30, 10)
    assert cfg.data.max_prompt_length == 512
