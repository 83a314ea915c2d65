"""Sweeps over prompt sets: per-prompt results, the mean, and a bootstrap confidence interval per cell.

    from minillm.data import ioi_prompts
    from minillm.interp import prompt_sweeps as PS
    pairs = ioi_prompts(200, seed=0, model=model)
    res = PS.patching_over_prompts(model, pairs, "heads")        # [prompt, layer, head] + mean + CI
    res.mean, res.ci_low, res.ci_high                              # [layer, head] each
    res.plot()                                                     # a Figure: means, and intervals
    PS.ablation_over_prompts(model, pairs, "heads", method="mean")
    PS.median_replacement_over_prompts(model, prompts, rates=[1, 10, 50])

Each prompt runs the single-prompt sweep (`patching.patching_sweep`,
`ablation.ablation_sweep`, `ablation.median_replacement`), so a prompt-set
result is exactly the stack of those. The metric is the logit difference
logit(answer) - logit(wrong) at the last position (ablation without a wrong
token, and median replacement: the target's logit).

Summary per cell: the mean over prompts, and a percentile bootstrap
interval: `n_boot` resamples of the prompts with replacement (seeded), the
mean of each, and the (1 - confidence)/2 and (1 + confidence)/2 quantiles of
those means (95 % by default). Cells a prompt does not have (see below) are
NaN for it and left out of that cell's mean.

Positions: for [layer, pos] components prompts of different lengths are
aligned at the end (column "-1" is every prompt's last token); when all
prompts have the same length the columns are positions 0..p-1 labelled
with the first prompt's tokens.

Engines and shards work as for corpus statistics: `executor=` any
`concurrent.futures.Executor`, `out=` writes each shard of
`prompts_per_shard` prompts as it completes, `resume=True` continues.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from minillm.data.prompts import PromptPair
from minillm.data.shards import (
    ModelSpec,
    engine_name,
    options,
    read_tensors,
    run_shards,
    shard_ranges,
    write_tensors,
)
from minillm.errors import MinillmError
from minillm.interp.results import LabelledArray

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from minillm.hooked_model import HookedModel, TokensLike

PROMPTS_PER_SHARD = 8


# --- the result ---------------------------------------------------------------------------------


def bootstrap_ci(
    values: np.ndarray, n_boot: int = 1000, confidence: float = 0.95, seed: int = 0, chunk: int = 4096
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval of the mean over axis 0.   values [n, ...] -> (low, high) [...]

    NaN entries are left out of each resample's mean (a resample with none is NaN).
    """
    if not 0 < confidence < 1:
        raise MinillmError(f"confidence must lie strictly between 0 and 1, got {confidence}")
    values = np.asarray(values, np.float64)
    n = values.shape[0]
    flat = values.reshape(n, -1)  # [n, cells]
    idx = np.random.default_rng(seed).integers(
        0, n, (n_boot, n)
    )  # [boot, n]: the same resamples for all cells
    low, high = np.full(flat.shape[1], np.nan), np.full(flat.shape[1], np.nan)
    qs = [(1 - confidence) / 2, (1 + confidence) / 2]
    for s in range(0, flat.shape[1], chunk):
        part = flat[:, s : s + chunk][idx]  # [boot, n, c]
        with np.errstate(invalid="ignore"), _quiet():
            means = np.nanmean(part, axis=1)  # [boot, c]
            lo, hi = np.nanquantile(means, qs, axis=0)
        low[s : s + chunk], high[s : s + chunk] = lo, hi
    return low.reshape(values.shape[1:]), high.reshape(values.shape[1:])


class _quiet:
    """Silence numpy's "mean of empty slice" warnings (all-NaN cells are expected: NaN out)."""

    def __enter__(self):
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        self._w.__exit__(*exc)


