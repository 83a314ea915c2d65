"""A small labelled array: the common result format of the patching and attribution sweeps.

    res = LabelledArray(values, axes=("layer", "pos"), labels=(["0", "1", ...], ["When", " Mary", ...]))
    res.values[3, 5]            # the number
    res.top(5)                  # the 5 largest |values| with their labels
    res.plot("resid.png")       # a heatmap (2-D) or bar chart (1-D)

Any sweep (activation patching, attribution patching, gradient importance,
ablations) returns one of these, so that plots and comparisons work on all of
them alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from minillm.errors import MinillmError


@dataclass
class LabelledArray:
    """values [n_0, n_1, ...], with a name per axis and a label per index.

    axes: e.g. ("layer", "pos") or ("layer", "head").
    labels: one sequence of strings per axis, len(labels[i]) == values.shape[i].
    title: what the values are (used by plots), e.g. "attribution: resid_pre".
    """

    values: np.ndarray
    axes: tuple[str, ...]
    labels: tuple[list[str], ...]
    title: str = ""
    # Anything a sweep wants to keep with its numbers (base metric values, direction, runtime,
    # whether it was interrupted); JSON-friendly values. Added for minillm.interp.patching.
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        self.values = np.asarray(self.values)
        self.axes = tuple(self.axes)
        self.labels = tuple(list(map(str, lab)) for lab in self.labels)
        if len(self.axes) != self.values.ndim or len(self.labels) != self.values.ndim:
            raise MinillmError(f"{self.title or 'LabelledArray'}: values have {self.values.ndim} "
                               f"axes but {len(self.axes)} names and {len(self.labels)} label lists")
        for axis, (n, lab) in enumerate(zip(self.values.shape, self.labels)):
            if len(lab) != n:
                raise MinillmError(f"{self.title or 'LabelledArray'}: axis {self.axes[axis]!r} "
                                   f"has {n} entries but {len(lab)} labels")

    @property
    def shape(self) -> tuple[int, ...]:
        return self.values.shape

    def top(self, k: int = 10) -> list[tuple[tuple[str, ...], float]]:
        """The k entries of largest |value|: [((label per axis), value), ...]."""
        flat = np.argsort(-np.abs(self.values), axis=None)[:k]
        out = []
        for i in flat:
            idx = np.unravel_index(i, self.shape)
            out.append((tuple(self.labels[a][j] for a, j in enumerate(idx)), float(self.values[idx])))
        return out

    def plot(self, path: str | Path, **kwargs) -> Path:
        """Write a heatmap (2-D) or bar chart (1-D) PNG; see `plot_heatmap`."""
        return plot_heatmap(self, path, **kwargs)


def plot_heatmap(res: LabelledArray, path: str | Path, cmap: str = "RdBu",
                 max_ticks: int = 40) -> Path:
    """A PNG of a 1-D or 2-D LabelledArray, colour centred at 0 (red +, blue -)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    path = Path(path)
    if res.values.ndim not in (1, 2):
        raise MinillmError(f"plot_heatmap draws 1-D or 2-D results; {res.title!r} has axes {res.axes}")
    if res.values.ndim == 1:
        fig, ax = plt.subplots(figsize=(max(4, 0.25 * res.shape[0]), 3))
        ax.bar(range(res.shape[0]), res.values)
        ax.set_xlabel(res.axes[0])
        _ticks(ax.set_xticks, ax.set_xticklabels, res.labels[0], max_ticks, rotation=90)
    else:
        rows, cols = res.shape
        fig, ax = plt.subplots(figsize=(min(16, 2 + 0.35 * cols), min(12, 1.5 + 0.3 * rows)))
        lim = float(np.nan_to_num(np.nanmax(np.abs(res.values)))) or 1.0
        im = ax.imshow(res.values, cmap=cmap, vmin=-lim, vmax=lim, aspect="auto")
        fig.colorbar(im, ax=ax)
        ax.set_ylabel(res.axes[0])
        ax.set_xlabel(res.axes[1])
        _ticks(ax.set_yticks, ax.set_yticklabels, res.labels[0], max_ticks)
        _ticks(ax.set_xticks, ax.set_xticklabels, res.labels[1], max_ticks, rotation=90)
    ax.set_title(res.title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _ticks(set_ticks, set_labels, labels, max_ticks, rotation=0):
    step = max(1, int(np.ceil(len(labels) / max_ticks)))
    idx = list(range(0, len(labels), step))
    set_ticks(idx)
    set_labels([repr(labels[i])[1:-1] for i in idx], rotation=rotation, fontsize=7)
