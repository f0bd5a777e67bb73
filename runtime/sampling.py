"""Sampling a token from logits, as transformers' warpers do: temperature, then
top-k, then top-p (nucleus), then a draw from the softmax with a seeded numpy
generator.

    sample(logits, np.random.default_rng(7), temperature=0.9, top_k=50, top_p=0.95)  -> array([412])
"""

from __future__ import annotations

import numpy as np

__all__ = ["sample"]


def sample(logits: np.ndarray, rng: np.random.Generator, temperature: float = 1.0, top_k: int = 0,
           top_p: float = 1.0) -> np.ndarray:
    """One token per row of ``logits`` ``[batch, vocab]``: temperature, then top-k, then
    top-p (nucleus, at least one token kept), then a draw from the softmax."""
    x = logits.astype(np.float64) / float(temperature)
    vocab = x.shape[-1]
    if 0 < top_k < vocab:
        kth = np.partition(x, vocab - top_k, axis=-1)[:, vocab - top_k][:, None]
        x = np.where(x < kth, -np.inf, x)
    if top_p < 1.0:
        order = np.argsort(x, axis=-1, kind="stable")  # ascending, as transformers sorts
        sx = np.take_along_axis(x, order, axis=-1)
        p = np.exp(sx - sx[:, -1:])
        p /= p.sum(-1, keepdims=True)
        remove = np.cumsum(p, axis=-1) <= 1.0 - top_p
        remove[:, -1] = False
        np.put_along_axis(x, order, np.where(remove, -np.inf, sx), axis=-1)
    p = np.exp(x - x.max(-1, keepdims=True))
    c = np.cumsum(p, axis=-1)
    u = rng.random(x.shape[0])[:, None] * c[:, -1:]
    return np.minimum((c <= u).sum(-1), vocab - 1).astype(np.int64)
