"""ARRoL (lengthctl/arrol.py, allocators/arrol.py): the survival rule on hand-computed groups,
the quality head, the calibration, warm-up, batch invariance, the engine's pruning and its
budget charging, and a short run in the real loop on the smoke preset."""
import math

import numpy as np
import pytest

import allocators
import lengthctl
from allocators.base import Rollout
from lengthctl.arrol import (FEATURES_FLAG, PRUNED_FLAG, ArrolBatch, ArrolPrune, QualityHead, calibrate,
                             decide_groups, fit_calibration, logprob_features,
                             pool_adjacent_violators, prune_group, row_uniform,
                             rollout_features, survival_probabilities)
from lengthctl.base import ABORTED, CONTINUE


# ------------------------------------------------------------------ the survival rule --------
def test_survival_of_a_skewed_group_by_hand():
    # 6 rows predicted right (0.9), 2 wrong (0.1); kappa = rho = 0.5, no exploration floor:
    # P = 5.6, N = 2.4, K = 4; a = rho K / P = 2 / 5.6 = 5/14; b = (K - a P) / N = 2 / 2.4 = 5/6
    q = np.array([0.9] * 6 + [0.1] * 2)
    s = survival_probabilities(q, keep_rate=0.5, target_positive=0.5, eps=0.0)
    np.testing.assert_allclose(s[:6], 0.9 * 5 / 14 + 0.1 * 5 / 6)        # 17/42 = 0.40476
    np.testing.assert_allclose(s[6:], 0.1 * 5 / 14 + 0.9 * 5 / 6)        # 11/14 = 0.78571
    np.testing.assert_allclose(s[:6], 17 / 42)
    assert math.isclose(s.sum(), 4.0)                                     # E[survivors] = kappa n
    # the draw: pruned iff u >= s
    u = np.array([0.10, 0.50, 0.30, 0.90, 0.41, 0.20, 0.70, 0.80])
    assert prune_group(s, u).tolist() == [False, True, False, True, True, False, False, True]
    # with the default floor eps = 0.05: s' = 0.05 + 0.95 s
    np.testing.assert_allclose(survival_probabilities(q), 0.05 + 0.95 * s)


def test_balanced_and_one_sided_groups_keep_kappa_of_their_rows_uniformly():
    for q in ([1, 1, 1, 1, 0, 0, 0, 0], [1.0] * 8, [0.0] * 8):
        np.testing.assert_allclose(survival_probabilities(np.array(q, float), eps=0.0), 0.5)
    # kappa = 0.25: two of eight survive in expectation, the minority class first
    s = survival_probabilities(np.array([1.0] * 7 + [0.0]), keep_rate=0.25, eps=0.0)
    np.testing.assert_allclose(s, [1 / 7] * 7 + [1.0])      # a = 1/7, b = 1: one of each


def test_survivors_move_toward_the_target_share():
    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(2, 17))
        q = rng.beta(0.5, 0.5, n)
        s = survival_probabilities(q, eps=0.0)
        assert np.all((s >= -1e-12) & (s <= 1 + 1e-12))
        assert math.isclose(s.sum(), 0.5 * n, rel_tol=1e-9)
        share, before = float(q @ s / s.sum()), float(q.mean())
        if before >= 0.5:
            assert 0.5 - 1e-9 <= share + 1e-9 and share <= before + 1e-9
        else:
            assert before - 1e-9 <= share


def test_min_keep_rescues_the_likeliest_pruned_rows():
    s = np.full(5, 0.1)
    u = np.array([0.5, 0.3, 0.9, 0.2, 0.6])
    assert prune_group(s, u, min_keep=0).all()
    assert prune_group(s, u, min_keep=2).tolist() == [True, False, True, False, True]
    s = np.array([0.1, 0.4, 0.1, 0.1, 0.1])                 # the largest s first
    assert prune_group(s, u, min_keep=1).tolist() == [True, False, True, True, True]


