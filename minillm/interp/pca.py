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

    def plot_scatter(self, path: str | Path, labels: Sequence[str] | None = None,
                     groups: Sequence[str] | None = None, pcs: tuple[int, int] = (0, 1)) -> Path:
        """PNG: the data on two components, coloured by `groups`, annotated with `labels`."""
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        i, j = pcs
        if max(i, j) >= self.coords.shape[1]:
            raise MinillmError(f"components {pcs} requested, the PCA kept {self.coords.shape[1]}")
        fig, ax = plt.subplots(figsize=(6.5, 5))
        groups = list(groups) if groups is not None else ["data"] * self.coords.shape[0]
        for g in dict.fromkeys(groups):
            sel = np.array([x == g for x in groups])
            ax.scatter(self.coords[sel, i], self.coords[sel, j], label=str(g), s=25)
        for n, text in enumerate(labels or []):
            ax.annotate(str(text)[:24], self.coords[n, [i, j]], fontsize=6, alpha=0.8)
        r = self.explained_variance_ratio
        ax.set_xlabel(f"PC{i + 1} ({r[i]:.1%})")
        ax.set_ylabel(f"PC{j + 1} ({r[j]:.1%})")
        if len(set(groups)) > 1:
            ax.legend(fontsize=7)
        ax.set_title(f"PCA of {self.hook or 'activations'}")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return Path(path)

    def plot_variance(self, path: str | Path, k: int = 20) -> Path:
        """PNG: explained-variance ratio per component and its cumulative sum."""
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        r = self.explained_variance_ratio[:k]
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.bar(np.arange(1, len(r) + 1), r, label="per component")
        ax.plot(np.arange(1, len(r) + 1), np.cumsum(r), "k.-", label="cumulative")
        ax.set_xlabel("component")
        ax.set_ylabel("explained variance ratio")
        ax.legend()
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return Path(path)


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
