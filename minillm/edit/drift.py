"""Drift: what is left of a weight edit after it is "reverted", measured instead of hand-waved.

`measure_drift(model, prompt, ops)` runs the prompt

    clean              the model as it is
    edited             with the ops applied
    journal-reverted   after handle.revert(): saved bytes written back (exactly 0 drift)
    inverse-reverted   after handle.revert(mode="inverse"): ×0.04 then ×25 (rounding)
    stale-kv-cache     weights restored, but the KV cache of the prompt's prefix was
                       computed while the edit was in place (state drift)
    recomputed-cache   the same, with the cache recomputed after the revert (exactly 0)

and reports, per layer and position, the residual-stream difference to the
clean run (absolute, and relative to the clean norm), the change of logits,
the KL divergence of the next-token distributions and the top-k tokens.

`interference_map(model, prompt, layer, neuron)` shows which other MLP neurons
move when one neuron's output is scaled: only downstream ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from minillm.edit.edits import Slice, scale_neuron
from minillm.errors import MinillmError
from minillm.kv_cache import KVCache

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

RUNS = ("edited", "journal-reverted", "inverse-reverted", "stale-kv-cache", "recomputed-cache")


def ulp_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """How many representable floats lie between a and b (0 = identical bits, +0 == -0)."""
    a, b = np.asarray(a), np.asarray(b)
    itype = {4: np.int32, 8: np.int64}[a.dtype.itemsize]

    def ordered(x):  # floats -> integers in the same order
        i = x.view(itype).astype(np.int64)
        return np.where(i < 0, np.iinfo(itype).min - i, i)

    return np.abs(ordered(a) - ordered(b))


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def _resid_names(model) -> list[str]:
    """The residual stream at the input of block 0 and after every block."""
    return ["blocks.0.hook_resid_pre"] + [f"blocks.{l}.hook_resid_post" for l in range(model.cfg.n_layers)]


@dataclass
class Run:
    """A run's residual stream [L+1, p, d] (row 0: embeddings; row l+1: after block l) and logits [p, V]."""

    resid: np.ndarray
    logits: np.ndarray


@dataclass
class RunDrift:
    """One run compared with its clean reference."""

    name: str
    resid_abs: np.ndarray  # [L+1, p]  ||resid - clean||_2 per layer row and position
    resid_rel: np.ndarray  # [L+1, p]  the same divided by ||clean||_2
    logit_abs: np.ndarray  # [p]       max_vocab |logits - clean logits|
    kl: np.ndarray  # [p]       KL(clean || run) of next-token distributions, nats
    topk: list[int]  # top-k token ids at the last position
    weight_ulps: int | None  # largest ulp distance of touched weights from clean (None: edited)
    positions: np.ndarray  # [p] absolute positions measured
    note: str = ""