def test_groups_are_decided_apart_and_in_any_order():
    rng = np.random.default_rng(1)
    groups = [g for g in range(6) for _ in range(8)]
    q, seeds = rng.random(48), rng.integers(0, 2 ** 31, 48)
    u = np.array([row_uniform(int(x)) for x in seeds])
    s, pruned = decide_groups(groups, q, u, seeds)
    perm = rng.permutation(48)
    s2, pruned2 = decide_groups([groups[i] for i in perm], q[perm], u[perm], seeds[perm])
    np.testing.assert_array_equal(s[perm], s2)
    np.testing.assert_array_equal(pruned[perm], pruned2)
    alone, _ = decide_groups(groups[:8], q[:8], u[:8], seeds[:8])
    np.testing.assert_array_equal(s[:8], alone)


# ------------------------------------------------------------------ head and calibration -----
def test_logprob_features_by_hand():
    lp = np.array([[-1.0, -3.0, -2.0, 9.0], [-0.5, 0.0, 0.0, 0.0]])
    x = logprob_features(lp, [3, 1])
    np.testing.assert_allclose(x[0], [-2.0, math.sqrt(2 / 3), -3.0, -1.0])
    np.testing.assert_allclose(x[1], [-0.5, 0.0, -0.5, -0.5])
    np.testing.assert_allclose(rollout_features(lp[0], 3), x[0])
    np.testing.assert_allclose(logprob_features(np.zeros((1, 0))), [[0, 0, 0, 0]])


def test_the_head_learns_a_separable_signal():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(3000, 4))
    y = (x[:, 0] - 0.5 * x[:, 2] > 0.2).astype(float)
    head = QualityHead(4, 128, seed=0)
    before = np.mean((head.score(x[2000:]) >= 0.5) == y[2000:])
    loss0 = head.loss(x[:2000], y[:2000])
    head.fit(x[:2000], y[:2000], np.random.default_rng(0), updates=400, batch_size=128)
    after = np.mean((head.score(x[2000:]) >= 0.5) == y[2000:])
    assert head.loss(x[:2000], y[:2000]) < loss0
    assert after > 0.9 and after > before + 0.1


def test_pool_adjacent_violators_and_monotone_calibration():
    np.testing.assert_allclose(pool_adjacent_violators([0.2, 0.1, 0.5], [1, 1, 1]),
                               [0.15, 0.15, 0.5])
    np.testing.assert_allclose(pool_adjacent_violators([0.3, 0.1], [3, 1]), [0.25, 0.25])
    rng = np.random.default_rng(3)
    for _ in range(20):
        scores = rng.random(500)
        labels = (rng.random(500) < rng.random()).astype(float)     # no signal at all
        table = fit_calibration(scores, labels, 20)
        assert len(table) == 20 and np.all(np.diff(table) >= -1e-12)
        assert np.all(np.diff(calibrate(np.sort(scores), table)) >= -1e-12)
    # a calibrated score stays close to itself
    scores = rng.random(20000)
    table = fit_calibration(scores, (rng.random(20000) < scores).astype(float), 20)
    np.testing.assert_allclose(table, (np.arange(20) + 0.5) / 20, atol=0.05)
    assert calibrate(np.array([0.3]), None)[0] == 0.3            # no table yet: raw


# ------------------------------------------------------------------ the controller -----------
def fake_rows(n, rng, step=0, l_detect=7, length=12):
    """Rows whose label is a function of their first tokens' mean log-prob."""
    rows = []
    for i in range(n):
        lp = rng.normal(-1.0, 0.6, length).astype(np.float32)
        reward = float(lp[:l_detect].mean() > -1.0)
        rows.append(Rollout(i // 8, i // 8, "main", step, 0, np.arange(length), lp, "eos",
                            reward))
    return rows


def trained(steps=3, **options):
    ctl = ArrolPrune(40, 0, **{"warmup_steps": 0, "features": "logprobs", **options})
    rng = np.random.default_rng(4)
    for step in range(steps):
        ctl.observe(step, fake_rows(64, rng, step))
    return ctl


