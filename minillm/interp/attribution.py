"""Attribution patching: activation patching's linear approximation, from one backward pass.

Activation patching runs the clean prompt once per component, replacing that
component's activation by its value on the corrupted prompt, and records how
the metric moves. Attribution patching replaces all those runs by a
first-order Taylor expansion around the clean run:

    metric(clean with a ← a_corrupted) - metric(clean)  ≈  (a_corrupted - a_clean) · ∂metric/∂a |clean

so two forward passes and one backward give every component at once
(Nanda, "Attribution patching", 2023). It is exact for a component the metric
depends on linearly, and degrades where the metric is curved along the patch:
attention patterns (softmax saturation), norms, and large activation changes.

    from minillm.interp import attribution as ap, metrics as M
    metric = M.logit_diff(model, " Mary", " John")
    attr = ap.attribution_patching(model, clean, corrupted, metric)   # {component: LabelledArray}
    act = ap.activation_patching(model, clean, corrupted, metric, "resid_pre")
    cmp = ap.compare(attr["resid_pre"], act)                         # correlation, scatter plot
    imp = ap.gradient_importance(model, clean, metric)               # |act · grad| per head, neuron

Components (the same names for both methods):
    resid_pre, attn_out, mlp_out : [layer, pos]   (blocks.l.hook_<name>, one position at a time)
    heads                        : [layer, head]  (blocks.l.attn.hook_z, one head, all positions)
    neurons                      : [layer, neuron] (blocks.l.mlp.hook_post, one neuron, all positions)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from minillm.activation_cache import act_name
from minillm.errors import MinillmError
from minillm.grad.backward import backward
from minillm.hooked_model import HookedModel
from minillm.interp import interventions as iv
from minillm.interp.batch import run_batch
from minillm.interp.metrics import Metric
from minillm.interp.results import LabelledArray

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from minillm.hooked_model import TokensLike

# component -> (TransformerLens short hook name, index axis of the activation after [b])
COMPONENTS = {c: iv.COMPONENTS[c] for c in ("resid_pre", "attn_out", "mlp_out", "heads", "neurons")}


def _hook(component: str, layer: int) -> str:
    if component not in COMPONENTS:
        raise MinillmError(f"unknown component {component!r}; choose from {sorted(COMPONENTS)}")
    return act_name(COMPONENTS[component][0], layer)


def _labels(model: HookedModel, tokens: np.ndarray, component: str) -> tuple[str, list[str], list[str]]:
    """(axis name, layer labels, labels of the second axis) for a component."""
    layers = [str(l) for l in range(model.cfg.n_layers)]
    axis = COMPONENTS[component][1]
    if axis == "pos":
        try:
            toks = model.to_str_tokens(tokens[0])
        except MinillmError:  # no tokenizer: label by index
            toks = [str(int(t)) for t in tokens[0]]
        return axis, layers, [f"{i}:{t}" for i, t in enumerate(toks)]
    n = model.cfg.n_heads if axis == "head" else model.cfg.d_mlp
    return axis, layers, [str(i) for i in range(n)]


def _per_component(component: str, x: np.ndarray) -> np.ndarray:
    """Sum an elementwise product over everything but the component's index.

    [b, p, d] -> [p] (positions); [b, p, h, e] -> [h] (heads); [b, p, m] -> [m] (neurons).
    """
    if component == "heads":
        return x.sum(axis=(0, 1, 3))
    if component == "neurons":
        return x.sum(axis=(0, 1))
    return x.sum(axis=(0, 2))


# --- attribution patching ----------------------------------------------------------------------


def attribution_patching(
    model: HookedModel,
    clean: TokensLike,
    corrupted: TokensLike,
    metric: Metric,
    components: Iterable[str] = ("resid_pre", "attn_out", "mlp_out", "heads", "neurons"),
) -> dict[str, LabelledArray]:
    """Estimated effect of patching each component from the corrupted run into the clean run.

    clean, corrupted: token ids [b, p] (or text) of the same shape. Cost: one
    forward + backward on clean (activation gradients only), one forward on
    corrupted. Returns {component: LabelledArray}; see the module docstring.
    Batch rows are summed (the metric's own batch mean is already in the gradient).
    """
    clean, corrupted = model.as_tokens(clean), model.as_tokens(corrupted)
    if clean.shape != corrupted.shape:
        raise MinillmError(f"clean {clean.shape} and corrupted {corrupted.shape} token arrays "
                           "must have the same shape (same number of tokens)")
    components = list(components)
    names = [_hook(c, l) for c in components for l in range(model.cfg.n_layers)]
    res = backward(model, clean, metric, params=False)
    _, corrupt_cache = model.run_with_cache(corrupted, names_filter=names)
    out = {}
    for comp in components:
        rows = []
        for l in range(model.cfg.n_layers):
            name = _hook(comp, l)
            rows.append(_per_component(comp, (corrupt_cache[name] - res.cache[name]) * res.grad(name)))
        axis, layers, labels = _labels(model, clean, comp)
        out[comp] = LabelledArray(np.stack(rows), ("layer", axis), (layers, labels),
                                  title=f"attribution patching: {comp}")
    return out


# --- activation patching (the reference the approximation is judged against) ---------------------


def activation_patching(
    model: HookedModel,
    clean: TokensLike,
    corrupted: TokensLike,
    metric: Metric,
    component: str = "resid_pre",
    layers: Iterable[int] | None = None,
    indices: Iterable[int] | None = None,
    batch_size: int = 16,
    progress: bool = True,
) -> LabelledArray:
    """Measured effect metric(clean, one component patched from corrupted) - metric(clean).

    One patched run per (layer, index), batched `batch_size` runs to a
    forward pass. `layers` / `indices` restrict the sweep (entries left out
    are NaN); entries whose corrupted activation equals the clean one exactly
    (e.g. positions before the first differing token) are 0 without a run.
    clean and corrupted must be single prompts ([1, p]).
    """
    clean, corrupted = model.as_tokens(clean), model.as_tokens(corrupted)
    if clean.shape != corrupted.shape or clean.shape[0] != 1:
        raise MinillmError(f"activation patching needs one clean and one corrupted prompt of the "
                           f"same length, got shapes {clean.shape} and {corrupted.shape}")
    layers = list(range(model.cfg.n_layers) if layers is None else layers)
    names = [_hook(component, l) for l in layers]
    last_only = getattr(metric, "last_only", False)
    base = metric(model(clean, last_only=last_only))[0]
    _, clean_cache = model.run_with_cache(clean, names_filter=names)
    _, corrupt_cache = model.run_with_cache(corrupted, names_filter=names)
    axis, layer_labels, labels = _labels(model, clean, component)
    values = np.full((model.cfg.n_layers, len(labels)), np.nan)
    jobs = []  # (layer, index) pairs that need a run
    for l in layers:
        name = _hook(component, l)
        for i in range(len(labels)) if indices is None else indices:
            sel = _select(component, i)
            if np.array_equal(clean_cache[name][sel], corrupt_cache[name][sel]):
                values[l, i] = 0.0
            else:
                jobs.append((l, i))
    variants = [[iv.patch(_hook(component, l), corrupt_cache, **_where(component, i))] for l, i in jobs]
    res = run_batch(model, clean, variants, metric, batch_size=batch_size, progress=progress,
                    desc=f"activation patching {component}")
    for (l, i), v in zip(jobs, res.values[:, 0]):
        values[l, i] = v - base
    return LabelledArray(values, ("layer", axis), (layer_labels, labels),
                         title=f"activation patching: {component}")


def _select(component: str, i: int) -> tuple:
    """Index of component entry i in an activation [b, p, ...] (batch row 0)."""
    return (0, i) if COMPONENTS[component][1] == "pos" else (0, slice(None), i)


def _where(component: str, i: int) -> dict:
    """The intervention selection of component entry i (a position, a head or a neuron)."""
    axis = COMPONENTS[component][1]
    return {"pos": i} if axis == "pos" else {axis: i}


# --- comparison --------------------------------------------------------------------------------


@dataclass
class Comparison:
    """Attribution vs activation patching for one component type.

    r: Pearson correlation over every entry measured by both; r_changed: the
    same over the entries where the activation differs between the prompts
    (the others are exactly 0 in both); slope: least-squares slope of
    activation on attribution (1 = the approximation has the right scale).
    """

    component: str
    r: float
    r_changed: float
    slope: float
    n: int
    attribution: LabelledArray
    activation: LabelledArray

    def __repr__(self) -> str:
        return (f"Comparison({self.component}: r={self.r:.3f}, r over changed entries={self.r_changed:.3f}, "
                f"slope={self.slope:.3f}, n={self.n})")

    def _repr_html_(self) -> str:
        from minillm.views.display import comparison_html

        return comparison_html(self)

    def plot(self, path: str | Path | None = None) -> Figure:
        """Both heatmaps and their scatter with r; saved to `path` if given."""
        return plot_comparison(self, path)


def compare(attribution: LabelledArray, activation: LabelledArray) -> Comparison:
    """Put both results side by side: correlation and slope over the entries both have."""
    if attribution.shape != activation.shape:
        raise MinillmError(f"cannot compare results of shapes {attribution.shape} and "
                           f"{activation.shape}: they must come from the same component")
    a, m = attribution.values.ravel(), activation.values.ravel()
    ok = ~np.isnan(m) & ~np.isnan(a)
    changed = ok & ((a != 0) | (m != 0))
    return Comparison(
        component=activation.title.split(": ")[-1],
        r=_pearson(a[ok], m[ok]),
        r_changed=_pearson(a[changed], m[changed]),
        slope=float(np.dot(a[ok], m[ok]) / max(np.dot(a[ok], a[ok]), 1e-30)),
        n=int(ok.sum()),
        attribution=attribution,
        activation=activation,
    )


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    if x.size < 2 or x.std() == 0 or y.std() == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def plot_comparison(cmp: Comparison, path: str | Path | None = None) -> Figure:
    """Attribution heatmap, activation heatmap, and their scatter with r; saved to `path` if given."""
    from minillm.views import figures

    return figures.saved(figures.attribution_comparison(cmp), path)


# --- gradient importance ---------------------------------------------------------------------


def gradient_importance(model: HookedModel, tokens: TokensLike, metric: Metric) -> dict[str, LabelledArray]:
    """|activation · gradient| per head and per MLP neuron (first-order importance for pruning).

    For head (l, h): |Σ_{p,e} z · ∂metric/∂z| over hook_z; for neuron (l, i):
    |Σ_p post · ∂metric/∂post| over hook_post; each taken per batch row, then
    averaged over rows. It estimates how much the metric would move if the
    component were zeroed (zero ablation ≈ patching in a = 0), the Taylor
    criterion of Molchanov et al. (2017).
    """
    tokens = model.as_tokens(tokens)
    res = backward(model, tokens, metric, params=False)
    L = model.cfg.n_layers
    # The metric averages over rows, so each row's gradient carries a factor 1/b:
    # Σ_rows |row score| is the mean over rows of each row's own |a · ∂metric_row/∂a|.
    heads = np.stack([np.abs((res.cache[f"blocks.{l}.attn.hook_z"]
                              * res.grad(f"blocks.{l}.attn.hook_z")).sum(axis=(1, 3))).sum(axis=0)
                      for l in range(L)])  # [L, h]
    neurons = np.stack([np.abs((res.cache[f"blocks.{l}.mlp.hook_post"]
                                * res.grad(f"blocks.{l}.mlp.hook_post")).sum(axis=1)).sum(axis=0)
                        for l in range(L)])  # [L, m]
    layers = [str(l) for l in range(L)]
    return {
        "heads": LabelledArray(heads, ("layer", "head"), (layers, range(model.cfg.n_heads)),
                               title="gradient importance |z·grad|: heads"),
        "neurons": LabelledArray(neurons, ("layer", "neuron"), (layers, range(model.cfg.d_mlp)),
                                 title="gradient importance |post·grad|: neurons"),
    }
