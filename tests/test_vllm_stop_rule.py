"""The vLLM engine's stop-rule step (``trainer.vllm_engine.decide_rows``) on CPU, with vLLM's
scheduler simulated: vLLM and a GPU cannot exist here, so a small loop plays the engine (rows
that join late, advance at their own pace, and a step evaluated twice after a preemption) and
calls the processor's step logic exactly as ``StopRuleV1.apply`` / ``StopRuleV2.apply`` do.  The
batched rule must decide every row as DUET's per-row reference does on the same streams."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lengthctl.base import RowwiseBatch
from lengthctl.duet import DuetStop
from tests.test_duet_stop import EOS, EOS_ID, PIECES, TEXT, Run, random_streams
from trainer.vllm_engine import RowState, RuleGroup, decide_rows, force_eos, rule_groups

VOCAB = len(PIECES)
RARE = 1e-3                         # probability mass spread over the tokens below the top two


def logits_with_margin(margin: float) -> torch.Tensor:
    """Logits whose softmax has top-1 minus top-2 probability ``margin`` (ids 0 and 1 on top)."""
    p = np.full(VOCAB, RARE / (VOCAB - 2))
    p[0], p[1] = (1 - RARE + margin) / 2, (1 - RARE - margin) / 2
    return torch.from_numpy(np.log(p)).float()


def simulate_vllm(states, streams, margins, max_len, rng):
    """Play vLLM's scheduler over rows with their ``RowState``; returns (finish, n_tokens)."""
    n = len(states)
    joins = rng.integers(0, 6, size=n)              # requests enter the batch at different steps
    finish, n_tokens = ["max_len"] * n, [max_len] * n
    alive = np.ones(n, dtype=bool)
    replay = set()                                  # rows whose last position is evaluated again
    step = 0
    while alive.any():
        scheduled = [r for r in np.flatnonzero(alive) if joins[r] <= step
                     and (r in replay or rng.random() < 0.7)]
        step += 1
        if not scheduled:
            continue
        rng.shuffle(scheduled)                      # logits rows in the engine's own order
        logits = torch.stack([logits_with_margin(margins[r, len(states[r].tokens)])
                              for r in scheduled])
        forced = {row for row, _ in decide_rows(logits, [(k, states[r])
                                                        for k, r in enumerate(scheduled)])}
        out = force_eos(logits.clone(), [(k, EOS_ID) for k in forced])
        for k, r in enumerate(scheduled):
            t = len(states[r].tokens)
            if r not in replay and rng.random() < 0.1:
                replay.add(r)                       # preempted: this position comes back
                continue
            replay.discard(r)
            if k in forced:
                assert out[k].argmax().item() == EOS_ID and torch.isinf(out[k]).sum() == VOCAB - 1
                finish[r], n_tokens[r] = states[r].reason, t + 1
                alive[r] = False
                continue
            token = int(streams[r, t])
            states[r].tokens.append(token)
            if token == EOS_ID:
                finish[r], n_tokens[r] = "eos", t + 1
                alive[r] = False
            elif t + 1 == max_len:
                alive[r] = False
    return finish, n_tokens


def states_for(controllers):
    groups = rule_groups(controllers, TEXT, width=400, pad_id=EOS_ID)
    return [RowState(group, local, prompt_len=3, eos_id=EOS_ID, temperature=1.0)
            for group, local in groups]


@pytest.mark.parametrize("max_len, options", [
    (48, {}), (128, {}), (128, {"check_interval": 3, "hysteresis": 3}),
    (400, {"eps_len": 0.5, "eps_abort": 0.5}),
])
def test_simulated_vllm_scheduler_batched_rule_equals_the_per_row_reference(max_len, options):
    rng = np.random.default_rng(7 + max_len + len(options))
    controller = DuetStop(max_len, 0, **options)
    n_rows = 60
    streams = random_streams(rng, n_rows, max_len)
    margins = rng.choice([0.0, 0.3, 0.6, 0.8, 0.95], size=(n_rows, max_len + 1),
                         p=[0.1, 0.1, 0.2, 0.35, 0.25])
    taus = rng.choice([None, 0.5, 0.7, 0.9], size=n_rows)
    seeds = rng.integers(0, 2**31, size=n_rows)

    def rows():
        return [controller.row_controller(0, None if tau is None else {"tau": tau}, int(seed))
                for tau, seed in zip(taus, seeds)]

    states = states_for(rows())
    assert {type(s.group.batch).__name__ for s in states} == {"DuetBatch"}
    assert len({id(s.group) for s in states}) == 1, "one step's rows share one batch"
    finish, n_tokens = simulate_vllm(states, streams, margins, max_len, rng)
    pieces = [[PIECES[i] if i != EOS_ID else EOS for i in s] for s in streams]
    reference = [Run(row, pieces[i], max_len, margins=lambda t, i=i: margins[i, t])
                 for i, row in enumerate(rows())]
    assert finish == [r.finish for r in reference]
    assert n_tokens == [r.n_tokens for r in reference]
    assert [{**s.flags, "weight": s.weight} for s in states] == \
        [{**r.flags, "weight": r.weight} for r in reference]
    assert len(set(finish)) >= 3, "the streams should exercise several outcomes"


def test_simulated_vllm_scheduler_per_row_rules_and_mixed_rules_in_one_call():
    """A rule with only the per-row ``decide`` runs through ``RowwiseBatch``; rows of two rules
    (two steps' DUET gates) in one call are decided by their own batches."""
    rng = np.random.default_rng(3)
    max_len = 96
    a, b = DuetStop(max_len, 0), DuetStop(max_len, 1, hysteresis=3)
    seeds = rng.integers(0, 2**31, size=30)
    made = [(a if i % 2 else b).row_controller(0, None, int(s)) for i, s in enumerate(seeds)]
    states = states_for(made)
    assert len({id(s.group) for s in states}) == 2
    streams = random_streams(rng, 30, max_len)
    margins = rng.choice([0.3, 0.8, 0.95], size=(30, max_len + 1))
    finish, n_tokens = simulate_vllm(states, streams, margins, max_len, rng)
    pieces = [[PIECES[i] if i != EOS_ID else EOS for i in s] for s in streams]
    fresh = [(a if i % 2 else b).row_controller(0, None, int(s)) for i, s in enumerate(seeds)]
    reference = [Run(row, pieces[i], max_len, margins=lambda t, i=i: margins[i, t])
                 for i, row in enumerate(fresh)]
    assert finish == [r.finish for r in reference] and n_tokens == [r.n_tokens for r in reference]
    # the same rows through the per-row adapter, on another schedule, give the same outcome
    group = RuleGroup(RowwiseBatch([(a if i % 2 else b).row_controller(0, None, int(s))
                                    for i, s in enumerate(seeds)], TEXT), 400, EOS_ID)
    wrapped = [RowState(group, i, prompt_len=3, eos_id=EOS_ID, temperature=1.0)
               for i in range(30)]
    assert simulate_vllm(wrapped, streams, margins, max_len, np.random.default_rng(99)) == \
        (finish, n_tokens)
