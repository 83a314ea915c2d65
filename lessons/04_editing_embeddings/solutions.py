"""Lesson 04 solutions: editing embeddings."""

from __future__ import annotations

import numpy as np

FACTORS = {"reduce": lambda a: 1.0 - a, "boost": lambda a: 1.0 + a, "zero": lambda a: 0.0}


def edit_embedding_row(W_E: np.ndarray, token: int, op: str, alpha: float = 0.3) -> np.ndarray:
    """A copy of W_E with row `token` edited: "reduce" E·(1−α), "boost" E·(1+α), "zero" 0."""
    if op not in FACTORS:
        raise ValueError(f"op must be one of {sorted(FACTORS)}, got {op!r}")
    out = W_E.copy()
    out[token] = out[token] * W_E.dtype.type(FACTORS[op](alpha))
    return out


def rms_norm_change(x: np.ndarray, c: float, eps: float) -> float:
    """‖n(c·x) − n(x)‖ / ‖n(x)‖ for RMSNorm without gain, n(x) = x / sqrt(mean(x²) + eps), in float64."""
    x = np.asarray(x, dtype=np.float64)

    def n(v):
        return v / np.sqrt((v * v).mean() + eps)

    return float(np.linalg.norm(n(c * x) - n(x)) / np.linalg.norm(n(x)))


def relative_change_per_layer(clean: np.ndarray, edited: np.ndarray, pos: int) -> np.ndarray:
    """‖edited[l, pos] − clean[l, pos]‖ / ‖clean[l, pos]‖ for every layer row l.   [L+1, p, d] -> [L+1]"""
    clean = np.asarray(clean, dtype=np.float64)[:, pos]
    edited = np.asarray(edited, dtype=np.float64)[:, pos]
    return np.linalg.norm(edited - clean, axis=-1) / np.linalg.norm(clean, axis=-1)


def fit_exponential(y: np.ndarray) -> tuple[float, float]:
    """Fit log y = a + b·x (x = 0, 1, ..., least squares).

    Returns (per-step factor exp(b), R² of the fit in log space).
    """
    y = np.asarray(y, dtype=np.float64)
    x, ly = np.arange(len(y)), np.log(y)
    b, a = np.polyfit(x, ly, 1)
    resid = ly - (a + b * x)
    r2 = 1.0 - (resid**2).sum() / ((ly - ly.mean()) ** 2).sum()
    return float(np.exp(b)), float(r2)
