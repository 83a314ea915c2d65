"""Lesson 03 reference solutions: attention patterns, GQA, previous-token and induction heads."""

from __future__ import annotations

import numpy as np


def pattern_from_qk(q: np.ndarray, k: np.ndarray) -> np.ndarray:
    """One head's causal attention pattern.   q [p, e], k [p, e] (after RoPE) -> [p_query, p_key]"""
    p, e = q.shape
    scores = q @ k.T / np.sqrt(e)  # [p, p]
    scores = np.where(np.triu(np.ones((p, p), dtype=bool), k=1), -np.inf, scores)  # hide the future
    weights = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return weights / weights.sum(axis=-1, keepdims=True)


def kv_head_of(head: int, n_heads: int, n_kv_heads: int) -> int:
    """The kv-head whose keys and values query head `head` uses (heads are grouped in blocks)."""
    return head // (n_heads // n_kv_heads)


def prev_token_score(pattern: np.ndarray) -> np.ndarray:
    """Mean attention from each query to the token just before it.

    pattern [b, h, p, p] -> [h]; queries 1 .. p-1 (query 0 has no previous token).
    """
    p = pattern.shape[-1]
    q = np.arange(1, p)
    return pattern[:, :, q, q - 1].mean(axis=(0, 2))


def induction_score(pattern: np.ndarray, seq_len: int, offset: int = 0) -> np.ndarray:
    """Mean induction-stripe attention on a repeated sequence.

    The tokens are [offset prefix tokens, r_0 .. r_{T-1}, r_0 .. r_{T-1}] with T = seq_len.
    A query in the second copy at position q (token r_i) is scored by its attention to
    position q - T + 1: the token that FOLLOWED r_i in the first copy (r_{i+1}).
    pattern [b, h, P, P] -> [h], averaged over the batch and the T second-copy queries.
    """
    q = np.arange(offset + seq_len, offset + 2 * seq_len)
    return pattern[:, :, q, q - seq_len + 1].mean(axis=(0, 2))
