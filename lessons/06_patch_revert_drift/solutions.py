"""Lesson 06 solutions: patch, revert, drift."""

from __future__ import annotations

import numpy as np


def ulp_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """How many representable floats lie between a and b, elementwise.

    0 = same bits; +0 and -0 count as equal.
    """
    a, b = np.asarray(a), np.asarray(b)
    itype = {4: np.int32, 8: np.int64}[a.dtype.itemsize]

    def ordered(x):
        # IEEE floats' bits, read as signed integers, are ordered like the floats for x >= 0 and
        # reversed for x < 0; mirror the negatives so that the integer line matches the float line.
        i = x.view(itype).astype(np.int64)
        return np.where(i < 0, np.iinfo(itype).min - i, i)

    return np.abs(ordered(a) - ordered(b))


def scale_with_undo(W: np.ndarray, index, factor: float) -> np.ndarray:
    """W[index] *= factor in place (factor rounded once to W's dtype); return a copy of what was there."""
    saved = np.array(W[index], copy=True)  # a copy, not a view: the view would change with W
    W[index] = W[index] * W.dtype.type(factor)
    return saved


def undo(W: np.ndarray, index, saved: np.ndarray) -> None:
    """Write the saved values back into W[index], in place: bit-exact."""
    W[index] = saved


def per_layer_relative_drift(clean: np.ndarray, run: np.ndarray) -> np.ndarray:
    """max over positions of ‖run − clean‖ / ‖clean‖, per layer row.   [L+1, p, d] x2 -> [L+1]"""
    clean, run = np.asarray(clean, dtype=np.float64), np.asarray(run, dtype=np.float64)
    rel = np.linalg.norm(run - clean, axis=-1) / np.maximum(np.linalg.norm(clean, axis=-1), 1e-30)  # [L+1, p]
    return rel.max(axis=-1)
