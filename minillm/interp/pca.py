"""PCA of activations: which directions carry the variance across a set of prompts.

    from minillm.interp.pca import activation_pca
    res = activation_pca(model, prompts, "blocks.10.hook_resid_post", pos=-1)
    res.explained_variance_ratio[:2]     # share of variance on PC1, PC2
    res.plot_scatter("pca.png", labels=prompts, groups=["happy", "sad", ...])
    res.project(new_activations)         # [n, k] coordinates of new points

PCA by the SVD of the centred data matrix X - mean = U S V^T:
components = rows of V^T (unit directions in activation space), the variance
along component j is S_j² / (n - 1), and the explained-variance ratios are
S_j² / Σ S² (over all n - 1 non-trivial directions, so they sum to 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm.auto import tqdm

from minillm.errors import MinillmError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from minillm.hooked_model import HookedModel


@dataclass
class PCAResult:
    """mean [D]; components [k, D] (orthonormal rows); singular_values [r];
    explained_variance_ratio [r] (sums to 1; r = min(n, D)); coords [n, k] of the data."""

    mean: np.ndarray
    components: np.ndarray
    singular_values: np.ndarray
    explained_variance_ratio: np.ndarray
    coords: np.ndarray
    hook: str = ""

    def project(self, X: np.ndarray) -> np.ndarray:
        """Coordinates of new activations on the components.   [n, D] -> [n, k]"""
        X = np.asarray(X, np.float64)
        if X.shape[-1] != self.mean.shape[0]:
            raise MinillmError(f"activations have size {X.shape[-1]}, the PCA was fitted on size "
                               f"{self.mean.shape[0]} ({self.hook or 'data'})")
        return (X - self.mean) @ self.components.T  # [n, D] @ [D, k]

    def plot_scatter(self, path: str | Path | None = None, labels: Sequence[str] | None = None,
                     groups: Sequence[str] | None = None, pcs: tuple[int, int] = (0, 1)) -> Figure:
        """The data on two components, coloured by `groups`, annotated with `labels`; saved if `path`."""
        from minillm.views import figures

        return figures.saved(figures.pca_scatter(self, labels, groups, pcs), path)

    def plot_variance(self, path: str | Path | None = None, k: int = 20) -> Figure:
        """Explained-variance ratio per component and its cumulative sum; saved if `path`."""
        from minillm.views import figures

        return figures.saved(figures.pca_variance(self, k), path)


def pca(X: np.ndarray, k: int | None = None, hook: str = "") -> PCAResult:
    """PCA of data X [n, D] (rows = samples) by SVD, keeping k components (default all)."""
    X = np.asarray(X, np.float64)
    if X.ndim != 2 or X.shape[0] < 2:
        raise MinillmError(f"PCA needs a data matrix [n >= 2 samples, D], got shape {X.shape}")
    mean = X.mean(0)  # [D]
    U, S, Vt = np.linalg.svd(X - mean, full_matrices=False)  # [n, r], [r], [r, D]
    k = S.shape[0] if k is None else min(k, S.shape[0])
    total = (S**2).sum()
    ratio = S**2 / total if total > 0 else np.zeros_like(S)
    return PCAResult(mean, Vt[:k], S, ratio, U[:, :k] * S[:k], hook)


def collect_activations(model: HookedModel, prompts: Sequence[str], hook: str, pos: int | None = -1,
                        progress: bool = False) -> tuple[np.ndarray, list[str]]:
    """The activation at `hook` for each prompt, at position `pos` (None = every position).

    -> (X [n, D], labels): n = len(prompts) with a position, else one row per
    (prompt, position) labelled "token". D = the activation's trailing size
    (flattened: hook_z [h, e] -> h·e).
    """
    model.hooks.check_name(hook)
    rows, labels = [], []
    for text in tqdm(prompts, disable=not progress, desc=hook):
        _, cache = model.run_with_cache(text, names_filter=[hook])
        act = cache[hook][0]  # [p, ...]
        act = act.reshape(act.shape[0], -1)  # [p, D]
        if pos is None:
            rows.append(act)
            labels += model.to_str_tokens(text) if model.tokenizer is not None else [""] * act.shape[0]
        else:
            rows.append(act[pos][None])
            labels.append(text)
    return np.concatenate(rows).astype(np.float64), labels


def activation_pca(model: HookedModel, prompts: Sequence[str], hook: str, pos: int | None = -1,
                   k: int | None = 10) -> PCAResult:
    """PCA of the activations at `hook` over prompts (see `collect_activations` for `pos`)."""
    X, _ = collect_activations(model, prompts, hook, pos)
    return pca(X, k, hook)
