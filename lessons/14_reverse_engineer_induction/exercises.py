"""Lesson 14 exercises: reverse-engineer the model you trained. Fill in each function, then run

    minillm lesson check 14

Shapes: b = batch, h = heads, P = positions, d = d_model, e = d_head.
"""

from __future__ import annotations

import numpy as np


def head_scores(pattern: np.ndarray, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Exercise 1 (easy, 15 min). Previous-token and induction scores of every head of a layer.

    pattern [b, h, P, P] on tokens [BOS, r_0..r_{T-1}, r_0..r_{T-1}] (T = seq_len, P = 2T + 1).
    prev-token score: mean over queries q = 1 .. P-1 of pattern[:, :, q, q-1].
    induction score: mean over the second copy's queries q = T+1 .. 2T of pattern[:, :, q, q-T+1]
    (the token after the current token's first occurrence).
    Return (prev [h], induction [h]), averaged over the batch and the queries.
    """
    raise NotImplementedError("hint: q = np.arange(1, P); pattern[:, :, q, q - 1].mean(axis=(0, 2)); "
                              "then the same with q = np.arange(T + 1, 2T + 1) and keys q - T + 1")


def composition_score(W_A: np.ndarray, W_B: np.ndarray) -> float:
    """Exercise 2a (easy, 5 min). ‖W_A W_B‖_F / (‖W_A‖_F · ‖W_B‖_F), a float."""
    raise NotImplementedError("hint: np.linalg.norm of a matrix is the Frobenius norm")


def k_composition(W_V0, W_O0, W_Q1, W_K1) -> np.ndarray:
    """Exercise 2b (medium, 20 min). K-composition of each layer-0 head with each layer-1 head.

    W_V0 [h, d, e], W_O0 [h, e, d]: layer 0's value and output weights.
    W_Q1, W_K1 [h, d, e]: layer 1's query and key weights.
    Row-vector convention: head i of layer 0 writes y @ W_OV[i], W_OV = W_V @ W_O [d, d];
    head j of layer 1 scores x_q @ W_QK[j] @ x_kᵀ, W_QK = W_Q @ W_Kᵀ [d, d].
    Return [h, h]: entry [i, j] = composition_score(W_OV[i], W_QK[j].T).
    """
    raise NotImplementedError("hint: W_OV = W_V0 @ W_O0 and W_QK = W_Q1 @ W_K1.transpose(0, 2, 1) are "
                              "batched matmuls; then two loops over heads")


def ablation_effect(model, tokens: np.ndarray, layer: int, head: int, seq_len: int) -> float:
    """Exercise 3 (medium, 20 min). Rise of the second copy's loss when one head is zeroed.

    Zero head `head` of blocks.{layer}.attn.hook_z ([b, P, h, e]) with a forward hook and
    compare the mean loss of the predictions of r_1 .. r_{T-1} in the second copy
    (prediction indices T+1 .. 2T-1; prediction i predicts tokens[:, i+1]) with the clean
    run. Return ablated − clean, in nats.
    """
    raise NotImplementedError("hint: model.run_with_hooks(tokens, fwd_hooks=[(name, fn)]) with fn "
                              "returning a copy of z whose [:, :, head] is 0")
