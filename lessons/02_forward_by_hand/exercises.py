"""Lesson 02 exercises: the forward pass of a Llama block (SmolLM2), by hand, in NumPy.

Fill in each function, then grade with

    minillm lesson check 2

Each check feeds your function real SmolLM2 activations (from run_with_cache) and compares
its output with what minillm computed. Later functions may call earlier ones.

Shape legend: b = batch, p = positions, d = d_model, h = query heads, kv = key/value heads,
g = h // kv, e = d_head, m = d_mlp.
"""

from __future__ import annotations

import numpy as np


def rms_norm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    """Exercise 1 (easy, 10 min). RMSNorm over the last axis: x / sqrt(mean(x²) + eps) * w.   [..., d] -> [..., d]"""
    raise NotImplementedError("hint: rms = np.sqrt((x * x).mean(axis=-1, keepdims=True) + eps); "
                              "no centring, and multiply by the gain w")


def layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    """Exercise 2 (easy, 10 min). LayerNorm over the last axis (GPT-2): (x - mean) / sqrt(var + eps) * w + b.

    var is the biased variance (divide by d, not d - 1).   [..., d] -> [..., d]
    """
    raise NotImplementedError("hint: centre first, then divide by sqrt(mean(centred²) + eps), then "
                              "gain and bias")


def rope(x: np.ndarray, positions: np.ndarray, theta: float) -> np.ndarray:
    """Exercise 3 (medium, 15 min). Rotary position embedding in Hugging Face's rotate-half layout.

    x [b, p, heads, e], positions [p] (ints) -> [b, p, heads, e].
    Pair i (0 <= i < e/2) is (x[..., i], x[..., i + e/2]); at position t it is rotated by
    the angle t · theta^(-2i/e):   out = x · cos + rotate_half(x) · sin,
    with rotate_half([x1, x2]) = [-x2, x1] and each angle used for both halves.
    """
    raise NotImplementedError("hint: inv_freq = theta ** (-np.arange(0, e, 2) / e); angles = "
                              "positions[:, None] * inv_freq, then concatenate [angles, angles]")


def attention_pattern(q: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Exercise 4 (medium, 15 min). Causal attention pattern with grouped-query attention.

    q [b, p, h, e] and k [b, p, kv, e], both after RoPE -> pattern [b, h, p_query, p_key]:
    softmax over keys of q·k / sqrt(e), where query j may only see keys <= j.
    Query head j uses kv-head j // (h // kv).
    """
    raise NotImplementedError("hint: np.repeat(k, h // kv, axis=2), einsum 'bqhe,bkhe->bhqk', "
                              "divide by sqrt(e), set future keys (np.triu(..., k=1)) to -inf, softmax")


def attention(x: np.ndarray, W_Q: np.ndarray, W_K: np.ndarray, W_V: np.ndarray, W_O: np.ndarray,
              theta: float) -> np.ndarray:
    """Exercise 5 (hard, 20 min). A whole attention sublayer on the normalised stream.   x [b, p, d] -> [b, p, d]

    W_Q [h, d, e], W_K and W_V [kv, d, e] (the stored key/value heads: attn._W_K, attn._W_V),
    W_O [h, e, d]; positions are 0 .. p-1.
    q, k = x·W_Q, x·W_K, both rotated by RoPE; v = x·W_V (not rotated); pattern from q, k;
    z = pattern-weighted sum of v (per query head, using its kv-head); output = Σ_heads z·W_O.
    """
    raise NotImplementedError("hint: einsum 'bpd,hde->bphe' for q, then your rope and "
                              "attention_pattern; einsum 'bhqk,bkhe->bqhe' for z; 'bphe,hed->bpd' out")


def swiglu_mlp(x: np.ndarray, W_gate: np.ndarray, W_in: np.ndarray, W_out: np.ndarray) -> np.ndarray:
    """Exercise 6 (easy, 10 min). SmolLM2's gated MLP: (silu(x·W_gate) ⊙ (x·W_in))·W_out, with silu(z) = z·sigmoid(z).

    x [b, p, d]; W_gate, W_in [d, m]; W_out [m, d] -> [b, p, d]
    """
    raise NotImplementedError("hint: the nonlinearity goes on the GATE branch only; the W_in "
                              "branch stays linear")


def block(x: np.ndarray, blk, eps: float, theta: float) -> np.ndarray:
    """Exercise 7 (medium, 10 min). One pre-norm Llama block.   resid_pre [b, p, d] -> resid_post [b, p, d]

    resid_mid = x + attention(rms_norm(x, ln1.w)),  resid_post = resid_mid + mlp(rms_norm(resid_mid, ln2.w)).
    blk is model.blocks[l]: blk.ln1.w, blk.attn.W_Q / _W_K / _W_V / W_O, blk.ln2.w,
    blk.mlp.W_gate / W_in / W_out.
    """
    raise NotImplementedError("hint: two residual additions; each sublayer reads the NORMALISED "
                              "stream and its output is added to the UN-normalised one")
