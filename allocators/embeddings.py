"""Torch-free prompt embeddings: a deterministic hashing fallback for VIP's GP.

VIP (arXiv 2602.01601) embeds prompts with all-MiniLM-L6-v2 (384-d) [code:
``train/vip/cache_embeddings.py``]; that path needs torch and a model download and belongs to the
trainer.  :func:`hashed_embedding` is the cheap stand-in for tests and for users without the
model: character n-grams (3 to 5, inside word boundaries) hashed into ``dim`` buckets with
signed hashing, then L2-normalised, so texts that share many n-grams are close.  It is a lexical
similarity, not a semantic one (harness choice; the papers are silent on fallbacks).  The output
depends only on the text and ``dim`` (scikit-learn's fixed MurmurHash3 seed).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.feature_extraction.text import HashingVectorizer

NGRAM_RANGE = (3, 5)


def hashed_embedding(texts: Sequence[str], dim: int = 384) -> np.ndarray:
    """``(len(texts), dim)`` float32 rows of unit norm (all-zero for a text with no n-gram)."""
    if isinstance(texts, str):
        raise TypeError("hashed_embedding takes a sequence of texts, not one string")
    if dim < 1:
        raise ValueError(f"hashed_embedding: dim must be positive, got {dim}")
    vectorizer = HashingVectorizer(analyzer="char_wb", ngram_range=NGRAM_RANGE, n_features=dim,
                                   alternate_sign=True, norm="l2", lowercase=True)
    if len(texts) == 0:
        return np.zeros((0, dim), dtype=np.float32)
    return vectorizer.transform(list(texts)).toarray().astype(np.float32)
