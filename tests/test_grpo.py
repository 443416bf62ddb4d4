"""GRPO advantages on hand-computed groups, the n<2 rule, and one real optimizer step."""
import numpy as np
import pytest
import torch

from allocators.base import Rollout
from trainer.grpo import LossConfig, assign_advantages, policy_loss, recompute_old_logprobs


def row(pid, group, reward, finish="eos", tokens=(5, 6, 1), logprobs=None, weight=1.0):
    t = np.array(tokens, dtype=np.int64)
    lp = np.full(len(t), -1.0, np.float32) if logprobs is None else np.array(logprobs, np.float32)
    return Rollout(pid, group, "main", 0, 0, t, lp, finish, reward, weight)


def test_advantages_of_unequal_groups_by_hand():
    g1 = [row(0, 1, r) for r in (1, 0, 0)]             # mean 1/3, unbiased std sqrt(1/3)
    g2 = [row(1, 2, r) for r in (1, 1, 0, 0, 1)]       # mean 0.6, std sqrt(0.3)
    report = assign_advantages([g1, g2], eps=0.0)
    s1 = np.sqrt(1 / 3)
    assert [r.advantage for r in g1] == pytest.approx([(2 / 3) / s1, (-1 / 3) / s1, (-1 / 3) / s1])
    s2 = np.sqrt(0.3)
    assert [r.advantage for r in g2] == pytest.approx([0.4 / s2, 0.4 / s2, -0.6 / s2, -0.6 / s2,
                                                       0.4 / s2])
    assert report.groups == 2 and report.no_gradient == 0 and report.zero_variance == 0


def test_no_std_variant_is_centred_rewards():
    g = [row(0, 1, r) for r in (1, 0, 0, 0)]
    assign_advantages([g], normalize_std=False)
    assert [r.advantage for r in g] == pytest.approx([0.75, -0.25, -0.25, -0.25])


def test_fewer_than_two_kept_rows_give_no_gradient_and_are_counted():
    single = [row(0, 1, 1.0)]
    one_kept = [row(1, 2, 1.0), row(1, 2, 0.0, finish="aborted"), row(1, 2, 0.0, finish="aborted")]
    flat = [row(2, 3, 1.0), row(2, 3, 1.0)]
    report = assign_advantages([single, one_kept, flat])
    assert all(r.advantage == 0.0 for g in (single, one_kept, flat) for r in g)
    assert report.no_gradient == 2 and report.zero_variance == 1


def test_verl_small_group_rule_by_hand():
    # DUET's released rule: one row = mean 0, std 1; two or more rows normalise over all rows,
    # aborted ones included, even when only one is kept
    single = [row(0, 1, 1.0)]
    single_wrong = [row(1, 2, 0.0)]
    one_kept = [row(2, 3, 1.0), row(2, 3, 0.0, finish="aborted")]   # mean 0.5, std sqrt(0.5)
    all_aborted = [row(3, 4, 1.0, finish="aborted")]
    report = assign_advantages([single, single_wrong, one_kept, all_aborted], eps=1e-6,
                               small_groups="verl")
    assert single[0].advantage == pytest.approx(1.0 / (1.0 + 1e-6), rel=1e-12)
    assert single_wrong[0].advantage == 0.0
    assert one_kept[0].advantage == pytest.approx(0.5 / (np.sqrt(0.5) + 1e-6), rel=1e-12)
    assert one_kept[1].advantage == 0.0 and all_aborted[0].advantage == 0.0
    assert report.no_gradient == 1 and report.zero_variance == 1 and report.rows_with_signal == 2
    # without std normalisation a single row's advantage is its reward exactly
    again = [row(0, 1, 1.0)]
    assign_advantages([again], normalize_std=False, small_groups="verl")
    assert again[0].advantage == 1.0


def test_default_rule_gives_the_same_single_row_no_gradient():
    single = [row(0, 1, 1.0)]
    report = assign_advantages([single])
    assert single[0].advantage == 0.0 and report.no_gradient == 1