@dataclass
class DriftReport:
    clean_topk: list[int]
    runs: dict[str, RunDrift] = field(default_factory=dict)
    cache_drift: np.ndarray | None = None  # [L] max |K or V| difference of the stale cache, per layer
    decode: object = None  # token id -> text, for the table (None: show ids)
    k: int = 5

    def __repr__(self) -> str:
        worst = ", ".join(f"{n} {r.resid_rel.max(initial=0.0):.3g}" for n, r in self.runs.items())
        return f"DriftReport(max relative residual drift per run: {worst})"

    def _repr_html_(self) -> str:
        from minillm.views.display import report_html

        return report_html("drift against the clean run", self.table())

    def table(self) -> str:
        """One line per run: weights, residual drift, logit change, KL, top-1, top-k overlap."""
        head = (f"{'run':<18} {'weights':>14} {'max rel resid':>14} {'max |dlogit|':>13} "
                f"{'KL last':>10} {'top-1':>12} {f'top-{self.k} kept':>11}")
        lines = [head, "-" * len(head)]
        lines.append(f"{'clean':<18} {'pristine':>14} {0:>14.3g} {0:>13.3g} {0:>10.3g} "
                     f"{self._tok(self.clean_topk[0]):>12} {self.k:>11}")
        for r in self.runs.values():
            if r.note and r.resid_abs.size == 0:
                lines.append(f"{r.name:<18} {r.note}")
                continue
            w = {None: "edited", 0: "bit-exact"}.get(r.weight_ulps, f"<= {r.weight_ulps} ulps")
            kept = len(set(r.topk) & set(self.clean_topk))
            lines.append(f"{r.name:<18} {w:>14} {r.resid_rel.max():>14.3g} {r.logit_abs.max():>13.3g} "
                         f"{r.kl[-1]:>10.3g} {self._tok(r.topk[0]):>12} {kept:>11}"
                         + (f"  ({r.note})" if r.note else ""))
        if self.cache_drift is not None:
            worst = int(np.argmax(self.cache_drift))
            lines.append(f"stale KV cache: max |dK|,|dV| {self.cache_drift.max():.3g} (layer {worst}); "
                         "first layer that differs: "
                         f"{int(np.flatnonzero(self.cache_drift)[0]) if self.cache_drift.any() else 'none'}")
        return "\n".join(lines)

    def _tok(self, t: int) -> str:
        return repr(self.decode(t)) if self.decode is not None else str(t)

    def layer_profile(self, name: str) -> np.ndarray:
        """Max over positions of the relative residual drift, per layer row.   -> [L+1]"""
        return self.runs[name].resid_rel.max(axis=1)

    def plot(self, path: str | Path | None = None, ax: Axes | None = None) -> Figure:
        """Relative residual drift against layer, one line per run (symlog scale: exact zeros show).

        Returns the Figure (the one `ax` belongs to, if given); saved to `path` if given.
        """
        from minillm.views import figures

        return figures.saved(figures.drift_profile(self, ax), path)


def _run(model, ids, cache=None) -> Run:
    logits, acts = model.run_with_cache(ids, names_filter=_resid_names(model), cache=cache)
    return Run(np.stack([acts[n][0] for n in _resid_names(model)]), logits[0])


def _compare(name, run: Run, ref: Run, k: int, ulps: int, positions, note="") -> RunDrift:
    diff = np.linalg.norm((run.resid - ref.resid).astype(np.float64), axis=-1)  # [L+1, p]
    norm = np.linalg.norm(ref.resid.astype(np.float64), axis=-1)
    lp, lq = _log_softmax(ref.logits), _log_softmax(run.logits)
    kl = np.maximum((np.exp(lp) * (lp - lq)).sum(-1), 0.0)
    logit_abs = np.abs(run.logits.astype(np.float64) - ref.logits).max(-1)
    topk = np.argsort(-run.logits[-1], kind="stable")[:k].tolist()
    return RunDrift(name, diff, diff / np.maximum(norm, 1e-30), logit_abs, kl, topk, ulps,
                    positions, note)


def _touched(model, ops) -> list[Slice]:
    return [s for op in ops for s in op.plan(model) if isinstance(s, Slice)]


def _weights_ulps(model, slices, clean) -> int:
    """Largest ulp distance of the touched weights from clean. A norm gain counts in what it
    multiplies by: Gemma stores w and applies (1 + w), so its ulps are those of 1 + w."""
    def applied(s, w):
        offset = model.ln_final.offset if s.name.endswith(".w") else 0  # norm gains end in .w
        return w if offset == 0 else model.dtype.type(offset) + w

    return max((int(ulp_distance(applied(s, s.save(model)), applied(s, c)).max(initial=0))
                for s, c in zip(slices, clean)), default=0)


