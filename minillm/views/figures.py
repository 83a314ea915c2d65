"""Every matplotlib figure minillm draws, built with matplotlib's object API.

    fig = figures.heatmap(result)          # a matplotlib.figure.Figure: shows inline in Jupyter
    figures.save(fig, "out/heads.png")     # written only where the caller asks

No function here touches pyplot's global state or switches the backend: a
`Figure` made with `matplotlib.figure.Figure` belongs to no window, renders
headless anywhere (Agg canvas), is garbage-collected like any object, and in
a notebook shows as an image when it is a cell's value (or through
`IPython.display.display(fig)`). Layout is matplotlib's constrained layout,
so titles, tick labels and colourbars are never cut off.

The analyses (`minillm.interp.*`, drift, compare) keep a `.plot(path=None)`
method that calls the function here and saves when given a path.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from minillm.errors import MinillmError

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DPI = 100


def new_figure(figsize: tuple[float, float] = (7, 4)) -> Figure:
    """A pyplot-free Figure with constrained layout (nothing is clipped)."""
    from matplotlib.figure import Figure

    enable_notebook_display()
    return Figure(figsize=figsize, layout="constrained")


def subplots(nrows: int = 1, ncols: int = 1, figsize: tuple[float, float] = (7, 4), **kwargs: Any
             ) -> tuple[Figure, Any]:
    """Like `plt.subplots`, without pyplot: (Figure, Axes or array of Axes), constrained layout."""
    fig = new_figure(figsize)
    return fig, fig.subplots(nrows, ncols, **kwargs)


def save(fig: Figure, path: str | os.PathLike, dpi: int = DPI) -> Path:
    """Write `fig` to `path` (format from the suffix; parent folders are created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path


def saved(fig: Figure, path: str | os.PathLike | None, dpi: int = DPI) -> Figure:
    """`fig`, written to `path` first when one is given (how every `plot(path=None)` ends)."""
    if path is not None:
        save(fig, path, dpi)
    return fig


def png_bytes(fig: Figure, dpi: int = DPI) -> bytes:
    """The figure as PNG bytes (for HTML embedding or a notebook's image/png output)."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def enable_notebook_display() -> None:
    """Inside IPython, make a bare Figure display as a PNG (what `%matplotlib inline` registers).

    The registration is IPython's own display formatter for Figure objects; it
    changes no backend and nothing outside IPython, and is done once.
    """
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    if shell is None or getattr(shell, "_minillm_figures", False):
        return
    from matplotlib.figure import Figure

    png = shell.display_formatter.formatters["image/png"]
    if not _has_type(png, Figure):
        png.for_type(Figure, png_bytes)
    shell._minillm_figures = True


def _has_type(formatter, cls) -> bool:
    try:
        formatter.lookup_by_type(cls)
        return True
    except KeyError:
        return False


def _label(text: str) -> str:
    """A token as a tick label: escapes visible (newline as \\n), no quotes."""
    return repr(str(text))[1:-1]


def _ticks(axis, labels: Sequence[str], max_ticks: int = 40, rotation: float = 0,
           fontsize: float = 7) -> None:
    """At most max_ticks labelled ticks on an x or y axis (every n-th label)."""
    step = max(1, int(np.ceil(len(labels) / max_ticks)))
    idx = list(range(0, len(labels), step))
    axis.set_ticks(idx, [_label(labels[i]) for i in idx], rotation=rotation, fontsize=fontsize)


def _symmetric_limit(values: np.ndarray) -> float:
    finite = np.abs(values[np.isfinite(values)])
    return float(finite.max()) if finite.size and finite.max() > 0 else 1.0


# --- LabelledArray ---------------------------------------------------------------------------


def heatmap(res, cmap: str | None = None, max_ticks: int = 40, colorbar_label: str | None = None,
            ax: Axes | None = None) -> Figure:
    """A 1-D LabelledArray as bars, a 2-D one as a heatmap.

    Signed values get a diverging map centred at 0 (red +, blue -); values
    that are all >= 0 (scores, probabilities) a sequential map from 0.

    The colourbar is labelled with `colorbar_label`, else the result's title's
    quantity (the part after ": "), else "value".
    """
    values = np.asarray(res.values, np.float64)
    if values.ndim not in (1, 2):
        raise MinillmError(f"heatmap draws 1-D or 2-D results; {res.title!r} has axes {res.axes}")
    if ax is None:
        if values.ndim == 1:
            size = (max(4.0, min(16.0, 1.5 + 0.25 * values.shape[0])), 3.2)
        else:
            rows, cols = values.shape
            size = (min(16.0, 3 + 0.35 * cols), min(12.0, 2 + 0.3 * rows))
        fig = new_figure(size)
        ax = fig.subplots()
    fig = ax.figure
    label = colorbar_label or (res.title.split(": ", 1)[1] if ": " in res.title else res.title or "value")
    if values.ndim == 1:
        ax.bar(range(values.shape[0]), np.nan_to_num(values),
               color=["tab:red" if v > 0 else "tab:blue" for v in np.nan_to_num(values)])
        ax.axhline(0, color="k", lw=0.5)
        ax.set_xlabel(res.axes[0])
        ax.set_ylabel(label)
        _ticks(ax.xaxis, res.labels[0], max_ticks, rotation=90)
    else:
        lim = _symmetric_limit(values)
        signed = bool((values[np.isfinite(values)] < 0).any())
        im = ax.imshow(values, cmap=cmap or ("RdBu_r" if signed else "viridis"), vmin=-lim if signed else 0,
                       vmax=lim, aspect="auto", interpolation="nearest")
        fig.colorbar(im, ax=ax, label=label, fraction=0.06, pad=0.02, aspect=30)
        ax.set_ylabel(res.axes[0])
        ax.set_xlabel(res.axes[1])
        _ticks(ax.yaxis, res.labels[0], max_ticks)
        _ticks(ax.xaxis, res.labels[1], max_ticks, rotation=90)
    ax.set_title(_wrap(res.title, ax), fontsize=9)
    return fig


def _wrap(title: str, ax: Axes) -> str:
    """Break a long title into lines that fit the axes' width (about 7 px per character at size 9)."""
    import textwrap

    width_px = ax.figure.get_figwidth() * ax.figure.dpi * ax.get_position().width
    chars = max(30, int(width_px / 6.5))
    return "\n".join(textwrap.wrap(title, chars)) if title else ""


# --- logit lens --------------------------------------------------------------------------------


def lens_grid(lens) -> Figure:
    """Layer × position grid: colour = top-1 probability, text = the top-1 token."""
    rows, p = lens.top_ids.shape[:2]
    fig = new_figure((min(20.0, 3 + 1.1 * p), min(16.0, 2 + 0.3 * rows)))
    ax = fig.subplots()
    im = ax.imshow(lens.top_probs[:, :, 0], cmap="Blues", vmin=0, vmax=1, aspect="auto", origin="lower",
                   interpolation="nearest")
    for r in range(rows):
        for c in range(p):
            ax.text(c, r, _label(lens.decode(int(lens.top_ids[r, c, 0])))[:10], ha="center", va="center",
                    fontsize=6, color="white" if lens.top_probs[r, c, 0] > 0.6 else "black")
    ax.set_xticks(range(p), [_label(t) for t in lens.str_tokens], rotation=60, fontsize=7)
    ax.set_yticks(range(rows), lens.row_labels, fontsize=6)
    ax.set_xlabel("position (input token)")
    ax.set_ylabel("layer")
    ax.set_title(f"logit lens ({lens.stream}): top-1 next token and its probability", fontsize=10)
    fig.colorbar(im, ax=ax, label="top-1 probability")
    return fig


def lens_targets(lens, pos: int = -1) -> Figure:
    """Each target's probability (left) and rank (right, log scale) across layers."""
    if not lens.target_ids:
        raise MinillmError("this lens has no targets: pass targets=[...] to logit_lens")
    fig = new_figure((11, 3.8))
    a1, a2 = fig.subplots(1, 2)
    x = np.arange(len(lens.row_labels))
    for j, t in enumerate(lens.target_ids):
        a1.plot(x, lens.target_probs[:, pos, j], marker=".", label=repr(lens.decode(t)))
        a2.plot(x, lens.target_ranks[:, pos, j], marker=".", label=repr(lens.decode(t)))
    a2.set_yscale("log")
    a2.invert_yaxis()
    for a, name in ((a1, "probability"), (a2, "rank (1 = top)")):
        step = max(1, len(x) // 20)
        a.set_xticks(x[::step], lens.row_labels[::step], rotation=90, fontsize=7)
        a.set_xlabel("layer")
        a.set_ylabel(name)
        a.legend(fontsize=7)
    fig.suptitle(f"{lens.stream} lens at {lens.str_tokens[pos]!r}", fontsize=10)
    return fig


def dla(result) -> Figure:
    """Direct logit attribution: per-layer attention and MLP bars, and the [layer, head] heatmap."""
    fig = new_figure((13, 4.2))
    a1, a2 = fig.subplots(1, 2)
    x = np.arange(result.layers.shape[0])
    a1.bar(x - 0.2, result.layers.values[:, 0], 0.4, label="attention")
    a1.bar(x + 0.2, result.layers.values[:, 1], 0.4, label="MLP")
    a1.axhline(0, color="k", lw=0.5)
    a1.set_xlabel("layer")
    a1.set_ylabel("direct effect on logit difference")
    a1.legend()
    heatmap(result.heads, ax=a2, colorbar_label="direct effect on logit difference")
    a2.set_title("per head", fontsize=9)
    fig.suptitle(f"{result.parts.title} (total {result.total:.3f})", fontsize=10)
    return fig


# --- attention -------------------------------------------------------------------------------------


def attention_patterns(patterns: np.ndarray, str_tokens: Sequence[str], heads: Sequence[tuple[int, int]],
                       kv_group: int = 1, max_ticks: int = 40) -> Figure:
    """Side-by-side attention patterns [q, k] of several heads, with token labels and a colourbar.

    patterns: one [q, k] array per entry of `heads` ((layer, head) pairs).
    """
    n = len(heads)
    if n == 0 or len(patterns) != n:
        raise MinillmError(f"attention_patterns needs one [q, k] pattern per head; got {len(patterns)} "
                           f"patterns for {n} heads")
    p = len(str_tokens)
    side = min(6.0, 2.5 + 0.15 * p)
    fig = new_figure((side * n + 1.2, side + 0.9))
    axes = np.atleast_1d(fig.subplots(1, n, sharey=True))
    im = None
    for ax, pat, (layer, head) in zip(axes, patterns, heads):
        im = ax.imshow(pat, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
        _ticks(ax.xaxis, list(str_tokens), max_ticks, rotation=90, fontsize=6)
        ax.set_xlabel("key (attended to)")
        kv = f" (kv-head {head // kv_group})" if kv_group > 1 else ""
        ax.set_title(f"head {layer}.{head}{kv}", fontsize=9)
    _ticks(axes[0].yaxis, list(str_tokens), max_ticks, fontsize=6)
    axes[0].set_ylabel("query")
    fig.colorbar(im, ax=list(axes), label="attention weight", shrink=0.8)
    return fig


# --- ablation, pruning, patching ---------------------------------------------------------------------


def ripple(res, rates: Sequence[float] | None = None) -> Figure:
    """The median-replacement "ripple" plot: Δ target measure across layers, one line per rate.

    Coarse rates (>= 10 %) and fine rates (< 10 %) get a panel each, so the
    nearly coinciding coarse curves do not hide the fine ones; each panel's
    legend sits outside the data, to its right.
    """
    from matplotlib import colormaps

    rates = list(res.rates) if rates is None else [float(r) for r in rates]
    unknown = [r for r in rates if r not in res.rates]
    if unknown:
        raise MinillmError(f"rates {unknown} were not measured; this result has {res.rates}")
    panels = [(name, [r for r in rates if sel(r)]) for name, sel in
              (("coarse rates (≥ 10 %)", lambda r: r >= 10), ("fine rates (< 10 %)", lambda r: r < 10))]
    panels = [(name, rs) for name, rs in panels if rs]
    fig = new_figure((11, 3.3 * len(panels) + 0.6))
    axes = np.atleast_1d(fig.subplots(len(panels), 1, sharex=True))
    measure = res.delta.meta.get("measure", "logit")
    for ax, (name, rs) in zip(axes, panels):
        cmap = colormaps["viridis"]
        for n, r in enumerate(rs):
            j = res.rates.index(r)
            ax.plot(res.layers, res.delta.values[:, j], marker=".", ms=4, lw=1,
                    color=cmap(n / max(1, len(rs) - 1)), label=f"{r:g}% ({res.counts[j]})")
        ax.axhline(0, color="k", lw=0.5)
        ax.set_ylabel(f"Δ {measure}({res.target!r})")
        ax.set_title(name, fontsize=9)
        ax.legend(fontsize=7, ncol=1 + len(rs) // 10, title="p (neurons)", title_fontsize=7,
                  loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    axes[-1].set_xlabel("layer")
    fig.suptitle(f"median replacement of the top p% MLP neurons, last position of {res.prompt!r}"
                 + (" [interrupted]" if res.interrupted else ""), fontsize=10)
    return fig


def pruning_curves(curves: dict, ylabel: str = "metric") -> Figure:
    """Metric against fraction pruned, one line per ranking method."""
    fig = new_figure((6.5, 4))
    ax = fig.subplots()
    for name, c in curves.items():
        ax.plot(c.meta["fractions"], c.values, marker="o", label=name)
    ax.set_xlabel("fraction pruned (lowest importance first)")
    ax.set_ylabel(ylabel)
    ax.legend()
    ax.set_title("pruning")
    return fig


def attribution_comparison(cmp) -> Figure:
    """Attribution heatmap, activation-patching heatmap, and their scatter with r."""
    fig = new_figure((15, 4.8))
    axes = fig.subplots(1, 3)
    for ax, res, what in ((axes[0], cmp.attribution, "estimated Δ metric"),
                          (axes[1], cmp.activation, "measured Δ metric")):
        heatmap(res, ax=ax, colorbar_label=what)
    a, m = cmp.attribution.values.ravel(), cmp.activation.values.ravel()
    ok = ~np.isnan(m) & ~np.isnan(a)
    axes[2].scatter(a[ok], m[ok], s=8, alpha=0.6)
    if ok.any():
        lo, hi = min(a[ok].min(), m[ok].min()), max(a[ok].max(), m[ok].max())
        axes[2].plot([lo, hi], [lo, hi], "k--", lw=0.8, label="y = x")
        axes[2].legend(fontsize=8)
    axes[2].set_xlabel("attribution patching (linear estimate)")
    axes[2].set_ylabel("activation patching (measured)")
    axes[2].set_title(f"{cmp.component}: r = {cmp.r:.3f} (changed only {cmp.r_changed:.3f}), "
                      f"slope {cmp.slope:.2f}", fontsize=9)
    return fig


# --- readout, PCA, patchscopes -------------------------------------------------------------------------


def neuron_readout(r) -> Figure:
    """Bars of the tokens a neuron's output direction promotes (red) and suppresses (blue)."""
    pairs = r.promoted + r.suppressed[::-1]
    fig = new_figure((6.5, 0.25 * len(pairs) + 1.4))
    ax = fig.subplots()
    ax.barh(range(len(pairs)), [v for _, v in pairs],
            color=["tab:red" if v > 0 else "tab:blue" for _, v in pairs])
    ax.set_yticks(range(len(pairs)), [repr(t) for t, _ in pairs], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("logit per unit activation (W_out[i] ⊙ w @ W_U)")
    ax.set_title(f"neuron L{r.layer}N{r.neuron}: promoted / suppressed tokens", fontsize=10)
    return fig


def pca_scatter(res, labels: Sequence[str] | None = None, groups: Sequence[str] | None = None,
                pcs: tuple[int, int] = (0, 1)) -> Figure:
    """The data on two principal components, coloured by `groups`, annotated with `labels`."""
    i, j = pcs
    if max(i, j) >= res.coords.shape[1]:
        raise MinillmError(f"components {pcs} requested, the PCA kept {res.coords.shape[1]}")
    fig = new_figure((6.5, 5))
    ax = fig.subplots()
    groups = list(groups) if groups is not None else ["data"] * res.coords.shape[0]
    for g in dict.fromkeys(groups):
        sel = np.array([x == g for x in groups])
        ax.scatter(res.coords[sel, i], res.coords[sel, j], label=str(g), s=25)
    for n, text in enumerate(labels or []):
        ax.annotate(str(text)[:24], res.coords[n, [i, j]], fontsize=6, alpha=0.8)
    r = res.explained_variance_ratio
    ax.set_xlabel(f"PC{i + 1} ({r[i]:.1%})")
    ax.set_ylabel(f"PC{j + 1} ({r[j]:.1%})")
    if len(set(groups)) > 1:
        ax.legend(fontsize=7)
    ax.set_title(f"PCA of {res.hook or 'activations'}", fontsize=10)
    return fig


def pca_variance(res, k: int = 20) -> Figure:
    """Explained-variance ratio per component and its cumulative sum."""
    r = res.explained_variance_ratio[:k]
    fig = new_figure((6, 3.5))
    ax = fig.subplots()
    ax.bar(np.arange(1, len(r) + 1), r, label="per component")
    ax.plot(np.arange(1, len(r) + 1), np.cumsum(r), "k.-", label="cumulative")
    ax.set_xlabel("component")
    ax.set_ylabel("explained variance ratio")
    ax.legend()
    return fig


def patchscope_sweep(sweep) -> Figure:
    """p(target) heatmap, source layer × target layer."""
    v = sweep.probs.values
    fig = new_figure((min(14.0, 3 + 0.4 * v.shape[1]), min(12.0, 2 + 0.35 * v.shape[0])))
    ax = fig.subplots()
    im = ax.imshow(v, cmap="viridis", vmin=0, vmax=max(float(v.max()), 1e-6), origin="lower",
                   aspect="auto", interpolation="nearest")
    ax.set_yticks(range(v.shape[0]), sweep.probs.labels[0], fontsize=7)
    ax.set_xticks(range(v.shape[1]), sweep.probs.labels[1], fontsize=7)
    ax.set_ylabel("source layer (read)")
    ax.set_xlabel("target layer (inject)")
    ax.set_title(_wrap(sweep.probs.title, ax), fontsize=9)
    fig.colorbar(im, ax=ax, label="probability")
    return fig


# --- drift and compare --------------------------------------------------------------------------------


def _symlog_profile(ax: Axes | None, xlabel: str, ylabel: str, title: str) -> tuple[Figure, Axes]:
    """The Axes of a per-layer change profile (`ax`, or one in a new figure), on a symlog y
    scale that keeps exact zeros visible, labelled.   -> (its figure, the Axes)"""
    fig = ax.figure if ax is not None else new_figure((7.5, 4.2))
    ax = ax if ax is not None else fig.subplots()
    ax.set_yscale("symlog", linthresh=1e-9)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    return fig, ax


def drift_profile(report, ax: Axes | None = None) -> Figure:
    """Relative residual drift against layer, one line per run (symlog scale: exact zeros show)."""
    fig, ax = _symlog_profile(ax, "layer (0 = embeddings, l = after block l-1)",
                              "max over positions of |Δresid| / |clean|",
                              "drift of the residual stream against the clean run")
    styles = {"journal-reverted": (6, "--"), "recomputed-cache": (3, ":")}  # both exactly 0: keep visible
    for name, r in report.runs.items():
        if r.resid_abs.size:
            prof = r.resid_rel.max(axis=1)
            ms, ls = styles.get(name, (3, "-"))
            ax.plot(np.arange(len(prof)), prof, marker="o", ms=ms, ls=ls, label=name)
    ax.legend(fontsize=8)
    return fig


def interference(imap, ax: Axes | None = None) -> Figure:
    """Per layer, the largest change of any other neuron's hook_post (symlog: exact zeros show)."""
    fig, ax = _symlog_profile(ax, "layer", "max |Δ hook_post| of other neurons",
                              "interference: only downstream neurons move")
    prof = imap.per_layer()
    ax.bar(np.arange(len(prof)), prof)
    ax.axvline(imap.layer, color="red", ls="--", lw=1, label=f"edited neuron {imap.layer}:{imap.neuron}")
    ax.legend(fontsize=8)
    return fig


def compare_profile(report, depth: Any, split: Any, plottable: Any) -> Figure:
    """Max abs error, and error / tolerance, of every hook against depth (log scale); failures red."""
    rows = report.rows
    n = report.n_layers or 1 + max((split(r.name)[0] or 0) for r in rows)
    x = np.array([depth(r.name, n) for r in rows])
    ok = np.array([r.passed for r in rows], dtype=bool)
    fig = new_figure((9, 6))
    axes = fig.subplots(2, 1, sharex=True)
    for ax, attr, label in ((axes[0], "max_abs", "max abs error"),
                            (axes[1], "usage", "max error / tolerance")):
        y = plottable(np.array([getattr(r, attr) for r in rows], dtype=np.float64))
        ax.plot(x, y, color="0.7", lw=0.8, zorder=1)
        ax.scatter(x[ok], y[ok], s=10, color="tab:blue", label="within tolerance", zorder=2)
        ax.scatter(x[~ok], y[~ok], s=14, color="tab:red", label="fails", zorder=3)
        ax.set_yscale("log")
        ax.set_ylabel(label)
    axes[1].axhline(1.0, color="tab:red", lw=0.8, ls="--")
    first = report.first_failure
    if first is not None:
        for ax in axes:
            ax.axvline(depth(first.name, n), color="tab:red", ls=":", lw=1)
        axes[0].set_title(f"first divergence: {first.name}", fontsize=10)
    else:
        axes[0].set_title("all hooks within tolerance", fontsize=10)
    axes[0].legend(fontsize=8, loc="best")
    axes[1].set_xlabel("depth (layer; embeddings at -1, final norm and logits after the last)")
    return fig
