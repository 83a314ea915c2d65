"""Lesson 02 reference solutions: the forward pass of a Llama block (SmolLM2), by hand.

Shape legend: b = batch, p = positions, d = d_model, h = query heads, kv = key/value heads,
g = h // kv, e = d_head, m = d_mlp.
"""

from __future__ import annotations

import numpy as np


def rms_norm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    """x / sqrt(mean(x²) + eps) * w, over the last axis.   [..., d] -> [..., d]"""
    rms = np.sqrt((x * x).mean(axis=-1, keepdims=True) + eps)  # [..., 1]
    return x / rms * w


def layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    """(x - mean) / sqrt(var + eps) * w + b, biased variance, over the last axis."""
    centered = x - x.mean(axis=-1, keepdims=True)  # [..., d]
    var = (centered * centered).mean(axis=-1, keepdims=True)  # [..., 1]
    return centered / np.sqrt(var + eps) * w + b


def rope(x: np.ndarray, positions: np.ndarray, theta: float) -> np.ndarray:
    """Rotary position embedding, rotate-half layout.   x [b, p, heads, e], positions [p] -> same

    Pair i of a head vector is (x[i], x[i + e/2]); at position t it is rotated by the angle
    t · theta^(-2i/e).
    """
    e = x.shape[-1]
    inv_freq = theta ** (-np.arange(0, e, 2) / e)  # [e/2]
    angles = np.asarray(positions)[:, None] * inv_freq  # [p, e/2]
    cos = np.cos(np.concatenate([angles, angles], axis=-1))[:, None, :]  # [p, 1, e]
    sin = np.sin(np.concatenate([angles, angles], axis=-1))[:, None, :]
    x1, x2 = x[..., : e // 2], x[..., e // 2 :]
    rotated_half = np.concatenate([-x2, x1], axis=-1)  # [b, p, heads, e]
    return x * cos + rotated_half * sin


def attention_pattern(q: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Causal softmax(q·k / sqrt(e)) with grouped-query attention.

    q [b, p, h, e], k [b, p, kv, e] (both after RoPE) -> pattern [b, h, p_query, p_key].
    Query head j uses kv-head j // (h // kv).
    """
    b, p, h, e = q.shape
    k = np.repeat(k, h // k.shape[2], axis=2)  # [b, p, h, e]: kv-head j // g for head j
    scores = np.einsum("bqhe,bkhe->bhqk", q, k) / np.sqrt(e)  # [b, h, p, p]
    future = np.triu(np.ones((p, p), dtype=bool), k=1)  # key after query
    scores = np.where(future, -np.inf, scores)
    scores = scores - scores.max(axis=-1, keepdims=True)
    weights = np.exp(scores)
    return weights / weights.sum(axis=-1, keepdims=True)


def attention(x: np.ndarray, W_Q: np.ndarray, W_K: np.ndarray, W_V: np.ndarray, W_O: np.ndarray,
              theta: float) -> np.ndarray:
    """A whole attention sublayer on the normalised stream x [b, p, d] -> [b, p, d].

    W_Q [h, d, e], W_K / W_V [kv, d, e] (the stored heads, attn._W_K), W_O [h, e, d];
    positions 0 .. p-1.
    """
    p = x.shape[1]
    positions = np.arange(p)
    q = rope(np.einsum("bpd,hde->bphe", x, W_Q), positions, theta)  # [b, p, h, e]
    k = rope(np.einsum("bpd,kde->bpke", x, W_K), positions, theta)  # [b, p, kv, e]
    v = np.einsum("bpd,kde->bpke", x, W_V)  # [b, p, kv, e]
    pattern = attention_pattern(q, k)  # [b, h, p, p]
    v = np.repeat(v, W_Q.shape[0] // W_K.shape[0], axis=2)  # [b, p, h, e]
    z = np.einsum("bhqk,bkhe->bqhe", pattern, v)  # [b, p, h, e]
    return np.einsum("bphe,hed->bpd", z, W_O)  # [b, p, d]


def swiglu_mlp(x: np.ndarray, W_gate: np.ndarray, W_in: np.ndarray, W_out: np.ndarray) -> np.ndarray:
    """W_out · (silu(x W_gate) ⊙ (x W_in)).   x [b, p, d]; W_gate, W_in [d, m]; W_out [m, d]"""
    gate = x @ W_gate  # [b, p, m]
    silu = gate * 0.5 * (1.0 + np.tanh(0.5 * gate))  # z · sigmoid(z), without exp overflow
    return (silu * (x @ W_in)) @ W_out  # [b, p, d]


def block(x: np.ndarray, blk, eps: float, theta: float) -> np.ndarray:
    """One pre-norm Llama block: x + attn(rms(x)), then + mlp(rms(.)).   [b, p, d] -> [b, p, d]

    blk: model.blocks[l] (blk.ln1.w, blk.attn.W_Q, ..., blk.mlp.W_gate, W_in, W_out).
    """
    a = blk.attn
    x = x + attention(rms_norm(x, blk.ln1.w, eps), a.W_Q, a._W_K, a._W_V, a.W_O, theta)  # resid_mid
    m = blk.mlp
    return x + swiglu_mlp(rms_norm(x, blk.ln2.w, eps), m.W_gate, m.W_in, m.W_out)  # resid_post