def test_warm_up_prunes_nothing():
    fresh = ArrolPrune(40, 0, warmup_steps=0, features="logprobs")
    assert fresh.row_controller(5, None, 1, group=0) is None     # head never trained
    ctl = trained(warmup_steps=3)
    assert ctl.steps_trained == 3 and len(ctl.labels) == 192
    assert all(ctl.row_controller(s, None, 1, group=0) is None for s in range(3))
    assert ctl.row_controller(3, None, 1, group=0)._gate.prune
    assert ArrolPrune(40, 0).opts.warmup_steps == 20               # DUET's default
    # hidden-state features: warm-up rows record their state at l_detect, nothing is cut
    hidden = ArrolPrune(40, 0, warmup_steps=2)
    assert hidden.opts.features == "hidden"
    row = hidden.row_controller(0, None, 1, group=0)
    assert row is not None and not row._gate.prune
    batch = ArrolBatch([hidden.row_controller(0, None, s, group=0) for s in range(4)], None)
    assert batch.needs_hidden
    states = np.arange(12.0).reshape(4, 3)
    codes = batch.decide(np.arange(4), np.full(4, 7), np.zeros((4, 7), np.int64), None,
                         logprobs=None, hidden=lambda k: states[np.asarray(k)])
    assert not codes.any()
    flags = batch.flags(2)
    assert not flags[PRUNED_FLAG] and not flags["arrol_decided"]
    np.testing.assert_array_equal(flags[FEATURES_FLAG], [6.0, 7.0, 8.0])


def test_the_controller_trains_its_head_from_finished_rows_only():
    ctl = trained(steps=6)
    rng = np.random.default_rng(9)
    test = fake_rows(400, rng)
    x = np.array([rollout_features(r.logprobs, ctl.l_detect) for r in test])
    y = np.array([r.reward for r in test])
    assert np.mean((ctl.head.score(x) >= 0.5) == y) > 0.8
    before = len(ctl.labels)
    rows = fake_rows(16, rng)
    for r in rows[:5]:
        r.flags[PRUNED_FLAG] = True
    ctl.observe(6, rows)
    assert len(ctl.labels) == before + 11                           # pruned rows never label


def batch_of(ctl, step, specs):
    """An ArrolBatch over (group, seed) specs."""
    controllers = [ctl.row_controller(step, None, seed, group=g) for g, seed in specs]
    return ArrolBatch(controllers, text=None)


def test_batch_decisions_depend_only_on_the_group_and_the_rows_streams():
    ctl = trained()
    rng = np.random.default_rng(5)
    specs = [(g, int(rng.integers(0, 2 ** 31))) for g in range(5) for _ in range(8)]
    lp = {seed: rng.normal(-1.0, 0.6, 12) for _, seed in specs}

    def decide(order):
        batch = batch_of(ctl, 3, [specs[i] for i in order])
        matrix = np.array([lp[specs[i][1]] for i in order])
        assert batch.next_position() == ctl.l_detect
        codes = batch.decide(np.arange(len(order)), np.full(len(order), ctl.l_detect),
                             np.zeros((len(order), ctl.l_detect), np.int64), None,
                             logprobs=lambda k: matrix[np.asarray(k), :ctl.l_detect])
        assert batch.next_position() > 10 ** 9                     # asked once
        out = {}
        for j, (i, c) in enumerate(zip(order, codes)):
            flags = batch.flags(j)
            features = tuple(flags.pop(FEATURES_FLAG).tolist())    # comparable
            out[specs[i][1]] = (int(c), {**flags, FEATURES_FLAG: features})
        return out

    base = decide(list(range(40)))
    assert {c for c, _ in base.values()} == {CONTINUE, ABORTED}
    assert all(f[PRUNED_FLAG] == (c == ABORTED) and f["arrol_decided"] for c, f in base.values())
    shuffled = decide(list(rng.permutation(40)))
    first_group = decide(list(range(8)))
    assert shuffled == base
    assert first_group == {k: base[k] for k in first_group}


def test_per_row_decide_is_refused():
    row = trained().row_controller(3, None, 1, group=0)
    with pytest.raises(NotImplementedError):
        row.decide(7, 0.5, lambda k: "")


def test_registry_options_and_scaling():
    assert "arrol" in allocators.main_methods() and "arrol" in lengthctl.available()
    assert allocators.get("arrol").default_length == "arrol"
    assert ArrolPrune(3072, 0).l_detect == 512 and ArrolPrune(60, 0).l_detect == 10
    assert ArrolPrune(40, 0).l_detect == 7 and ArrolPrune(40, 0, absolute=True).l_detect == 512
    assert ArrolPrune(40, 0, l_detect=3).resolved_options()["l_detect"] == 3
    from core.options import OptionError
    with pytest.raises(OptionError):
        ArrolPrune(40, 0, keep_rate=0.0)


