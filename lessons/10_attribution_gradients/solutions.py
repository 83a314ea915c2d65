"""Lesson 10 reference solutions: the backward pass by hand, and attribution patching.

Notation: for an array y, `dy` means ∂metric/∂y (same shape as y). Shape legend: b = batch,
p = positions, d = d_model, h = heads, e = d_head, m = d_mlp, n_in / n_out = a linear map's sizes.
"""

from __future__ import annotations

import numpy as np


def rms_norm_backward(dout: np.ndarray, x: np.ndarray, w: np.ndarray, eps: float
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Backward of out = x · s · w with s = 1 / sqrt(mean(x²) + eps).   -> dx [..., d], dw [d]

    y = x·s (the normalised input), dy = dout·w. s depends on every x_i
    (∂s/∂x_i = -s³ x_i / d), so   dx = s · (dy - y · mean(dy · y)),   dw = Σ_rows dout · y.
    """
    s = 1.0 / np.sqrt((x * x).mean(axis=-1, keepdims=True) + eps)  # [..., 1]
    y = x * s  # [..., d]
    dy = dout * w  # [..., d]
    dx = s * (dy - y * (dy * y).mean(axis=-1, keepdims=True))
    dw = (dout * y).reshape(-1, x.shape[-1]).sum(axis=0)  # [d]
    return dx, dw


def softmax_backward(dout: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Backward of y = softmax(x) over the last axis, given the output y.   -> dx, same shape

    ∂y_i/∂x_j = y_i (δ_ij - y_j), so dx_j = y_j (dout_j - Σ_i dout_i y_i).
    """
    return y * (dout - (dout * y).sum(axis=-1, keepdims=True))


def linear_backward(dout: np.ndarray, x: np.ndarray, W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Backward of y = x @ W.   dout [..., n_out], x [..., n_in], W [n_in, n_out] -> dx, dW

    dx = dout @ Wᵀ;  dW = Σ over all rows (every leading axis) of xᵀ dout.
    """
    dx = dout @ W.T  # [..., n_in]
    dW = x.reshape(-1, x.shape[-1]).T @ dout.reshape(-1, dout.shape[-1])  # [n_in, n_out]
    return dx, dW


def central_difference(f, x: np.ndarray, v: np.ndarray, h: float) -> float:
    """The directional derivative of f at x along v, (f(x + h v) - f(x - h v)) / (2h).

    f: array -> float. Its error is O(h²) (the one-sided (f(x+hv) - f(x)) / h is O(h)).
    """
    return (f(x + h * v) - f(x - h * v)) / (2 * h)


def _silu_backward(dout: np.ndarray, z: np.ndarray) -> np.ndarray:
    sig = 1.0 / (1.0 + np.exp(-z))
    return dout * sig * (1.0 + z * (1.0 - sig))


def mlp_backward(d_resid_post: np.ndarray, resid_mid: np.ndarray, blk, eps: float) -> np.ndarray:
    """Backward of the second half of a Llama block.   -> d resid_mid [b, p, d]

    resid_post = resid_mid + MLP(RMSNorm(resid_mid; ln2.w)), with
    MLP(u) = (silu(u W_gate) ⊙ (u W_in)) W_out. The gradient reaches resid_mid twice:
    straight through the skip connection, and back through the MLP and the norm.
    """
    mlp = blk.mlp
    s = 1.0 / np.sqrt((resid_mid * resid_mid).mean(axis=-1, keepdims=True) + eps)
    u = resid_mid * s * blk.ln2.w  # the MLP's input   [b, p, d]
    pre, pre_linear = u @ mlp.W_gate, u @ mlp.W_in  # [b, p, m]
    act = pre / (1.0 + np.exp(-pre))  # silu(pre)
    post = act * pre_linear
    dpost, _ = linear_backward(d_resid_post, post, mlp.W_out)  # [b, p, m]
    dpre_linear = dpost * act
    dpre = _silu_backward(dpost * pre_linear, pre)
    du = linear_backward(dpre, u, mlp.W_gate)[0] + linear_backward(dpre_linear, u, mlp.W_in)[0]
    dx_norm, _ = rms_norm_backward(du, resid_mid, blk.ln2.w, eps)
    return d_resid_post + dx_norm  # skip connection + MLP branch


def head_attribution(z_clean: np.ndarray, z_corrupt: np.ndarray, grad_z: np.ndarray) -> np.ndarray:
    """Attribution patching for each head of one layer.   [b, p, h, e] each -> [h]

    Patching head j's output z from the corrupted run changes the metric by about
    Σ_{b,p,e} (z_corrupt - z_clean) · ∂metric/∂z   (a first-order Taylor expansion).
    """
    return ((z_corrupt - z_clean) * grad_z).sum(axis=(0, 1, 3))
