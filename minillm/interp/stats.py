"""Statistics of activations over a corpus: streaming, mergeable across workers, saved to disk.

    from minillm.data import Corpus
    from minillm.interp import stats as S
    st = S.corpus_stats(model, Corpus.from_files("book.txt"), "blocks.3.mlp.hook_post")
    st.mean["blocks.3.mlp.hook_post"]        # [d_mlp] float64
    st.median["blocks.3.mlp.hook_post"]      # [d_mlp] from the quantile sketches
    st.quantile("blocks.3.mlp.hook_post", [0.1, 0.9])   # [2, d_mlp]
    st.save("out/stats"); S.CorpusStats.load("out/stats")
    with model.intervened([iv.median("post", st, layer=3, neuron=7)]): ...   # ablate with them

What is computed, per hook and per *unit*:
    by="neuron"  every entry of the activation without its batch and position
                 axes: an MLP neuron, a residual-stream dimension, a (head, d_head)
                 entry of hook_z. The shape mean and median ablation use.
    by="head"    one unit per head (hooks with a head axis), pooling that head's
                 d_head (or d_model) entries.
    by="hook"    one unit for the whole hook.
over positions="all" (every real token) or "last" (the last real token of
each text: the final position of its last window).

Count, mean, variance, min and max are exact up to floating-point summation
order. How they are summed: each batch's samples are converted to float64 and
reduced with two passes (NumPy's pairwise sum for the mean, then the sum of
squared deviations, M2); batches, then shards, are combined with the
parallel formula of Chan, Golub and LeVeque,
    n = na + nb,  d = mean_b - mean_a,  mean = mean_a + d·nb/n,
    M2 = M2a + M2b + d²·na·nb/n,
in shard order whatever order the shards finish in. variance = M2 / n
(population), M2 / (n - 1) with `ddof=1`. Min and max are exact.

Quantiles (the median is the 0.5 quantile) come from one Apache DataSketches
KLL sketch (float32) per unit, merged across batches and shards. With the
default k = 200 the normalised rank error is 1.33 % (`rank_error`): with
99 % confidence, the value returned for quantile q has a true rank between
q - 0.0133 and q + 0.0133 in the samples. While a sketch has seen at most k
values it keeps them all and is exact. Sketches use randomness when they
compact, so two runs agree within that error, not bit for bit.

Engines: `executor=None` runs in this process; any
`concurrent.futures.Executor` (a Dask cluster's included) runs shards of
`docs_per_shard` documents; `out=` writes each shard as it completes and
`resume=True` continues an interrupted run (minillm.data.shards). The shards
do not depend on the engine, so counts, min and max are identical and means
agree to float summation error everywhere.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from minillm.data.corpus import Batch, Corpus
from minillm.data.shards import (
    DOCS_PER_SHARD,  # noqa: F401 - the default, for callers of this module
    merge_counts,
    read_tensors,
    result_file,
    run_corpus_job,
    save_result,
    write_tensors,
)
from minillm.errors import MinillmError
from minillm.interp.interventions import hook_axes

if TYPE_CHECKING:
    from minillm.hooked_model import HookedModel

BY = ("neuron", "head", "hook")
POSITIONS = ("all", "last")
DEFAULT_K = 200


def rank_error(k: int = DEFAULT_K) -> float:
    """The normalised rank error of a KLL sketch of parameter k (99 % confidence, one quantile)."""
    from datasketches import kll_floats_sketch

    return float(kll_floats_sketch.get_normalized_rank_error(k, False))


def _kll(k: int):
    try:
        from datasketches import kll_floats_sketch
    except ImportError:
        raise MinillmError(
            "quantiles need Apache DataSketches: pip install 'minillm[corpus]' "
            "(or quantiles=False for count/mean/variance/min/max only)"
        ) from None
    return kll_floats_sketch(k)


@dataclass
class HookStats:
    """The running statistics of one hook: G units, each with moments and a quantile sketch."""

    name: str
    by: str
    shape: tuple[int, ...]  # the units' shape: (d_mlp,), (n_heads, d_head), (n_heads,), ()
    count: int = 0  # samples per unit
    mean: np.ndarray | None = None  # [G] float64
    m2: np.ndarray | None = None  # [G] float64: sum of squared deviations from the mean
    min: np.ndarray | None = None  # [G] float64
    max: np.ndarray | None = None  # [G] float64
    k: int | None = DEFAULT_K  # None: no quantile sketches
    sketches: list | None = field(default=None, repr=False)  # G KLL sketches (or their bytes)

    @property
    def n_units(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def update(self, x: np.ndarray) -> None:
        """Add samples x [M, G] (any float dtype)."""
        if x.shape[0] == 0:
            return
        x64 = x.astype(np.float64)
        mean = x64.mean(0)
        other = HookStats(
            self.name,
            self.by,
            self.shape,
            x.shape[0],
            mean,
            ((x64 - mean) ** 2).sum(0),
            x64.min(0),
            x64.max(0),
            k=None,
        )
        if self.k is not None:
            xt = np.ascontiguousarray(x.T, dtype=np.float32)  # [G, M]
            if self.sketches is None:
                self.sketches = [_kll(self.k) for _ in range(self.n_units)]
            self._live()
            for s, row in zip(self.sketches, xt):
                s.update(row)
        self._merge_moments(other)

    def merge(self, other: HookStats) -> HookStats:
        """Fold another worker's statistics of the same hook into this one (in place)."""
        if (other.name, other.by, tuple(other.shape), other.k) != (
            self.name,
            self.by,
            tuple(self.shape),
            self.k,
        ):
            raise MinillmError(
                f"cannot merge statistics of {other.name} ({other.by}, {other.shape}, "
                f"k={other.k}) into {self.name} ({self.by}, {self.shape}, k={self.k})"
            )
        self._merge_moments(other)
        if other.sketches is not None:
            if self.sketches is None:
                self.sketches = [_kll(self.k) for _ in range(self.n_units)]
            self._live()
            other._live()
            for a, b in zip(self.sketches, other.sketches):
                a.merge(b)
        return self

    def _merge_moments(self, o: HookStats) -> None:
        if o.count == 0:
            return
        if self.count == 0:
            self.count, self.mean, self.m2 = o.count, o.mean.copy(), o.m2.copy()
            self.min, self.max = o.min.copy(), o.max.copy()
            return
        n = self.count + o.count
        d = o.mean - self.mean
        self.mean = self.mean + d * (o.count / n)
        self.m2 = self.m2 + o.m2 + d * d * (self.count * o.count / n)
        self.min = np.minimum(self.min, o.min)
        self.max = np.maximum(self.max, o.max)
        self.count = n

    def _live(self) -> None:
        """Sketches as objects (they travel between processes as bytes)."""
        if self.sketches and isinstance(self.sketches[0], bytes):
            from datasketches import kll_floats_sketch

            self.sketches = [kll_floats_sketch.deserialize(b) for b in self.sketches]

    def __getstate__(self):  # sketches are not picklable; their serialized bytes are
        state = dict(self.__dict__)
        if self.sketches and not isinstance(self.sketches[0], bytes):
            state["sketches"] = [s.serialize() for s in self.sketches]
        return state

    def var(self, ddof: int = 0) -> np.ndarray:
        if self.count - ddof <= 0:
            return np.full(self.shape, np.nan)
        return (self.m2 / (self.count - ddof)).reshape(self.shape)

    def quantile(self, q: float | Sequence[float]) -> np.ndarray:
        """Quantile(s) per unit from the sketches.   -> shape, or [len(q), *shape]"""
        if self.sketches is None:
            raise MinillmError(
                f"no quantile sketches for {self.name}: these statistics were computed with quantiles=False"
            )
        if self.count == 0:
            raise MinillmError(f"no samples for {self.name}: the corpus gave no tokens")
        self._live()
        qs = np.atleast_1d(np.asarray(q, np.float64))
        if ((qs < 0) | (qs > 1)).any():
            raise MinillmError(f"quantiles must lie in [0, 1], got {q}")
        out = np.array([[s.get_quantile(float(x)) for s in self.sketches] for x in qs], np.float64)
        out = out.reshape((len(qs), *self.shape))
        return out[0] if np.ndim(q) == 0 else out

    def to_tensors(self) -> dict[str, np.ndarray]:
        t = {
            f"{k}/{self.name}": np.ascontiguousarray(getattr(self, k))
            for k in ("mean", "m2", "min", "max")
            if getattr(self, k) is not None
        }
        if self.sketches is not None:
            blobs = self.__getstate__()["sketches"]
            t[f"kll/{self.name}"] = np.frombuffer(b"".join(blobs), np.uint8).copy()
            t[f"kll_offsets/{self.name}"] = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
        return t

    @classmethod
    def from_tensors(cls, info: dict, tensors: dict[str, np.ndarray]) -> HookStats:
        name = info["name"]
        h = cls(name, info["by"], tuple(info["shape"]), int(info["count"]), k=info["k"])
        for k in ("mean", "m2", "min", "max"):
            if f"{k}/{name}" in tensors:
                setattr(h, k, tensors[f"{k}/{name}"].astype(np.float64))
        if f"kll/{name}" in tensors:
            raw, off = tensors[f"kll/{name}"].tobytes(), tensors[f"kll_offsets/{name}"]
            h.sketches = [raw[off[i] : off[i + 1]] for i in range(len(off) - 1)]
        return h

    def info(self) -> dict:
        return dict(name=self.name, by=self.by, shape=list(self.shape), count=int(self.count), k=self.k)