def measure_drift(model, prompt, ops, k: int = 5, n_new: int = 1, runs=RUNS) -> DriftReport:
    """Clean / edited / journal- and inverse-reverted / stale- and recomputed-cache runs of one prompt.

    `runs` picks which of RUNS to do ("edited" always is). The stale-cache runs
    feed the last `n_new` tokens of the prompt on top of a KV cache of the
    rest; they are compared with the same procedure done with a clean cache
    (so rounding of the cached path is not counted as drift). The model is
    left exactly as it was found.
    """
    ids = model.to_tokens(prompt) if isinstance(prompt, str) else np.asarray(prompt).reshape(1, -1)
    p = ids.shape[1]
    if p < 2:
        raise MinillmError(f"the prompt is {p} token long: measuring drift needs at least 2 tokens "
                           "(a prefix in the KV cache and a token on top of it)")
    if not 1 <= n_new < p:
        raise MinillmError(f"n_new must be between 1 and {p - 1} for a prompt of {p} tokens")
    unknown = set(runs) - set(RUNS)
    if unknown:
        raise MinillmError(f"unknown runs {sorted(unknown)}: choose from {RUNS}")
    ops = list(ops)
    slices = _touched(model, ops)  # validates every op before anything runs
    clean_w = [s.save(model) for s in slices]
    prefix, last = ids[:, : p - n_new], ids[:, p - n_new :]
    new_pos, all_pos = np.arange(p - n_new, p), np.arange(p)
    caches = "stale-kv-cache" in runs or "recomputed-cache" in runs

    clean = _run(model, ids)
    report = DriftReport(clean_topk=np.argsort(-clean.logits[-1], kind="stable")[:k].tolist(), k=k)
    if model.tokenizer is not None:
        report.decode = lambda t: model.tokenizer.decode([int(t)])
    if caches:
        clean_cache = KVCache.for_model(model)
        model.forward(prefix, cache=clean_cache)
        clean_cached = _run(model, last, cache=clean_cache.clone())

    with model.edited(*ops):
        report.runs["edited"] = _compare("edited", _run(model, ids), clean, k, None, all_pos)
        if caches:
            stale_cache = KVCache.for_model(model)
            model.forward(prefix, cache=stale_cache)  # state computed under the edit, kept
    if "journal-reverted" in runs:
        report.runs["journal-reverted"] = _compare("journal-reverted", _run(model, ids), clean, k,
                                                   _weights_ulps(model, slices, clean_w), all_pos)
    if "inverse-reverted" in runs:
        handles = [model.edit(op) for op in ops]
        try:
            for h in reversed(handles):
                h.revert(mode="inverse")
            report.runs["inverse-reverted"] = _compare("inverse-reverted", _run(model, ids), clean, k,
                                                       _weights_ulps(model, slices, clean_w), all_pos)
        except MinillmError:
            empty = np.zeros(0)
            note = "no inverse operation (a zeroing or set edit): only the journal can undo it"
            report.runs["inverse-reverted"] = RunDrift("inverse-reverted", empty, empty, empty, empty, [],
                                                       0, empty, note=note)
        finally:
            for h in handles:
                if h.state != "reverted":
                    h.revert()  # from the journal: bit-exact again
    if "stale-kv-cache" in runs:
        report.cache_drift = clean_cache.max_abs_diff(stale_cache)
        report.runs["stale-kv-cache"] = _compare("stale-kv-cache", _run(model, last, cache=stale_cache),
                                                 clean_cached, k, 0, new_pos,
                                                 note=f"last {n_new} position(s) only")
    if "recomputed-cache" in runs:
        fresh_cache = KVCache.for_model(model)
        model.forward(prefix, cache=fresh_cache)
        report.runs["recomputed-cache"] = _compare("recomputed-cache",
                                                   _run(model, last, cache=fresh_cache), clean_cached, k, 0,
                                                   new_pos, note=f"last {n_new} position(s) only")
    return report


# --- interference ------------------------------------------------------------------------------


