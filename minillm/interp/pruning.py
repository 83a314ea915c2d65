"""Pruning: rank heads and MLP neurons by importance, remove the least important, watch the metric.

    from minillm.interp import metrics as M, pruning as Pr
    ld = M.logit_diff(model, " Mary", " John")
    scores = Pr.importance(model, prompts, ld, unit="heads", method="ablation")  # [layer, head]
    with model.edited(Pr.prune_lowest(scores, 0.3)):     # the 30% least important heads
        ...                                                # reverted bit for bit on exit
    curve = Pr.pruning_curve(model, prompts, ld, scores)  # metric vs fraction pruned
    Pr.plot_pruning_curves({"ablation": curve}, "pruning.png")

Importance scores (higher = more important):
    ablation   |metric(unit mean-ablated) - metric(intact)|, averaged over the prompt set
               (one run per unit: cheap for heads, d_mlp runs per layer for neurons)
    magnitude  weights only. Head: ||W_V[h] W_O[h]||_F, the size of its OV map.
               Neuron: ||W_in[:, i]|| · ||W_out[i]|| (· ||W_gate[:, i]|| for gated MLPs).
    gradient   |activation · ∂metric/∂activation| summed over positions, averaged over
               prompts (attribution.gradient_importance: one backward pass for everything)

Pruning is a weight edit through the model's edit journal (`mask_units`):
a pruned head's W_O[h] and a pruned neuron's W_out row are set to 0, so the
unit writes nothing to the residual stream. One journal record holds the
original bytes of every masked row, so reverting restores them exactly.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from minillm.edit.edits import Edit, Slice
from minillm.errors import MinillmError, check_index
from minillm.interp import interventions as iv
from minillm.interp.batch import run_batch
from minillm.interp.results import LabelledArray

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from minillm.hooked_model import HookedModel, TokensLike

UNITS = ("heads", "neurons")
IMPORTANCE = ("ablation", "magnitude", "gradient")
DEFAULT_FRACTIONS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


@dataclass(frozen=True, eq=False)
class mask_units(Edit):  # noqa: N801  (reads like the other edit ops)
    """Zero the output weights of heads (W_O[h]) and MLP neurons (W_out[i]): they write nothing.

    heads, neurons: sequences of (layer, index). One edit, one journal record.
    """

    heads: tuple = ()
    neurons: tuple = ()

    def plan(self, model) -> list[Slice]:
        """One slice per touched parameter (the whole W_O / W_out of a layer): a few large copies
        in the journal rather than thousands of rows, so pruning 90% of 46k neurons stays fast."""
        return [Slice(name, (slice(None),), f"rows {_ranges(rows)}") for name, rows in self._rows(model)]

    def _rows(self, model) -> list[tuple[str, list[int]]]:
        """[(parameter name, row indices to zero)], validated."""
        cfg, rows = model.cfg, {}
        for l, h in self.heads:
            l = check_index(l, "layer", cfg.n_layers, "layers")
            h = check_index(h, "head", cfg.n_heads, "heads per layer", f" in layer {l}")
            rows.setdefault(f"blocks.{l}.attn.W_O", []).append(h)
        for l, i in self.neurons:
            l = check_index(l, "layer", cfg.n_layers, "layers")
            i = check_index(i, "neuron", cfg.d_mlp, "MLP neurons per layer", f" in layer {l}")
            rows.setdefault(f"blocks.{l}.mlp.W_out", []).append(i)
        return sorted((n, sorted(set(r))) for n, r in rows.items())

    def write(self, model) -> None:
        for name, rows in self._rows(model):
            model.get_parameter(name)[np.array(rows)] = 0  # in place, through the live view

    def describe(self, model) -> str:
        return f"prune {len(self.heads)} heads, {len(self.neurons)} neurons (zero W_O / W_out rows)"


def _ranges(rows: list[int]) -> str:
    """[1, 2, 3, 7] -> "1-3, 7" (for the journal's description)."""
    out, start = [], None
    for a, b in zip(rows, rows[1:] + [None]):
        start = a if start is None else start
        if b != a + 1:
            out.append(f"{start}-{a}" if a > start else f"{a}")
            start = None
    return ", ".join(out)


# --- importance ---------------------------------------------------------------------------------


def magnitude_importance(model: HookedModel, unit: str = "heads") -> LabelledArray:
    """Weight-only importance: the OV-map norm of each head, or in·out weight norms per neuron."""
    cfg, L = model.cfg, model.cfg.n_layers
    rows = []
    for l in range(L):
        if unit == "heads":
            attn, group = model.blocks[l].attn, cfg.n_heads // cfg.n_kv_heads
            # ||W_V W_O||_F² = trace((W_Vᵀ W_V)(W_O W_Oᵀ)), with [e, e] matrices only
            vv = np.einsum("gde,gdf->gef", attn._W_V.astype(np.float64), attn._W_V)  # [kv, e, e]
            oo = np.einsum("hed,hfd->hef", attn.W_O.astype(np.float64), attn.W_O)  # [h, e, e]
            rows.append(np.sqrt(np.einsum("hef,hfe->h", vv[np.arange(cfg.n_heads) // group], oo)))
        else:
            mlp = model.blocks[l].mlp
            s = np.linalg.norm(mlp.W_in, axis=0) * np.linalg.norm(mlp.W_out, axis=1)  # [m]
            if getattr(mlp, "gated", False):
                s = s * np.linalg.norm(mlp.W_gate, axis=0)
            rows.append(s)
    return _scores(model, np.stack(rows), unit, "magnitude")


def importance(model: HookedModel, tokens: TokensLike, metric: Callable, unit: str = "heads",
               method: str = "ablation",
               layers: Sequence[int] | None = None, progress: bool = True) -> LabelledArray:
    """Importance of every head or neuron ([layer, head] / [layer, neuron]); see the module docstring.

    tokens: a prompt set (texts or ids [b, p]) the metric is measured on.
    `layers` restricts ablation scoring (other layers get +inf: never pruned).
    """
    if unit not in UNITS:
        raise MinillmError(f"unit must be one of {UNITS}, got {unit!r}")
    if method not in IMPORTANCE:
        raise MinillmError(f"importance method must be one of {IMPORTANCE}, got {method!r}")
    if method == "magnitude":
        return magnitude_importance(model, unit)
    if method == "gradient":
        from minillm.interp.attribution import gradient_importance

        toks = _plain_tokens(model, tokens)
        res = gradient_importance(model, toks, metric)[unit]
        return _scores(model, res.values, unit, "gradient")
    from minillm.interp.ablation import ablation_sweep

    res = ablation_sweep(model, tokens, metric, unit, method="mean", layers=layers, progress=progress)
    values = np.full((model.cfg.n_layers, res.shape[1]), np.inf)
    for r, l in enumerate(res.labels[0]):
        values[int(l)] = np.abs(res.values[r])
    return _scores(model, values, unit, "ablation")


def _plain_tokens(model, tokens) -> np.ndarray:
    if isinstance(tokens, (list, tuple)) and tokens and isinstance(tokens[0], str):
        toks, mask = model.to_tokens_and_mask(list(tokens))
        if not np.all(mask):
            raise MinillmError("gradient importance needs prompts of the same token length (no padding)")
        return toks
    return np.atleast_2d(model.as_tokens(tokens))


def _scores(model, values: np.ndarray, unit: str, method: str) -> LabelledArray:
    return LabelledArray(values, ("layer", "head" if unit == "heads" else "neuron"),
                         ([str(l) for l in range(values.shape[0])], [str(i) for i in range(values.shape[1])]),
                         title=f"{method} importance: {unit}", meta=dict(unit=unit, method=method))


# --- pruning ------------------------------------------------------------------------------------


def lowest(scores: LabelledArray, fraction: float) -> list[tuple[int, int]]:
    """The round(fraction · n) units with the lowest scores, as (layer, index); ties by position."""
    if not 0 <= fraction <= 1:
        raise MinillmError(f"fraction must be between 0 and 1, got {fraction}")
    flat = np.argsort(scores.values, axis=None, kind="stable")
    k = int(round(fraction * scores.values.size))
    rows = [int(x) for x in scores.labels[0]]
    return [(rows[i], int(j)) for i, j in (np.unravel_index(f, scores.shape) for f in flat[:k])]


def prune_lowest(scores: LabelledArray, fraction: float) -> mask_units:
    """The masking edit removing the lowest-scoring `fraction` of the scored units."""
    units = lowest(scores, fraction)
    return mask_units(heads=tuple(units)) if scores.axes[1] == "head" else mask_units(neurons=tuple(units))


def pruning_interventions(scores: LabelledArray, fraction: float) -> list[iv.Intervention]:
    """`prune_lowest(scores, fraction)` as activation interventions: the pruned heads' hook_z and
    neurons' hook_post set to 0, one intervention per layer. A zero there removes exactly the
    unit's contribution that zeroing its W_O[h] / W_out[i] row removes (each product is 0)."""
    by_layer: dict[int, list[int]] = {}
    for l, i in lowest(scores, fraction):
        by_layer.setdefault(l, []).append(i)
    hook, axis = ("z", "head") if scores.axes[1] == "head" else ("post", "neuron")
    return [iv.zero(hook, layer=l, **{axis: sorted(units)}) for l, units in sorted(by_layer.items())]


def pruning_curve(model: HookedModel, tokens: TokensLike, metric: Callable, scores: LabelledArray,
                  fractions: Sequence[float] = DEFAULT_FRACTIONS, batch_size: int = 32,
                  progress: bool = True) -> LabelledArray:
    """metric (mean over the prompt set) with the lowest `fraction` of units pruned, per fraction.

    Each fraction is one variant of the batched-run engine (minillm.interp.batch):
    the pruned units' outputs are zeroed by hooks (`pruning_interventions`), which
    removes what `model.edited(prune_lowest(scores, f))` removes, up to float32
    rounding of the batched forward; weights are never touched. Ctrl-C returns
    the partial curve (meta["interrupted"]).
    """
    t0 = time.perf_counter()
    if isinstance(tokens, (list, tuple)) and tokens and isinstance(tokens[0], str):
        toks, mask = model.to_tokens_and_mask(list(tokens))
    else:
        toks, mask = np.atleast_2d(model.as_tokens(tokens)), None
    variants = [pruning_interventions(scores, f) for f in fractions]
    res = run_batch(model, toks, variants, metric, batch_size=batch_size, attention_mask=mask,
                    progress=progress, desc="pruning")
    values = res.values.reshape(len(fractions), -1).mean(axis=1)
    return LabelledArray(values, ("fraction pruned",), ([f"{f:g}" for f in fractions],),
                         title=f"pruning {scores.meta.get('unit', '')} by {scores.meta.get('method', '')}",
                         meta=dict(fractions=list(map(float, fractions)), interrupted=res.interrupted,
                                   seconds=round(time.perf_counter() - t0, 3), **scores.meta))


def plot_pruning_curves(curves: dict[str, LabelledArray], path: str | Path | None = None,
                        ylabel: str = "metric") -> Figure:
    """Metric against fraction pruned, one line per ranking method; saved to `path` if given."""
    from minillm.views import figures

    return figures.saved(figures.pruning_curves(curves, ylabel), path)