def test_advantage_clip_by_hand():
    # one success in 32 rows: (n - 1) / sqrt(n) = 31 / sqrt(32) = 5.48 > 5, failures -1/sqrt(32)
    group = [row(0, 1, 1.0)] + [row(0, 1, 0.0) for _ in range(31)]
    report = assign_advantages([group], eps=0.0, clip=5.0)
    assert group[0].advantage == 5.0
    assert group[1].advantage == pytest.approx(-1.0 / np.sqrt(32))
    assert report.clipped == 1
    # at 8 rows the largest advantage is 7 / sqrt(8) = 2.47: the clip never binds
    small = [row(0, 2, 1.0)] + [row(0, 2, 0.0) for _ in range(7)]
    assert assign_advantages([small], eps=0.0, clip=5.0).clipped == 0
    assert small[0].advantage == pytest.approx(7 / np.sqrt(8))


def test_bad_small_group_rule_is_refused():
    with pytest.raises(ValueError, match="small_groups"):
        assign_advantages([], small_groups="size1")


def test_aborted_rows_enter_the_baseline_but_get_zero_advantage():
    g = [row(0, 1, 1.0), row(0, 1, 0.0), row(0, 1, 0.0, finish="aborted")]
    assign_advantages([g], eps=0.0)
    mean, std = 1 / 3, np.std([1, 0, 0], ddof=1)
    assert g[0].advantage == pytest.approx((1 - mean) / std)
    assert g[1].advantage == pytest.approx((0 - mean) / std)
    assert g[2].advantage == 0.0


def test_a_step_changes_parameters_and_the_loss_is_finite(smoke_policy):
    model, tok = smoke_policy
    import copy
    model = copy.deepcopy(model).train()
    prompts = {0: tuple(tok("1 + 2 =\n")["input_ids"]), 1: tuple(tok("3 + 4 =\n")["input_ids"])}
    rows = []
    for pid, answer in ((0, "1+2=3\n\\boxed{3}"), (1, "3+4=8\n\\boxed{8}")):
        ids = tok(answer)["input_ids"] + [tok.eos_token_id]
        with torch.no_grad():
            seq = torch.tensor([list(prompts[pid]) + ids])
            lp = torch.log_softmax(model(seq).logits[0, len(prompts[pid]) - 1:-1], -1)
            lp = lp.gather(-1, torch.tensor(ids).unsqueeze(-1)).squeeze(-1).numpy()
        rows.append(Rollout(pid, pid, "main", 0, 0, np.array(ids), lp, "eos", 0.0, 1.0))
    rows[0].advantage, rows[1].advantage = 1.0, -1.0
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    loss, stats = policy_loss(model, rows, prompts, tok.pad_token_id,
                              sum(r.n_tokens for r in rows), LossConfig())
    assert torch.isfinite(loss)
    # at ratio 1 the surrogate is -mean(A) over tokens: the two rows have opposite advantages
    n0, n1 = rows[0].n_tokens, rows[1].n_tokens
    assert float(loss.detach()) == pytest.approx(-(n0 - n1) / (n0 + n1), abs=1e-4)
    rows[1].advantage = 0.0   # the direction check below needs only the positive row

    def positive_logprob() -> torch.Tensor:
        seq = torch.tensor([list(prompts[0]) + rows[0].tokens.tolist()])
        lp = torch.log_softmax(model(seq).logits[0, len(prompts[0]) - 1:-1], -1)
        return lp.gather(-1, torch.from_numpy(rows[0].tokens).unsqueeze(-1)).sum()

    opt.zero_grad()
    loss, _ = policy_loss(model, rows, prompts, tok.pad_token_id,
                          sum(r.n_tokens for r in rows), LossConfig())
    loss.backward()
    grad_sq = sum(float((p.grad.double() ** 2).sum()) for p in model.parameters()
                  if p.grad is not None)
    assert grad_sq > 0
    # At ratio 1 the loss is -(sum of the positive row's log-probs) / D, so an SGD step of size lr
    # raises that sum by lr * D * |grad|^2 to first order.  The step is sized from the gradient so
    # that the prediction is small (0.01 nats) whatever weights this machine's warm start has:
    # a fixed lr overshoots on some builds (issue 17) and would test the weights, not the loss.
    denominator = sum(r.n_tokens for r in rows)
    lr = 0.01 / (denominator * grad_sq)
    for group in opt.param_groups:
        group["lr"] = lr
    with torch.no_grad():
        start = float(positive_logprob())
    opt.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    with torch.no_grad():
        gained = float(positive_logprob()) - start
    predicted = lr * denominator * grad_sq
    assert gained > 0
    assert gained == pytest.approx(predicted, rel=0.25)


