"""Lesson 05 solutions: what one neuron does."""

from __future__ import annotations

import numpy as np


def neuron_label_correlation(acts: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Pearson correlation of every neuron's activation with a label over n samples.   [n, m], [n] -> [m]"""
    a = np.asarray(acts, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    a_c, y_c = a - a.mean(axis=0), y - y.mean()
    denom = np.sqrt((a_c**2).sum(axis=0) * (y_c**2).sum())  # [m]
    return np.where(denom > 0, (a_c * y_c[:, None]).sum(axis=0) / np.where(denom > 0, denom, 1.0), 0.0)


def mean_ablation_hook(neuron: int, value: float):
    """A hook fn(act, hook) for mlp.hook_post that sets neuron `neuron` to `value` at every position."""

    def hook(act: np.ndarray, hook) -> np.ndarray:
        out = act.copy()  # never write into the array the model (or a cache) may still hold
        out[..., neuron] = value
        return out

    return hook


def output_readout(w_out: np.ndarray, w_final: np.ndarray, W_U: np.ndarray, k: int = 10
                   ) -> tuple[list[int], list[int]]:
    """The k token ids a neuron's output vector promotes most and suppresses most.

    scores = (w_out ⊙ w_final) @ W_U  [V]; promoted: largest first; suppressed: smallest first.
    """
    scores = (np.asarray(w_out) * np.asarray(w_final)) @ W_U  # [V]
    order = np.argsort(scores, kind="stable")
    return [int(i) for i in order[::-1][:k]], [int(i) for i in order[:k]]


def token_set_mass(logits: np.ndarray, ids) -> np.ndarray:
    """Total next-token probability of the tokens `ids`.   logits [..., V] -> [...] (float64)"""
    x = np.asarray(logits, dtype=np.float64)
    x = x - x.max(axis=-1, keepdims=True)  # stable: exp never overflows
    p = np.exp(x) / np.exp(x).sum(axis=-1, keepdims=True)
    return p[..., list(ids)].sum(axis=-1)
