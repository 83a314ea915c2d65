"""Lesson 10 exercises: the backward pass by hand, and attribution patching.

Fill in each function, then grade yourself with `minillm lesson check 10`. The checks
compare your gradients with minillm's hand-written backward pass (`minillm.grad.backward`) on
the real SmolLM2 weights and activations of the IOI prompt, and with finite differences.

Notation: for an array y, `dy` means ∂metric/∂y (same shape as y). Shape legend: b = batch,
p = positions, d = d_model, h = heads, e = d_head, m = d_mlp, n_in / n_out = a linear map's sizes.
Use NumPy only (not minillm.grad.ops_backward: that is the answer key).
"""

from __future__ import annotations

import numpy as np


def rms_norm_backward(dout: np.ndarray, x: np.ndarray, w: np.ndarray, eps: float
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Exercise 1 (hard, 25 min). Backward of out = x · s · w with s = 1 / sqrt(mean(x²) + eps) over the last axis.

    dout, x [..., d]; w [d] -> (dx [..., d], dw [d]).
    Remember that s depends on x too: every x_i moves every output through s.
    """
    raise NotImplementedError("hint: with y = x·s and dy = dout·w, dx = s·(dy - y·mean(dy·y)) "
                              "(mean over the last axis); dw sums dout·y over every row")


def softmax_backward(dout: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Exercise 2 (medium, 15 min). Backward of y = softmax(x) over the last axis, given the OUTPUT y.   -> dx, same shape

    dout is ∂metric/∂y. Masked entries (y = 0) must get gradient 0.
    """
    raise NotImplementedError("hint: ∂y_i/∂x_j = y_i (δ_ij - y_j); summing, "
                              "dx = y · (dout - Σ_i dout_i y_i) along the last axis")


def linear_backward(dout: np.ndarray, x: np.ndarray, W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exercise 3 (easy, 10 min). Backward of y = x @ W.   dout [..., n_out], x [..., n_in], W [n_in, n_out] -> (dx, dW)

    dx has x's shape, dW has W's shape; x may have any number of leading axes (batch, position).
    """
    raise NotImplementedError("hint: dx = dout @ W.T; for dW flatten the leading axes of x and dout "
                              "to rows ([N, n_in], [N, n_out]) and take x_rows.T @ dout_rows")


def central_difference(f, x: np.ndarray, v: np.ndarray, h: float) -> float:
    """Exercise 4 (easy, 10 min). The directional derivative of f at x along v, by a CENTRAL finite difference.

    f: function array -> float; x, v: arrays of the same shape; h: the step.
    """
    raise NotImplementedError("hint: (f(x + h·v) - f(x - h·v)) / (2h); it should approach "
                              "(∇f · v) with an error of order h²")


def mlp_backward(d_resid_post: np.ndarray, resid_mid: np.ndarray, blk, eps: float) -> np.ndarray:
    """Exercise 5 (hard, 30 min). Backward of the second half of a Llama block.   -> d resid_mid [b, p, d]

    Forward: u = RMSNorm(resid_mid; blk.ln2.w), post = silu(u·W_gate) ⊙ (u·W_in),
    resid_post = resid_mid + post·W_out, with silu(z) = z·σ(z). Weights: blk.mlp.W_gate,
    blk.mlp.W_in [d, m], blk.mlp.W_out [m, d]. Use your linear_backward and rms_norm_backward.
    """
    raise NotImplementedError("hint: recompute u, pre = u·W_gate, pre_linear = u·W_in; go back through "
                              "W_out, the product (silu'(z) = σ(z)(1 + z(1 - σ(z)))), both projections "
                              "(u feeds two: add), the norm; then add the skip connection's d_resid_post")


def head_attribution(z_clean: np.ndarray, z_corrupt: np.ndarray, grad_z: np.ndarray) -> np.ndarray:
    """Exercise 6 (medium, 20 min). Attribution patching for every head of one layer.   z's and grad [b, p, h, e] -> [h]

    The estimated change of the metric when head j's output (hook_z) is patched from the
    corrupted run into the clean run, from the clean run's gradient grad_z = ∂metric/∂z.
    """
    raise NotImplementedError("hint: first-order Taylor: Σ over b, p, e of (z_corrupt - z_clean) · grad_z")