@pytest.mark.parametrize("method", ["arrol", "grpo", "knapsack"])
def test_the_step_drops_pruned_rows_whatever_the_allocator(method):
    """``Rollout.pruned`` rows leave their groups in trainer.step, after any allocator's select;
    the rule's aborted rows that are not pruned (pruned_in_baseline) stay in the baseline."""
    from allocators.base import PromptInfo, PromptStats, Setting, StepBudget
    from trainer.grpo import assign_advantages
    from trainer.step import run_step
    setting = Setting(1, 8, 1.0, 40, 2, 0)
    rows = fake_rows(8, np.random.default_rng(6))
    for r in rows:
        r.group = 0
    for r in rows[::3]:
        r.finish = "aborted"
    for r in rows[:4:3]:
        r.pruned = True                      # rows 0 and 3 pruned, row 6 only aborted
    result = run_step(0, allocators.get(method)(setting), PromptStats(),
                      StepBudget(8, 0.0, 4.0), draw=lambda k: [PromptInfo(0, "", ())] * k,
                      generate=lambda requests, r: rows, score=lambda rs: [r.reward for r in rs],
                      advantages=assign_advantages)
    assert [len(g) for g in result.groups] == [6]
    kept = {id(r) for r in result.groups[0]}
    assert id(rows[6]) in kept and id(rows[0]) not in kept and id(rows[3]) not in kept


def test_pruned_in_baseline_leaves_the_typed_field_unset(smoke_policy):
    from trainer.engine import HFEngine, RowSpec
    model, tok = smoke_policy
    prompt = tuple(tok("12 + 7 =\n")["input_ids"])
    for keep in (False, True):
        ctl = trained(steps=3, pruned_in_baseline=keep)
        gens = HFEngine(model, tok, max_new_tokens=40).generate(
            [RowSpec(prompt, s, ctl.row_controller(3, None, s + 7, group=0)) for s in range(8)])
        pruned = [g.flags[PRUNED_FLAG] for g in gens]
        assert any(pruned)
        assert [g.fields["pruned"] for g in gens] == [p and not keep for p in pruned]


# ------------------------------------------------------------------ engine and loop ----------
def test_the_engine_prunes_at_l_detect_and_every_token_is_charged(smoke_policy):
    from trainer.engine import HFEngine, RowSpec
    from trainer.ledger import Ledger
    model, tok = smoke_policy
    ctl = trained(steps=3)
    prompts = [tuple(tok(p)["input_ids"]) for p in ["12 + 7 =\n", "3 + 4 + 5 =\n", "9 - 2 =\n"]]
    specs = [(g, 1000 * g + k) for g in range(3) for k in range(8)]
    free = HFEngine(model, tok, max_new_tokens=40).generate(
        [RowSpec(prompts[g], seed) for g, seed in specs])
    ruled = HFEngine(model, tok, max_new_tokens=40).generate(
        [RowSpec(prompts[g], seed, ctl.row_controller(3, None, seed + 7, group=g))
         for g, seed in specs])
    n_pruned = 0
    for a, b in zip(free, ruled):
        if b.flags[PRUNED_FLAG]:
            n_pruned += 1
            assert b.finish == "aborted" and len(b.tokens) == ctl.l_detect + 1
            assert b.tokens[-1] == tok.eos_token_id
            assert np.array_equal(a.tokens[:ctl.l_detect], b.tokens[:ctl.l_detect])
        else:
            assert np.array_equal(a.tokens, b.tokens) and a.finish == b.finish
            assert b.flags["arrol_decided"] == (len(a.tokens) > ctl.l_detect)
    assert 0 < n_pruned < len(specs)
    rows = [Rollout(0, 0, "main", 0, 0, g.tokens, g.logprobs, g.finish) for g in ruled]
    ledger = Ledger()
    ledger.begin_step()
    ledger.charge(rows)
    assert ledger.cumulative_tokens == sum(len(g.tokens) for g in ruled)
    assert ledger.cumulative_tokens < sum(len(g.tokens) for g in free)


