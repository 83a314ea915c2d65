"""The math of a transformer, as pure functions over arrays.

Nothing here knows about models, layers or hooks: each function takes its
inputs and parameters as arguments and returns new arrays (never writing into
its inputs). `model.py` wires these together.

Shape legend: b = batch, p = query positions, P = key positions,
d = d_model, h = query heads, kv = key/value heads, g = h // kv (heads per
kv-head), e = d_head, m = d_mlp, V = vocabulary.
"""

from __future__ import annotations

import math

import numpy as np

from minillm.config import RopeScaling

# --- linear maps and norms ---------------------------------------------------------------


def linear(x: np.ndarray, W: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """x @ W (+ b).   [..., n_in] @ [n_in, n_out] -> [..., n_out]

    The leading axes are flattened first so that one BLAS GEMM does all of
    them (a batched matmul would call the GEMM once per batch row).
    """
    out = (x.reshape(-1, x.shape[-1]) @ W).reshape(*x.shape[:-1], W.shape[-1])
    return out if b is None else out + b


def layer_norm_parts(x: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """LayerNorm without its gain: returns (x - mean(x), std(x)).

    [..., d] -> ([..., d], [..., 1]).   normalized = centered / scale
    (TransformerLens's convention: the scale is the divisor).
    """
    centered = x - x.mean(axis=-1, keepdims=True)
    scale = np.sqrt((centered * centered).mean(axis=-1, keepdims=True) + eps)
    return centered, scale.astype(x.dtype, copy=False)


def rms_norm_parts(x: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """RMSNorm without its gain: returns (x, rms(x)). No centring.

    [..., d] -> ([..., d], [..., 1]).   normalized = x / scale.
    """
    scale = np.sqrt((x * x).mean(axis=-1, keepdims=True) + eps)
    return x, scale.astype(x.dtype, copy=False)


# --- activations ---------------------------------------------------------------------------


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    """GPT-2's GELU, tanh approximation: 0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³)))."""
    c = np.sqrt(2.0 / np.pi).astype(x.dtype)
    return 0.5 * x * (1.0 + np.tanh(c * (x + 0.044715 * x * x * x)))


erf = np.frompyfunc(math.erf, 1, 1)  # NumPy has no erf; Python's is accurate to ~1 ulp


def gelu_erf(x: np.ndarray) -> np.ndarray:
    """The exact GELU (Pythia): x · Φ(x) = 0.5 x (1 + erf(x / √2)).

    erf runs element by element through Python's math.erf: exact in float64
    and float32 alike, and slower than the tanh approximation.
    """
    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0).astype(x.dtype)).astype(x.dtype))


def silu(x: np.ndarray) -> np.ndarray:
    """SiLU (swish): x · sigmoid(x), with sigmoid(x) = (1 + tanh(x / 2)) / 2 (no overflow)."""
    return x * (0.5 * (1.0 + np.tanh(0.5 * x)))


ACTIVATIONS = {"gelu_tanh": gelu_tanh, "gelu_erf": gelu_erf, "silu": silu}


def softcap(x: np.ndarray, cap: float) -> np.ndarray:
    """Soft-capping (Gemma 2): cap · tanh(x / cap). Near 0 the identity, never past ±cap."""
    c = np.asarray(cap, x.dtype)
    return c * np.tanh(x / c)


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """exp(x) / Σ exp(x), shifted by the max for stability; -inf entries get 0."""
    shifted = x - x.max(axis=axis, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=axis, keepdims=True)


