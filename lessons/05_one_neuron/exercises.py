"""Lesson 05 exercises: what one neuron does. Fill in each function, then run

    minillm lesson check 5

Shapes: n = samples (positions), m = d_mlp, d = d_model, V = vocabulary size.
"""

from __future__ import annotations

import numpy as np


def neuron_label_correlation(acts: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Exercise 1 (medium, 15 min). Pearson correlation of every neuron's activation with a (0/1) label.

    acts [n, m] (hook_post at n positions), labels [n].   -> [m] float64 in [-1, 1]
    r_i = Σ_j (a_ji − ā_i)(y_j − ȳ) / sqrt(Σ_j (a_ji − ā_i)² · Σ_j (y_j − ȳ)²)
    A neuron that never changes (zero variance) has r = 0, not nan.
    """
    raise NotImplementedError("hint: centre acts over axis 0 and the labels; numerator (a_c * y_c[:, None])"
                              ".sum(0); guard the denominator against 0 with np.where")


def mean_ablation_hook(neuron: int, value: float):
    """Exercise 2 (easy, 10 min). Return a hook function fn(act, hook) for `blocks.l.mlp.hook_post` that replaces neuron
    `neuron`'s activation by `value` (its mean over a reference set) at every position and
    leaves every other neuron alone. act is [b, p, m]; return the new array (do not modify
    `act` in place).

    Use: model.run_with_hooks(tokens, [("blocks.22.mlp.hook_post", mean_ablation_hook(1293, 1.7))])
    """
    raise NotImplementedError("hint: def fn(act, hook): out = act.copy(); out[..., neuron] = value; "
                              "return out — and return fn")


def output_readout(w_out: np.ndarray, w_final: np.ndarray, W_U: np.ndarray, k: int = 10
                   ) -> tuple[list[int], list[int]]:
    """Exercise 3 (easy, 10 min). Read a neuron's output weights through the unembedding.

    w_out [d] = W_out[i] (what the neuron adds per unit of activation), w_final [d] = the
    final norm's gain, W_U [d, V]. scores = (w_out ⊙ w_final) @ W_U.
    Return (promoted, suppressed): the k token ids with the largest scores (largest first)
    and the k with the smallest (smallest first), as lists of ints.
    """
    raise NotImplementedError("hint: scores = (w_out * w_final) @ W_U; order = np.argsort(scores); "
                              "promoted = order[::-1][:k], suppressed = order[:k]")


def token_set_mass(logits: np.ndarray, ids) -> np.ndarray:
    """Exercise 4 (easy, 5 min). The probability the model gives to a SET of next tokens (e.g. the ten digits).

    logits [..., V] -> [...]: softmax over the last axis, summed over `ids`. Real logits
    can be large: compute in float64 and subtract the max before exp.
    """
    raise NotImplementedError("hint: x = logits - logits.max(-1, keepdims=True); p = exp(x) / exp(x).sum(-1, "
                              "keepdims=True); return p[..., ids].sum(-1)")
