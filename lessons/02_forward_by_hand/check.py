"""Checks for lesson 02: your functions on real SmolLM2 weights and activations.

One run_with_cache of a short prompt gives the activations of block LAYER; each check feeds
your function the activation that goes in and compares with the one that comes out. When
the answer is wrong, the check also tries the usual mistakes and names the one you made.
"""

from __future__ import annotations

import functools

import numpy as np

from minillm import ops
from minillm.course import shared_model, verdict

LAYER = 3
PROMPT = "The quick brown fox jumps over the lazy dog, because the dog was asleep"
TOL = 2e-4  # max |error| / max |expected|: float32 rounding of the same maths is ~1e-6


@functools.lru_cache(maxsize=1)
def _run() -> dict[str, np.ndarray]:
    """The activations of block LAYER (batch 1) and the block's weights' names."""
    model = shared_model()
    _, cache = model.run_with_cache(PROMPT, names_filter=lambda n: n.startswith(f"blocks.{LAYER}."))
    return dict(cache)


def _act(name: str) -> np.ndarray:
    return _run()[f"blocks.{LAYER}.{name}"]


def _verdict(what: str, got, want, mistakes, fallback: str) -> None:
    verdict(what, got, want, mistakes, fallback, tol=TOL,
            nan_hint="A softmax row that is all -inf gives NaN: is some query masked from every "
                     "key, even itself?")


# --- reference variants: the usual mistakes ------------------------------------------------------


def _rms_variants(x, w, eps):
    ms = (x * x).mean(-1, keepdims=True)
    return {
        "Is your epsilon inside the sqrt? x / (sqrt(mean(x²)) + eps) differs from x / sqrt(mean(x²) + eps) "
        "exactly when the input is small.": x / (np.sqrt(ms) + eps) * w,
        "You forgot the gain: multiply by w at the end.": x / np.sqrt(ms + eps),
        "You centred x (subtracted the mean): that is LayerNorm. RMSNorm divides the raw x by its root "
        "mean square.": (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + eps) * w,
        "You used the sum of squares; RMSNorm uses the MEAN of x² (divide by d).":
            x / np.sqrt((x * x).sum(-1, keepdims=True) + eps) * w,
        "You divided by mean(x²) without the square root.": x / (ms + eps) * w,
    }


def _ln_variants(x, w, b, eps):
    c = x - x.mean(-1, keepdims=True)
    var = (c * c).mean(-1, keepdims=True)
    return {
        "Is your epsilon inside the sqrt? Use 1 / sqrt(var + eps), not 1 / (std + eps).":
            c / (np.sqrt(var) + eps) * w + b,
        "You used the unbiased variance (ddof=1, divide by d - 1); LayerNorm divides by d.":
            c / np.sqrt(x.var(-1, ddof=1, keepdims=True) + eps) * w + b,
        "You forgot to subtract the mean: that is RMSNorm, not LayerNorm.":
            x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w + b,
        "You forgot the bias b.": c / np.sqrt(var + eps) * w,
        "You forgot the gain w.": c / np.sqrt(var + eps) + b,
    }


def _rope_adjacent(x, positions, theta):
    """The other layout: pairs (x0, x1), (x2, x3), ... (Meta's original / GGUF)."""
    e = x.shape[-1]
    angles = np.asarray(positions)[:, None] * theta ** (-np.arange(0, e, 2) / e)  # [p, e/2]
    cos, sin = np.cos(angles)[:, None, :], np.sin(angles)[:, None, :]
    x0, x1 = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = x0 * cos - x1 * sin
    out[..., 1::2] = x0 * sin + x1 * cos
    return out


def _rope_half(x, positions, inv_freq, sign=1.0):
    angles = np.asarray(positions)[:, None] * inv_freq  # [p, e/2]
    angles = np.concatenate([angles, angles], -1)[:, None, :]
    return x * np.cos(angles) + sign * ops.rotate_half(x) * np.sin(angles)


