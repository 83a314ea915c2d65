"""Reading an induction circuit: head scores, K-composition, ablation (lesson 14's references).

    from minillm.course import circuits
    prev, ind = circuits.head_scores(cache["blocks.0.attn.hook_pattern"], seq_len)
    kc = circuits.k_composition(W_V0, W_O0, W_Q1, W_K1)     # [h0, h1]

Composition scores follow Elhage et al. (2021), "A Mathematical Framework for
Transformer Circuits", in minillm's row-vector convention.
"""

from __future__ import annotations

import numpy as np

from minillm.course.training import per_position_loss


def head_scores(pattern: np.ndarray, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Previous-token and induction scores of every head of one layer.

    pattern [b, h, P, P] on tokens [BOS, r_0..r_{T-1}, r_0..r_{T-1}] (T = seq_len, P = 2T + 1).
    prev-token score: mean over queries q = 1 .. P-1 of pattern[q, q-1].
    induction score: mean over the second copy's queries q = T+1 .. 2T of pattern[q, q-T+1]
    (token r_i at q attends to the token AFTER r_i's first occurrence, at q - T + 1).
    Returns (prev [h], induction [h]), both averaged over the batch.
    """
    P = pattern.shape[-1]
    q = np.arange(1, P)
    prev = pattern[:, :, q, q - 1].mean(axis=(0, 2))
    q = np.arange(seq_len + 1, 2 * seq_len + 1)
    induction = pattern[:, :, q, q - seq_len + 1].mean(axis=(0, 2))
    return prev, induction


def composition_score(W_A: np.ndarray, W_B: np.ndarray) -> float:
    """‖W_A W_B‖_F / (‖W_A‖_F ‖W_B‖_F): how much of W_B's input space W_A writes into."""
    return float(np.linalg.norm(W_A @ W_B) / (np.linalg.norm(W_A) * np.linalg.norm(W_B)))


def k_composition(W_V0, W_O0, W_Q1, W_K1) -> np.ndarray:
    """K-composition of every layer-0 head (rows) with every layer-1 head (columns).

    W_V0 [h, d, e], W_O0 [h, e, d] (layer 0); W_Q1, W_K1 [h, d, e] (layer 1). Row-vector
    convention, as minillm: a head writes x @ W_OV with W_OV = W_V @ W_O [d, d]; a layer-1
    score is x_q @ W_QK @ x_kᵀ with W_QK = W_Q @ W_Kᵀ [d, d]. When layer 0's output reaches
    layer 1's keys, x_k = y @ W_OV and the score reads y through W_OV @ W_QKᵀ.
    -> [h0, h1]: composition_score(W_OV[i], W_QK[j].T).
    """
    W_OV = W_V0 @ W_O0  # [h, d, d]
    W_QK = W_Q1 @ W_K1.transpose(0, 2, 1)  # [h, d, d]
    return np.array([[composition_score(ov, qk.T) for qk in W_QK] for ov in W_OV])


def ablation_effect(model, tokens: np.ndarray, layer: int, head: int, seq_len: int) -> float:
    """How much the second copy's loss rises when one head's output is zeroed (nats).

    Zero the head's slice of blocks.{layer}.attn.hook_z with a hook; loss on the
    predictions of r_1 .. r_{T-1} in the second copy (prediction indices T+1 .. 2T-1).
    """

    def second_copy_loss(logits: np.ndarray) -> float:
        return float(per_position_loss(logits, tokens)[:, seq_len + 1 :].mean())  # [b, 2T] -> second copy

    def zero_head(z, hook):
        z = z.copy()
        z[:, :, head] = 0.0
        return z

    clean = second_copy_loss(model(tokens))
    hooks = [(f"blocks.{layer}.attn.hook_z", zero_head)]
    ablated = second_copy_loss(model.run_with_hooks(tokens, fwd_hooks=hooks))
    return ablated - clean