def log_softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def next_token_nll(logits: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """Cross-entropy of each next-token prediction, in nats.   [b, p, V], [b, p] -> [b, p-1]

    logits[:, i] predicts tokens[:, i + 1]:  nll = logsumexp(logits[:, i]) - logits[:, i, target].
    Computed in chunks of positions so that no second [b, p, V] array is made.
    """
    targets = tokens[:, 1:]  # [b, p-1]
    out = np.empty(targets.shape, logits.dtype)
    step = max(1, (1 << 22) // max(1, logits.shape[0] * logits.shape[-1]))  # ~16 MB per chunk
    for i in range(0, targets.shape[1], step):
        x = logits[:, i : min(i + step, targets.shape[1])]  # [b, c, V]
        top = x.max(axis=-1, keepdims=True)  # [b, c, 1]
        lse = top[..., 0] + np.log(np.exp(x - top).sum(axis=-1))  # [b, c]
        picked = np.take_along_axis(x, targets[:, i : i + step, None], axis=-1)[..., 0]  # [b, c]
        out[:, i : i + step] = lse - picked
    return out


# --- rotary position embeddings (RoPE) -----------------------------------------------------


def rope_inv_freq(
    rotary_dim: int, theta: float, scaling: RopeScaling | None = None, long: bool = False
) -> np.ndarray:
    """The rotary_dim/2 rotation frequencies θ^(-2i/rotary_dim), optionally scaled.   -> [r/2]

    rotary_dim is d_head, or its leading fraction when only part of each head
    rotates (Pythia). Scaling, by kind:
    llama3:   high frequencies kept, low frequencies (wavelength > original
              context / low_freq_factor) divided by `factor`, linear blend between;
    linear:   every frequency divided by `factor`;
    longrope: frequency i divided by short_factor[i], or by long_factor[i] when
              `long` (the sequence is longer than the original context).
    """
    inv_freq = 1.0 / theta ** (np.arange(0, rotary_dim, 2, dtype=np.float64) / rotary_dim)
    if scaling is None:
        return inv_freq
    if scaling.kind == "linear":
        return inv_freq / scaling.factor
    if scaling.kind == "longrope":
        return inv_freq / np.array(scaling.long_factor if long else scaling.short_factor)
    old_ctx = scaling.original_max_position_embeddings
    low_wavelen = old_ctx / scaling.low_freq_factor
    high_wavelen = old_ctx / scaling.high_freq_factor
    wavelen = 2 * np.pi / inv_freq
    smooth = (old_ctx / wavelen - scaling.low_freq_factor) / (
        scaling.high_freq_factor - scaling.low_freq_factor
    )
    blended = (1 - smooth) * inv_freq / scaling.factor + smooth * inv_freq
    scaled = np.where(wavelen > low_wavelen, inv_freq / scaling.factor, inv_freq)
    middle = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return np.where(middle, blended, scaled)


def rope_cos_sin(
    positions: np.ndarray, inv_freq: np.ndarray, dtype, attention_factor: float = 1.0
) -> tuple[np.ndarray, ...]:
    """cos and sin of every rotation angle.   positions [b, p] -> ([b, p, 1, r], [b, p, 1, r])

    Angles are computed in float64, then rounded once to the model's dtype.
    Hugging Face's rotate-half layout: the first and second halves of the
    rotated dims form the pairs, so each frequency appears twice. LongRoPE
    (Phi-3) multiplies both by an `attention_factor`.
    """
    angles = positions[..., None].astype(np.float64) * inv_freq  # [b, p, r/2]
    angles = np.concatenate([angles, angles], axis=-1)[:, :, None, :]  # [b, p, 1, r]
    c = attention_factor
    return (np.cos(angles) * c).astype(dtype), (np.sin(angles) * c).astype(dtype)


def rotate_half(x: np.ndarray) -> np.ndarray:
    """[x1, x2] -> [-x2, x1] on the last axis (x1, x2 its two halves)."""
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def apply_rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """Rotate each (x_i, x_{i+r/2}) pair by its angle.   [b, p, heads, e] -> same

    r = cos.shape[-1] is the number of rotated dims: all e of them, or (partial
    rotary, Pythia) the first r, the rest passing through unchanged.
    """
    r = cos.shape[-1]
    if r == x.shape[-1]:
        return x * cos + rotate_half(x) * sin
    rot = x[..., :r]
    return np.concatenate([rot * cos + rotate_half(rot) * sin, x[..., r:]], axis=-1)


# --- attention -----------------------------------------------------------------------------


def attention_mask(
    q_slots: np.ndarray,
    k_slots: np.ndarray,
    key_padding: np.ndarray | None = None,
    sliding_window: int | None = None,
) -> np.ndarray:
    """Which keys each query may attend to.   -> bool [b or 1, 1, p, P]

    q_slots [p] and k_slots [P] are indices in the sequence (padding included).
    A query sees keys at or before its own slot (causal), that are not
    padding (key_padding [b, P], 1 = real token), and, with a sliding window
    w, that are fewer than w slots back. A query always sees itself, so that
    padding queries (which nobody reads) have a well-defined softmax.
    """
    allowed = k_slots[None, :] <= q_slots[:, None]  # [p, P]
    if sliding_window is not None:
        allowed &= q_slots[:, None] - k_slots[None, :] < sliding_window
    allowed = allowed[None, None]  # [1, 1, p, P]
    if key_padding is not None:
        allowed = allowed & (key_padding[:, None, None, :] != 0)  # [b, 1, p, P]
        allowed |= q_slots[:, None] == k_slots[None, :]
    return allowed


class KeyMask:
    """Which keys each query may attend to, built for a block of queries when needed.

    The full mask of a long prompt is [b, 1, p, P] booleans (64 MiB at 8192 tokens);
    attention in query blocks asks only for the rows of its block.
    """

    def __init__(self, q_slots: np.ndarray, k_slots: np.ndarray,
                 key_padding: np.ndarray | None = None, sliding_window: int | None = None):
        self.q_slots, self.k_slots = q_slots, k_slots
        self.key_padding, self.sliding_window = key_padding, sliding_window

    def rows(self, start: int = 0, stop: int | None = None, keys: int | None = None) -> np.ndarray:
        """attention_mask for queries start:stop and the first `keys` keys.   -> bool [b or 1, 1, q, k]"""
        padding = None if self.key_padding is None else self.key_padding[:, :keys]
        return attention_mask(self.q_slots[start:stop], self.k_slots[:keys], padding,
                              self.sliding_window)


def attention_scores(q: np.ndarray, k: np.ndarray, scalar: float | None = None) -> np.ndarray:
    """Scaled dot products q·k / √e, with grouped-query attention.

    q [b, p, h, e], k [b, kv, P, e] -> scores [b, h, p, P]
    With `scalar` (Gemma's query_pre_attn_scalar): q·k · scalar^(-1/2) instead.
    Query head j uses kv-head j // g. Same as
    np.einsum("bpkge,bkPe->bkgpP", q.reshape(b, p, kv, g, e), k).reshape(b, h, p, P)
    """
    b, p, h, e = q.shape
    kv = k.shape[1]
    q = q.reshape(b, p, kv, h // kv, e).transpose(0, 2, 3, 1, 4)  # [b, kv, g, p, e]
    q = q.reshape(b, kv, (h // kv) * p, e)  # [b, kv, g·p, e]
    scores = q @ k.transpose(0, 1, 3, 2)  # [b, kv, g·p, P]
    if scalar is not None:
        return scores.reshape(b, h, p, k.shape[2]) * np.asarray(scalar**-0.5, q.dtype)
    return scores.reshape(b, h, p, k.shape[2]) / np.sqrt(e).astype(q.dtype)


def attention_mix(pattern: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Each query's weighted sum of values.   pattern [b, h, p, P], v [b, kv, P, e] -> z [b, p, h, e]

    Same as np.einsum("bkgpP,bkPe->bpkge", pattern grouped by kv-head, v).
    """
    b, h, p, P = pattern.shape
    kv, e = v.shape[1], v.shape[3]
    z = pattern.reshape(b, kv, (h // kv) * p, P) @ v  # [b, kv, g·p, e]
    z = z.reshape(b, kv, h // kv, p, e).transpose(0, 3, 1, 2, 4)  # [b, p, kv, g, e]
    return z.reshape(b, p, h, e)
