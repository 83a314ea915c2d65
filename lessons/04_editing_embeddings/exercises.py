"""Lesson 04 exercises: editing embeddings. Fill in each function, then run

    minillm lesson check 4

Shapes: V = vocabulary size, d = d_model, L = n_layers, p = positions.
"""

from __future__ import annotations

import numpy as np


def edit_embedding_row(W_E: np.ndarray, token: int, op: str, alpha: float = 0.3) -> np.ndarray:
    """Exercise 1 (easy, 10 min). A COPY of W_E [V, d] with row `token` edited; W_E itself must not change.

    op "reduce": E·(1−α);  "boost": E·(1+α);  "zero": 0. Every other row is untouched.
    Keep the dtype of W_E (multiply by W_E.dtype.type(factor), as minillm.edits does).
    """
    raise NotImplementedError("hint: out = W_E.copy(); out[token] = out[token] * factor, with factor "
                              "1 - alpha, 1 + alpha or 0")


def rms_norm_change(x: np.ndarray, c: float, eps: float) -> float:
    """Exercise 2 (medium, 10 min). How much RMSNorm's output moves when its input is rescaled by c.

    n(x) = x / sqrt(mean(x²) + eps)  (no gain: the gain w multiplies both sides equally).
    Return ‖n(c·x) − n(x)‖ / ‖n(x)‖ as a Python float, computed in float64.
    For eps = 0 and c > 0 the answer is exactly 0: only eps makes it non-zero.
    """
    raise NotImplementedError("hint: x = x.astype(np.float64); define n(v) = v / np.sqrt((v * v).mean() "
                              "+ eps); return norm(n(c * x) - n(x)) / norm(n(x))")


def relative_change_per_layer(clean: np.ndarray, edited: np.ndarray, pos: int) -> np.ndarray:
    """Exercise 3 (medium, 10 min). The decay curve: relative change of the residual stream at one position, per layer row.

    clean, edited [L+1, p, d] (row 0 = embeddings, row l = after block l-1).
    -> [L+1]: ‖edited[l, pos] − clean[l, pos]‖ / ‖clean[l, pos]‖ (L2 norms over d, float64).
    """
    raise NotImplementedError("hint: take [:, pos], subtract, np.linalg.norm(..., axis=-1), divide by the "
                              "CLEAN norm")


def fit_exponential(y: np.ndarray) -> tuple[float, float]:
    """Exercise 4 (medium, 10 min). Is the curve y (positive, one value per step x = 0, 1, 2, ...) exponential?

    Fit log y = a + b·x by least squares. Return (exp(b), R²): exp(b) is the factor per
    step (0.5: halves every step), R² = 1 − SS_res / SS_tot of the fit in log space
    (1: a perfect straight line in a log plot, i.e. an exact exponential).
    """
    raise NotImplementedError("hint: b, a = np.polyfit(x, np.log(y), 1); residuals of log y against "
                              "a + b·x give SS_res; deviations of log y from its mean give SS_tot")
