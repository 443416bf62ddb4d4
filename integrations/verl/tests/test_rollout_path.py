"""Rollout and data-path test (not a training test): a local Ray with verl's real TransferQueue,
the plugin's real manager subclass and replay-buffer subclass, verl's real agent-loop worker and
single-turn agent loop, an HF-``generate`` client on a tiny real model, verl's own
``_compute_advantage`` with the registered ``allocbench`` estimator -- checked against the shared
loop's step protocol run on the same rewards (``tests/scripted_loop.py``'s way: scripted replay).

What is not real here, because it cannot exist on a CPU: the vLLM/SGLang rollout server (an HF
client with its contract), verl's reward-loop worker (an actor with its contract), and verl's
trainer, whose construction needs GPUs (``verl_harness.TrainerStandIn`` makes its calls).
"""
from __future__ import annotations

import pytest

pytest.importorskip("verl", reason="the verl plugin's tests run in its own environment "
                                   "(README, 'Running a method inside verl')")

import os
from collections import defaultdict
from pathlib import Path

import numpy as np
import ray
import transfer_queue as tq
from omegaconf import OmegaConf

import allocators
from core.rows import PromptInfo, PromptStats, Rollout
from allocbench_verl import adapter
from allocbench_verl.config import session_options
from allocbench_verl.manager import AllocBenchAgentLoopManager
from allocbench_verl.sampler import AllocBenchReplayBuffer
from trainer.grpo import assign_advantages
from trainer.step import run_step, step_budget
from verl_harness import (BoxedAnswerReward, HFGenerateClientNoGPUServer, TrainerStandIn,
                          chain_sum_prompts, tiny_model_dir, verl_config)

POOL = 40


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    # the actors unpickle the harness's client and reward classes by module name
    path = os.pathsep.join(p for p in (str(Path(__file__).parent),
                                       os.environ.get("PYTHONPATH", "")) if p)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "PYTHONPATH": path}})
    tq.init(OmegaConf.create({"backend": {"SimpleStorage": {"num_data_storage_units": 1}}}))
    model = tiny_model_dir(tmp_path_factory.mktemp("model"))
    # one manager (one agent-loop worker actor) for every test: each test attaches its session
    adapter.close_sessions()
    cfg = verl_config(model, train_batch_size=SETTING["prompts_per_step"],
                      sampler_kwargs=dict(SETTING, method="grpo"))
    manager = AllocBenchAgentLoopManager.create(
        cfg, llm_client=HFGenerateClientNoGPUServer(str(model)),
        reward_loop_worker_handles=[BoxedAnswerReward.remote(str(model))])
    yield model, manager
    adapter.close_sessions()
    tq.close()
    ray.shutdown()


class Recorder:
    """Wraps the manager's dispatch: what verl generated, per step and round, in order."""

    def __init__(self, session) -> None:
        self.session, self.inner, self.rounds = session, session.dispatch, defaultdict(list)
        session.dispatch = self

    def __call__(self, subs, verl_step):
        produced = self.inner(subs, verl_step)
        step = self.session.steps_run - 1                # the allocation step in progress
        for sub in subs:
            rows = [(r, len(tokens)) for _, tokens, r in produced[sub.uid]]
            self.rounds[step].append((sub.uid, sub.pid, sub.round, sub.n, rows))
        return produced


