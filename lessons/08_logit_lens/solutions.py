"""Lesson 08 reference solutions: the logit lens and direct logit attribution.

Shape legend: c = components, n = rows, d = d_model, V = vocabulary, L = n_layers.
The model is a Llama-family one (SmolLM2): its final norm is RMSNorm, x / sqrt(mean(x²) + eps) · w.
"""

from __future__ import annotations

import numpy as np


def lens_logits(resid: np.ndarray, ln_w: np.ndarray, eps: float, W_U: np.ndarray) -> np.ndarray:
    """The logit lens of residual-stream vectors: final RMSNorm, then unembed.   [..., d] -> [..., V]

    Each vector is divided by its OWN rms sqrt(mean(x²) + eps), exactly as the model
    normalises its last stream, so the lens of the final stream is the model's logits.
    """
    rms = np.sqrt((resid * resid).mean(axis=-1, keepdims=True) + eps)  # [..., 1]
    return (resid / rms * ln_w) @ W_U  # [..., d] @ [d, V]


def component_dla(write: np.ndarray, final_scale, ln_w: np.ndarray, W_U: np.ndarray,
                  correct: int, incorrect: int) -> np.ndarray:
    """Direct logit attribution of residual writes, with the final norm's scale frozen.   [..., d] -> [...]

    DLA(c) = (c / s) · (w ⊙ (W_U[:, correct] - W_U[:, incorrect])), where s = the rms of the
    FINAL residual stream (the one the model actually normalised), not of c itself.
    """
    direction = ln_w * (W_U[:, correct] - W_U[:, incorrect])  # [d]: the readout vector
    return (write / final_scale) @ direction  # [...]


def residual_components(cache, n_layers: int, pos: int) -> np.ndarray:
    """The final residual stream at `pos` split into what wrote it.   -> [2L + 1, d]

    Order: the token embedding, then for each block l its attention output and its MLP output
    (embed, attn_0, mlp_0, attn_1, mlp_1, ...). They sum to blocks.{L-1}.hook_resid_post.
    """
    parts = [cache["hook_embed"][0, pos]]
    for l in range(n_layers):
        parts += [cache[f"blocks.{l}.hook_attn_out"][0, pos], cache[f"blocks.{l}.hook_mlp_out"][0, pos]]
    return np.stack(parts)  # [2L + 1, d]


def target_rank(logits: np.ndarray, target: int) -> np.ndarray:
    """The rank of token `target` in each row of logits (1 = the largest).   [..., V] -> [...] ints

    rank = 1 + the number of tokens with a strictly larger logit (ties do not push it down).
    """
    return (logits > logits[..., target : target + 1]).sum(axis=-1) + 1


def first_top1_layer(ranks: np.ndarray) -> int | None:
    """The first row from which the target is ranked 1 in EVERY later row (None if it is not
    ranked 1 at the last row).   ranks [rows] -> int or None

    A token that is top-1 at row 5, loses it at row 6 and gets it back at row 20 for good
    is 'decided' at row 20, not 5.
    """
    top1 = np.asarray(ranks) == 1
    if not top1[-1]:
        return None
    r = len(top1) - 1
    while r > 0 and top1[r - 1]:
        r -= 1
    return r
