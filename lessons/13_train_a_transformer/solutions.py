"""Lesson 13 reference solutions: Adam, a finite-difference gradient check, per-position loss."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def adam_step(param: np.ndarray, grad: np.ndarray, m: np.ndarray, v: np.ndarray, t: int,
              lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.99, eps: float = 1e-8
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One Adam update; returns (new param, new m, new v) and modifies nothing in place."""
    m = beta1 * m + (1 - beta1) * grad  # first moment: a running mean of the gradient
    v = beta2 * v + (1 - beta2) * grad**2  # second moment: a running mean of its square
    m_hat = m / (1 - beta1**t)  # bias correction: m and v start at 0
    v_hat = v / (1 - beta2**t)
    return param - lr * m_hat / (np.sqrt(v_hat) + eps), m, v


def finite_difference(loss: Callable[[], float], param: np.ndarray, index: tuple[int, ...],
                      h: float = 1e-5) -> float:
    """Central difference (loss(x + h) − loss(x − h)) / 2h for ONE entry param[index].

    param is a live view into the model: change the entry in place, call loss(),
    and put the exact original value back before returning.
    """
    original = param[index].copy()
    try:
        param[index] = original + h
        up = loss()
        param[index] = original - h
        down = loss()
    finally:
        param[index] = original  # bit for bit: the model must be left as it was
    return float((up - down) / (2 * h))


def per_position_loss(logits: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """−log p(tokens[:, i+1] | tokens[:, :i+1]) for every i.   [b, p, V], [b, p] -> [b, p-1]"""
    z = np.asarray(logits, np.float64)[:, :-1]  # the last position predicts nothing we know
    zmax = z.max(axis=-1, keepdims=True)
    log_norm = zmax[..., 0] + np.log(np.exp(z - zmax).sum(axis=-1))  # logsumexp, stably
    target = np.take_along_axis(z, np.asarray(tokens)[:, 1:, None], axis=-1)[..., 0]
    return log_norm - target
