"""Lesson 11 reference solutions: directions in activation space.

Shape legend: n = prompts (samples), d = d_model, D = the size of one sample, k = components,
V = vocabulary, b = batch, p = positions.
"""

from __future__ import annotations

import numpy as np


def mean_difference(pos_acts: np.ndarray, neg_acts: np.ndarray) -> np.ndarray:
    """The steering vector: mean over the positive prompts minus mean over the negative ones.

    pos_acts [n_pos, d], neg_acts [n_neg, d] (one row per prompt) -> [d].
    """
    return pos_acts.mean(axis=0) - neg_acts.mean(axis=0)


def steering_hook(vector: np.ndarray, alpha: float):
    """A hook function fn(act, hook) adding alpha·vector at every position of act [b, p, d].

    Returns a NEW array (never edits act in place: other hooks and the cache may hold it).
    During cached generation act holds only the new position(s), and they get the vector too.
    """
    v = (alpha * np.asarray(vector)).astype(np.float32)

    def hook(act, hook_point):
        return act + v.astype(act.dtype)  # [b, p, d] + [d]: broadcast over batch and position

    return hook


def pca_svd(X: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """PCA of data X [n, D] by the SVD of the centred data.   -> (components [k, D], ratios [r])

    components: the top-k principal directions, one unit vector per ROW; ratios: the
    explained-variance ratio of every component, S_j² / Σ S², r = min(n, D), summing to 1.
    """
    Xc = X - X.mean(axis=0)  # centre: PCA explains variance around the mean
    _, S, Vt = np.linalg.svd(Xc, full_matrices=False)  # Xc = U S Vt; rows of Vt are directions
    return Vt[:k], S**2 / (S**2).sum()


def cosine_analogy(W_E: np.ndarray, a: int, b: int, c: int, k: int) -> list[int]:
    """a − b + c (lesson 01's convention: king − man + woman): the k token ids whose embedding
    is most cosine-similar to W_E[a] - W_E[b] + W_E[c], excluding a, b and c.   W_E [V, d] -> [k] ids
    """
    W = W_E.astype(np.float64)
    query = W[a] - W[b] + W[c]  # [d]
    sims = W @ query / (np.linalg.norm(W, axis=1) * np.linalg.norm(query) + 1e-12)  # [V]
    sims[[a, b, c]] = -np.inf
    return [int(i) for i in np.argsort(-sims, kind="stable")[:k]]
