"""Activation interventions: small objects that change activations during one run.

    from minillm.interp import interventions as iv
    _, clean = model.run_with_cache(clean_tokens)
    logits = model.run_with_interventions(corrupt_tokens, [
        iv.patch("resid_pre", clean, layer=5, pos=3),        # the activation-patching step
        iv.zero("z", layer=2, head=[1, 4]),                   # ablate two heads
        iv.scale("post", 0.04, layer=5, neuron=123),          # one MLP neuron × 0.04
        iv.add("resid_post", steering_vector, layer=10),      # steering
    ])
    stats = iv.activation_stats(model, reference_tokens, ["blocks.3.mlp.hook_post"])
    with model.intervened([iv.mean("post", stats, layer=3, neuron=7)]):
        model.generate("Once upon a time")

Every intervention selects one hook (a full name, or a TransformerLens short
name with `layer=` an int or a list of ints) and, within its activation,
optional `pos` (absolute positions), `head`, `neuron` and `batch` rows; each
selection is an int or a list of ints. It then says what the selected values
become. Under the hood an intervention is a list of (hook name, fn(act, hook))
pairs (`to_hooks`), so it composes with `run_with_hooks` and `run_with_cache`.

Axes: positions are axis 1 of every hook except `hook_attn_scores` and
`hook_pattern` ([b, h, q, k]), where they are the query axis 2; heads are axis
2 of q/k/v/rot_q/rot_k/z/result (k, v and rot_k index kv-heads) and axis 1 of
scores/pattern; neurons are the last axis of the `mlp.hook_*` points.

Positions are absolute: position p is the same token whether the model runs
the whole prompt or decodes with a KV cache (the hook's `pos_offset` is
subtracted); a call that does not contain p leaves the activation alone.
A negative position counts from the end of the current call (-1 = the newest
token, in every decoding step).

Interventions never change weights; patched values are copied exactly, so
patching a run with its own cache changes nothing, bit for bit.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from minillm.activation_cache import act_name
from minillm.errors import MinillmError
from minillm.hooks import HookFn, HookPoint

if TYPE_CHECKING:
    from minillm.hooked_model import HookedModel, TokensLike

Index = int | Sequence[int] | None

# The components the sweeps address, by name -> (TransformerLens's short hook name, what the
# index after the batch axis runs over). Each analysis offers the subset it can run.
COMPONENTS: dict[str, tuple[str, str]] = {
    "resid_pre": ("resid_pre", "pos"),
    "resid_mid": ("resid_mid", "pos"),
    "resid_post": ("resid_post", "pos"),
    "attn_out": ("attn_out", "pos"),
    "mlp_out": ("mlp_out", "pos"),
    "heads": ("z", "head"),
    "heads_by_pos": ("z", "head_pos"),
    "q": ("q", "head"),
    "k": ("k", "kv_head"),
    "v": ("v", "kv_head"),
    "pattern": ("pattern", "head"),
    "neurons": ("post", "neuron"),
}


_HEAD_AXIS = {"hook_q": 2, "hook_k": 2, "hook_v": 2, "hook_rot_q": 2, "hook_rot_k": 2, "hook_z": 2,
              "hook_result": 2, "hook_attn_scores": 1, "hook_pattern": 1}


def hook_axes(name: str) -> tuple[int, int | None, int | None]:
    """(position axis, head axis or None, neuron axis or None) of a hook's activation."""
    leaf = name.rsplit(".", 1)[-1]
    pos_axis = 2 if leaf in ("hook_attn_scores", "hook_pattern") else 1
    neuron_axis = -1 if ".mlp." in name else None
    return pos_axis, _HEAD_AXIS.get(leaf), neuron_axis


def _as_list(x: Index) -> list[int] | None:
    if x is None:
        return None
    if isinstance(x, (int, np.integer)):
        return [int(x)]
    out = [int(i) for i in x]
    if not out:
        raise MinillmError("an empty selection selects nothing; pass None to select everything")
    return out


def _check_range(values: list[int] | None, size: int, what: str, name: str) -> None:
    for i in values or ():
        if not -size <= i < size:
            raise MinillmError(f"{what} {i} does not exist at {name}: it has {size} {what}s "
                               f"(0..{size - 1})")


