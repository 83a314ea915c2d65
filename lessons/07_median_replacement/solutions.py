"""Lesson 07 solutions: median replacement and the sparse core."""

from __future__ import annotations

import numpy as np


def top_p_neurons(acts: np.ndarray, rate: float, by: str = "value") -> np.ndarray:
    """Indices of the k = floor(rate% · m) (at least 1) most active neurons, most active first.   [m] -> int [k]

    by="value": highest activation first; by="magnitude": largest |a − median(a)| first.
    Ties keep the lower index first (a stable sort).
    """
    acts = np.asarray(acts, dtype=np.float64)
    k = max(1, int(np.floor(rate / 100.0 * acts.shape[0] + 1e-9)))  # the study: floor, at least one
    if by == "value":
        score = acts
    elif by == "magnitude":
        score = np.abs(acts - np.median(acts))
    else:
        raise ValueError(f"by must be 'value' or 'magnitude', got {by!r}")
    return np.argsort(-score, kind="stable")[:k]


def median_replacement_hook(neurons, median: float, pos: int = -1):
    """A hook fn(act, hook) for mlp.hook_post [b, p, m]: neurons at `pos` become `median`.

    Returns a new array (the input is left alone); other positions and neurons are untouched.
    """
    neurons = np.asarray(neurons, dtype=np.int64)

    def hook(act, hook_point=None):
        out = act.copy()
        out[:, pos, neurons] = median  # every batch row, one position, the chosen neurons
        return out

    return hook


def deviation(edited_logits: np.ndarray, base_logits: np.ndarray, target: int,
              measure: str = "log_prob") -> np.ndarray:
    """Change of the target's logit or log-probability at the last position.   [b, p, V] x2 -> [b]

    edited − base, in float64; log p = z − logsumexp(z), computed stably.
    """
    def value(logits):
        z = np.asarray(logits, dtype=np.float64)[:, -1]  # [b, V]
        if measure == "logit":
            return z[:, target]
        if measure != "log_prob":
            raise ValueError(f"measure must be 'logit' or 'log_prob', got {measure!r}")
        zmax = z.max(-1, keepdims=True)
        logz = zmax[:, 0] + np.log(np.exp(z - zmax).sum(-1))  # logsumexp, no overflow
        return z[:, target] - logz

    return value(edited_logits) - value(base_logits)
