"""trainer.fastlm computes the transformers model's function on every shipped warm start (logits,
last hidden states, sampled tokens' log-probs, an update's log-probs and gradients), keeps each
row's random stream, and gives the same numbers twice for the same seed."""
import numpy as np
import pytest
import torch

from bench.presets import get_preset
from core.rows import Rollout
from trainer import fastlm, sft
from trainer.engine import HFEngine, RowSpec
from trainer.grpo import LossConfig, _pack, policy_loss, token_logprobs
from trainer.policy import load_policy
from trainer.tasks import build_splits

# fp32 with fused / reordered sums: agreement to ~1e-5 on logits of magnitude ~10
ATOL = 2e-4


def shipped():
    return [name for name in ("smoke", "tiny", "noisy-chain")
            if (sft.shipped_dir(get_preset(name).warm_start) / "warmstart.json").is_file()]


@pytest.fixture(scope="module", params=shipped())
def policy(request):
    preset = get_preset(request.param)
    model, tok = load_policy(sft.shipped_dir(preset.warm_start))
    train, _ = build_splits(preset.train_per_bucket, preset.eval_per_bucket, preset.task_mix)
    # prompts of different lengths, so that prefills are left-padded and updates right-padded
    prompts = sorted({tuple(tok(t.prompt)["input_ids"]) for t in train[:40]}, key=len)
    prompts = [prompts[0], prompts[len(prompts) // 2], prompts[-1]]
    assert len({len(p) for p in prompts}) > 1
    return preset, model.eval(), tok, prompts


def test_the_fast_path_applies_to_every_shipped_warm_start_and_not_elsewhere(policy):
    _, model, _, _ = policy
    assert fastlm.for_model(model) is fastlm.for_model(model) is not None
    assert not fastlm.supports(torch.nn.Linear(2, 2))
    half = type(model)(model.config).to(torch.bfloat16)
    assert not fastlm.supports(half)          # bf16 (the real presets' dtype) keeps transformers


def test_logits_and_last_hidden_state_equal_the_transformers_models(policy):
    _, model, _, prompts = policy
    fast = fastlm.for_model(model)
    width = max(len(p) for p in prompts) + 6
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(2, model.config.vocab_size, (len(prompts), width), generator=g)
    mask = torch.ones_like(ids)
    for i, p in enumerate(prompts):             # left padding of different widths
        mask[i, :width - len(p) - 6] = 0
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask, position_ids=positions,
                    output_hidden_states=True)
        logits, hidden = fast.forward(ids, positions, mask)
        # decoding: prefill all but the last 6 positions, then one token a step
        first, _, cache = fast.prefill(ids[:, :-6], mask[:, :-6], 6)
        steps = [first]
        for s in range(width - 6, width):
            out, last = fast.step(ids[:, s], positions[:, s], cache)
            steps.append(out)
    real = mask.bool()
    torch.testing.assert_close(logits[real], ref.logits[real], atol=ATOL, rtol=0)
    torch.testing.assert_close(hidden[real], ref.hidden_states[-1][real], atol=ATOL, rtol=0)
    torch.testing.assert_close(torch.stack(steps, 1), ref.logits[:, -7:], atol=ATOL, rtol=0)
    torch.testing.assert_close(last, ref.hidden_states[-1][:, -1], atol=ATOL, rtol=0)


def test_generated_log_probs_are_the_transformers_models_and_rows_keep_their_streams(policy):
    preset, model, tok, prompts = policy
    rows = [RowSpec(p, seed=100 * i + k) for i, p in enumerate(prompts) for k in range(4)]
    engine = HFEngine(model, tok, max_new_tokens=preset.max_new_tokens,
                      temperature=preset.temperature, top_p=preset.top_p)
    assert engine.fast is not None
    gens = engine.generate(rows)
    for r, g in zip(rows, gens):                # teacher-forced by transformers' forward
        ids = torch.tensor([list(r.prompt_ids) + g.tokens.tolist()])
        with torch.no_grad():
            logits = model(ids).logits[0, len(r.prompt_ids) - 1:-1] / preset.temperature
        lp = torch.log_softmax(logits, -1).gather(-1, torch.from_numpy(g.tokens)[:, None])[:, 0]
        np.testing.assert_allclose(g.logprobs, lp.numpy(), atol=ATOL)
    # a row's tokens do not depend on its batch: alone, reversed, in batches of two
    alone = [engine.generate([r])[0] for r in rows[:5]]
    pairs = HFEngine(model, tok, max_new_tokens=preset.max_new_tokens,
                     temperature=preset.temperature, top_p=preset.top_p,
                     max_batch_rows=2).generate(rows[::-1])[::-1]
    for other in (alone, pairs):
        for a, b in zip(gens, other):
            assert np.array_equal(a.tokens, b.tokens) and a.finish == b.finish


def test_an_updates_log_probs_and_gradients_equal_the_padded_transformers_batch(policy):
    preset, model, tok, prompts = policy
    engine = HFEngine(model, tok, max_new_tokens=preset.max_new_tokens)
    rows = [RowSpec(p, seed=10 * i + k) for i, p in enumerate(prompts) for k in range(3)]
    prompt_of = dict(enumerate(prompts))
    rng = np.random.default_rng(0)
    rollouts = [Rollout(i // 3, i // 3, "t", 0, 0, g.tokens, g.logprobs - 0.1, g.finish,
                        advantage=float(rng.normal()))
                for i, g in enumerate(engine.generate(rows))]
    fast = fastlm.for_model(model)
    flat = fast.response_logprobs([prompt_of[r.pid] for r in rollouts],
                                  [r.tokens for r in rollouts], 1.0)
    ids, attn, mask, targets, _ = _pack(rollouts, prompt_of, engine.pad_id, "cpu")
    with torch.no_grad():
        padded = token_logprobs(model, ids, attn, targets, 1.0)
    torch.testing.assert_close(flat.detach(), padded[mask > 0], atol=ATOL, rtol=0)

    def gradients(use_fast):
        model.zero_grad()
        with pytest.MonkeyPatch.context() as patch:
            if not use_fast:                    # what for_model says where it does not apply
                patch.setattr(fastlm, "for_model", lambda m: None)
            loss, _ = policy_loss(model, rollouts, prompt_of, engine.pad_id,
                                  sum(r.n_tokens for r in rollouts), LossConfig())
        loss.backward()
        return float(loss.detach()), [p.grad.clone() for p in model.parameters()]
    ref_loss, ref_grads = gradients(False)
    loss, grads = gradients(True)
    assert loss == pytest.approx(ref_loss, abs=1e-5)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-3)
    # same inputs, same numbers, bit for bit
    again, grads_again = gradients(True)
    assert again == loss and all(torch.equal(a, b) for a, b in zip(grads, grads_again))
    model.zero_grad()


def test_same_seed_same_rollouts_bit_for_bit(policy):
    preset, model, tok, prompts = policy
    rows = [RowSpec(p, seed=7 * i + k) for i, p in enumerate(prompts) for k in range(3)]

    def sample():
        return HFEngine(model, tok, max_new_tokens=preset.max_new_tokens,
                        temperature=preset.temperature).generate(rows)
    for a, b in zip(sample(), sample()):
        assert np.array_equal(a.tokens, b.tokens) and np.array_equal(a.logprobs, b.logprobs)