@dataclass
class CorpusStats:
    """Statistics of several hooks over a corpus; `mean`/`median` plug into mean/median ablation."""

    hooks: dict[str, HookStats]
    meta: dict = field(default_factory=dict)

    # what minillm.interp.interventions.mean / .median read
    @property
    def mean(self) -> dict[str, np.ndarray]:
        return {n: h.mean.reshape(h.shape) for n, h in self.hooks.items() if h.count}

    @property
    def median(self) -> dict[str, np.ndarray]:
        return {n: h.quantile(0.5) for n, h in self.hooks.items()}

    @property
    def min(self) -> dict[str, np.ndarray]:
        return {n: h.min.reshape(h.shape) for n, h in self.hooks.items() if h.count}

    @property
    def max(self) -> dict[str, np.ndarray]:
        return {n: h.max.reshape(h.shape) for n, h in self.hooks.items() if h.count}

    def var(self, ddof: int = 0) -> dict[str, np.ndarray]:
        return {n: h.var(ddof) for n, h in self.hooks.items()}

    def std(self, ddof: int = 0) -> dict[str, np.ndarray]:
        return {n: np.sqrt(v) for n, v in self.var(ddof).items()}

    def quantile(self, name: str, q: float | Sequence[float]) -> np.ndarray:
        return self[name].quantile(q)

    @property
    def per_position(self) -> bool:  # the ActivationStats field mean/median ablation checks
        return False

    def __getitem__(self, name: str) -> HookStats:
        if name not in self.hooks:
            raise MinillmError(f"no statistics for {name}; these cover {', '.join(self.hooks) or 'nothing'}")
        return self.hooks[name]

    def merge(self, other: CorpusStats) -> CorpusStats:
        """Fold in another shard's statistics (in place): moments by Chan's formula, sketches merged."""
        for n, h in other.hooks.items():
            if n in self.hooks:
                self.hooks[n].merge(h)
            else:
                self.hooks[n] = h
        merge_counts(self.meta, other.meta)
        return self

    def summary(self) -> dict:
        """JSON-friendly: meta plus, per hook, its units, sample count and ranges."""
        out = dict(self.meta)
        out["hooks"] = {}
        for n, h in self.hooks.items():
            d = h.info()
            if h.count:
                d |= dict(
                    mean_range=[float(h.mean.min()), float(h.mean.max())],
                    min=float(h.min.min()),
                    max=float(h.max.max()),
                )
            if h.k is not None:
                d["rank_error"] = rank_error(h.k)
            out["hooks"][n] = d
        return out

    # --- files ----------------------------------------------------------------------------

    def to_file(self, path: str | Path) -> None:
        """One safetensors file (tensors "mean/<hook>", "m2/...", "min/", "max/", "kll/", "kll_offsets/");
        the hooks' shapes and the meta are JSON in the file's metadata."""
        tensors = {}
        for h in self.hooks.values():
            tensors |= h.to_tensors()
        write_tensors(path, tensors, "minillm_stats", dict(hooks=[h.info() for h in self.hooks.values()],
                                                            meta=self.meta))

    @classmethod
    def from_file(cls, path: str | Path) -> CorpusStats:
        info, tensors = read_tensors(path, "minillm_stats", "statistics")
        hooks = {i["name"]: HookStats.from_tensors(i, tensors) for i in info["hooks"]}
        return cls(hooks, info["meta"])

    def save(self, folder: str | Path) -> Path:
        """folder/stats.safetensors (all numbers) + folder/stats.json (readable summary)."""
        return save_result(self, folder, "stats", self.summary())

    @classmethod
    def load(cls, folder_or_file: str | Path) -> CorpusStats:
        return cls.from_file(result_file(folder_or_file, "stats", "stats"))


