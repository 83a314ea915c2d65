"""Lesson 03 exercises: attention patterns, grouped-query attention, induction heads.

Fill in each function, then grade with

    minillm lesson check 3
"""

from __future__ import annotations

import numpy as np


def pattern_from_qk(q: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Exercise 1 (easy, 15 min). One head's causal attention pattern from its (rotated) queries and keys.

    q [p, e], k [p, e] -> pattern [p_query, p_key]: row q is softmax over keys of
    q·k / sqrt(e), with keys after the query masked out. Each row sums to 1.
    """
    raise NotImplementedError("hint: scores = q @ k.T / np.sqrt(e); np.triu(..., k=1) marks the "
                              "future; -inf there, then a softmax along the last axis")


def kv_head_of(head: int, n_heads: int, n_kv_heads: int) -> int:
    """Exercise 2 (easy, 5 min). Which kv-head query head `head` reads its keys and values from.

    SmolLM2: 9 query heads, 3 kv-heads; consecutive query heads share a kv-head.
    """
    raise NotImplementedError("hint: the group size is n_heads // n_kv_heads; heads 0..g-1 use "
                              "kv-head 0, the next g heads kv-head 1, ...")


def prev_token_score(pattern: np.ndarray) -> np.ndarray:
    """Exercise 3 (medium, 15 min). How much each head attends to the previous token.

    pattern [b, h, p, p] -> [h]: the mean over batch and queries q = 1 .. p-1 of pattern[.., q, q-1].
    """
    raise NotImplementedError("hint: q = np.arange(1, p); pattern[:, :, q, q - 1] picks the "
                              "sub-diagonal; average over axes 0 and 2")


def induction_score(pattern: np.ndarray, seq_len: int, offset: int = 0) -> np.ndarray:
    """Exercise 4 (medium, 25 min). How much each head attends along the induction stripe of a repeated sequence.

    Tokens: [offset prefix tokens (e.g. a BOS), r_0 .. r_{T-1}, r_0 .. r_{T-1}], T = seq_len.
    For each query q in the SECOND copy (positions offset+T .. offset+2T-1) the induction
    target is the token that came right after the same token in the first copy.
    pattern [b, h, P, P] -> [h]: mean attention to that target, over batch and those queries.
    """
    raise NotImplementedError("hint: the query at position q holds the same token as position "
                              "q - T; the induction head attends to the NEXT one, q - T + 1")