@dataclass
class Where:
    """The selected part of one activation: one 1-D index array per axis."""

    axes: list[np.ndarray]  # local indices into the activation, per axis
    abs_pos: np.ndarray  # absolute positions of the selected positions
    pos_axis: int
    name: str

    def ix(self, drop: Sequence[int] = ()) -> tuple:
        """An open-mesh index (np.ix_) over all axes except `drop`."""
        return np.ix_(*[a for i, a in enumerate(self.axes) if i not in drop])

    def take(self, values: np.ndarray, drop: Sequence[int] = ()) -> np.ndarray:
        """values (the activation's shape without the `drop` axes) at the selection,
        with the dropped axes put back as size 1 so they broadcast."""
        return np.expand_dims(values[self.ix(drop)], tuple(drop)) if drop else values[self.ix()]


@dataclass(frozen=True)
class Intervention:
    """Base class: which activation values to change. Subclasses say how (`new_values`)."""

    hook: str
    layer: Index = None
    pos: Index = None
    head: Index = None
    neuron: Index = None
    batch: Index = None

    def at(self, **selection) -> Intervention:
        """A copy with some selections replaced, e.g. `.at(batch=3)` or `.at(layer=7, pos=2)`."""
        return dataclasses.replace(self, **selection)

    def hook_names(self, model) -> list[str]:
        """The full hook names this intervention acts on (validated against the model)."""
        layers = _as_list(self.layer)
        L = model.cfg.n_layers
        for l in layers or ():
            if not 0 <= l < L:
                raise MinillmError(f"layer {l} does not exist: the model has {L} layers (0..{L - 1})")
        if layers is None:
            if not self.hook.startswith(("blocks.", "hook_", "ln_final.")) and self.hook not in (
                    "embed", "pos_embed", "logits"):
                raise MinillmError(f"the short hook name {self.hook!r} needs layer= (an int, a list, "
                                   f"or range({L}) for every layer)")
            names = [act_name(self.hook)]
        elif self.hook.startswith("blocks."):
            raise MinillmError(f"{self.hook!r} already names its layer; drop layer= or use a short name")
        else:
            names = [act_name(self.hook, l, "ln1") for l in layers]
        for n in names:
            model.hooks.check_name(n)
            self._check_selection(model, n)
        return names

    def _check_selection(self, model, name: str) -> None:
        cfg = model.cfg
        _, head_axis, neuron_axis = hook_axes(name)
        if self.head is not None:
            if head_axis is None:
                raise MinillmError(f"{name} has no head axis; select heads at attn.hook_q/k/v/z/"
                                   "result/pattern/attn_scores")
            kv = name.endswith(("hook_k", "hook_v", "hook_rot_k"))
            _check_range(_as_list(self.head), cfg.n_kv_heads if kv else cfg.n_heads,
                         "kv-head" if kv else "head", name)
        if self.neuron is not None:
            if neuron_axis is None:
                raise MinillmError(f"{name} has no neuron axis; select neurons at mlp.hook_pre/"
                                   "pre_linear/post")
            _check_range(_as_list(self.neuron), cfg.d_mlp, "neuron", name)
        _check_range(_as_list(self.pos), cfg.n_ctx, "position", name)

    def check_positions(self, n_positions: int) -> None:
        """Error if a selected position lies outside a run of `n_positions` tokens."""
        for p in _as_list(self.pos) or ():
            if not -n_positions <= p < n_positions:
                raise MinillmError(f"position {p} does not exist at {self.hook}: the run has "
                                   f"{n_positions} positions (0..{n_positions - 1})")

    def where(self, act: np.ndarray, hook: HookPoint) -> Where | None:
        """The selection inside this call's activation (None if no selected position is in it)."""
        pos_axis, head_axis, neuron_axis = hook_axes(hook.name)
        axes = [np.arange(n) for n in act.shape]
        n_pos = act.shape[pos_axis]
        if self.pos is not None:
            local = []
            for p in _as_list(self.pos):
                i = p + n_pos if p < 0 else p - hook.pos_offset
                if 0 <= i < n_pos:
                    local.append(i)
            if not local:
                return None
            axes[pos_axis] = np.array(local)
        if self.batch is not None:
            rows = _as_list(self.batch)
            _check_range(rows, act.shape[0], "batch row", hook.name)
            axes[0] = np.array(rows) % act.shape[0]
        if self.head is not None:
            axes[head_axis] = np.array(_as_list(self.head)) % act.shape[head_axis]
        if self.neuron is not None:
            axes[neuron_axis] = np.array(_as_list(self.neuron)) % act.shape[neuron_axis]
        return Where(axes, axes[pos_axis] + hook.pos_offset, pos_axis, hook.name)

    def new_values(self, selected: np.ndarray, where: Where) -> np.ndarray:
        """What the selected values become (same shape, or broadcastable to it)."""
        raise NotImplementedError

    def to_hooks(self, model) -> list[tuple[str, HookFn]]:
        """This intervention as (hook name, fn(act, hook)) pairs for `model.hooks(...)`."""
        self.prepare(model)

        def fn(act: np.ndarray, hook: HookPoint) -> np.ndarray | None:
            where = self.where(act, hook)
            if where is None:
                return None
            out = act.copy()
            ix = where.ix()
            selected = out[ix]
            try:
                out[ix] = self.new_values(selected, where)
            except ValueError as e:
                raise MinillmError(f"{type(self).__name__} at {hook.name}: the new values do not fit "
                                   f"the selection of shape {selected.shape} ({e})") from None
            return out

        return [(name, fn) for name in self.hook_names(model)]

    def prepare(self, model) -> None:
        """Hook for subclasses that need the model before the run (e.g. `Resample`)."""


