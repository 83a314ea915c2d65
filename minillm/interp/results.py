"""A small labelled array: the common result format of the patching and attribution sweeps.

    res = LabelledArray(values, axes=("layer", "pos"), labels=(["0", "1", ...], ["When", " Mary", ...]))
    res.values[3, 5]            # the number
    res.top(5)                  # the 5 largest |values| with their labels
    res.plot()                  # a heatmap (2-D) or bar chart (1-D) Figure; .plot("x.png") saves it
    res.to_csv("resid.csv")     # tidy: one row per cell (label per axis, value)
    res                         # in a notebook: a coloured table (or its top entries)

Any sweep (activation patching, attribution patching, gradient importance,
ablations) returns one of these, so that plots and comparisons work on all of
them alike.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from minillm.errors import MinillmError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from minillm.hooked_model import HookedModel


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

    def __repr__(self) -> str:
        dims = " × ".join(f"{a}={n}" for a, n in zip(self.axes, self.shape))
        finite = self.values[np.isfinite(self.values)] if self.values.dtype.kind == "f" else self.values
        rng = f", range [{finite.min():.4g}, {finite.max():.4g}]" if finite.size else ""
        best = ", ".join(f"{'/'.join(lab)}: {v:.4g}" for lab, v in self.top(3))
        return (f"LabelledArray({self.title!r}, [{dims}]{rng}"
                + (f"; largest |value|: {best}" if best else "") + ")")

    def _repr_html_(self) -> str:
        from minillm.views import display as D

        dims = " × ".join(f"{a} ({n})" for a, n in zip(self.axes, self.shape))
        note = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                         for k, v in self.meta.items() if isinstance(v, (int, float, str, bool)))
        if self.values.ndim == 2 and self.values.size <= D.MAX_CELLS:
            body = D.heat_table(self.values, self.labels[0], self.labels[1],
                                corner=f"{self.axes[0]} \\ {self.axes[1]}")
        elif self.values.ndim == 1 and self.values.size <= 60:
            body = D.heat_table(self.values[None, :], ["value"], self.labels[0], corner=self.axes[0])
        else:
            body = D.table([*self.axes, "value"], [(*lab, D.num(v)) for lab, v in self.top(20)],
                           caption="the 20 entries of largest |value|")
        return D.block(f"{self.title or 'LabelledArray'} — {dims}", body, note=note)

    def to_csv(self, path: str | os.PathLike | None = None) -> str:
        """Tidy CSV: a header (the axis names, "value"), then one row per cell with its labels.

        Written with the csv module (labels holding commas, quotes or newlines
        survive); values as Python floats' shortest round-trip text, empty
        for NaN. Returns the text; also writes it to `path` if given.
        """
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow([*self.axes, "value"])
        for idx in np.ndindex(*self.shape):
            v = float(self.values[idx])
            writer.writerow([*(self.labels[a][i] for a, i in enumerate(idx)), "" if np.isnan(v) else repr(v)])
        text = buf.getvalue()
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            with open(path, "w", newline="", encoding="utf-8") as f:
                f.write(text)
        return text

    def top(self, k: int = 10) -> list[tuple[tuple[str, ...], float]]:
        """The k entries of largest |value|: [((label per axis), value), ...]."""
        flat = np.argsort(-np.abs(self.values), axis=None)[:k]
        out = []
        for i in flat:
            idx = np.unravel_index(i, self.shape)
            out.append((tuple(self.labels[a][j] for a, j in enumerate(idx)), float(self.values[idx])))
        return out

    def plot(self, path: str | Path | None = None, **kwargs) -> Figure:
        """A heatmap (2-D) or bar chart (1-D) Figure; saved to `path` if given. See views.figures.heatmap."""
        return plot_heatmap(self, path, **kwargs)


def plot_heatmap(res: LabelledArray, path: str | Path | None = None, **kwargs: Any) -> Figure:
    """The Figure of a 1-D or 2-D LabelledArray (colour centred at 0); saved to `path` if given."""
    from minillm.views import figures

    return figures.saved(figures.heatmap(res, **kwargs), path)


# --- the axes of a sweep ---------------------------------------------------------------------------


def layer_indices(model: HookedModel, layers: Sequence[int] | None) -> list[int]:
    """The layers a sweep runs over (None: all), each checked to exist."""
    L = model.cfg.n_layers
    layers = list(range(L)) if layers is None else [int(l) for l in layers]
    for l in layers:
        if not 0 <= l < L:
            raise MinillmError(f"layer {l} does not exist: the model has {L} layers (0..{L - 1})")
    return layers


def pos_labels(model: HookedModel, tokens: np.ndarray) -> list[str]:
    """Labels of a position axis: "i:token" for the prompt tokens [1, p] (ids without a tokenizer)."""
    try:
        toks = model.to_str_tokens(tokens[0])
    except MinillmError:  # no tokenizer: label by id
        toks = [str(int(t)) for t in tokens[0]]
    return [f"{i}:{t}" for i, t in enumerate(toks)]
