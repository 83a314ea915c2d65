"""Lesson 08 exercises: the logit lens and direct logit attribution, by hand.

Fill in each function, then grade yourself with `minillm lesson check 8`. The checks run your
functions on SmolLM2's real residual streams (the Eiffel Tower prompt for the lens, the IOI
prompt "When Mary and John went to the store, John gave a drink to" for the attribution)
and compare with the reference.

Shape legend: c = components, d = d_model, V = vocabulary, L = n_layers.
SmolLM2's final norm is RMSNorm: ln_final(x) = x / sqrt(mean(x²) + eps) · w. Its
unembedding W_U [d, V] is tied: W_U = W_E.T. NumPy only.
"""

from __future__ import annotations

import numpy as np


def lens_logits(resid: np.ndarray, ln_w: np.ndarray, eps: float, W_U: np.ndarray) -> np.ndarray:
    """Exercise 1 (easy, 10 min). The logit lens: decode residual-stream vectors as if they were the final stream.

    resid [..., d], ln_w [d], W_U [d, V] -> logits [..., V]. Normalise each vector with its own
    1 / sqrt(mean(x²) + eps), multiply by the gain, unembed. On the final stream this must give
    exactly the model's logits.
    """
    raise NotImplementedError("hint: rms = np.sqrt((resid * resid).mean(-1, keepdims=True) + eps); "
                              "then (resid / rms * ln_w) @ W_U")


def component_dla(write: np.ndarray, final_scale, ln_w: np.ndarray, W_U: np.ndarray,
                  correct: int, incorrect: int) -> np.ndarray:
    """Exercise 2 (medium, 10 min). Direct logit attribution of residual writes, final-norm scale frozen.   [..., d] -> [...]

    write: what one component (a head, an MLP, the embedding) added to the stream at the
    predicting position; final_scale: the rms that ln_final divided the WHOLE final stream by
    there (cache["ln_final.hook_scale"]). Returns how much each write moves
    logit[correct] - logit[incorrect]. Must work on a stack of writes [c, d] -> [c].
    """
    raise NotImplementedError("hint: the readout vector is ln_w * (W_U[:, correct] - W_U[:, incorrect]); "
                              "dot it with write / final_scale")


def residual_components(cache, n_layers: int, pos: int) -> np.ndarray:
    """Exercise 3 (medium, 10 min). The final residual stream at position `pos` split into what wrote it.   -> [2L + 1, d]

    Rows: the token embedding (cache["hook_embed"]), then for each block l its attention output
    and its MLP output (cache[f"blocks.{l}.hook_attn_out"], ...hook_mlp_out), in the model's order.
    Batch row 0. They must sum to the last block's hook_resid_post.
    """
    raise NotImplementedError("hint: parts = [cache['hook_embed'][0, pos]]; for each l append "
                              "attn_out and mlp_out at [0, pos]; np.stack(parts)")


def target_rank(logits: np.ndarray, target: int) -> np.ndarray:
    """Exercise 4 (easy, 5 min). The rank of token `target` in each row of logits (1 = the most likely).   [..., V] -> [...]

    Ties do not push a token down: rank = 1 + the number of STRICTLY larger logits.
    """
    raise NotImplementedError("hint: (logits > logits[..., target:target + 1]).sum(-1) + 1")


def first_top1_layer(ranks: np.ndarray) -> int | None:
    """Exercise 5 (easy, 5 min). The first row (index) from which the target is ranked 1 in every later row.

    ranks [rows] (ints) -> an int, or None if the target is not ranked 1 at the last row.
    Top-1 at row 1, lost at row 2, top-1 again from row 4 to the end -> 4, not 1.
    """
    raise NotImplementedError("hint: start at the last row (must be 1, else None) and walk back "
                              "while the previous row is also 1")