def _rope_variants(x, positions, theta):
    e = x.shape[-1]
    good = theta ** (-np.arange(0, e, 2) / e)
    return {
        "Did you rotate halves or adjacent pairs? SmolLM2 (Hugging Face layout) pairs x[i] with "
        "x[i + e/2] (rotate_half), not x[2i] with x[2i+1].": _rope_adjacent(x, positions, theta),
        "Your rotation goes the wrong way: out = x·cos + rotate_half(x)·sin with rotate_half([x1, x2]) "
        "= [-x2, x1] (the minus sign on the second half).": _rope_half(x, positions, good, -1.0),
        "Your frequencies are off: inv_freq = theta ** (-2i / e) for i = 0 .. e/2 - 1, i.e. "
        "theta ** (-np.arange(0, e, 2) / e).": _rope_half(x, positions, theta ** (-np.arange(e // 2) / e)),
        "You used theta = 10000 (the Llama 2 default); SmolLM2's rope_theta is model.cfg.rope_theta "
        "(100000): use the theta argument.": _rope_half(x, positions, 10000.0 ** (-np.arange(0, e, 2) / e)),
    }


def _softmax(s, axis=-1):
    s = s - np.nanmax(np.where(np.isfinite(s), s, -np.inf), axis=axis, keepdims=True)
    e = np.exp(s)
    return e / e.sum(axis=axis, keepdims=True)


def _pattern_variants(q, k):
    b, p, h, e = q.shape
    g = h // k.shape[2]
    rep = np.repeat(k, g, axis=2)
    tile = np.tile(k, (1, 1, g, 1))
    future = np.triu(np.ones((p, p), bool), 1)
    raw = np.einsum("bqhe,bkhe->bhqk", q, rep)

    def causal(s):
        return _softmax(np.where(future, -np.inf, s))

    return {
        "Did you scale by 1/sqrt(d_head)? Scores are q·k / sqrt(e) (e = 64 here).": causal(raw),
        "You scaled by 1/e instead of 1/sqrt(e).": causal(raw / e),
        "Is your mask letting queries see the future? Without a causal mask every query attends to all "
        "keys: set scores of keys AFTER the query to -inf before the softmax.": _softmax(raw / np.sqrt(e)),
        "Your mask is shifted by one: each query may see keys up to and including itself "
        "(np.triu(..., k=1) is the set to hide).":
            _softmax(np.where(np.triu(np.ones((p, p), bool), 2), -np.inf, raw / np.sqrt(e))),
        "Wrong grouped-query mapping: query head j uses kv-head j // (h // kv) (np.repeat along the head "
        "axis), not j % kv (np.tile).": causal(np.einsum("bqhe,bkhe->bhqk", q, tile) / np.sqrt(e)),
        "Your softmax runs over the queries; it must run over the KEYS (the last axis), so that each "
        "query's row sums to 1.": _softmax(np.where(future, -np.inf, raw / np.sqrt(e)), axis=-2),
        "You masked AFTER the softmax (future weights set to 0) without renormalising: each row now sums "
        "to less than 1, and the weights on the visible keys are too small. Mask the SCORES (-inf for "
        "future keys) before the softmax, so that it normalises over the visible keys only.":
            np.where(future, 0.0, _softmax(raw / np.sqrt(e))),
    }


# --- the checks --------------------------------------------------------------------------------------


def check_rms_norm(student, ref) -> None:
    model = shared_model()
    w, eps = model.blocks[LAYER].ln1.w, model.cfg.eps
    x = _act("hook_resid_pre")  # [1, p, d]
    got = student.rms_norm(x, w, eps)
    want = _act("ln1.hook_normalized") * w
    _verdict(f"rms_norm(blocks.{LAYER}.hook_resid_pre)", got, want, lambda: _rms_variants(x, w, eps),
             "RMSNorm is x / sqrt(mean(x²) + eps) * w over the last axis (keepdims=True).")
    tiny = np.random.default_rng(1).normal(0, 1e-3, (2, 5, x.shape[-1])).astype(np.float32)
    centered, scale = ops.rms_norm_parts(tiny.astype(np.float64), eps)
    _verdict("rms_norm on a small input (rms ≈ 0.001, where eps matters)", student.rms_norm(tiny, w, eps),
             centered / scale * w, lambda: _rms_variants(tiny.astype(np.float64), w, eps),
             "Is your epsilon inside the sqrt?")


def check_layer_norm(student, ref) -> None:
    rng = np.random.default_rng(2)
    d = 96
    w, b = rng.normal(1, 0.2, d), rng.normal(0, 0.2, d)
    for scale, eps in ((3.0, 1e-5), (1e-3, 1e-5)):
        x = rng.normal(0.5, scale, (2, 7, d))
        centered, s = ops.layer_norm_parts(x, eps)
        _verdict(f"layer_norm on random x (std {scale:g}, eps {eps:g})", student.layer_norm(x, w, b, eps),
                 centered / s * w + b, lambda x=x, eps=eps: _ln_variants(x, w, b, eps),
                 "LayerNorm is (x - mean) / sqrt(mean((x - mean)²) + eps) * w + b over the last axis.")


def check_rope(student, ref) -> None:
    model = shared_model()
    theta = model.cfg.rope_theta
    for name in ("q", "k"):
        x = _act(f"attn.hook_{name}")  # [1, p, heads, e]
        positions = np.arange(x.shape[1])
        got = student.rope(x, positions, theta)
        _verdict(f"rope(blocks.{LAYER}.attn.hook_{name})", got, _act(f"attn.hook_rot_{name}"),
                 lambda x=x, positions=positions: _rope_variants(x.astype(np.float64), positions, theta),
                 "Check the angles (position × inv_freq, each used for both halves) and that position 0 "
                 "is left unchanged.")


def check_attention_pattern(student, ref) -> None:
    q, k = _act("attn.hook_rot_q"), _act("attn.hook_rot_k")
    got = student.attention_pattern(q, k)
    _verdict(f"attention_pattern(blocks.{LAYER} rotated q, k)", got, _act("attn.hook_pattern"),
             lambda: _pattern_variants(q.astype(np.float64), k.astype(np.float64)),
             "pattern[b, j, q, k] = softmax over k of q·k / sqrt(e), future keys masked, head j using "
             "kv-head j // (h // kv).")


def check_attention(student, ref) -> None:
    model = shared_model()
    a = model.blocks[LAYER].attn
    x = _act("ln1.hook_normalized") * model.blocks[LAYER].ln1.w  # what the attention reads
    got = student.attention(x, a.W_Q, a._W_K, a._W_V, a.W_O, model.cfg.rope_theta)
    want = _act("hook_attn_out")

    def no_rope():  # the usual mistake at this level: positions then do not matter at all
        g = a.W_Q.shape[0] // a._W_K.shape[0]
        q = np.einsum("bpd,hde->bphe", x, a.W_Q)
        k = np.repeat(np.einsum("bpd,kde->bpke", x, a._W_K), g, axis=2)
        v = np.repeat(np.einsum("bpd,kde->bpke", x, a._W_V), g, axis=2)
        future = np.triu(np.ones((x.shape[1],) * 2, bool), 1)
        scores = np.einsum("bqhe,bkhe->bhqk", q, k) / np.sqrt(q.shape[-1])
        pattern = _softmax(np.where(future, -np.inf, scores))
        return np.einsum("bphe,hed->bpd", np.einsum("bhqk,bkhe->bqhe", pattern, v), a.W_O)

    _verdict(f"attention(blocks.{LAYER})", got, want,
             {"You forgot RoPE: rotate q and k (not v) with your rope() before the pattern.": no_rope},
             "Make rope and attention_pattern pass first. Then: q and k rotated, v NOT rotated; "
             "z[b, q, j] = Σ_k pattern[b, j, q, k] · v[b, k, j // g]; output = Σ_j z_j · W_O[j]. "
             f"Compare your intermediates with cache['blocks.{LAYER}.attn.hook_z'] and hook_pattern.")


def check_swiglu_mlp(student, ref) -> None:
    model = shared_model()
    m = model.blocks[LAYER].mlp
    x = _act("ln2.hook_normalized") * model.blocks[LAYER].ln2.w  # [1, p, d]
    got = student.swiglu_mlp(x, m.W_gate, m.W_in, m.W_out)
    x64 = x.astype(np.float64)
    gate, up = x64 @ m.W_gate, x64 @ m.W_in

    def silu(z):
        return z / (1 + np.exp(-np.clip(z, -60, 60)))

    mistakes = lambda: {  # noqa: E731
        "The SiLU is on the wrong branch: silu(x·W_gate) ⊙ (x·W_in), not silu(x·W_in) ⊙ (x·W_gate).":
            (silu(up) * gate) @ m.W_out,
        "You used sigmoid(z); SiLU is z·sigmoid(z).":
            (1 / (1 + np.exp(-np.clip(gate, -60, 60))) * up) @ m.W_out,
        "You used GELU; SmolLM2's MLP uses SiLU (swish): z·sigmoid(z).":
            (ops.gelu_tanh(gate) * up) @ m.W_out,
        "You forgot the gate's nonlinearity: apply silu to x·W_gate.": (gate * up) @ m.W_out,
        "You forgot the W_in (up) branch: multiply silu(x·W_gate) elementwise by x·W_in.":
            silu(gate) @ m.W_out,
    }
    _verdict(f"swiglu_mlp(blocks.{LAYER})", got, _act("hook_mlp_out"), mistakes,
             f"Compare your hidden layer with cache['blocks.{LAYER}.mlp.hook_post'] "
             "(silu(pre) * pre_linear).")


def check_block(student, ref) -> None:
    model = shared_model()
    blk = model.blocks[LAYER]
    x = _act("hook_resid_pre")
    got = student.block(x, blk, model.cfg.eps, model.cfg.rope_theta)
    want = _act("hook_resid_post")
    mid = _act("hook_resid_mid")
    mistakes = {
        "You returned resid_mid: add the MLP's output too.": mid,
        "You left out the residual connections: the block returns x + attn_out + mlp_out, not just the "
        "sublayer outputs.": _act("hook_attn_out") + _act("hook_mlp_out"),
        "Only the MLP output came back: the block adds BOTH sublayers to the stream (resid_mid = x + "
        "attn_out, resid_post = resid_mid + mlp_out).": _act("hook_mlp_out"),
        "You added the MLP output to resid_pre instead of resid_mid (the attention's write got lost).":
            x + _act("hook_mlp_out"),
    }
    # The block is built from the earlier exercises: if one of them is still wrong, say which,
    # before suspecting the wiring of the block itself.
    first_failing = None
    for name, check in (("rms_norm", check_rms_norm), ("rope", check_rope),
                        ("attention_pattern", check_attention_pattern), ("attention", check_attention),
                        ("swiglu_mlp", check_swiglu_mlp)):
        try:
            check(student, ref)
        except Exception:  # a failed assertion, a stub, or a crash: that part is not done
            first_failing = name
            break
    fallback = (f"Your {first_failing} does not pass its own check yet; fix it first (the block is built "
                "from it)." if first_failing else
                "Your parts pass their checks, so look at the wiring: attention reads rms_norm(x, ln1.w); "
                "resid_mid = x + attn_out; the MLP reads rms_norm(resid_mid, ln2.w); resid_post = resid_mid "
                "+ mlp_out.")
    _verdict(f"block(blocks.{LAYER}.hook_resid_pre)", got, want, mistakes, fallback)


CHECKS = [
    ("rms_norm", check_rms_norm),
    ("layer_norm", check_layer_norm),
    ("rope", check_rope),
    ("attention_pattern", check_attention_pattern),
    ("attention", check_attention),
    ("swiglu_mlp", check_swiglu_mlp),
    ("block", check_block),
]