@dataclass(frozen=True)
class Patch(Intervention):
    """Copy the values from another run's cache (same hook, same absolute positions).

    The source's batch is 1 (used for every row) or the same rows as the
    target. For hook_pattern/attn_scores, only the keys present are copied.
    """

    source: Any = None  # an ActivationCache or {hook name: array}

    def new_values(self, selected, where):
        if where.name not in self.source:
            raise MinillmError(f"patch: the source cache has no {where.name}; run_with_cache it "
                               "(names_filter) first")
        src = np.asarray(self.source[where.name])
        if src.ndim != len(where.axes):
            raise MinillmError(f"patch at {where.name}: the source has shape {src.shape}, the "
                               f"activation has {len(where.axes)} axes")
        axes = list(where.axes)
        axes[where.pos_axis] = where.abs_pos
        axes[0] = axes[0] if src.shape[0] > 1 else np.zeros_like(axes[0])
        for i, a in enumerate(axes):
            if a.size and a.max() >= src.shape[i]:
                what = "position" if i == where.pos_axis else "batch row" if i == 0 else f"axis {i} index"
                raise MinillmError(f"patch at {where.name}: the source has shape {src.shape}, so "
                                   f"{what} {int(a.max())} is not in it")
        return src[np.ix_(*axes)]


@dataclass(frozen=True)
class Zero(Intervention):
    """Set the selected values to 0."""

    def new_values(self, selected, where):
        return np.zeros_like(selected)


@dataclass(frozen=True)
class Scale(Intervention):
    """Multiply the selected values by `factor` (a number or a broadcastable array)."""

    factor: Any = 1.0

    def new_values(self, selected, where):
        return selected * np.asarray(self.factor, selected.dtype)


@dataclass(frozen=True)
class Add(Intervention):
    """Add `vector` (e.g. a steering vector [d_model]) to the selected values."""

    vector: Any = 0.0

    def new_values(self, selected, where):
        return selected + np.asarray(self.vector, selected.dtype)


