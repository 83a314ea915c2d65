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
import json
import os
import time
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from minillm.data.corpus import Batch, Corpus
from minillm.data.shards import ModelSpec, merge_workers, run_shards, shard_ranges, worker_record
from minillm.errors import MinillmError
from minillm.interp.interventions import hook_axes

if TYPE_CHECKING:
    from minillm.hooked_model import HookedModel

BY = ("neuron", "head", "hook")
POSITIONS = ("all", "last")
DEFAULT_K = 200
DOCS_PER_SHARD = 64


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
        for key in ("n_tokens", "n_texts", "n_windows"):
            self.meta[key] = self.meta.get(key, 0) + other.meta.get(key, 0)
        merge_workers(self.meta.setdefault("workers", {}), other.meta.get("workers", {}))
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
        from safetensors.numpy import save_file

        tensors = {}
        for h in self.hooks.values():
            tensors |= h.to_tensors()
        meta = dict(hooks=[h.info() for h in self.hooks.values()], meta=self.meta)
        save_file(tensors, str(path), metadata={"minillm_stats": json.dumps(meta)})

    @classmethod
    def from_file(cls, path: str | Path) -> CorpusStats:
        from safetensors import safe_open

        try:
            with safe_open(str(path), "numpy") as f:
                meta = json.loads((f.metadata() or {})["minillm_stats"])
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except (OSError, KeyError, ValueError) as e:
            raise MinillmError(f"{path}: not a minillm statistics file ({type(e).__name__}: {e})") from None
        hooks = {i["name"]: HookStats.from_tensors(i, tensors) for i in meta["hooks"]}
        return cls(hooks, meta["meta"])

    def save(self, folder: str | Path) -> Path:
        """folder/stats.safetensors (all numbers) + folder/stats.json (readable summary)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / "stats.part.safetensors"
        self.to_file(tmp)
        os.replace(tmp, folder / "stats.safetensors")
        (folder / "stats.json").write_text(json.dumps(self.summary(), indent=1, default=str))
        return folder

    @classmethod
    def load(cls, folder_or_file: str | Path) -> CorpusStats:
        p = Path(folder_or_file)
        p = p / "stats.safetensors" if p.is_dir() else p
        if not p.is_file():
            raise MinillmError(f"{folder_or_file}: no stats.safetensors there (write one with minillm stats)")
        return cls.from_file(p)


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
    """Each hook's activation shape without the batch and position axes (one 1-token run, kept)."""
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
class StatsTask:
    """One shard: documents start..stop-1 and what to compute (picklable, small)."""

    model: ModelSpec | None
    corpus: Corpus
    start: int
    stop: int
    hooks: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    window: int
    batch_size: int
    positions: str
    by: str
    k: int | None
    progress: bool = False


def stats_shard(task: StatsTask, model: HookedModel=None) -> CorpusStats:
    """Statistics of one shard (runs on a worker; `model` given when run in this process)."""
    t0, c0 = time.perf_counter(), time.process_time()
    if model is None:
        with task.model.use() as model:
            return stats_shard(task, model)
    acc = {n: HookStats(n, task.by, s, k=task.k) for n, s in zip(task.hooks, task.shapes)}
    n_tokens = n_texts = n_windows = 0
    for batch in task.corpus.batches(
        model,
        task.window,
        task.batch_size,
        task.start,
        task.stop,
        progress=task.progress,
        desc=f"docs {task.start}-{task.stop - 1}",
    ):
        acts = collect(model, batch, task.hooks)
        for n in task.hooks:
            acc[n].update(samples(acts[n], n, batch, task.positions, task.by))
        n_tokens += batch.n_tokens
        n_texts += int(batch.last.sum())
        n_windows += len(batch.length)
    worker = worker_record(t0, c0)
    return CorpusStats(acc, dict(n_tokens=n_tokens, n_texts=n_texts, n_windows=n_windows, workers=worker))


def _merge(acc: CorpusStats | None, r: CorpusStats) -> CorpusStats:
    return r if acc is None else acc.merge(r)


def corpus_stats(
    model: HookedModel,
    corpus: Corpus | Sequence[str],
    hooks: str | Sequence[str],
    window: int = 128,
    batch_size: int = 8,
    positions: str = "all",
    by: str = "neuron",
    quantiles: bool = True,
    k: int = DEFAULT_K,
    docs_per_shard: int = DOCS_PER_SHARD,
    executor: Executor | None = None,
    out: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
) -> CorpusStats:
    """Count, mean, variance, min, max and quantiles of `hooks` over a corpus (see the module doc).

    corpus: a Corpus, or a list of strings. hooks: names or glob patterns.
    With `out`, shards go to out/shards/ as they finish and the merged
    result to out/stats.safetensors + out/stats.json.
    """
    t0 = time.perf_counter()
    corpus = corpus if isinstance(corpus, Corpus) else Corpus.from_texts(corpus)
    if positions not in POSITIONS:
        raise MinillmError(f"positions must be one of {POSITIONS}, got {positions!r}")
    if by not in BY:
        raise MinillmError(f"by must be one of {BY}, got {by!r}")
    if quantiles:
        _kll(k)  # fail now, not on a worker, if datasketches is missing
    names = resolve_hooks(model, hooks)
    shapes = tuple(unit_shape(model, n, by) for n in names)
    spec = ModelSpec.of(model) if executor is not None else None
    n_docs = corpus.count()
    ranges = shard_ranges(n_docs, docs_per_shard)
    tasks = [
        StatsTask(
            spec,
            corpus,
            a,
            b,
            tuple(names),
            shapes,
            window,
            batch_size,
            positions,
            by,
            k if quantiles else None,
            progress=executor is None and progress,
        )
        for a, b in ranges
    ]
    params = dict(
        kind="stats",
        model=str(getattr(model, "path", None) or model.name),
        dtype=np.dtype(model.dtype).name,
        corpus=corpus.describe(),
        n_docs=n_docs,
        hooks=names,
        window=window,
        batch_size=batch_size,
        positions=positions,
        by=by,
        k=k if quantiles else None,
        docs_per_shard=docs_per_shard,
    )
    fn = stats_shard if executor is not None else (lambda t: stats_shard(t, model))
    res = run_shards(
        fn,
        tasks,
        _merge,
        executor,
        out,
        resume,
        params,
        save=lambda r, p: r.to_file(p),
        load=CorpusStats.from_file,
        progress=progress,
        desc="stats",
        size=lambda r: r.meta["n_tokens"],
        unit="tok",
    )
    if res is None:  # an empty corpus
        res = CorpusStats(
            {n: HookStats(n, by, s, k=k if quantiles else None) for n, s in zip(names, shapes)},
            dict(n_tokens=0, n_texts=0, n_windows=0, workers={}),
        )
    seconds = time.perf_counter() - t0
    res.meta = dict(
        params,
        **{k_: res.meta[k_] for k_ in ("n_tokens", "n_texts", "n_windows", "workers")},
        rank_error=rank_error(k) if quantiles else None,
        summation="per batch: float64 two-pass mean and M2; batches and shards merged in "
        "shard order with Chan's parallel formula",
        seconds=round(seconds, 3),
        tokens_per_s=round(res.meta["n_tokens"] / seconds, 1) if seconds else None,
        engine=type(executor).__name__ if executor is not None else "serial",
    )
    if out is not None:
        res.save(out)
    return res
