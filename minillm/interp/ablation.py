"""Ablations: mean / median / zero / resample ablation sweeps, and successive median replacement.

    from minillm.interp import ablation as A, metrics as M
    ld = M.logit_diff(model, " Mary", " John")
    res = A.ablation_sweep(model, prompt, ld, "heads", method="mean", reference=texts)  # [layer, head]
    mr = A.median_replacement(model, "It was a dark and stormy", " night")          # [layer, rate]
    A.plot_ripple(mr)  # a Figure; A.plot_ripple(mr, "out/ripple.png") also saves it

Ablation replaces a component's activation by a value that carries "no
information about this prompt" and records how much the metric moves:

    zero      0 (often far off-distribution)
    mean      the mean over a reference set of prompts
    median    the median over the reference set (robust to a few huge activations)
    resample  the activation on one other prompt (reference = that prompt)

The statistics are taken over the axes the user names (`over`):
("batch", "pos") pools every row and position (one value per unit);
("batch",) pools rows only (one value per unit and position: the
reference prompts must then have the same length as the prompt).

Components: heads [layer, head] (attn.hook_z, all positions),
neurons [layer, neuron] (mlp.hook_post, all positions; d_mlp runs per
layer, so restrict `layers`), resid_pre / resid_post [layer, pos] (one
position). Values: metric(ablated) - metric(unablated), averaged over the
prompt rows.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from minillm.activation_cache import act_name
from minillm.errors import MinillmError
from minillm.interp import interventions as iv
from minillm.interp.batch import measure_variants, prefix_cache, run_batch
from minillm.interp.metrics import log_prob
from minillm.interp.metrics import logit as logit_metric
from minillm.interp.results import LabelledArray, layer_indices, pos_labels

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from minillm.hooked_model import HookedModel, TokensLike

ABLATION_COMPONENTS = {c: iv.COMPONENTS[c] for c in ("heads", "neurons", "resid_pre", "resid_post")}
METHODS = ("mean", "median", "zero", "resample")


def _tokens_and_mask(model, tokens):
    if isinstance(tokens, (list, tuple)) and tokens and isinstance(tokens[0], str):
        return model.to_tokens_and_mask(list(tokens))
    return np.atleast_2d(model.as_tokens(tokens)), None


def _is_stats(x) -> bool:
    """A statistics object (ActivationStats, CorpusStats), not prompts."""
    return hasattr(x, "mean") and hasattr(x, "median") and not isinstance(x, (np.ndarray, list, tuple, str))


def ablation_interventions(model: HookedModel, component: str, method: str, layers: Sequence[int], n_pos: int,
                           reference: TokensLike | None = None, over: Sequence[str] = ("batch", "pos")
                           ) -> tuple[list, tuple[str, str], list, list]:
    """The sweep's cells: [(row, col, intervention)], plus axis names and labels.

    reference: texts or ids [b, p] for mean/median (statistics over `over`),
    or statistics computed beforehand (`iv.activation_stats`, or corpus
    statistics from `minillm.interp.stats.corpus_stats`, which also give the
    mean and median over the last real position of each text); one prompt
    for resample; unused for zero.
    """
    if component not in ABLATION_COMPONENTS:
        raise MinillmError(f"unknown component {component!r}; choose from {sorted(ABLATION_COMPONENTS)}")
    if method not in METHODS:
        raise MinillmError(f"unknown ablation {method!r}; choose from {METHODS}")
    over = tuple(over)
    if over not in (("batch", "pos"), ("pos", "batch"), ("batch",)):
        raise MinillmError(f"over must name the axes the statistics pool: ('batch', 'pos') or "
                           f"('batch',), got {over}")
    short, kind = ABLATION_COMPONENTS[component]
    names = [act_name(short, l) for l in layers]
    if method in ("mean", "median"):
        if reference is None:
            raise MinillmError(f"{method} ablation needs a reference set of prompts (reference=...)")
        if _is_stats(reference):  # statistics computed beforehand (activation_stats, corpus_stats)
            stats = reference
            missing = [n for n in names if n not in getattr(stats, method)]
            if missing:
                raise MinillmError(f"the statistics given as reference have no {method} of "
                                   f"{', '.join(missing)}")
        else:
            ref, mask = _tokens_and_mask(model, reference)
            stats = iv.activation_stats(model, ref, names, per_position="pos" not in over,
                                        attention_mask=mask)
    if method == "resample":
        if reference is None:
            raise MinillmError("resample ablation needs one reference prompt (reference=...)")
        source = np.atleast_2d(model.as_tokens(reference))
        if source.shape[0] != 1:
            raise MinillmError(f"resample ablation takes one reference prompt, got {source.shape[0]}")

    def make(**sel):
        if method == "zero":
            return iv.zero(short, **sel)
        if method == "resample":
            return iv.resample(short, source, **sel)
        return (iv.mean if method == "mean" else iv.median)(short, stats, **sel)

    cfg = model.cfg
    if kind == "pos":
        cells = [(r, p, make(layer=l, pos=p)) for r, l in enumerate(layers) for p in range(n_pos)]
        return cells, ("layer", "pos"), n_pos
    n = cfg.n_heads if kind == "head" else cfg.d_mlp
    cells = [(r, i, make(layer=l, **{kind: i})) for r, l in enumerate(layers) for i in range(n)]
    return cells, ("layer", kind), n


def ablation_sweep(
    model: HookedModel,
    tokens: TokensLike,
    metric: Callable,
    component: str = "heads",
    method: str = "mean",
    reference: TokensLike | None = None,
    over: Sequence[str] = ("batch", "pos"),
    layers: Sequence[int] | None = None,
    batch_size: int = 32,
    progress: bool = True,
) -> LabelledArray:
    """metric(with one unit ablated) - metric(unablated), for every unit.   -> [layer, unit]

    tokens: one prompt (text or [1, p]: every unit's run is a row of a
    batch) or a prompt set (texts or [b, p]: one forward pass of the whole
    set per unit, metric averaged over rows). reference defaults to the
    prompts themselves. Ctrl-C returns what was measured (meta["interrupted"]).
    """
    t0 = time.perf_counter()
    toks, mask = _tokens_and_mask(model, tokens)
    layers = layer_indices(model, layers)
    reference = tokens if reference is None and method in ("mean", "median") else reference
    cells, axes, n = ablation_interventions(model, component, method, layers, toks.shape[1],
                                            reference, over)
    last_only = getattr(metric, "last_only", False)
    base = float(np.mean(metric(model(toks, attention_mask=mask, last_only=last_only))))
    values = np.full((len(layers), n), np.nan)
    res = run_batch(model, toks, [[c[2]] for c in cells], metric, batch_size=batch_size,
                    attention_mask=mask, progress=progress, desc=f"{method} ablation {component}")
    measured, interrupted = res.values.reshape(len(cells), -1).mean(axis=1), res.interrupted
    for (r, c, _), v in zip(cells, measured):
        values[r, c] = v - base
    cols = pos_labels(model, toks) if axes[1] == "pos" else [str(i) for i in range(n)]
    return LabelledArray(values, axes, ([str(l) for l in layers], cols),
                         title=f"{method} ablation of {component}: metric change",
                         meta=dict(component=component, method=method, over=list(over), base=base,
                                   prompts=int(toks.shape[0]), seconds=round(time.perf_counter() - t0, 3),
                                   interrupted=interrupted))


# --- successive median replacement of MLP neurons ----------------------------------------------

COARSE_RATES = (10, 20, 30, 40, 50, 60, 70, 80, 90)  # percent of the layer's neurons
FINE_RATES = (0.2, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5)


COUNTS = ("floor", "round")
RANKINGS = ("value", "abs", "magnitude")


def n_replaced(rate: float, d_mlp: int, count: str = "floor") -> int:
    """Neurons replaced at `rate` percent of d_mlp.

    count="floor" (the study's definition): floor(rate/100 · d_mlp), at least one
    for any rate above 0. count="round": round(rate/100 · d_mlp), which can be 0.
    GPT-2 Large: 0.2 % of 5120 is 10 either way; SmolLM2: 0.2 % of 1536 is 3 (both).
    """
    if count not in COUNTS:
        raise MinillmError(f"count must be one of {COUNTS}, got {count!r}")
    exact = rate / 100.0 * d_mlp
    if count == "round":
        return int(round(exact))
    return max(1, int(np.floor(exact + 1e-9))) if rate > 0 else 0  # 1e-9: 10% of 1530 is 153, not 152


def rank_neurons(acts: np.ndarray, by: str = "value") -> np.ndarray:
    """Neuron indices, "most active" first, ties by index.   acts [..., m] -> int [..., m]

    by="value": highest signed activation first (the study's definition).
    by="abs": largest |a| first. by="magnitude": largest |a − median(a)| first,
    the neurons a median replacement moves the most.
    """
    if by not in RANKINGS:
        raise MinillmError(f"by must be one of {RANKINGS}, got {by!r}")
    score = {"value": lambda a: a, "abs": np.abs,
             "magnitude": lambda a: np.abs(a - np.median(a, axis=-1, keepdims=True))}[by](acts)
    return np.argsort(-score, axis=-1, kind="stable")


@dataclass
class MedianReplacement:
    """The result of `median_replacement`.

    delta: [layer, rate] change of the target's logit (or log-prob, see
      `measure`) at the last position (NaN where an interrupted sweep did not get to).
    base_logit: the unedited value of that measure.
    order: [layer, d_mlp] neuron indices at the last position, most active
      first (`rank_neurons(by)`); the replaced set at a rate is order[l, :counts[j]],
      so it grows with the rate. medians: [layer] the value written.
    """

    prompt: str
    target: str
    base_logit: float
    rates: list[float]
    counts: list[int]
    layers: list[int]
    delta: LabelledArray
    order: np.ndarray
    medians: np.ndarray
    interrupted: bool
    seconds: float

    def __repr__(self) -> str:
        measure = self.delta.meta.get("measure", "logit")
        return (f"MedianReplacement({self.prompt!r} -> {self.target!r}: base {measure} "
                f"{self.base_logit:.4f}, "
                f"{len(self.layers)} layers × {len(self.rates)} rates"
                f"{', interrupted' if self.interrupted else ''}, {self.seconds:.1f} s)")

    def _repr_html_(self) -> str:
        return self.delta._repr_html_()

    def replaced(self, layer: int, rate: float) -> np.ndarray:
        """The neuron indices replaced at (layer, rate)."""
        i = self.layers.index(layer)
        return self.order[i, : self.counts[self.rates.index(rate)]]

    def summary(self) -> dict:
        """Numbers for the report: worst layer, the 10% vs 90% gap, the spread at fine rates."""
        d = self.delta.values
        out = dict(prompt=self.prompt, target=self.target, measure=self.delta.meta.get("measure"),
                   base=self.base_logit,
                   interrupted=self.interrupted, seconds=self.seconds)
        out["most_damaging"] = {str(self.rates[j]): int(self.layers[int(np.nanargmin(d[:, j]))])
                                for j in range(len(self.rates)) if not np.isnan(d[:, j]).all()}
        if 10 in self.rates and 90 in self.rates:
            a, b = d[:, self.rates.index(10)], d[:, self.rates.index(90)]
            gap = np.abs(a - b)[~np.isnan(a - b)]
            out["median_abs_gap_10_vs_90"] = float(np.median(gap)) if gap.size else None
            out["layer0_delta_10"] = float(a[0]) if self.layers[0] == 0 else None
        fine = [j for j, r in enumerate(self.rates) if r < 5]
        coarse = [j for j, r in enumerate(self.rates) if r >= 10]
        if fine and coarse:
            out["mean_spread_fine"] = _mean(np.ptp(d[:, fine], axis=1))
            out["mean_spread_coarse"] = _mean(np.ptp(d[:, coarse], axis=1))
        return out


def _mean(x: np.ndarray) -> float | None:
    """Mean over the measured (non-NaN) entries; None if there are none."""
    x = x[~np.isnan(x)]
    return float(x.mean()) if x.size else None


def median_replacement(
    model: HookedModel,
    prompt: str,
    target: int | str,
    rates: Sequence[float] = FINE_RATES + COARSE_RATES,
    layers: Sequence[int] | None = None,
    batch_size: int = 64,
    progress: bool = True,
    cache_prefix: bool = True,
    measure: str = "logit",
    count: str = "floor",
    by: str = "value",
) -> MedianReplacement:
    """At each layer, replace the top rate% MLP neurons at the last position by their median.

    For layer l: a = hook_post[0, -1] [d_mlp] on the unedited run; the
    n_replaced(rate, d_mlp, count) most active neurons (see `rank_neurons` for
    `by`; default: highest signed value, the study's) are set to median(a),
    at the last position only, and the change of the target token's logit
    there is recorded. One run per (layer, rate), batched; with
    `cache_prefix` the positions before the last are computed once (they
    cannot change). Rate 0 replaces nothing: its run is the base run, so its
    delta is exactly 0 (it is not run again). Ctrl-C returns the partial
    result (interrupted=True, NaN where not measured).
    measure="log_prob" records the change of log p(target) instead of the
    raw logit: a replacement can shift every logit together, which moves the
    raw logit without changing the prediction.
    """
    t0 = time.perf_counter()
    tokens = np.atleast_2d(model.as_tokens(prompt))
    layers = layer_indices(model, layers)
    rates = [float(r) for r in rates]
    for r in rates:
        if not 0 <= r <= 100:
            raise MinillmError(f"rate {r} is not a percentage between 0 and 100")
    if measure not in ("logit", "log_prob"):
        raise MinillmError(f"measure must be 'logit' or 'log_prob', got {measure!r}")
    metric = (logit_metric if measure == "logit" else log_prob)(model, target)
    names = [act_name("post", l) for l in layers]
    _, cache = model.run_with_cache(tokens, names_filter=names)
    post = np.stack([cache[n][0, -1] for n in names])  # [L, m]
    order = rank_neurons(post, by)  # [L, m]: most active first; ties by index
    medians = np.median(post, axis=1).astype(model.dtype)  # [L]
    m = model.cfg.d_mlp
    counts = [n_replaced(r, m, count) for r in rates]
    prefix = tokens.shape[1] - 1 if cache_prefix and tokens.shape[1] > 1 else 0
    shared = prefix_cache(model, tokens, prefix) or 0
    base, interrupted = measure_variants(model, tokens, [[]], metric, prefix=shared)
    delta = np.zeros((len(layers), len(rates)))  # rate 0: nothing replaced, the base run itself
    cells, variants = [], []
    for i, l in enumerate(layers):
        fill = np.full(m, medians[i], model.dtype)
        for j, k in enumerate(counts):
            if k:
                cells.append((i, j))
                variants.append([iv.Replace("post", layer=l, pos=-1, neuron=order[i, :k].tolist(),
                                            values=fill)])
    measured = np.full(len(variants), np.nan)
    if not interrupted:
        measured, interrupted = measure_variants(model, tokens, variants, metric, batch_size, progress,
                                         desc="median replacement", prefix=shared)
    for (i, j), v in zip(cells, measured):
        delta[i, j] = v - base[0]
    labels = ([str(l) for l in layers], [f"{r:g}%" for r in rates])
    target_label = target if isinstance(target, str) else str(target)
    res = LabelledArray(delta, ("layer", "rate"), labels,
                        title=f"median replacement: Δ {measure}({target_label!r}) after {prompt!r}",
                        meta=dict(base=float(base[0]), measure=measure, count=count, by=by,
                                  interrupted=interrupted))
    return MedianReplacement(prompt if isinstance(prompt, str) else str(tokens.tolist()), target_label,
                             float(base[0]), rates, counts, layers, res, order, medians, interrupted,
                             round(time.perf_counter() - t0, 3))


def plot_ripple(res: MedianReplacement, path: str | Path | None = None,
                rates: Sequence[float] | None = None) -> Figure:
    """The "ripple" plot: Δ target measure across layers, one line per rate (coarse and fine panels).

    Returns the Figure; saved to `path` if given.
    """
    from minillm.views import figures

    return figures.saved(figures.ripple(res, rates), path)
