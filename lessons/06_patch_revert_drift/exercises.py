"""Lesson 06 exercises: patch, revert, drift. Fill in each function, then run

    minillm lesson check 6

Shapes: L = n_layers, p = positions, d = d_model.
"""

from __future__ import annotations

import numpy as np


def ulp_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Exercise 1 (medium, 10 min). How many representable floats lie between a and b, elementwise, as int64.

    0 means identical bits (and +0.0 vs -0.0 also counts as 0); np.nextafter(x, inf) is 1
    away from x. Works for float32 and float64 and across zero (the smallest positive
    subnormal and its negative are 2 apart). Do not use np.spacing: it is the ulp of one
    number, and the distance between numbers in different binades is not a multiple of it.
    """
    raise NotImplementedError("hint: view the floats as integers of the same size (x.view(np.int32)); "
                              "for negative ones use INT_MIN - i so the integers are ordered like the floats; "
                              "then subtract (in int64)")


def scale_with_undo(W: np.ndarray, index, factor: float) -> np.ndarray:
    """Exercise 2 (easy, 5 min). A by-hand journal, step 1: scale W[index] by `factor` IN PLACE (round the factor once
    to W's dtype: W.dtype.type(factor)) and return a COPY of what W[index] held before.

    index is any numpy index (an int for a row, a tuple, a slice).
    """
    raise NotImplementedError("hint: saved = W[index].copy() (a view would change with W!); then "
                              "W[index] = W[index] * W.dtype.type(factor); return saved")


def undo(W: np.ndarray, index, saved: np.ndarray) -> None:
    """Exercise 3 (easy, 5 min). A by-hand journal, step 2: write `saved` back into W[index] in place (bit-exact undo)."""
    raise NotImplementedError("hint: assign into the slice: W[index] = saved (not W = ..., which only "
                              "rebinds your local name)")


def per_layer_relative_drift(clean: np.ndarray, run: np.ndarray) -> np.ndarray:
    """Exercise 4 (medium, 10 min). The drift curve: per layer row, the largest relative residual difference over positions.

    clean, run [L+1, p, d] (row 0 = embeddings, row l = after block l-1).
    -> [L+1] float64: max over p of ‖run[l, p] − clean[l, p]‖ / ‖clean[l, p]‖.
    Identical rows must give exactly 0.
    """
    raise NotImplementedError("hint: np.linalg.norm(run - clean, axis=-1) / np.linalg.norm(clean, axis=-1) "
                              "gives [L+1, p]; then .max(axis=-1)")