def replay_shared_loop(method, setting_kwargs, options, prompt_order, recorded, steps):
    """The shared loop's step protocol on verl's rewards: same draws, same rewards per
    (step, pid, round, i); returns per step (counts, [(pid, rows)], advantages)."""
    alloc = allocators.get(method)(adapter.Setting(**setting_kwargs), **options)
    stats, cursor, out, group = PromptStats(), [0], [], [0]

    def draw(k):
        got = [PromptInfo(pid=prompt_order[(cursor[0] + i) % len(prompt_order)], text="",
                          token_ids=()) for i in range(k)]
        cursor[0] += k
        return got

    for step in range(steps):
        rewards = {(pid, rnd): rows for _, pid, rnd, _, rows in recorded[step]}

        def generate(requests, rnd, step=step):
            rows = []
            for req in requests:
                if not req.n:
                    continue
                group[0] += 1
                for r, length in rewards[(req.pid, rnd)]:
                    finish = "max_len" if length >= alloc.setting.max_response_tokens else "eos"
                    r = 0.0 if finish == "max_len" else r       # the loop's score_truncated=False
                    rows.append(Rollout(pid=req.pid, group=group[0], tag=req.tag, step=step,
                                        round=rnd, tokens=np.zeros(length, np.int64),
                                        logprobs=np.zeros(length, np.float32), finish=finish,
                                        reward=r, weight=req.weight))
            return rows

        res = run_step(step, alloc, stats, step_budget(alloc.setting, stats), draw=draw,
                       generate=generate, score=lambda rows: [r.reward for r in rows],
                       advantages=lambda g: assign_advantages(
                           g, **alloc.advantage_options()))
        out.append(([n for n in res.counts],
                    [(g[0].pid, len(g)) for g in res.groups],
                    [(r.pid, r.step, r.round) for g in res.groups for r in g],
                    [r.advantage * r.weight for g in res.groups for r in g]))
    return out


SETTING = dict(prompts_per_step=4, group_size=4, budget_fraction=1.0, max_response_tokens=24,
               steps=3, seed=0, pool_size=8)


@pytest.mark.parametrize("method,options,over", [
    # varied counts through __rollout_n__ (the pool is revisited from step 2 on)
    ("knapsack", {}, {}),
    # filter + refill rounds drawn through verl's dataloader path
    ("dapo", {"max_rounds": 4}, {"steps": 2}),
    # pilots kept in the method's buffer and trained in a later step (a pool larger than a
    # round's 3M candidates, or the buffer's entries go stale at once)
    ("pilot-commit", {"max_rounds": 3}, {"prompts_per_step": 2, "pool_size": 24, "steps": 2}),
])
def test_method_through_verl_matches_shared_loop(cluster, method, options, over):
    model, manager = cluster
    adapter.close_sessions()
    setting = dict(SETTING, **over)
    kwargs = dict(setting, method=method, options=options)
    cfg = verl_config(model, train_batch_size=setting["prompts_per_step"],
                      sampler_kwargs=kwargs)
    manager.attach(adapter.open_session(session_options(cfg)))
    recorder = Recorder(manager.session)
    prompts = chain_sum_prompts(setting["pool_size"], seed=1)
    trainer = TrainerStandIn(cfg, prompts, manager, AllocBenchReplayBuffer)
    verl_steps = [trainer.step(s) for s in range(1, setting["steps"] + 1)]

    steps = manager.session.steps_run               # allocation steps (some may train nothing)
    expected = replay_shared_loop(method, setting, options, [i for i, _, _ in prompts],
                                  recorder.rounds, steps)
    trained_at = {int(got["metrics"]["allocbench/step"]): got for got in verl_steps}
    assert len(trained_at) == len(verl_steps)
    # every submission, any step: uid -> (pid, allocation step, round)
    uid_row = {uid: (pid, step, rnd) for step, subs in recorder.rounds.items()
               for uid, pid, rnd, *_ in subs}
    for step, (counts, groups, rows, advantages) in enumerate(expected):
        subs = recorder.rounds[step]
        if step not in trained_at:                   # no update in the shared loop either
            assert groups == [], step
            continue
        got = trained_at[step]
        # plans -> __rollout_n__: every submission came back with exactly n rows
        assert [len(rows) for *_, rows in subs] == [n for *_, n, _ in subs]
        assert [n for _, _, rnd, n, _ in subs if rnd == 0] == counts
        # the trained rows (which prompt, step and round each came from) and their
        # advantages, in the order verl trains them; rows may come from earlier steps
        keys = list(got["advantages"])
        assert [uid_row[k.split("_")[0]] for k in keys] == rows
        assert sum(n for _, n in groups) == len(keys)
        np.testing.assert_allclose([got["advantages"][k] for k in keys], advantages,
                                   rtol=1e-5, atol=1e-6)
        assert got["metrics"]["allocbench/trained_groups"] == len(groups)
    print(method, {s: [(pid, rnd, n, [r for r, _ in rows]) for _, pid, rnd, n, rows in v]
                   for s, v in recorder.rounds.items()})
