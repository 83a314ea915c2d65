"""A colleague's NumPy port of a Llama-family model (SmolLM2, TinyLlama), written from the paper.

It reads the weights of a loaded minillm model and records its intermediate activations
under minillm's hook names, so that `minillm.verify` can line them up with minillm's own:

    logits, acts = port.forward(model, tokens)      # acts: {hook name: array}

The colleague says: "it runs, the shapes are right, and what it predicts reads like
English". Lesson 12 asks you to find out whether it is right.

Shape legend: b = batch, p = positions, d = d_model, h = query heads, kv = key/value heads,
e = d_head, m = d_mlp, V = vocabulary.
"""

from __future__ import annotations

import numpy as np


def rms_norm(x: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """RMSNorm without the gain.   x [..., d] -> (normalized [..., d], scale [..., 1]: the rms)"""
    scale = np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)
    return x / scale, scale


def rope_tables(p: int, e: int, theta: float, dtype) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin of the rotary angles, each frequency used for both halves.   -> 2× [p, 1, e]"""
    inv_freq = theta ** (-np.arange(0, e, 2, dtype=np.float64) / e)  # [e/2]
    angles = np.arange(p, dtype=np.float64)[:, None] * inv_freq  # [p, e/2]
    angles = np.concatenate([angles, angles], axis=-1)[:, None, :]  # [p, 1, e]
    return np.cos(angles).astype(dtype), np.sin(angles).astype(dtype)


def rotate(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """Rotary embedding, rotate-half layout.   x [b, p, heads, e] -> same"""
    half = x.shape[-1] // 2
    rotated = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos + rotated * sin


def repeat_kv(x: np.ndarray, n_rep: int) -> np.ndarray:
    """Share each key/value head among n_rep query heads.   [b, p, kv, e] -> [b, p, kv·n_rep, e]"""
    return np.tile(x, (1, 1, n_rep, 1))


def softmax(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis; -inf entries get 0."""
    x = x - x.max(axis=-1, keepdims=True)
    w = np.exp(x)
    return w / w.sum(axis=-1, keepdims=True)


def silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


def attention(x: np.ndarray, blk, cfg, cos, sin, acts: dict, name: str) -> np.ndarray:
    """Causal grouped-query self-attention on the normalised stream.   [b, p, d] -> [b, p, d]"""
    a = blk.attn
    b, p, _ = x.shape
    q = acts[f"{name}.hook_q"] = np.einsum("bpd,hde->bphe", x, a.W_Q, optimize=True)  # [b, p, h, e]
    k = acts[f"{name}.hook_k"] = np.einsum("bpd,kde->bpke", x, a._W_K, optimize=True)  # [b, p, kv, e]
    v = acts[f"{name}.hook_v"] = np.einsum("bpd,kde->bpke", x, a._W_V, optimize=True)
    q = acts[f"{name}.hook_rot_q"] = rotate(q, cos, sin)
    k = acts[f"{name}.hook_rot_k"] = rotate(k, cos, sin)
    n_rep = cfg.n_heads // cfg.n_kv_heads
    k, v = repeat_kv(k, n_rep), repeat_kv(v, n_rep)  # [b, p, h, e]
    scores = np.einsum("bqhe,bkhe->bhqk", q, k, optimize=True) / np.sqrt(cfg.d_head).astype(x.dtype)
    future = np.triu(np.ones((p, p), dtype=bool), k=1)
    scores = acts[f"{name}.hook_attn_scores"] = np.where(future, -np.inf, scores).astype(x.dtype)
    pattern = acts[f"{name}.hook_pattern"] = softmax(scores)
    z = acts[f"{name}.hook_z"] = np.einsum("bhqk,bkhe->bqhe", pattern, v, optimize=True)  # [b, p, h, e]
    return np.einsum("bphe,hed->bpd", z, a.W_O, optimize=True)


def mlp(x: np.ndarray, blk, acts: dict, name: str) -> np.ndarray:
    """SwiGLU: (silu(x W_gate) * (x W_in)) W_out.   [b, p, d] -> [b, p, d]"""
    pre = acts[f"{name}.hook_pre"] = x @ blk.mlp.W_gate  # [b, p, m]
    pre_linear = acts[f"{name}.hook_pre_linear"] = x @ blk.mlp.W_in
    post = acts[f"{name}.hook_post"] = silu(pre) * pre_linear
    return post @ blk.mlp.W_out


def forward(model, tokens: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The whole model.   tokens [b, p] -> (logits [b, p, V], {hook name: activation})"""
    cfg, acts = model.cfg, {}
    tokens = np.asarray(tokens)
    x = acts["hook_embed"] = model.embed.W_E[tokens]  # [b, p, d]
    cos, sin = rope_tables(tokens.shape[1], cfg.d_head, cfg.rope_theta, x.dtype)
    for l, blk in enumerate(model.blocks):
        name = f"blocks.{l}"
        acts[f"{name}.hook_resid_pre"] = x
        n, acts[f"{name}.ln1.hook_scale"] = rms_norm(x, cfg.eps)
        acts[f"{name}.ln1.hook_normalized"] = n
        attn_out = acts[f"{name}.hook_attn_out"] = attention(n * blk.ln1.w, blk, cfg, cos, sin, acts,
                                                             f"{name}.attn")
        x = acts[f"{name}.hook_resid_mid"] = x + attn_out
        n, acts[f"{name}.ln2.hook_scale"] = rms_norm(x, cfg.eps)
        acts[f"{name}.ln2.hook_normalized"] = n
        mlp_out = acts[f"{name}.hook_mlp_out"] = mlp(n * blk.ln2.w, blk, acts, f"{name}.mlp")
        x = acts[f"{name}.hook_resid_post"] = x + mlp_out
    n, acts["ln_final.hook_scale"] = rms_norm(x, cfg.eps)
    acts["ln_final.hook_normalized"] = n
    out = acts["ln_final.out"] = n * model.ln_final.w  # what meets the unembedding
    logits = acts["hook_logits"] = out @ model.unembed.W_U  # [b, p, V]
    return logits, acts