# --- computing them -------------------------------------------------------------------------


def resolve_hooks(model: HookedModel, hooks: str | Sequence[str]) -> list[str]:
    """Hook names or glob patterns ("blocks.*.mlp.hook_post", comma-separated) -> names in forward order."""
    pats = [p.strip() for p in (hooks.split(",") if isinstance(hooks, str) else hooks) if p.strip()]
    if not pats:
        raise MinillmError("no hooks given: name one or a pattern such as 'blocks.*.mlp.hook_post'")
    names = model.hook_names()
    out = set()
    for p in pats:
        hit = [n for n in names if fnmatch.fnmatchcase(n, p)]
        if not hit:
            model.hooks.check_name(p)  # raises with "did you mean"
        out.update(hit)
    chosen = [n for n in names if n in out]
    for n in chosen:
        if n.endswith(("hook_pattern", "hook_attn_scores")):
            raise MinillmError(
                f"{n} has a key axis whose length changes with the window; statistics "
                "cover hooks with one position axis (e.g. hook_z, hook_post, hook_resid_post)"
            )
    return chosen


def unit_shape(model: HookedModel, name: str, by: str) -> tuple[int, ...]:
    """The shape of the statistics of hook `name` at granularity `by`."""
    act = probe_shapes(model)[name]  # without batch and position axes
    if by == "neuron":
        return act
    if by == "hook":
        return ()
    if hook_axes(name)[1] is None:
        raise MinillmError(f"{name} has no head axis: by='head' needs attn.hook_q/k/v/z/rot_q/rot_k/result")
    return (act[0],)