@dataclass
class PromptSweep:
    """values [prompt, *cells] (one single-prompt sweep per row), mean and CI per cell."""

    values: np.ndarray  # [n_prompts, rows, cols] float64, NaN = not measured / not present
    axes: tuple[str, ...]  # ("prompt", row axis, col axis)
    labels: tuple[list[str], ...]  # per cell axis
    title: str
    prompts: list[dict]
    n_boot: int = 1000
    confidence: float = 0.95
    seed: int = 0
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        with _quiet():
            self.mean = np.nanmean(self.values, axis=0)
        self.ci_low, self.ci_high = bootstrap_ci(self.values, self.n_boot, self.confidence, self.seed)
        self.n = np.sum(~np.isnan(self.values), axis=0)  # prompts per cell

    def summary(self) -> LabelledArray:
        """The mean per cell as a LabelledArray (meta: n, interval, per-prompt count)."""
        return LabelledArray(
            self.mean,
            self.axes[1:],
            self.labels,
            title=f"{self.title} (mean of {len(self.prompts)} prompts)",
            meta=dict(self.meta, n_prompts=len(self.prompts), confidence=self.confidence, n_boot=self.n_boot),
        )

    def top(self, k: int = 10) -> list[tuple[tuple[str, ...], float, float, float]]:
        """The k cells of largest |mean|: [(labels, mean, ci_low, ci_high)]."""
        flat = np.argsort(-np.abs(np.nan_to_num(self.mean)), axis=None)[:k]
        out = []
        for i in flat:
            ix = np.unravel_index(i, self.mean.shape)
            out.append(
                (
                    tuple(self.labels[a][j] for a, j in enumerate(ix)),
                    float(self.mean[ix]),
                    float(self.ci_low[ix]),
                    float(self.ci_high[ix]),
                )
            )
        return out

    def plot(self, top: int = 20) -> Figure:
        """A Figure: left, the mean per cell (a dot where the interval excludes 0); right, the `top`
        cells of largest |mean| with their confidence intervals."""
        from matplotlib.figure import Figure

        fig = Figure(figsize=(14, 5.5))
        ax, bx = fig.subplots(1, 2, gridspec_kw=dict(width_ratios=[3, 2]))
        m = self.mean
        lim = float(np.nan_to_num(np.nanmax(np.abs(m)))) or 1.0
        im = ax.imshow(m, cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
        fig.colorbar(im, ax=ax)
        sig = (self.ci_low > 0) | (self.ci_high < 0)
        ys, xs = np.nonzero(sig)
        ax.scatter(xs, ys, s=6, c="k", marker=".", label=f"{self.confidence:.0%} CI excludes 0")
        ax.set_ylabel(self.axes[1])
        ax.set_xlabel(self.axes[2])
        _ticks(ax.set_yticks, ax.set_yticklabels, self.labels[0])
        _ticks(ax.set_xticks, ax.set_xticklabels, self.labels[1], rotation=90)
        ax.set_title(f"mean over {len(self.prompts)} prompts", fontsize=9)
        if len(xs):
            ax.legend(fontsize=7, loc="upper right")
        cells = self.top(top)
        y = np.arange(len(cells))[::-1]
        means = np.array([c[1] for c in cells])
        err = np.array([[c[1] - c[2] for c in cells], [c[3] - c[1] for c in cells]])
        bx.errorbar(means, y, xerr=np.nan_to_num(err), fmt="o", ms=3, capsize=2, lw=1)
        bx.axvline(0, color="k", lw=0.5)
        bx.set_yticks(y)
        bx.set_yticklabels([f"{self.axes[1]} {c[0][0]}, {self.axes[2]} {c[0][1]}" for c in cells], fontsize=7)
        bx.set_xlabel(f"mean with {self.confidence:.0%} bootstrap interval ({self.n_boot} resamples)")
        bx.set_title(f"top {len(cells)} cells by |mean|", fontsize=9)
        fig.suptitle(self.title, fontsize=10)
        fig.tight_layout()
        return fig

    def save(self, folder: str | Path, stem: str, plot: bool = True) -> list[Path]:
        """<stem>_prompts.safetensors (per-prompt values), <stem>.csv (mean, ci_low, ci_high per cell),
        <stem>.json (labels, prompts, meta, mean and interval) and <stem>.png (the plot)."""
        from safetensors.numpy import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        st = folder / f"{stem}_prompts.safetensors"
        save_file(
            {
                "values": np.ascontiguousarray(self.values),
                "mean": self.mean,
                "ci_low": self.ci_low,
                "ci_high": self.ci_high,
            },
            str(st),
            metadata={"axes": json.dumps(self.axes)},
        )
        csv_path = folder / f"{stem}.csv"
        with open(csv_path, "w", newline="", encoding="utf-8") as f:  # labels may hold quotes, commas
            w = csv.writer(f)
            w.writerow([self.axes[1], self.axes[2], "mean", "ci_low", "ci_high", "n"])
            for i, r in enumerate(self.labels[0]):
                for j, c in enumerate(self.labels[1]):
                    w.writerow([r, c, f"{self.mean[i, j]:.6g}", f"{self.ci_low[i, j]:.6g}",
                                f"{self.ci_high[i, j]:.6g}", int(self.n[i, j])])
        js = folder / f"{stem}.json"
        nan = lambda a: np.where(np.isnan(a), None, a).tolist()  # noqa: E731
        js.write_text(
            json.dumps(
                dict(
                    title=self.title,
                    axes=list(self.axes),
                    labels=[list(x) for x in self.labels],
                    mean=nan(self.mean),
                    ci_low=nan(self.ci_low),
                    ci_high=nan(self.ci_high),
                    confidence=self.confidence,
                    n_boot=self.n_boot,
                    seed=self.seed,
                    prompts=self.prompts,
                    meta=self.meta,
                ),
                indent=1,
                default=str,
            )
        )
        paths = [st, csv_path, js]
        if plot:
            png = folder / f"{stem}.png"
            self.plot().savefig(png, dpi=100)
            paths.append(png)
        return paths


def _ticks(set_ticks, set_labels, labels, max_ticks: int = 40, rotation: int = 0):
    step = max(1, int(np.ceil(len(labels) / max_ticks)))
    idx = list(range(0, len(labels), step))
    set_ticks(idx)
    set_labels([repr(labels[i])[1:-1] for i in idx], rotation=rotation, fontsize=7)


# --- running one prompt (on a worker) -------------------------------------------------------------


@dataclass(frozen=True)
class PromptTask:
    """Prompts start..stop-1 of a set, and the single-prompt sweep to run on each."""

    model: ModelSpec | None
    kind: str  # "patch" | "ablate" | "median_replacement"
    prompts: tuple[PromptPair, ...]
    start: int
    params: tuple  # sorted (key, value) pairs for the single-prompt function
    reference: object = None  # statistics for mean/median ablation (picklable)


def _one_prompt(model, task: PromptTask, p: PromptPair) -> tuple[np.ndarray, list[str], list[str], dict]:
    from minillm.interp import ablation as A
    from minillm.interp import metrics as M
    from minillm.interp import patching as P

    kw = dict(task.params)
    if task.kind == "patch":
        r = P.patching_sweep(
            model, p.clean, p.corrupted, M.logit_diff(model, p.answer, p.wrong), progress=False, **kw
        )
        return (
            r.values,
            list(r.labels[0]),
            list(r.labels[1]),
            dict(clean=r.meta["clean"], corrupted=r.meta["corrupted"]),
        )
    if task.kind == "ablate":
        metric = M.logit_diff(model, p.answer, p.wrong) if p.wrong else M.logit(model, p.answer)
        r = A.ablation_sweep(model, p.clean, metric, reference=task.reference, progress=False, **kw)
        return r.values, list(r.labels[0]), list(r.labels[1]), dict(base=r.meta["base"])
    r = A.median_replacement(model, p.clean, p.answer, progress=False, **kw)
    return r.delta.values, list(r.delta.labels[0]), list(r.delta.labels[1]), dict(base=r.base_logit)


@dataclass
class PromptShard:
    start: int
    values: list[np.ndarray]
    rows: list[str]
    cols: list[list[str]]
    meta: list[dict]

    def to_file(self, path) -> None:
        info = dict(start=self.start, rows=self.rows, cols=self.cols, meta=self.meta, n=len(self.values))
        write_tensors(path, {f"v{i}": v for i, v in enumerate(self.values)}, "shard", info)

    @classmethod
    def from_file(cls, path) -> PromptShard:
        info, t = read_tensors(path, "shard", "prompt-sweep shard")
        return cls(info["start"], [t[f"v{i}"] for i in range(info["n"])], info["rows"], info["cols"],
                   info["meta"])


def prompt_shard(task: PromptTask, model: HookedModel=None) -> PromptShard:
    """Run the task's prompts one after another (on a worker, or here with `model`)."""
    if model is None:
        with task.model.use() as model:
            return prompt_shard(task, model)
    values, cols, meta, rows = [], [], [], []
    for p in task.prompts:
        v, rows, c, m = _one_prompt(model, task, p)
        values.append(np.asarray(v, np.float64))
        cols.append(c)
        meta.append(m)
    return PromptShard(task.start, values, rows, cols, meta)


def _merge(acc, r: PromptShard):
    acc = acc or []
    acc.append(r)
    return acc


# The options every prompt-set sweep takes (`**engine`), with their defaults: the summary (bootstrap
# resamples, confidence, seed) and how it runs (shards, executor, output folder, resume, progress bar).
ENGINE_OPTIONS = dict(n_boot=1000, confidence=0.95, seed=0, prompts_per_shard=PROMPTS_PER_SHARD,
                      executor=None, out=None, resume=False, progress=True)


def _run(model, kind: str, pairs: Sequence[PromptPair], params: dict, title: str, reference=None,
         **engine: Any) -> PromptSweep:
    t0 = time.perf_counter()
    e = options(engine, ENGINE_OPTIONS, "a prompt-set sweep")
    executor, out, prompts_per_shard = e["executor"], e["out"], e["prompts_per_shard"]
    pairs = [
        p if isinstance(p, PromptPair) else PromptPair(**p) if isinstance(p, dict) else PromptPair(p)
        for p in pairs
    ]
    if not pairs:
        raise MinillmError("an empty prompt set: give at least one prompt")
    spec = ModelSpec.of(model) if executor is not None else None
    frozen = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in params.items()))
    tasks = [
        PromptTask(spec, kind, tuple(pairs[a:b]), a, frozen, reference)
        for a, b in shard_ranges(len(pairs), prompts_per_shard)
    ]
    job = dict(
        kind=f"prompts_{kind}",
        model=str(getattr(model, "path", None) or model.name),
        dtype=np.dtype(model.dtype).name,
        params=params,
        prompts=[p.to_dict() for p in pairs],
        prompts_per_shard=prompts_per_shard,
        reference=type(reference).__name__ if reference else None,
    )
    fn = prompt_shard if executor is not None else (lambda t: prompt_shard(t, model))
    shards = run_shards(fn, tasks, _merge, executor, out, e["resume"], job, load=PromptShard.from_file,
                        progress=e["progress"], desc=f"{kind} over prompts", size=lambda r: len(r.values),
                        unit="prompt")
    values = [v for s in shards for v in s.values]
    cols = [c for s in shards for c in s.cols]
    per_prompt = [m for s in shards for m in s.meta]
    rows = shards[0].rows
    stacked, col_labels = _align(values, cols)
    meta = dict(
        kind=kind,
        params=params,
        seconds=round(time.perf_counter() - t0, 3),
        engine=engine_name(executor),
        per_prompt=per_prompt,
    )
    res = PromptSweep(
        stacked,
        ("prompt", _axis(kind, params), _col_axis(kind, params, col_labels)),
        (rows, col_labels),
        title,
        [p.to_dict() for p in pairs],
        e["n_boot"],
        e["confidence"],
        e["seed"],
        meta,
    )
    if out is not None:
        res.save(out, "result")
    return res


