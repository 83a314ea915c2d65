"""Lesson 11 exercises: directions in activation space.

Fill in each function, then grade yourself with `minillm lesson check 11`. The checks use
SmolLM2's real activations (positive / negative prompts at layer 6, residual streams at
layer 10) and its real embedding matrix, and compare your hook with
`minillm.interp.interventions.add` in a forward pass and during generation.

Shape legend: n = prompts (samples), d = d_model, D = the size of one sample, k = components,
V = vocabulary, b = batch, p = positions. NumPy only.
"""

from __future__ import annotations

import numpy as np


def mean_difference(pos_acts: np.ndarray, neg_acts: np.ndarray) -> np.ndarray:
    """Exercise 1 (easy, 10 min). The steering vector: mean over the positive prompts minus mean over the negative ones.

    pos_acts [n_pos, d], neg_acts [n_neg, d] (one row per prompt; n_pos may differ from n_neg) -> [d].
    """
    raise NotImplementedError("hint: pos_acts.mean(axis=0) - neg_acts.mean(axis=0)")


def steering_hook(vector: np.ndarray, alpha: float):
    """Exercise 2 (easy, 10 min). Return a hook function fn(act, hook) -> new act that adds alpha·vector at EVERY position.

    act is [b, p, d] (p = 1 while generating with a KV cache: the new token only); `hook` is a
    HookPoint (name, layer, pos_offset) you will not need. Return a new array; do not edit act
    in place. Use it as   model.run_with_hooks(tokens, [("blocks.6.hook_resid_pre", fn)]).
    """
    raise NotImplementedError("hint: def fn(act, hook): return act + alpha * vector  (broadcasts over "
                              "b and p); return fn")


def pca_svd(X: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exercise 3 (medium, 20 min). PCA of data X [n, D] (one sample per row) by the SVD.   -> (components [k, D], ratios [r])

    components: the top-k principal directions as unit ROW vectors, largest variance first.
    ratios: the explained-variance ratio of every component (r = min(n, D) of them), summing to 1.
    """
    raise NotImplementedError("hint: centre X (subtract the mean over axis 0); U, S, Vt = "
                              "np.linalg.svd(Xc, full_matrices=False); components = Vt[:k]; "
                              "ratios = S**2 / (S**2).sum()")


def cosine_analogy(W_E: np.ndarray, a: int, b: int, c: int, k: int) -> list[int]:
    """Exercise 4 (medium, 20 min). a − b + c in the embedding, as in lesson 01 (king − man + woman ≈ queen): the k token
    ids most cosine-similar to W_E[a] - W_E[b] + W_E[c], best first, excluding a, b and c.
    W_E [V, d] -> k ints
    """
    raise NotImplementedError("hint: query = W_E[a] - W_E[b] + W_E[c]; sims = W_E @ query / (row norms · "
                              "|query|); set sims[[a, b, c]] = -inf; np.argsort(-sims)[:k]")