@dataclass
class InterferenceMap:
    """How much each MLP neuron's hook_post moved when one neuron (layer, neuron) was scaled."""

    layer: int
    neuron: int
    factor: float
    position: int | None  # None: a weight edit (all positions); else an activation edit at one position
    delta: np.ndarray  # [L, p, m] |hook_post - clean hook_post|
    clean_rms: np.ndarray  # [L] root-mean-square of the clean hook_post per layer

    def __repr__(self) -> str:
        return (f"InterferenceMap(neuron {self.layer}:{self.neuron} ×{self.factor:g}: upstream max "
                f"{self.upstream_max:.3g}, same layer {self.same_layer_max:.3g}, downstream max "
                f"{self.per_layer().max(initial=0.0):.3g})")

    def _repr_html_(self) -> str:
        from minillm.views.display import report_html

        return report_html("interference map", self.table())

    @property
    def upstream_max(self) -> float:
        """Largest change in layers before the edited one (causality: exactly 0)."""
        return float(self.delta[: self.layer].max(initial=0.0))

    @property
    def same_layer_max(self) -> float:
        """Largest change of the other neurons of the edited layer (exactly 0: they do not see it)."""
        others = np.delete(self.delta[self.layer], self.neuron, axis=-1)
        return float(others.max(initial=0.0))

    @property
    def earlier_max(self) -> float | None:
        """Largest change at positions before the edited one (activation edit only; exactly 0)."""
        if self.position is None:
            return None
        return float(self.delta[:, : self.position].max(initial=0.0))

    def per_layer(self) -> np.ndarray:
        """Max |Δ hook_post| over positions and neurons (edited neuron excluded), per layer.   -> [L]"""
        d = self.delta.copy()
        d[self.layer, :, self.neuron] = 0.0
        return d.max(axis=(1, 2))

    def top(self, n: int = 10) -> list[tuple[int, int, float, float]]:
        """The n neurons that moved most: (layer, neuron, max |Δ| over positions, that / layer rms)."""
        d = self.delta.max(axis=1)  # [L, m]
        d[self.layer, self.neuron] = 0.0
        flat = np.argsort(-d, axis=None, kind="stable")[:n]
        out = []
        for f in flat:
            l, i = np.unravel_index(f, d.shape)
            out.append((int(l), int(i), float(d[l, i]), float(d[l, i] / max(self.clean_rms[l], 1e-30))))
        return out

    def table(self, n: int = 10) -> str:
        where = "weights, all positions" if self.position is None else f"at position {self.position}"
        lines = [f"neuron {self.layer}:{self.neuron} ×{self.factor:g} ({where})",
                 f"upstream (layers < {self.layer}) max |Δ|: {self.upstream_max:.3g}; other neurons of "
                 f"layer {self.layer}: {self.same_layer_max:.3g}"
                 + ("" if self.position is None else f"; earlier positions: {self.earlier_max:.3g}"),
                 f"{'layer':>5} {'neuron':>7} {'max |Δ|':>10} {'/ layer rms':>12}"]
        lines += [f"{l:>5} {i:>7} {d:>10.3g} {r:>12.3g}" for l, i, d, r in self.top(n)]
        return "\n".join(lines)

    def plot(self, path: str | Path | None = None, ax: Axes | None = None) -> Figure:
        """Per layer, the largest change of any other neuron's hook_post (symlog: exact zeros show).

        Returns the Figure (the one `ax` belongs to, if given); saved to `path` if given.
        """
        from minillm.views import figures

        return figures.saved(figures.interference(self, ax), path)


def interference_map(model, prompt, layer: int, neuron: int, factor: float = 0.0,
                     position: int | None = None) -> InterferenceMap:
    """Scale neuron (layer, neuron)'s output by `factor` and measure every neuron's hook_post change.

    position=None: a weight edit, scale_neuron(which="out") (all positions).
    position=p: an activation edit through a hook, at position p only, so
    positions before p must not move either.
    """
    ids = model.to_tokens(prompt) if isinstance(prompt, str) else np.asarray(prompt).reshape(1, -1)
    op = scale_neuron(layer, neuron, factor, which="out")
    op.plan(model)  # validates layer, neuron, factor
    if position is not None and not 0 <= position < ids.shape[1]:
        raise MinillmError(f"position {position} is outside the prompt's {ids.shape[1]} tokens")
    names = [f"blocks.{l}.mlp.hook_post" for l in range(model.cfg.n_layers)]

    def post(hooks=()):
        _, acts = model.run_with_cache(ids, names_filter=names, fwd_hooks=hooks)
        return np.stack([acts[n][0] for n in names]).astype(np.float64)  # [L, p, m]

    clean = post()
    if position is None:
        with model.edited(op):
            edited = post()
    else:
        f = model.dtype.type(factor)

        def scale_one(act, hook):
            act = act.copy()
            act[:, position, neuron] *= f
            return act

        edited = post([(names[layer], scale_one)])
    rms = np.sqrt((clean**2).mean(axis=(1, 2)))
    return InterferenceMap(layer, neuron, factor, position, np.abs(edited - clean), rms)
