"""Prompt features: the paper's MiniLM embedding (offline), the hashed fallback, log-prob means."""
import numpy as np
import pytest

from trainer.features import FeatureError, embed, prompt_logprob_mean

TEXTS = ["12 + 7 =\n", "3 - 4 + 5 =\n", "12 + 8 =\n"]


def test_minilm_embeds_offline_unit_vectors_and_caches_them():
    pytest.importorskip("sentence_transformers")
    first = embed(TEXTS, "minilm")
    assert len(first) == 3 and first[0].shape == (384,)
    np.testing.assert_allclose([np.linalg.norm(v) for v in first], 1.0, atol=1e-5)
    # near-identical sums sit closer than a different expression
    assert float(first[0] @ first[2]) > float(first[0] @ first[1])
    np.testing.assert_array_equal(np.stack(first), np.stack(embed(TEXTS, "minilm")))


def test_hashed_fallback_is_deterministic_and_explicit():
    a, b = embed(TEXTS, "hashed"), embed(TEXTS, "hashed")
    np.testing.assert_array_equal(np.stack(a), np.stack(b))
    with pytest.raises(FeatureError, match="unknown embedding"):
        embed(TEXTS, "glove")


def test_prompt_logprob_mean_is_the_mean_token_logprob(smoke_policy):
    import torch
    model, tok = smoke_policy
    values = prompt_logprob_mean(model, tok, TEXTS)
    ids = torch.tensor([tok(TEXTS[1])["input_ids"]])
    with torch.no_grad():
        lp = torch.log_softmax(model(ids).logits[0, :-1], -1).gather(-1, ids[0, 1:, None])
    assert values[1] == pytest.approx(float(lp.mean()), abs=1e-5)
    assert all(v < 0 for v in values)