def _axis(kind, params) -> str:
    comp = params.get("component", "")
    return "head" if comp == "heads_by_pos" else "layer"


def _col_axis(kind, params, labels) -> str:
    if kind == "median_replacement":
        return "rate"
    comp = params.get("component", "")
    if comp in ("heads", "q", "pattern"):
        return "head"
    if comp in ("k", "v"):
        return "kv_head"
    if comp == "neurons":
        return "neuron"
    return "pos"


def _align(values: list[np.ndarray], cols: list[list[str]]) -> tuple[np.ndarray, list[str]]:
    """Stack per-prompt [rows, cols] results; ragged position columns are aligned at the end."""
    widths = {v.shape[1] for v in values}
    if len(widths) == 1:
        return np.stack(values), cols[0]
    w = max(widths)
    out = np.full((len(values), values[0].shape[0], w), np.nan)
    for i, v in enumerate(values):
        out[i, :, w - v.shape[1] :] = v
    return out, [str(j - w) for j in range(w)]


# --- the three sweeps -----------------------------------------------------------------------------


def patching_over_prompts(
    model: HookedModel,
    pairs: Sequence[PromptPair],
    component: str = "resid_pre",
    direction: str = "denoising",
    normalize: bool = True,
    layers: Sequence[int] | None = None,
    batch_size: int = 32,
    **engine: Any,
) -> PromptSweep:
    """`patching_sweep` on every (clean, corrupted, answer, wrong) pair; mean and bootstrap CI per cell.

    engine: n_boot, confidence, seed, prompts_per_shard, executor, out, resume, progress.
    """
    for i, p in enumerate(pairs):
        if not (p.corrupted and p.answer and p.wrong):
            raise MinillmError(f"prompt {i} needs clean, corrupted, answer and wrong for patching")
    params = dict(
        component=component,
        direction=direction,
        normalize=normalize,
        layers=None if layers is None else [int(l) for l in layers],
        batch_size=batch_size,
    )
    what = "normalised metric" if normalize else "logit-difference change"
    return _run(model, "patch", pairs, params, f"{direction} {component} over prompts: {what}", **engine)


