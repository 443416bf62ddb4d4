"""Unit tests of the translation (no Ray): plans -> submissions, skips, rows, advantages with
weights and one-row groups, the refusals, the config checks and the plugin's registration."""
from __future__ import annotations

import pytest

pytest.importorskip("verl", reason="the verl plugin's tests run in its own environment "
                                   "(README, 'Running a method inside verl')")

import subprocess
import sys

import numpy as np
import torch

import allocators
from allocbench_verl import adapter
from allocbench_verl.adapter import (AllocationSession, RefusedMethod, Submission, make_allocator,
                                     method_table, submissions, to_rollout)
from allocbench_verl.config import check_config, session_options
from allocbench_verl.estimator import allocbench_advantage
from core.rows import Request, Setting

SETTING = dict(prompts_per_step=4, group_size=4, budget_fraction=1.0, max_response_tokens=8,
               steps=2, seed=0, pool_size=16)


def test_plan_becomes_one_submission_per_group_and_skips_are_dropped():
    counter = iter(range(100))
    reqs = [Request(3, 2), Request(5, 0), Request(7, 15, tag="pilot", weight=2.0),
            Request(9, 6), Request(11, 0), Request(13, 9)]
    subs = submissions(reqs, 1, lambda: f"ab{next(counter):08d}")
    assert [(s.pid, s.n, s.round) for s in subs] == [(3, 2, 1), (7, 15, 1), (9, 6, 1), (13, 9, 1)]
    assert len({s.uid for s in subs}) == 4
    assert subs[1].request.tag == "pilot" and subs[1].request.weight == 2.0
    with pytest.raises(ValueError, match="n = -1"):
        submissions([Request(1, -1)], 0, lambda: "x")


def test_trajectory_becomes_row_with_request_tag_weight_and_finish():
    sub = Submission("ab00000001", 7, 2, Request(7, 2, tag="screen", weight=0.5), 2)
    full = to_rollout(sub, 1, 3, np.arange(8), 1.0, max_response_tokens=8)
    short = to_rollout(sub, 1, 3, np.arange(5), 0.0, max_response_tokens=8)
    assert (full.finish, short.finish) == ("max_len", "eos")
    assert full.reward == 0.0           # truncated: no reward unless score_truncated
    kept = to_rollout(sub, 1, 3, np.arange(8), 1.0, max_response_tokens=8, score_truncated=True)
    assert kept.reward == 1.0
    assert (full.pid, full.tag, full.round, full.step, full.weight) == (7, "screen", 2, 3, 0.5)
    assert full.n_tokens == 8 and short.reward == 0.0


class ScriptedVerl:
    """The verl side's two calls, scripted: rewards by (pid, i), lengths fixed."""

    def __init__(self, session, reward) -> None:
        self.session, self.reward, self.sizes, self.drawn = session, reward, [], 0
        session.dispatch, session.draw_more = self.dispatch, self.draw_more

    def dispatch(self, subs, step):
        self.sizes.append([s.n for s in subs])
        return {s.uid: [(f"{s.uid}_{i}_0", np.arange(4), self.reward(s.pid, i))
                        for i in range(s.n)] for s in subs}

    def draw_more(self, k):
        self.session.offer([(self.drawn + i, "") for i in range(k)])
        self.drawn += k


def test_one_row_groups_get_no_gradient_unless_the_method_opts_into_verls_rule():
    session = AllocationSession("grpo", **SETTING)
    ScriptedVerl(session, lambda pid, i: float(i == 0))
    session.run(1)
    rows = list(session.trained.values())
    # G = 4: each group is [1, 0, 0, 0] -> (r - 0.25) / (std + eps), std unbiased
    expected = (np.array([1, 0, 0, 0]) - 0.25) / (np.std([1, 0, 0, 0], ddof=1) + 1e-6)
    np.testing.assert_allclose(session.row_advantages(list(session.trained)),
                               np.tile(expected, 4), rtol=1e-9)
    # one-row groups: the harness gives them nothing; verl's rule (DUET's opt-in) r / (1 + eps)
    one = AllocationSession("grpo", **dict(SETTING, group_size=1, budget_fraction=1.0))
    ScriptedVerl(one, lambda pid, i: 1.0)
    one.run(1)
    assert not one.row_advantages(list(one.trained)).any()
    one.advantage_options = {"small_groups": "verl"}
    ScriptedVerl(one, lambda pid, i: 1.0)
    one.run(2)
    np.testing.assert_allclose(one.row_advantages(list(one.trained)), 1 / (1 + 1e-6))
    assert rows[0].weight == 1.0


def test_row_weight_multiplies_the_advantage_and_unknown_keys_get_zero():
    session = AllocationSession("grpo", **SETTING)
    ScriptedVerl(session, lambda pid, i: float(i % 2))
    session.run(1)
    keys = list(session.trained)
    before = session.row_advantages(keys)
    for row in session.trained.values():
        row.weight = 3.0
    np.testing.assert_allclose(session.row_advantages(keys), 3.0 * before)
    assert session.row_advantages(["padding"]).tolist() == [0.0]


