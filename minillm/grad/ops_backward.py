"""The backward of every op in `ops.py`, one `*_backward` per `*` (like llm.c).

Each function takes the gradient of a scalar loss L with respect to the op's
output (`dout`, same shape as the output) and what the forward computed, and
returns the gradients with respect to the op's inputs and parameters. Nothing
is stored between calls: the caller passes the forward's inputs (or outputs,
where that is cheaper, like softmax) explicitly.

Notation: for an array y, `dy` means ∂L/∂y (same shape as y). The chain rule
for y = f(x) is dx_i = Σ_j dy_j ∂y_j/∂x_i; each docstring works out ∂y/∂x for
its op and then writes that sum without ever building the Jacobian.

Shape legend as in ops.py: b = batch, p = query positions, P = key positions,
d = d_model, h = query heads, kv = key/value heads, g = h // kv, e = d_head,
m = d_mlp, V = vocabulary.
"""

from __future__ import annotations

import numpy as np

from minillm import ops

# --- linear maps, embedding and unembedding -----------------------------------------------


def _flat(x: np.ndarray) -> np.ndarray:
    """[..., n] -> [N, n] (all leading axes as rows)."""
    return x.reshape(-1, x.shape[-1])


def linear_backward(
    dout: np.ndarray, x: np.ndarray, W: np.ndarray, has_bias: bool = False, need_dW: bool = True
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Backward of y = x @ W + b.   dout [..., n_out] -> dx [..., n_in], dW [n_in, n_out], db [n_out]

    y_rk = Σ_i x_ri W_ik + b_k, so ∂y_rk/∂x_ri = W_ik, ∂y_rk/∂W_ik = x_ri,
    ∂y_rk/∂b_k = 1. Summing over what each input touches:
        dx = dout @ Wᵀ      dW = Σ_rows xᵀ dout      db = Σ_rows dout
    (rows = every leading axis: batch and position). With need_dW=False
    only dx is computed (dW, db are None): half the work, for activation
    gradients alone.
    """
    dx = (_flat(dout) @ W.T).reshape(*dout.shape[:-1], W.shape[0])
    dW = _flat(x).T @ _flat(dout) if need_dW else None
    db = _flat(dout).sum(axis=0) if has_bias and need_dW else None
    return dx, dW, db


def embedding_backward(dout: np.ndarray, tokens: np.ndarray, n_rows: int) -> np.ndarray:
    """Backward of x = W_E[tokens].   dout [b, p, d], tokens [b, p] -> dW_E [n_rows, d]

    The lookup copies row tokens[b, p] of W_E to x[b, p], so that row's
    gradient is the sum of dout over every place the token occurs (a
    scatter-add; rows of tokens that do not occur get 0). Also serves the
    learned position embedding, with positions in place of tokens.
    """
    dW = np.zeros((n_rows, dout.shape[-1]), dout.dtype)
    np.add.at(dW, tokens.reshape(-1), _flat(dout))
    return dW


def unembed_backward(
    dlogits: np.ndarray, x: np.ndarray, W_U: np.ndarray, need_dW: bool = True
) -> tuple[np.ndarray, np.ndarray | None]:
    """Backward of logits = x @ W_U.   dlogits [b, p, V], x [b, p, d] -> dx [b, p, d], dW_U [d, V]

    A linear map without bias (see `linear_backward`). When the model ties
    W_U = W_Eᵀ, the caller adds dW_Uᵀ to W_E's gradient: one parameter used
    twice gets the sum of both uses.
    """
    dx, dW_U, _ = linear_backward(dlogits, x, W_U, need_dW=need_dW)
    return dx, dW_U


# --- norms ---------------------------------------------------------------------------------


def layer_norm_parts_backward(
    d_centered: np.ndarray, d_scale: np.ndarray, centered: np.ndarray, scale: np.ndarray
) -> np.ndarray:
    """Backward of (centered, scale) = layer_norm_parts(x).   -> dx [..., d]

    Forward: c = x - mean(x), s = (mean(c²) + eps)^(1/2) (the divisor). Two steps back:
      1. s depends on c: ∂s/∂c_i = ½ (mean(c²)+eps)^(-1/2) · 2c_i/d = c_i / (d·s),
         so the total gradient reaching c is  dc = d_centered + (d_scale / (d·s)) · c.
      2. c_i = x_i - (1/d) Σ_j x_j: ∂c_i/∂x_k = δ_ik - 1/d, so dx = dc - mean(dc).
    d_centered [..., d] and d_scale [..., 1] are the gradients of the two outputs.
    """
    d = centered.shape[-1]
    dc = d_centered + (d_scale / (d * scale)) * centered
    return dc - dc.mean(axis=-1, keepdims=True)


def rms_norm_parts_backward(
    d_x: np.ndarray, d_scale: np.ndarray, x: np.ndarray, scale: np.ndarray
) -> np.ndarray:
    """Backward of (x, scale) = rms_norm_parts(x).   -> dx [..., d]

    Forward: the first output is x itself, s = (mean(x²) + eps)^(1/2). As in
    step 1 of `layer_norm_parts_backward` (with no centring):
        dx = d_x + (d_scale / (d·s)) · x
    """
    d = x.shape[-1]
    return d_x + (d_scale / (d * scale)) * x


def norm_backward(
    dout: np.ndarray, normalized_input: np.ndarray, scale: np.ndarray, w: np.ndarray,
    centre: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Backward of out = (n / s) · w (+ b), with n the centred (LayerNorm) or raw (RMSNorm) input.

    normalized_input [..., d] is `centered` (LayerNorm) or x (RMSNorm), scale
    [..., 1] the divisor s (std or rms: what `hook_scale` holds).
    With y = n / s (the `hook_normalized` activation):
        dy = dout · w      dw = Σ_rows dout · y      db = Σ_rows dout
        d_scale = -Σ_i dy_i n_i / s²   (s divides every n_i)      dn = dy / s
    then the parts' backward turns (dn, d_scale) into dx.
    Returns dx, dw, db, dy (= d hook_normalized), d_scale (= d hook_scale).
    """
    y = normalized_input / scale
    dy = dout * w
    dw = _flat(dout * y).sum(axis=0)
    db = _flat(dout).sum(axis=0)
    d_scale = -(dy * normalized_input).sum(axis=-1, keepdims=True) / (scale * scale)
    parts_backward = layer_norm_parts_backward if centre else rms_norm_parts_backward
    dx = parts_backward(dy / scale, d_scale, normalized_input, scale)
    return dx, dw, db, dy, d_scale


def layer_norm_backward(
    dout: np.ndarray, x: np.ndarray, w: np.ndarray, eps: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Backward of LayerNorm out = (x - mean) / std · w + b.   -> dx [..., d], dw [d], db [d]

    Recomputes (centered, scale) from x and calls `norm_backward`. Written
    out in one line: with y the normalized input and dy = dout · w,
        dx = (dy - mean(dy) - y · mean(dy · y)) / s.
    """
    centered, scale = ops.layer_norm_parts(x, eps)
    dx, dw, db, _, _ = norm_backward(dout, centered, scale, w, centre=True)
    return dx, dw, db


def rms_norm_backward(
    dout: np.ndarray, x: np.ndarray, w: np.ndarray, eps: float
) -> tuple[np.ndarray, np.ndarray]:
    """Backward of RMSNorm out = x / rms(x) · w.   -> dx [..., d], dw [d]

    In one line, with y = x / s and dy = dout · w:  dx = (dy - y · mean(dy · y)) / s.
    """
    _, scale = ops.rms_norm_parts(x, eps)
    dx, dw, _, _, _ = norm_backward(dout, x, scale, w, centre=False)
    return dx, dw


# --- activations ---------------------------------------------------------------------------


def gelu_tanh_backward(dout: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Backward of y = ½ x (1 + tanh(u)), u = c (x + 0.044715 x³), c = √(2/π).

    Product rule, with tanh' = 1 - tanh²:
        dy/dx = ½ (1 + tanh u) + ½ x (1 - tanh² u) · c (1 + 3·0.044715 x²)
    """
    c = np.sqrt(2.0 / np.pi).astype(x.dtype)
    t = np.tanh(c * (x + 0.044715 * x * x * x))
    dydx = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * c * (1.0 + 3 * 0.044715 * x * x)
    return dout * dydx


def silu_backward(dout: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Backward of y = x · σ(x).

    σ' = σ (1 - σ), so dy/dx = σ + x σ (1 - σ) = σ (1 + x (1 - σ)).
    """
    sig = 0.5 * (1.0 + np.tanh(0.5 * x))  # σ(x), as in ops.silu
    return dout * sig * (1.0 + x * (1.0 - sig))


def gelu_erf_backward(dout: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Backward of the exact GELU y = x · Φ(x), Φ the standard normal CDF.

    Product rule, with Φ' = φ, the normal density e^(-x²/2) / √(2π):
        dy/dx = Φ(x) + x · φ(x)
    """
    cdf = 0.5 * (1.0 + ops.erf(x / np.sqrt(2.0).astype(x.dtype)).astype(x.dtype))
    pdf = np.exp(-0.5 * x * x) / np.sqrt(2.0 * np.pi).astype(x.dtype)
    return dout * (cdf + x * pdf)


ACTIVATION_BACKWARDS = {"gelu_tanh": gelu_tanh_backward, "gelu_erf": gelu_erf_backward,
                        "silu": silu_backward}


def softcap_backward(dout: np.ndarray, capped: np.ndarray, cap: float) -> np.ndarray:
    """Backward of y = c · tanh(x / c) (Gemma 2's soft-cap), from its output y.

    dy/dx = 1 - tanh²(x / c) = 1 - (y / c)². Where y is -inf (a masked score)
    dout is 0 and so is the gradient.
    """
    t = np.where(np.isfinite(capped), capped, 0) / np.asarray(cap, capped.dtype)
    return dout * (1.0 - t * t)


def gated_mlp_backward(
    dpost: np.ndarray, pre: np.ndarray, pre_linear: np.ndarray, act_fn: str = "silu"
) -> tuple[np.ndarray, np.ndarray]:
    """Backward of Llama's gate: post = act(pre) · pre_linear.   -> dpre, dpre_linear [..., m]

    pre = x·W_gate (`hook_pre`), pre_linear = x·W_in (`hook_pre_linear`).
    Product rule: dpre_linear = dpost · act(pre),  dpre = act'(pre) · (dpost · pre_linear).
    The projections around it are `linear_backward`s (see `mlp_backward`).
    """
    dpre_linear = dpost * ops.ACTIVATIONS[act_fn](pre)
    dpre = ACTIVATION_BACKWARDS[act_fn](dpost * pre_linear, pre)
    return dpre, dpre_linear


def gated_mlp_forward(x, W_gate, W_in, W_out, act_fn: str = "silu") -> np.ndarray:
    """The whole gated MLP, W_out·(act(x·W_gate) · (x·W_in)), for `mlp_backward`'s tests.

    x [..., d] -> [..., d]. model.py computes the same thing with W_gate and
    W_in fused into one matrix.
    """
    post = ops.ACTIVATIONS[act_fn](ops.linear(x, W_gate)) * ops.linear(x, W_in)  # [..., m]
    return ops.linear(post, W_out)


def gated_mlp_full_backward(dout, x, W_gate, W_in, W_out, act_fn: str = "silu"):
    """Backward of `gated_mlp_forward`.   -> dx [..., d], dW_gate, dW_in [d, m], dW_out [m, d]

    Three linear maps and the gate: back through W_out, then the gate
    (`gated_mlp_backward`), then both input projections; x feeds two
    projections, so its gradient is the sum of the two.
    """
    pre, pre_linear = ops.linear(x, W_gate), ops.linear(x, W_in)  # recomputed: [..., m]
    post = ops.ACTIVATIONS[act_fn](pre) * pre_linear
    dpost, dW_out, _ = linear_backward(dout, post, W_out)
    dpre, dpre_linear = gated_mlp_backward(dpost, pre, pre_linear, act_fn)
    dx_gate, dW_gate, _ = linear_backward(dpre, x, W_gate)
    dx_in, dW_in, _ = linear_backward(dpre_linear, x, W_in)
    return dx_gate + dx_in, dW_gate, dW_in, dW_out


# --- softmax and the losses built on it ----------------------------------------------------


def softmax_backward(dout: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Backward of y = softmax(x), given its output y.

    ∂y_i/∂x_j = y_i (δ_ij - y_j), so dx_j = Σ_i dy_i y_i (δ_ij - y_j)
                                        = y_j (dy_j - Σ_i dy_i y_i).
    Masked entries (x = -inf, y = 0) get gradient 0, as they should.
    """
    return y * (dout - (dout * y).sum(axis=axis, keepdims=True))


def log_softmax_backward(dout: np.ndarray, logp: np.ndarray, axis: int = -1) -> np.ndarray:
    """Backward of logp = log_softmax(x), given its output.

    logp_i = x_i - log Σ_k exp x_k, so ∂logp_i/∂x_j = δ_ij - softmax(x)_j and
        dx_j = dout_j - softmax(x)_j · Σ_i dout_i.
    Cross-entropy -logp[target] has dout = -onehot, giving the familiar
    dx = softmax(x) - onehot(target).
    """
    return dout - np.exp(logp) * dout.sum(axis=axis, keepdims=True)


# --- rotary position embeddings ------------------------------------------------------------


def rope_backward(dout: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """Backward of y = x·cos + R(x)·sin, R = rotate_half.   dout [b, p, heads, e] -> dx

    RoPE is linear in x. R maps [x1, x2] to [-x2, x1]; as a matrix it is
    antisymmetric (Rᵀ = -R: a 90° rotation of each pair), so
        dx = dout·cos + Rᵀ(dout·sin) = dout·cos - R(dout·sin)
    i.e. rotating back by the same angle. With partial rotary (r = cos.shape[-1]
    < e) the dims past r pass through, and so do their gradients.
    """
    r = cos.shape[-1]
    if r == dout.shape[-1]:
        return dout * cos - ops.rotate_half(dout * sin)
    rot = dout[..., :r]
    return np.concatenate([rot * cos - ops.rotate_half(rot * sin), dout[..., r:]], axis=-1)


# --- attention -----------------------------------------------------------------------------


def attention_scores_backward(
    dscores: np.ndarray, q: np.ndarray, k: np.ndarray, scalar: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Backward of scores = q·k / √e with grouped-query attention (√scalar for Gemma's
    query_pre_attn_scalar, as in `ops.attention_scores`).

    dscores [b, h, p, P], q [b, p, h, e], k [b, kv, P, e] -> dq [b, p, h, e], dk [b, kv, P, e]
    scores[b,j,p,P] = Σ_e q[b,p,j,e] k[b,j//g,P,e] / √e is bilinear:
        dq[b,p,j]  = Σ_P dscores[b,j,p,P] k[b,j//g,P] / √e
        dk[b,c,P]  = Σ_{j in group c} Σ_p dscores[b,j,p,P] q[b,p,j] / √e
    A kv-head shared by g query heads sums the gradients of all g.
    """
    b, p, h, e = q.shape
    kv = k.shape[1]
    ds = dscores.reshape(b, kv, h // kv, p, -1)  # [b, kv, g, p, P]
    ds = ds * np.asarray(scalar**-0.5, q.dtype) if scalar is not None else ds / np.sqrt(e).astype(
        q.dtype)
    qg = q.reshape(b, p, kv, h // kv, e)  # [b, p, kv, g, e]
    dq = np.einsum("bkgpP,bkPe->bpkge", ds, k).reshape(b, p, h, e)
    dk = np.einsum("bkgpP,bpkge->bkPe", ds, qg)
    return dq, dk


def attention_mix_backward(
    dz: np.ndarray, pattern: np.ndarray, v: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Backward of z = pattern @ v with grouped-query attention.

    dz [b, p, h, e], pattern [b, h, p, P], v [b, kv, P, e] -> dpattern [b, h, p, P], dv [b, kv, P, e]
    z[b,p,j,e] = Σ_P pattern[b,j,p,P] v[b,j//g,P,e] is bilinear:
        dpattern[b,j,p,P] = Σ_e dz[b,p,j,e] v[b,j//g,P,e]
        dv[b,c,P,e]       = Σ_{j in group c} Σ_p pattern[b,j,p,P] dz[b,p,j,e]
    """
    b, h, p, P = pattern.shape
    kv = v.shape[1]
    dzg = dz.reshape(b, p, kv, h // kv, -1)  # [b, p, kv, g, e]
    dpattern = np.einsum("bpkge,bkPe->bkgpP", dzg, v).reshape(b, h, p, P)
    dv = np.einsum("bkgpP,bpkge->bkPe", pattern.reshape(b, kv, h // kv, p, P), dzg)
    return dpattern, dv
