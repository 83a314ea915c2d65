"""Lesson 07 exercises: median replacement and the sparse core. Fill in each function, then run

    minillm lesson check 7

Shapes: b = batch, p = positions, m = d_mlp (MLP neurons per layer), V = vocabulary.
"""

from __future__ import annotations

import numpy as np


def top_p_neurons(acts: np.ndarray, rate: float, by: str = "value") -> np.ndarray:
    """Exercise 1 (easy, 10 min). Indices of the k most active neurons of one layer, most active first.

    k = floor(rate% · m), at least one: the study's definition (0.5 % of 1536 = 7.68 -> 7 neurons).

    acts [m]: the layer's hook_post activations at one position. rate is a PERCENTAGE
    (0.2 means 0.2 %, i.e. 3 of SmolLM2's 1536 neurons).
    by="value":     "most active" = highest activation (the study's definition).
    by="magnitude": "most active" = largest |a − median(a)|, the distance from the value
                    they will be replaced by (large negative activations count too).
    Ties keep the lower index first. Returns an int array [k].
    """
    raise NotImplementedError("hint: k = max(1, int(np.floor(rate / 100 * len(acts) + 1e-9))); score = acts or "
                              "np.abs(acts - np.median(acts)); np.argsort(-score, kind='stable')[:k]")


def median_replacement_hook(neurons, median: float, pos: int = -1):
    """Exercise 2 (easy, 10 min). Return a hook function fn(act, hook) for blocks.L.mlp.hook_post (act [b, p, m]).

    It returns a COPY of act in which the given neurons, at position `pos` only (every
    batch row), are set to `median`. Everything else is unchanged.
    """
    raise NotImplementedError("hint: def fn(act, hook): out = act.copy(); out[:, pos, neurons] = median; "
                              "return out — and return fn")


def deviation(edited_logits: np.ndarray, base_logits: np.ndarray, target: int,
              measure: str = "log_prob") -> np.ndarray:
    """Exercise 3 (medium, 10 min). How much the intervention moved the target token at the LAST position: edited − base.

    edited_logits, base_logits [b, p, V]; target: a token id; -> [b] float64.
    measure="logit":    the raw logit z[target].
    measure="log_prob": log p(target) = z[target] − logsumexp(z). Compute logsumexp stably
                        (subtract the max first): logits of several hundred overflow exp().
    """
    raise NotImplementedError("hint: z = logits[:, -1].astype(np.float64); logsumexp = zmax + "
                              "log(sum(exp(z - zmax))) with zmax = z.max(-1, keepdims=True); "
                              "return value(edited) - value(base)")