@dataclass(frozen=True)
class Replace(Intervention):
    """Set the selected values to `values`: an array for this hook, shaped like the activation
    without its batch axis ([p, ...], indexed by absolute position) or without batch and
    position axes ([...], the same at every position). `mean` and `median` build these."""

    values: Any = None  # np.ndarray, or {hook name: np.ndarray}

    def new_values(self, selected, where):
        v = self.values[where.name] if isinstance(self.values, dict) else self.values
        if v is None:
            raise MinillmError(f"no statistics for {where.name}: compute them with activation_stats")
        v = np.asarray(v)
        n = len(where.axes)
        if v.ndim == n - 1:  # per position: [p, ...]
            if where.abs_pos.max() >= v.shape[where.pos_axis - 1]:
                raise MinillmError(f"the per-position statistics of {where.name} cover "
                                   f"{v.shape[where.pos_axis - 1]} positions, not position "
                                   f"{int(where.abs_pos.max())}")
            axes = list(where.axes)
            axes[where.pos_axis] = where.abs_pos
            return np.expand_dims(v[np.ix_(*axes[1:])], 0)
        if v.ndim == n - 2:  # the same at every position
            return where.take(v, drop=(0, where.pos_axis))
        raise MinillmError(f"statistics of shape {v.shape} do not fit {where.name} (activation "
                           f"with {n} axes): expected {n - 1} axes (per position) or {n - 2}")


@dataclass(frozen=True)
class Apply(Intervention):
    """Any function of the selected values: fn(selected) -> new values."""

    fn: Callable[[np.ndarray], np.ndarray] | None = None

    def new_values(self, selected, where):
        return self.fn(selected)


@dataclass(frozen=True)
class Resample(Intervention):
    """Patch from a run of the model on another prompt (resample ablation).

    `source` is a str or token ids [1 or b, p']; it is run once, when the
    intervention is first attached (with whatever hooks are active then: none
    when used through `run_with_interventions` or `run_variants`).
    """

    source: Any = None
    _cache: dict = field(default_factory=dict, compare=False, repr=False)

    def prepare(self, model) -> None:
        names = self.hook_names(model)
        if not all(n in self._cache for n in names):
            _, cache = model.run_with_cache(self.source, names_filter=names)
            self._cache.update(cache)

    def new_values(self, selected, where):
        return Patch(hook=where.name, source=self._cache).new_values(selected, where)


# --- the functions users call --------------------------------------------------------------


def patch(hook: str, source: Mapping[str, np.ndarray], layer: Index = None, pos: Index = None,
          head: Index = None, neuron: Index = None, batch: Index = None) -> Patch:
    """Values from another run's cache (activation patching)."""
    return Patch(hook, layer, pos, head, neuron, batch, source=source)


def zero(hook: str, layer: Index = None, pos: Index = None, head: Index = None,
         neuron: Index = None, batch: Index = None) -> Zero:
    """Zero ablation."""
    return Zero(hook, layer, pos, head, neuron, batch)


def scale(hook: str, factor: float, layer: Index = None, pos: Index = None, head: Index = None,
          neuron: Index = None, batch: Index = None) -> Scale:
    """Multiply by `factor`."""
    return Scale(hook, layer, pos, head, neuron, batch, factor=factor)


def add(hook: str, vector: np.ndarray, layer: Index = None, pos: Index = None, head: Index = None,
        neuron: Index = None, batch: Index = None) -> Add:
    """Add a vector (steering)."""
    return Add(hook, layer, pos, head, neuron, batch, vector=vector)


def mean(hook: str, stats: ActivationStats | np.ndarray, layer: Index = None, pos: Index = None,
         head: Index = None, neuron: Index = None, batch: Index = None) -> Replace:
    """Mean ablation: replace by the reference mean (from `activation_stats`, or corpus statistics
    from `minillm.interp.stats.corpus_stats`)."""
    values = _statistic(stats, "mean")
    return Replace(hook, layer, pos, head, neuron, batch, values=values)


def median(hook: str, stats: ActivationStats | np.ndarray, layer: Index = None, pos: Index = None,
           head: Index = None, neuron: Index = None, batch: Index = None) -> Replace:
    """Median ablation: replace by the reference median (from `activation_stats`, or corpus
    statistics from `minillm.interp.stats.corpus_stats`)."""
    values = _statistic(stats, "median")
    return Replace(hook, layer, pos, head, neuron, batch, values=values)


def _statistic(stats, which: str):
    """stats.mean / stats.median of a statistics object (ActivationStats, CorpusStats, ...);
    plain arrays and {hook: array} dicts are the values themselves."""
    if isinstance(stats, (np.ndarray, dict, list, tuple, float, int)):
        return stats
    return getattr(stats, which)