def ablation_over_prompts(
    model: HookedModel,
    pairs: Sequence[PromptPair],
    component: str = "heads",
    method: str = "mean",
    reference: TokensLike | None = None,
    layers: Sequence[int] | None = None,
    batch_size: int = 32,
    **engine: Any,
) -> PromptSweep:
    """`ablation_sweep` on every prompt (metric: logit diff, or the answer's logit without `wrong`).

    reference for mean/median: statistics (`corpus_stats`, `activation_stats`), or None for statistics
    of the prompt set's clean prompts pooled over all their positions (computed once, here).
    """
    from minillm.activation_cache import act_name
    from minillm.interp import interventions as iv
    from minillm.interp.ablation import ABLATION_COMPONENTS
    from minillm.interp.results import layer_indices

    if component not in ABLATION_COMPONENTS:
        raise MinillmError(f"unknown component {component!r}; choose from {sorted(ABLATION_COMPONENTS)}")
    if method in ("mean", "median") and reference is None:
        names = [act_name(ABLATION_COMPONENTS[component][0], l) for l in layer_indices(model, layers)]
        reference = iv.activation_stats(model, [p.clean for p in pairs], names)
    params = dict(
        component=component,
        method=method,
        batch_size=batch_size,
        layers=None if layers is None else [int(l) for l in layers],
    )
    return _run(
        model,
        "ablate",
        pairs,
        params,
        f"{method} ablation of {component} over prompts: metric change",
        reference=reference,
        **engine,
    )