def test_clipping_caps_the_ratio_for_positive_advantages(smoke_policy):
    model, tok = smoke_policy
    prompts = {0: tuple(tok("1 + 2 =\n")["input_ids"])}
    ids = tok("1+2=3")["input_ids"]
    # stored old log-probs far below the policy's: ratio >> 1+eps, so the clipped term is used
    r = Rollout(0, 0, "main", 0, 0, np.array(ids), np.full(len(ids), -50.0, np.float32), "eos", 1.0)
    r.advantage = 1.0
    loss, stats = policy_loss(model, [r], prompts, tok.pad_token_id, r.n_tokens,
                              LossConfig(clip_low=0.2, clip_high=0.28))
    assert float(loss.detach()) == pytest.approx(-1.28, abs=1e-5)
    assert stats["clip_fraction"] == 1.0


def test_micro_batches_sum_to_the_whole_batch_gradient(smoke_policy):
    import copy
    model, tok = smoke_policy
    model = copy.deepcopy(model)
    prompts = {0: tuple(tok("1 + 2 =\n")["input_ids"]), 1: tuple(tok("13 + 4 + 5 =\n")["input_ids"])}
    rows = []
    for i, (pid, text) in enumerate([(0, "1+2=3"), (1, "13+4=17\n17+5=22"), (0, "1+2=4"),
                                     (1, "13+4=17")]):
        ids = tok(text)["input_ids"]
        r = Rollout(pid, pid, "main", 0, 0, np.array(ids), np.full(len(ids), -2.0, np.float32),
                    "eos", 0.0, weight=1.0 + i)
        r.advantage = (-1.0) ** i
        rows.append(r)
    denominator = sum(r.n_tokens for r in rows)

    def grads(chunks):
        model.zero_grad()
        for chunk in chunks:
            loss, _ = policy_loss(model, chunk, prompts, tok.pad_token_id, denominator, LossConfig())
            loss.backward()
        return torch.cat([p.grad.flatten() for p in model.parameters()])

    whole = grads([rows])
    split = grads([rows[:1], rows[1:3], rows[3:]])
    torch.testing.assert_close(whole, split, rtol=1e-4, atol=1e-6)


def test_recomputed_old_logprobs_make_the_ratio_one(smoke_policy):
    # a row sampled by an older policy (stored log-probs -50): before the recompute its ratio is
    # clipped at 1 + 0.28 (loss -1.28, see above); after it, pi_old is the current policy, the
    # ratio is exactly 1 and the token-mean surrogate is -A
    model, tok = smoke_policy
    prompts = {0: tuple(tok("1 + 2 =\n")["input_ids"]), 1: tuple(tok("13 + 4 =\n")["input_ids"])}
    rows = []
    for pid, text in ((0, "1+2=3"), (1, "13+4=17\n\\boxed{17}")):
        ids = tok(text)["input_ids"]
        r = Rollout(pid, pid, "main", 0, 0, np.array(ids), np.full(len(ids), -50.0, np.float32),
                    "eos", 1.0)
        r.advantage = 1.0
        rows.append(r)
    recompute_old_logprobs(model, rows, prompts, tok.pad_token_id, 1.0, micro_batch_rows=1)
    for r in rows:
        assert r.logprobs.dtype == np.float32 and len(r.logprobs) == r.n_tokens
        assert np.all(r.logprobs < 0) and np.all(r.logprobs > -50)
    cfg = LossConfig(clip_low=0.2, clip_high=0.28)
    loss, stats = policy_loss(model, rows, prompts, tok.pad_token_id,
                              sum(r.n_tokens for r in rows), cfg)
    assert float(loss.detach()) == pytest.approx(-1.0, abs=1e-5)
    assert stats["clip_fraction"] == 0.0