def test_hidden_state_features_come_from_the_policy_at_l_detect(smoke_policy):
    import torch
    from trainer.engine import HFEngine, RowSpec
    model, tok = smoke_policy
    ctl = ArrolPrune(40, 0, warmup_steps=0, l_detect=5)
    prompts = [tuple(tok(p)["input_ids"]) for p in ["12 + 7 =\n", "3 + 4 + 5 =\n"]]
    specs = [(g, 500 * g + k) for g in range(2) for k in range(8)]
    engine = HFEngine(model, tok, max_new_tokens=40)

    def generate(step):
        gens = engine.generate([RowSpec(prompts[g], seed, ctl.row_controller(step, None, seed,
                                                                             group=g))
                                for g, seed in specs])
        return [Rollout(g, g, "main", step, 0, gen.tokens, gen.logprobs, gen.finish,
                        float(gen.tokens[1] % 2), flags=dict(gen.flags))
                for (g, _), gen in zip(specs, gens)]

    first = generate(0)                       # untrained: features recorded, nothing pruned
    assert not any(r.flags[PRUNED_FLAG] for r in first)
    recorded = [r for r in first if r.flags[FEATURES_FLAG] is not None]
    assert recorded and all(r.n_tokens > 5 for r in recorded)
    r, g = recorded[0], recorded[0].pid
    ids = torch.tensor([list(prompts[g]) + r.tokens[:5].tolist()])
    with torch.no_grad():
        state = model(ids, output_hidden_states=True).hidden_states[-1][0, -1]
    np.testing.assert_allclose(r.flags[FEATURES_FLAG], state.numpy(), atol=1e-4)
    assert r.flags[FEATURES_FLAG].shape == (model.config.hidden_size,)
    ctl.observe(0, first)
    assert ctl.head is not None and len(ctl.labels) == len(recorded)
    second = generate(1)
    assert any(r.flags[PRUNED_FLAG] for r in second)
    assert all(r.n_tokens == 6 and r.finish == "aborted" for r in second if r.flags[PRUNED_FLAG])


@pytest.mark.slow
def test_a_short_arrol_run_on_the_smoke_preset(smoke_preset, tmp_path):
    from bench.presets import with_overrides
    from trainer.loop import Run, RunSpec
    from trainer.rundir import read_jsonl
    preset = with_overrides(smoke_preset, steps=3, eval_every=100)
    summary = Run(RunSpec("arrol", 1.0, 0, preset, length_options={"warmup_steps": 1}),
                  tmp_path / "arrol", log=lambda *a: None).execute()
    metrics = read_jsonl(tmp_path / "arrol" / "metrics.jsonl")
    assert summary["steps"] == 3
    assert sum(m["tokens"] for m in metrics) == summary["tokens"]
    assert summary["rollouts"] == 3 * preset.prompts_per_step * preset.group_size
    assert metrics[0]["finish"]["aborted"] == 0 and metrics[0]["length"]["decided"] == 0
    for m in metrics:
        aborted = m["finish"]["aborted"]
        assert aborted == m["length"]["pruned"] == m["method"]["pruned_rows"]
        assert sum(m["group_sizes"]) == m["rollouts"] - aborted     # pruned rows never train
        assert m["length"]["pruned_tokens"] == aborted * (m["length"]["l_detect"] + 1)
    assert sum(m["finish"]["aborted"] for m in metrics[1:]) > 0


def test_another_engine_is_refused_at_set_up(smoke_preset, tmp_path, monkeypatch):
    import trainer.loop
    from bench.presets import with_overrides
    from trainer.loop import Run, RunSpec
    from trainer.spec import RunError
    # on this CPU a vllm preset already fails validation (it needs cuda); skip that check to
    # reach the rule's own
    monkeypatch.setattr(trainer.loop, "validate_spec", lambda spec: None)
    preset = with_overrides(smoke_preset, engine="vllm")
    with pytest.raises(RunError, match="needs the hf engine"):
        Run(RunSpec("arrol", 1.0, 0, preset), tmp_path / "vllm", log=lambda *a: None).setup()