def median_replacement_over_prompts(
    model: HookedModel,
    prompts: Sequence[PromptPair],
    rates: Sequence[float] | None = None,
    layers: Sequence[int] | None = None,
    measure: str = "logit",
    batch_size: int = 64,
    **engine: Any,
) -> PromptSweep:
    """`median_replacement` on every (prompt, target): Δ target [layer, rate] per prompt, mean and CI."""
    from minillm.interp.ablation import COARSE_RATES, FINE_RATES

    rates = list(FINE_RATES + COARSE_RATES) if rates is None else [float(r) for r in rates]
    params = dict(
        rates=rates,
        layers=None if layers is None else [int(l) for l in layers],
        measure=measure,
        batch_size=batch_size,
    )
    return _run(
        model,
        "median_replacement",
        prompts,
        params,
        f"median replacement over prompts: Δ {measure}(target)",
        **engine,
    )


def plot_ripple_intervals(res: PromptSweep, rates: Sequence[str] | None = None) -> Figure:
    """The ripple plot of a median-replacement prompt sweep: per rate, the mean Δ across layers with
    its confidence band. Returns a Figure."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 5))
    ax = fig.subplots()
    labels = (
        res.labels[1] if rates is None else [r if str(r).endswith("%") else f"{float(r):g}%" for r in rates]
    )
    layers = [int(x) for x in res.labels[0]]
    import matplotlib

    cmap = matplotlib.colormaps["viridis"]
    for n, lab in enumerate(labels):
        j = res.labels[1].index(lab)
        colour = cmap(n / max(1, len(labels) - 1))
        ax.plot(layers, res.mean[:, j], marker=".", lw=1, color=colour, label=lab)
        ax.fill_between(layers, res.ci_low[:, j], res.ci_high[:, j], color=colour, alpha=0.2, lw=0)
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xlabel("layer")
    ax.set_ylabel("Δ target (mean over prompts)")
    ax.set_title(
        f"median replacement over {len(res.prompts)} prompts, {res.confidence:.0%} bootstrap bands",
        fontsize=9,
    )
    ax.legend(fontsize=7, ncol=2, title="rate", title_fontsize=7)
    fig.tight_layout()
    return fig