def resample(hook: str, source: TokensLike, layer: Index = None, pos: Index = None, head: Index = None,
             neuron: Index = None, batch: Index = None) -> Resample:
    """Resample ablation: values from a run on another prompt `source` (str or ids)."""
    return Resample(hook, layer, pos, head, neuron, batch, source=source)


def apply(hook: str, fn: Callable[[np.ndarray], np.ndarray], layer: Index = None, pos: Index = None,
          head: Index = None, neuron: Index = None, batch: Index = None) -> Apply:
    """Any function of the selected values."""
    return Apply(hook, layer, pos, head, neuron, batch, fn=fn)


def to_hooks(model: HookedModel, interventions: Sequence[Intervention]) -> list[tuple[str, HookFn]]:
    """Interventions -> (hook name, fn) pairs, validated, in the order given."""
    pairs = []
    for i in interventions:
        if not isinstance(i, Intervention):
            raise MinillmError(f"expected an intervention (minillm.interp.interventions.patch, zero, ...), "
                               f"got {type(i).__name__}")
        pairs += i.to_hooks(model)
    return pairs


# --- reference statistics ------------------------------------------------------------------


@dataclass
class ActivationStats:
    """Mean and median of activations over a reference set, kept as plain data.

    `mean[name]` and `median[name]` have the activation's shape without the
    batch axis and, unless `per_position`, without the position axis.
    """

    mean: dict[str, np.ndarray]
    median: dict[str, np.ndarray]
    per_position: bool
    n_samples: int

    def save(self, path: str | os.PathLike) -> None:
        """Write to a safetensors file (keys "mean/<hook>", "median/<hook>")."""
        from safetensors.numpy import save_file

        data = {f"mean/{k}": np.ascontiguousarray(v) for k, v in self.mean.items()}
        data |= {f"median/{k}": np.ascontiguousarray(v) for k, v in self.median.items()}
        save_file(data, str(path), metadata={"per_position": str(self.per_position),
                                             "n_samples": str(self.n_samples)})

    @classmethod
    def load(cls, path: str | os.PathLike) -> ActivationStats:
        from safetensors import safe_open

        with safe_open(str(path), "numpy") as f:
            meta = f.metadata()
            data = {k: f.get_tensor(k) for k in f.keys()}
        pick = lambda kind: {k.split("/", 1)[1]: v for k, v in data.items() if k.startswith(kind + "/")}  # noqa: E731
        return cls(pick("mean"), pick("median"), meta["per_position"] == "True", int(meta["n_samples"]))


def activation_stats(model: HookedModel, tokens: TokensLike, names: str | Sequence[str],
                     per_position: bool = False,
                     attention_mask: np.ndarray | None = None) -> ActivationStats:
    """Mean and median of the named activations over a reference set.

    tokens: ids [b, p] (or a list of strings, padded with a mask). Without
    `per_position`, statistics are over every (row, real position) sample;
    with it, over rows only, one value per position (rows must then have no
    padding). Computed in float64, stored in the model's dtype.
    """
    if isinstance(tokens, (list, tuple)) and tokens and isinstance(tokens[0], str):
        tokens, attention_mask = model.to_tokens_and_mask(tokens)
    names = [names] if isinstance(names, str) else list(names)
    _, cache = model.run_with_cache(tokens, names_filter=names, attention_mask=attention_mask)
    mean, med = {}, {}
    for name in names:
        act = np.moveaxis(cache[name].astype(np.float64), hook_axes(name)[0], 1)  # [b, p, ...]
        if per_position:
            if attention_mask is not None and not np.all(attention_mask):
                raise MinillmError("per-position statistics need rows without padding")
            samples = act  # [b, p, ...]
        else:
            real = np.ones(act.shape[:2], bool) if attention_mask is None else np.asarray(attention_mask) != 0
            samples = act[real]  # [samples, ...]
        mean[name] = samples.mean(0).astype(model.dtype)
        med[name] = np.median(samples, axis=0).astype(model.dtype)
        if per_position and hook_axes(name)[0] != 1:
            mean[name] = np.moveaxis(mean[name], 0, hook_axes(name)[0] - 1)
            med[name] = np.moveaxis(med[name], 0, hook_axes(name)[0] - 1)
    n = int(np.asarray(tokens).shape[0])
    return ActivationStats(mean, med, per_position, n)
