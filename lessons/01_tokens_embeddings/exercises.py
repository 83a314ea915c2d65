"""Lesson 01 exercises: tokens and embeddings. Fill in each function, then run

    minillm lesson check 1

Shapes: V = vocabulary size, d = d_model.
"""

from __future__ import annotations

import numpy as np


def decode_ids(model, ids) -> list[str]:
    """Exercise 1 (easy, 5 min). The text of each token id, one string per id (special tokens included, as written).

    ids: a sequence of ints (or a 1-D int array).   -> list of len(ids) strings
    Example (SmolLM2): [504, 713, 216, 34] -> ['The', ' year', ' ', '2']
    """
    raise NotImplementedError("hint: decode one id at a time with model.to_string([i])")


def cosine_neighbours(W_E: np.ndarray, token_id: int, k: int = 10) -> list[int]:
    """Exercise 2 (easy, 10 min). The k token ids whose embedding rows have the highest cosine similarity with
    W_E[token_id], best first, NOT including token_id itself.

    W_E [V, d].   -> list of k ints
    """
    raise NotImplementedError("hint: divide every row by its norm (np.linalg.norm(..., axis=1, "
                              "keepdims=True)), one matrix-vector product, then np.argsort(-sims)")


def analogy(W_E: np.ndarray, a: int, b: int, c: int, k: int = 5) -> list[int]:
    """Exercise 3 (easy, 10 min). Answers to a − b + c (king − man + woman): the k ids most cosine-similar to
    W_E[a] - W_E[b] + W_E[c], best first, excluding a, b and c.

    Example: analogy(W_E, king, man, woman) -> [queen, ...]
    """
    raise NotImplementedError("hint: build v = W_E[a] - W_E[b] + W_E[c], rank all rows by cosine "
                              "with v, and skip the three input ids")


def tying(W_E: np.ndarray, W_U: np.ndarray) -> str:
    """Exercise 4 (easy, 5 min). How the unembedding W_U [d, V] relates to the embedding W_E [V, d]:

    "shared"  W_U is W_E transposed in the same memory (a tied model: one write changes both)
    "equal"   separate memory, but W_U == W_E.T exactly (e.g. after minillm.edits.untie)
    "untied"  anything else (e.g. TinyLlama: a separately trained W_U)
    """
    raise NotImplementedError("hint: np.shares_memory(W_E, W_U) first, then the shapes and "
                              "np.array_equal(W_U, W_E.T)")
