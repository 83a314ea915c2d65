"""Lesson 01 reference solutions: tokens and embeddings."""

from __future__ import annotations

import numpy as np


def decode_ids(model, ids) -> list[str]:
    """The text of each token id, one string per id."""
    return [model.to_string([int(i)]) for i in np.asarray(ids).reshape(-1)]


def _unit_rows(W: np.ndarray) -> np.ndarray:
    """Each row divided by its length.   [V, d] -> [V, d]"""
    return W / np.linalg.norm(W, axis=1, keepdims=True)


def _rank_by_cosine(W_E: np.ndarray, v: np.ndarray, exclude: set[int], k: int) -> list[int]:
    sims = _unit_rows(W_E) @ (v / np.linalg.norm(v))  # [V]
    order = np.argsort(-sims, kind="stable")
    return [int(i) for i in order if int(i) not in exclude][:k]


def cosine_neighbours(W_E: np.ndarray, token_id: int, k: int = 10) -> list[int]:
    """The k nearest token ids by cosine similarity, excluding the token itself."""
    return _rank_by_cosine(W_E, W_E[token_id], {int(token_id)}, k)


def analogy(W_E: np.ndarray, a: int, b: int, c: int, k: int = 5) -> list[int]:
    """The k best answers to a - b + c by cosine, inputs excluded."""
    v = W_E[a] - W_E[b] + W_E[c]  # [d]
    return _rank_by_cosine(W_E, v, {int(a), int(b), int(c)}, k)


def tying(W_E: np.ndarray, W_U: np.ndarray) -> str:
    """'shared' (same memory), 'equal' (a separate exact copy) or 'untied'."""
    if np.shares_memory(W_E, W_U):
        return "shared"
    if W_U.shape == W_E.T.shape and np.array_equal(W_U, W_E.T):
        return "equal"
    return "untied"