def probe_shapes(model: HookedModel) -> dict[str, tuple[int, ...]]:
    """Every hook's activation shape without its batch and position axes (one 1-token run, cached)."""
    cached = getattr(model, "_minillm_stats_shapes", None)
    if cached is None:
        _, cache = model.run_with_cache(np.zeros((1, 1), np.int64))
        cached = {n: tuple(a.shape[2:]) for n, a in cache.items()}
        model._minillm_stats_shapes = cached
    return cached


class _Done(Exception):
    """Raised by the last wanted hook: the rest of the forward pass is not needed."""


def collect(model: HookedModel, batch: Batch, names: Sequence[str]) -> dict[str, np.ndarray]:
    """The named activations of one batch, stopping the forward pass after the last of them."""
    store: dict[str, np.ndarray] = {}
    last = names[-1]

    def save(act, hook):
        store[hook.name] = act
        if hook.name == last:
            raise _Done

    try:
        model.run_with_hooks(batch.tokens, [(n, save) for n in names], batch.attention_mask, last_only=True)
    except _Done:
        pass
    return store


def samples(act: np.ndarray, name: str, batch: Batch, positions: str, by: str) -> np.ndarray:
    """One hook's activation [b, p, ...] -> the samples of its units [M, G]."""
    act = np.moveaxis(act, hook_axes(name)[0], 1)  # [b, p, ...]
    if positions == "all":
        x = act[batch.mask.astype(bool)]  # [N, ...]
    else:
        rows = np.flatnonzero(batch.last)
        x = act[rows, batch.length[rows] - 1]  # [N, ...]
    if by == "neuron":
        return x.reshape(x.shape[0], -1)
    if by == "hook":
        return x.reshape(-1, 1)
    x = np.moveaxis(x, 1, -1)  # heads are the first unit axis -> [N, ..., h]
    return x.reshape(-1, x.shape[-1])


@dataclass(frozen=True)
class StatsJob:
    """What each shard computes (a `minillm.data.shards.CorpusTask` job): picklable, small."""

    hooks: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    positions: str
    by: str
    k: int | None

    def empty(self) -> CorpusStats:
        return CorpusStats({n: HookStats(n, self.by, s, k=self.k) for n, s in zip(self.hooks, self.shapes)})

    def update(self, acc: CorpusStats, model: HookedModel, batch: Batch) -> None:
        acts = collect(model, batch, self.hooks)
        for n in self.hooks:
            acc.hooks[n].update(samples(acts[n], n, batch, self.positions, self.by))


def corpus_stats(
    model: HookedModel,
    corpus: Corpus | Sequence[str],
    hooks: str | Sequence[str],
    positions: str = "all",
    by: str = "neuron",
    quantiles: bool = True,
    k: int = DEFAULT_K,
    **engine: Any,
) -> CorpusStats:
    """Count, mean, variance, min, max and quantiles of `hooks` over a corpus (see the module doc).

    corpus: a Corpus, or a list of strings. hooks: names or glob patterns.
    engine: window (tokens, default 128), batch_size (windows per forward
    pass, 8), docs_per_shard (64), executor, out, resume, progress
    (`minillm.data.shards.CORPUS_OPTIONS`). With `out`, shards go to
    out/shards/ as they finish and the merged result to
    out/stats.safetensors + out/stats.json.
    """
    corpus = corpus if isinstance(corpus, Corpus) else Corpus.from_texts(corpus)
    if positions not in POSITIONS:
        raise MinillmError(f"positions must be one of {POSITIONS}, got {positions!r}")
    if by not in BY:
        raise MinillmError(f"by must be one of {BY}, got {by!r}")
    if quantiles:
        _kll(k)  # fail now, not on a worker, if datasketches is missing
    names = resolve_hooks(model, hooks)
    k = k if quantiles else None
    job = StatsJob(tuple(names), tuple(unit_shape(model, n, by) for n in names), positions, by, k)
    params = dict(kind="stats", hooks=names, positions=positions, by=by, k=k)
    meta = dict(rank_error=rank_error(k) if k else None,
                summation="per batch: float64 two-pass mean and M2; batches and shards merged in "
                "shard order with Chan's parallel formula")
    return run_corpus_job(model, corpus, job, params, CorpusStats.from_file, "stats", meta, **engine)
