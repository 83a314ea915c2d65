"""Lesson 13 exercises: train a transformer yourself. Fill in each function, then run

    minillm lesson check 13

Shapes: b = batch, p = positions, V = vocabulary.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def adam_step(param: np.ndarray, grad: np.ndarray, m: np.ndarray, v: np.ndarray, t: int,
              lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.99, eps: float = 1e-8
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exercise 1 (easy, 15 min). One Adam update for one parameter array.

    m, v are the running first and second moments (arrays of zeros before step 1);
    t is the step number, counted from 1. Return (new param, new m, new v) and modify
    nothing in place:
        m ← β1·m + (1 − β1)·g            v ← β2·v + (1 − β2)·g²
        m̂ = m / (1 − β1^t)               v̂ = v / (1 − β2^t)
        param ← param − lr · m̂ / (√v̂ + ε)
    """
    raise NotImplementedError("hint: four lines, exactly as in the docstring; t starts at 1")


def finite_difference(loss: Callable[[], float], param: np.ndarray, index: tuple[int, ...],
                      h: float = 1e-5) -> float:
    """Exercise 2 (medium, 20 min). Central difference of loss() in ONE entry param[index].

    (loss with param[index] + h  −  loss with param[index] − h) / (2h). `param` is a live
    view into the model's weights: change the entry in place, call loss(), and restore the
    exact original value before you return (also if loss() raises).
    """
    raise NotImplementedError("hint: keep original = param[index].copy(); set original + h, "
                              "call loss(); set original − h, call loss(); restore in a finally")


def per_position_loss(logits: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """Exercise 3 (easy, 15 min). Next-token cross-entropy at every position.

    logits [b, p, V], tokens [b, p] -> [b, p-1] float64, entry [j, i] =
    −log softmax(logits[j, i])[tokens[j, i + 1]]. Compute log-softmax stably.
    """
    raise NotImplementedError("hint: z = logits[:, :-1] as float64; logsumexp(z) − z[target] with "
                              "the target tokens[:, 1:] picked by np.take_along_axis")