def test_estimator_broadcasts_each_rows_advantage_over_its_response_tokens():
    adapter.close_sessions()
    session = adapter.open_session(dict(SETTING, method="grpo"))
    ScriptedVerl(session, lambda pid, i: float(i % 2))
    session.run(1)
    keys = list(session.trained)[:3] + ["padding"]
    mask = torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1], [1, 1, 1]], dtype=torch.float32)
    adv, ret = allocbench_advantage(torch.zeros(4, 3), mask, index=np.array(keys, dtype=object))
    want = session.row_advantages(keys)
    assert torch.equal(adv, ret)
    np.testing.assert_allclose(adv.numpy(), want[:, None] * mask.numpy(), rtol=1e-6)
    adapter.close_sessions()


def test_prompts_verl_draws_beyond_the_plan_wait_in_the_queue_in_order():
    session = AllocationSession("grpo", **SETTING)
    verl = ScriptedVerl(session, lambda pid, i: 0.0)
    session.offer([(10, "a"), (11, "b"), (12, "c"), (13, "d"), (14, "e"), (15, "f")])
    session.run(1)
    assert verl.sizes == [[4, 4, 4, 4]] and [p.pid for p in session.queue] == [14, 15]
    session.run(2)                       # two queued + two drawn through draw_more
    assert verl.drawn == 2 and not session.queue
    with pytest.raises(ValueError, match="outside"):
        session.offer([(99, "x")])


def test_every_method_runs_or_is_refused_in_one_line():
    table = dict(method_table())
    assert set(table) == set(allocators.available())
    for must_run in ("grpo", "knapsack", "dapo", "greso", "pods", "reinforce-ada", "mopps",
                     "speed-rl", "pilot-commit", "coba"):
        assert table[must_run] == "runs in verl", must_run
    assert "stop rule (duet)" in table["duet"] and "stop rule (arrol)" in table["arrol"]
    assert "features" in table["vip"] and "unbilled" in table["oracle"]
    assert "whole training pool" in table["sgpo"]
    for verdict in table.values():
        assert "\n" not in verdict
    with pytest.raises(RefusedMethod, match="cannot run in verl"):
        make_allocator("duet-abort", Setting(**SETTING))
    with pytest.raises(RefusedMethod, match="unknown method"):
        make_allocator("no-such-method", Setting(**SETTING))


def _verl_config(**over):
    from omegaconf import OmegaConf
    import verl
    from pathlib import Path
    cfg = OmegaConf.load(Path(verl.__file__).parent / "trainer/config/_generated_ppo_trainer.yaml")
    base = {"data": {"max_response_length": 8, "gen_batch_size": 1},
            "algorithm": {"adv_estimator": "allocbench"},
            "trainer": {"v1": {"trainer_mode": "sync", "sampler": {
                "custom_sampler": {"path": "pkg://allocbench_verl.sampler",
                                   "name": "AllocBenchReplayBuffer"},
                "sampler_kwargs": dict(SETTING, method="knapsack")}}}}
    return OmegaConf.merge(cfg, OmegaConf.create(base), OmegaConf.create(over))


@pytest.mark.parametrize("over,message", [
    ({"trainer": {"v1": {"trainer_mode": "separate_async"}}}, "use sync"),
    ({"algorithm": {"adv_estimator": "grpo"}}, "adv_estimator must be allocbench"),
    ({"algorithm": {"use_kl_in_reward": True}}, "use_kl_in_reward"),
    ({"data": {"gen_batch_size": 4}}, "gen_batch_size=4"),
    ({"data": {"max_response_length": 16}}, "max_response_tokens differs"),
    ({"algorithm": {"rollout_correction": {"bypass_mode": True}}}, "bypass_mode"),
    ({"trainer": {"use_v1": False}}, "use_v1"),
])
def test_verl_settings_that_would_change_the_step_are_refused(over, message):
    good = _verl_config()
    session = AllocationSession(**{**session_options(good), "method": "knapsack"})
    check_config(good, session)
    with pytest.raises(RefusedMethod, match=message):
        check_config(_verl_config(**over), session)


def test_importing_verl_registers_the_estimator_through_the_entry_point():
    # verl logs a plugin's import error only at debug level: check the registration itself
    code = ("import verl; from verl.trainer.ppo import core_algos; "
            "print(core_algos.get_adv_estimator_fn('allocbench').__module__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "allocbench_verl.estimator"


# what the plugin may import from the repository: the torch-free method packages and the two
# step modules whose imports are numpy/torch only (the plugin's environment has no
# reasoning-gym, sentence-transformers or vLLM, which the rest of trainer and bench import)
ALLOWED = ("allocators", "core", "trainer.step", "trainer.grpo", "allocbench_verl")
PROJECT = ("allocators", "core", "lengthctl", "trainer", "bench")


def test_the_plugin_imports_only_the_method_packages_and_the_step_modules():
    import ast
    from pathlib import Path
    package = Path(__file__).resolve().parents[1] / "allocbench_verl"
    bad = []
    for path in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                top = name.split(".")[0]
                if top in PROJECT and not any(name == a or name.startswith(a + ".")
                                              for a in ALLOWED):
                    bad.append(f"{path.name}: {name}")
    assert not bad, bad
