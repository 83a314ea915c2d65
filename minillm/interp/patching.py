"""Activation patching and path (edge) patching, batched, with labelled results and heatmaps.

    from minillm.interp import metrics as M, patching as P
    ld = M.logit_diff(model, " Mary", " John")
    res = P.patching_sweep(model, clean, corrupted, ld, "resid_pre")   # LabelledArray [layer, pos]
    res.plot("out/resid_pre.png")  # returns the Figure, saved there
    every = P.patch_all(model, clean, corrupted, ld)                    # {component: LabelledArray}
    edges = P.path_patching(model, clean, corrupted, ld, senders=["9.3", "mlp9"],
                            receivers=["logits", "12.0.q", "mlp14"])   # [sender, receiver]

Activation patching runs one prompt with one component's activation taken
from a run on the other prompt, and records the metric:

    denoising: run the corrupted prompt, patch in the clean activation.
               Value 1 (normalised) = this component alone restores the clean answer.
    noising:   run the clean prompt, patch in the corrupted activation.
               Value 0 (normalised) = this component alone breaks the answer.

With `normalize=True` (default) every value is the normalised metric of the
patched run, (m - m_corrupted) / (m_clean - m_corrupted): 0 = corrupted,
1 = clean, in both directions. With `normalize=False` it is the raw change
m(patched) - m(unpatched run).

Components (the result's axes in brackets):
    resid_pre, resid_mid, resid_post, attn_out, mlp_out   [layer, pos]  one position
    heads          [layer, head]       hook_z of one head, all positions
    heads_by_pos   [layer.head, pos]   hook_z of one head at one position
    q, pattern     [layer, head]       one head's queries / attention pattern, all positions
    k, v           [layer, kv_head]    one kv-head's keys / values (shared by its query-head group)

Each patched run is a row of a batch (minillm.interp.batch), `batch_size` rows
per forward pass, with a tqdm bar. Entries whose source activation equals the
unpatched one exactly (e.g. every position before the first token where the
prompts differ) cannot change anything and are filled in without a run.
Ctrl-C stops a sweep between batches: the result holds what was measured
(NaN elsewhere) and `meta["interrupted"]` is True; hooks are always removed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from minillm.activation_cache import act_name
from minillm.errors import MinillmError
from minillm.interp import interventions as iv
from minillm.interp.batch import measure_variants, prefix_cache
from minillm.interp.metrics import Normalized
from minillm.interp.results import LabelledArray, layer_indices, pos_labels

if TYPE_CHECKING:
    from minillm.hooked_model import HookedModel, TokensLike

# component -> (TransformerLens short hook name, what the second result axis indexes)
COMPONENTS = {c: iv.COMPONENTS[c] for c in ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out",
                                             "heads", "heads_by_pos", "q", "k", "v", "pattern")}
DEFAULT_COMPONENTS = ("resid_pre", "attn_out", "mlp_out", "heads", "heads_by_pos", "q", "k", "v",
                      "pattern")


# --- running many variants, interruptibly (through the one engine, minillm.interp.batch) -------


def shared_prefix(a: np.ndarray, b: np.ndarray) -> int:
    """Number of leading positions where two prompts [1, p] have the same tokens."""
    diff = np.flatnonzero(a[0] != b[0])
    return int(diff[0]) if diff.size else a.shape[1]


# --- activation patching ---------------------------------------------------------------------


def _prompt_pair(model, clean, corrupted) -> tuple[np.ndarray, np.ndarray]:
    clean, corrupted = model.as_tokens(clean), model.as_tokens(corrupted)
    clean, corrupted = np.atleast_2d(clean), np.atleast_2d(corrupted)
    if clean.shape != corrupted.shape or clean.shape[0] != 1:
        raise MinillmError(f"patching needs one clean and one corrupted prompt with the same number "
                           f"of tokens, got shapes {clean.shape} and {corrupted.shape}; choose a "
                           "corruption that keeps the token count (e.g. swap one name for another)")
    return clean, corrupted


def _usable_prefix(clean: np.ndarray, corrupted: np.ndarray, metric) -> int:
    """Shared leading positions that may be cached (0 unless the metric reads the last position)."""
    if not getattr(metric, "last_only", False):
        return 0
    return min(shared_prefix(clean, corrupted), clean.shape[1] - 1)


def _cells(model, component: str, layers: list[int], n_pos: int, per_position: bool):
    """The sweep's cells: (row, col, intervention kwargs) and the axis labels."""
    cfg = model.cfg
    kind = COMPONENTS[component][1]
    cells = []
    if kind == "pos":
        cols = list(range(n_pos)) if per_position else [None]
        cells = [(r, c, dict(layer=l, pos=p)) for r, l in enumerate(layers) for c, p in enumerate(cols)]
        return cells, ("layer", "pos" if per_position else "positions"), [str(l) for l in layers], cols
    if kind == "head_pos":
        rows = [(l, h) for l in layers for h in range(cfg.n_heads)]
        cells = [(r, p, dict(layer=l, head=h, pos=p)) for r, (l, h) in enumerate(rows) for p in range(n_pos)]
        return cells, ("head", "pos"), [f"{l}.{h}" for l, h in rows], list(range(n_pos))
    n = cfg.n_kv_heads if kind == "kv_head" else cfg.n_heads
    cells = [(r, h, dict(layer=l, head=h)) for r, l in enumerate(layers) for h in range(n)]
    return cells, ("layer", kind), [str(l) for l in layers], list(range(n))


def _selection(name: str, sel: dict) -> tuple:
    """Index of a cell's selection in an activation of batch 1."""
    pos_axis, head_axis, _ = iv.hook_axes(name)
    idx = [0, slice(None), slice(None)]
    if sel.get("head") is not None:
        idx[head_axis] = sel["head"]
    if sel.get("pos") is not None:
        idx[pos_axis] = sel["pos"]
    return tuple(idx)


def patching_sweep(
    model: HookedModel,
    clean: TokensLike,
    corrupted: TokensLike,
    metric: Callable,
    component: str = "resid_pre",
    direction: str = "denoising",
    normalize: bool = True,
    layers: Sequence[int] | None = None,
    per_position: bool = True,
    batch_size: int = 32,
    progress: bool = True,
    skip_identical: bool = True,
) -> LabelledArray:
    """Patch each cell of one component, one run per cell; see the module docstring.

    clean, corrupted: text or ids [1, p] with the same number of tokens.
    metric: per-row metric (minillm.interp.metrics). per_position=False
    patches every position at once for the [layer, pos] components (one column).
    Returns a LabelledArray; `meta` holds the clean and corrupted metric
    values, the direction, the runtime and whether the sweep was interrupted.
    """
    if component not in COMPONENTS:
        raise MinillmError(f"unknown component {component!r}; choose from {sorted(COMPONENTS)}")
    if direction not in ("denoising", "noising"):
        raise MinillmError(f"direction must be 'denoising' or 'noising', got {direction!r}")
    t0 = time.perf_counter()
    clean, corrupted = _prompt_pair(model, clean, corrupted)
    layers = layer_indices(model, layers)
    short = COMPONENTS[component][0]
    names = [act_name(short, l) for l in layers]
    _, clean_cache = model.run_with_cache(clean, names_filter=names)
    _, corrupt_cache = model.run_with_cache(corrupted, names_filter=names)
    prefix = _usable_prefix(clean, corrupted, metric)
    # The reference values come from the same batched runner as the patched runs, so a patch
    # that changes nothing scores 0 (denoising) or 1 (noising): exactly when it runs in a
    # batch of one row, up to float32 rounding in larger batches (a GEMM's bits depend on its
    # row count and the CPU's BLAS kernel). Cells skipped as identical are exact.
    shared = prefix_cache(model, clean, prefix) or 0  # the same tokens in both prompts
    m_clean = float(measure_variants(model, clean, [[]], metric, prefix=shared)[0][0])
    m_corrupt = float(measure_variants(model, corrupted, [[]], metric, prefix=shared)[0][0])
    base, source = (corrupted, clean_cache) if direction == "denoising" else (clean, corrupt_cache)
    base_cache = corrupt_cache if direction == "denoising" else clean_cache
    m_base = m_corrupt if direction == "denoising" else m_clean
    score = Normalized(metric, m_clean, m_corrupt) if normalize else _Delta(metric, m_base, 1.0)

    cells, axes, row_labels, cols = _cells(model, component, layers, clean.shape[1], per_position)
    values = np.full((len(row_labels), len(cols)), np.nan)
    unpatched = (m_base - m_corrupt) / (m_clean - m_corrupt) if normalize else 0.0
    jobs, variants = [], []
    for r, c, sel in cells:
        name = act_name(short, sel["layer"])
        ix = _selection(name, sel)
        if skip_identical and np.array_equal(source[name][ix], base_cache[name][ix]):
            values[r, c] = unpatched
            continue
        jobs.append((r, c))
        variants.append([iv.patch(short, source, **sel)])
    measured, interrupted = measure_variants(model, base, variants, score, batch_size, progress,
                                     desc=f"{direction} {component}", prefix=shared)
    for (r, c), v in zip(jobs, measured):
        values[r, c] = v
    col_labels = (pos_labels(model, clean) if axes[1] == "pos" else
                  ["all"] if axes[1] == "positions" else [str(c) for c in cols])
    what = "normalised metric (0 = corrupted, 1 = clean)" if normalize else "metric change"
    return LabelledArray(values, axes, (row_labels, col_labels),
                         title=f"{direction} {component}: {what}",
                         meta=dict(component=component, direction=direction, normalize=normalize,
                                   clean=m_clean, corrupted=m_corrupt, runs=len(variants),
                                   cached_prefix=prefix,
                                   seconds=round(time.perf_counter() - t0, 3),
                                   interrupted=interrupted))


def patch_all(model: HookedModel, clean: TokensLike, corrupted: TokensLike, metric: Callable,
              components: Sequence[str] = DEFAULT_COMPONENTS, direction: str = "denoising",
              **kwargs: Any) -> dict[str, LabelledArray]:
    """`patching_sweep` for each component: {component: LabelledArray}.

    Stops after the first interrupted sweep (its partial result is included).
    """
    out = {}
    for comp in components:
        out[comp] = patching_sweep(model, clean, corrupted, metric, comp, direction, **kwargs)
        if out[comp].meta["interrupted"]:
            break
    return out


def effect_shares(res: LabelledArray, groups: dict[str, Sequence[int]]) -> dict[str, np.ndarray]:
    """Per row of a [layer, pos] result, the share of total |effect| in each group of positions.

    Effect = |value - unpatched value| (0 for denoising, 1 for noising when
    normalised). groups: {"name": [positions]}; shares are over all positions,
    so groups need not cover them all.   -> {name: [rows]}
    """
    base = 0.0
    if res.meta.get("normalize") and res.meta.get("direction") == "noising":
        base = 1.0
    eff = np.abs(np.nan_to_num(res.values - base))  # [rows, pos]
    total = eff.sum(1)
    total[total == 0] = 1.0
    return {g: eff[:, list(pos)].sum(1) / total for g, pos in groups.items()}


# --- path patching -----------------------------------------------------------------------------


def _parse_node(model, spec: str) -> tuple:
    """"5.3" -> ("head", 5, 3); "mlp5" -> ("mlp", 5); "5.3.q" -> ("head", 5, 3, "q"); "logits"."""
    L, H = model.cfg.n_layers, model.cfg.n_heads
    try:
        if spec == "logits":
            return ("logits",)
        if spec.startswith("mlp"):
            node = ("mlp", int(spec[3:]))
        else:
            parts = spec.split(".")
            node = ("head", int(parts[0]), int(parts[1])) + tuple(parts[2:])
    except (ValueError, IndexError):
        raise MinillmError(f"cannot read component {spec!r}: write a head as 'layer.head' (receivers: "
                           "'layer.head.q', '.k', '.v'), an MLP as 'mlpL', or 'logits'") from None
    if not 0 <= node[1] < L:
        raise MinillmError(f"{spec!r}: layer {node[1]} does not exist (0..{L - 1})")
    if node[0] == "head":
        if not 0 <= node[2] < H:
            raise MinillmError(f"{spec!r}: head {node[2]} does not exist in layer {node[1]} (0..{H - 1})")
        if len(node) > 4 or (len(node) == 4 and node[3] not in ("q", "k", "v")):
            raise MinillmError(f"{spec!r}: a head receiver's input is q, k or v")
    return node


def _receiver_hooks(model, node: tuple) -> list[tuple[str, int | None]]:
    """(short hook, head index on that hook) patched for one receiver node."""
    if node[0] == "mlp":
        return [("mlp_out", None)]
    group = model.cfg.n_heads // model.cfg.n_kv_heads
    h = node[2]
    which = node[3:] or ("q", "k", "v")
    return [(w, h if w == "q" else h // group) for w in which]


def _downstream(sender: tuple, receiver: tuple) -> bool:
    """Does the receiver read the residual stream after the sender writes to it?"""
    if receiver[0] == "logits":
        return True
    if receiver[0] == "head":
        return receiver[1] > sender[1]
    return receiver[1] > sender[1] or (receiver[1] == sender[1] and sender[0] == "head")


def all_senders(model: HookedModel) -> list[str]:
    """Every head and MLP, in forward order: ["0.0", ..., "0.8", "mlp0", "1.0", ...]."""
    return [s for l in range(model.cfg.n_layers)
            for s in [f"{l}.{h}" for h in range(model.cfg.n_heads)] + [f"mlp{l}"]]


def path_patching(
    model: HookedModel,
    clean: TokensLike,
    corrupted: TokensLike,
    metric: Callable,
    senders: Sequence[str] | None = None,
    receivers: Sequence[str | Sequence[str]] = ("logits",),
    receiver_pos: int | Sequence[int] | None = None,
    freeze_mlps: bool = False,
    normalize: bool = True,
    batch_size: int = 32,
    progress: bool = True,
) -> LabelledArray:
    """Effect of each sender → receiver path (Wang et al. 2022, IOI), as a matrix [sender, receiver].

    For sender s (a head "l.h" or an MLP "mlpL"):
      1. Run the clean prompt with s's output (hook_z of the head, or
         hook_mlp_out) taken from the corrupted run and every other
         attention head frozen to its clean value. Only paths from s that
         avoid other heads change anything; record what the receivers read.
      2. Receiver "logits": the metric of that run is the edge's value.
         Receivers "l.h.q" / ".k" / ".v" (or "l.h" = all three), "mlpL": run
         the clean prompt again, everything recomputed, with only the
         receiver's input replaced by what it read in step 1 (queries,
         keys or values of that head; k and v belong to its kv-head, shared
         by its group under grouped-query attention; an MLP's output, which
         is a function of its input). A receiver entry may be a list of
         specs patched together; an empty list patches nothing (value 0).
    freeze_mlps: which definition of a path.
      False (default): the definition of Wang et al. (2022) and of ARENA's
        path-patching exercises: only the other heads are frozen; MLPs
        recompute in step 1, so a path may pass through MLPs (s -> MLPs -> r).
      True: every other MLP is frozen to its clean value as well, so only the
        direct edge s -> r (through the residual stream alone) is measured.
      The two can rank senders very differently. Measured once (SmolLM2-135M-Instruct
      offline weights, float32, OpenBLAS on a 2-core x86 VM), IOI pair "When Mary and
      John went to the store, John/Mary gave a drink to", receiver 23.3.q, logit
      difference: over 230 senders r = 0.30 and 5 of the top-10 (by |effect|) shared;
      over the 207 head senders alone r = 0.01 and 2 of the top-10 shared.
    receiver_pos: positions at which the receivers are patched (None = all).
    Values: (m(patched) - m(clean)) / (m(clean) - m(corrupted)) when
    normalised, so -1 = this path alone turns the clean answer into the
    corrupted one; otherwise m(patched) - m(clean). NaN where the receiver
    does not read the sender's output (it comes earlier).
    """
    t0 = time.perf_counter()
    clean, corrupted = _prompt_pair(model, clean, corrupted)
    cfg = model.cfg
    senders = all_senders(model) if senders is None else list(senders)
    s_nodes = [_parse_node(model, s) for s in senders]
    for s, n in zip(senders, s_nodes):
        if n[0] not in ("head", "mlp") or len(n) > 3:
            raise MinillmError(f"sender {s!r}: a sender is a head 'layer.head' or an MLP 'mlpL'")
    groups = [[r] if isinstance(r, str) else list(r) for r in receivers]
    r_nodes = [[_parse_node(model, r) for r in g] for g in groups]
    L = cfg.n_layers
    frozen = [act_name("z", l) for l in range(L)] + [act_name("mlp_out", l) for l in range(L)]
    clean_logits, clean_cache = model.run_with_cache(clean, names_filter=frozen)
    corrupt_logits, corrupt_cache = model.run_with_cache(corrupted, names_filter=frozen)
    m_clean, m_corrupt = float(metric(clean_logits)[0]), float(metric(corrupt_logits)[0])
    scale = (m_clean - m_corrupt) if normalize else 1.0
    if scale == 0:
        raise MinillmError("the metric is the same on both prompts: nothing to normalise")
    recorded = sorted({act_name(hk, n[1]) for g in r_nodes for n in g if n[0] != "logits"
                       for hk, _ in _receiver_hooks(model, n)})

    # Step 1, batched over senders: each row patches its sender, freezes the rest, records.
    stores: list[dict[str, np.ndarray]] = []

    def step1_hooks(chunk: list[tuple], b: int) -> list:
        stores.append({})
        return ([(n, _recorder(stores[-1])) for n in recorded]
                + _freezers(chunk, clean_cache, corrupt_cache, L, freeze_mlps))

    step1_values, interrupted = measure_variants(model, clean, s_nodes, metric, batch_size, progress,
                                         desc="path patching: senders", hooks_for=step1_hooks)
    done = int(np.sum(~np.isnan(step1_values)))
    full = [s for s in stores if len(s) == len(recorded)]
    cache1 = {n: np.concatenate([s[n] for s in full])[:done] if full else None for n in recorded}

    # Step 2: one clean run per (sender, receiver) edge, with only the receiver's input patched.
    values = np.full((len(senders), len(groups)), np.nan)
    jobs, variants = [], []
    for i, s in enumerate(s_nodes[:done]):
        for j, g in enumerate(r_nodes):
            if not all(_downstream(s, r) for r in g):
                continue
            if any(r[0] == "logits" for r in g):
                if len(g) > 1:
                    raise MinillmError("'logits' cannot be grouped with other receivers")
                values[i, j] = (step1_values[i] - m_clean) / scale
                continue
            if not g:
                values[i, j] = 0.0
                continue
            ivs = []
            for r in g:
                for hk, head in _receiver_hooks(model, r):
                    name = act_name(hk, r[1])
                    ivs.append(iv.patch(hk, {name: cache1[name][i : i + 1]}, layer=r[1], head=head,
                                        pos=receiver_pos))
            jobs.append((i, j))
            variants.append(ivs)
    if not interrupted and variants:
        score = _Delta(metric, m_clean, scale)
        measured, interrupted = measure_variants(model, clean, variants, score, batch_size, progress,
                                         desc="path patching: edges")
        for (i, j), v in zip(jobs, measured):
            values[i, j] = v
    labels = ["+".join(g) if g else "none" for g in groups]
    what = "normalised change (-1 = fully corrupted)" if normalize else "metric change"
    return LabelledArray(values, ("sender", "receiver"), (senders, labels),
                         title=f"path patching: {what}",
                         meta=dict(clean=m_clean, corrupted=m_corrupt, normalize=normalize,
                                   freeze_mlps=freeze_mlps, runs=len(senders) + len(variants),
                                   seconds=round(time.perf_counter() - t0, 3), interrupted=interrupted))


class _Delta:
    """(metric - clean) / scale, per row."""

    def __init__(self, metric, clean: float, scale: float):
        self.metric, self.clean, self.scale = metric, clean, scale
        self.last_only = getattr(metric, "last_only", False)

    def __call__(self, logits):
        return (self.metric(logits) - self.clean) / self.scale


def _recorder(store: dict):
    def hook(act, point):
        store[point.name] = act.copy()

    return hook


def _freezers(chunk: list[tuple], clean_cache, corrupt_cache, n_layers: int, freeze_mlps: bool):
    """Hooks for step 1: every head's z (and MLP output) clean, except each row's sender, corrupted."""

    def z_hook(act, point):
        out = np.repeat(clean_cache[point.name], act.shape[0], 0)  # [b, p, h, e]
        for r, s in enumerate(chunk):
            if s[0] == "head" and s[1] == point.layer():
                out[r, :, s[2]] = corrupt_cache[point.name][0, :, s[2]]
        return out

    def mlp_hook(act, point):
        out = np.repeat(clean_cache[point.name], act.shape[0], 0) if freeze_mlps else act.copy()
        for r, s in enumerate(chunk):
            if s[0] == "mlp" and s[1] == point.layer():
                out[r] = corrupt_cache[point.name][0]
        return out

    return ([(f"blocks.{l}.attn.hook_z", z_hook) for l in range(n_layers)]
            + [(f"blocks.{l}.hook_mlp_out", mlp_hook) for l in range(n_layers)])


def senders_by_layer(res: LabelledArray, receiver: str = "logits") -> LabelledArray:
    """One receiver's column of a path-patching result as [layer, head | mlp] (for a heatmap)."""
    j = res.labels[1].index(receiver)
    layers = sorted({int(s[3:]) if s.startswith("mlp") else int(s.split(".")[0]) for s in res.labels[0]})
    heads = sorted({int(s.split(".")[1]) for s in res.labels[0] if not s.startswith("mlp")})
    cols = [str(h) for h in heads] + ["mlp"]
    out = np.full((len(layers), len(cols)), np.nan)
    for i, s in enumerate(res.labels[0]):
        l = int(s[3:]) if s.startswith("mlp") else int(s.split(".")[0])
        c = len(heads) if s.startswith("mlp") else heads.index(int(s.split(".")[1]))
        out[layers.index(l), c] = res.values[i, j]
    return LabelledArray(out, ("layer", "head"), ([str(l) for l in layers], cols),
                         title=f"{res.title} → {receiver}", meta=dict(res.meta))


# --- saving -------------------------------------------------------------------------------------


def save(res: LabelledArray, folder: str | Path, stem: str, plot: bool = True) -> list[Path]:
    """Write <stem>.csv (tidy: one row per cell, see LabelledArray.to_csv), <stem>.json (values,
    labels, meta) and, for 1-D/2-D results, <stem>.png. Returns the paths written."""
    from minillm.views import figures

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    csv, js = folder / f"{stem}.csv", folder / f"{stem}.json"
    res.to_csv(csv)
    js.write_text(json.dumps(dict(title=res.title, axes=list(res.axes), labels=[list(x) for x in res.labels],
                                  values=np.where(np.isnan(res.values), None, res.values).tolist(),
                                  meta=res.meta), indent=1))
    paths = [csv, js]
    if plot and res.values.ndim in (1, 2):
        paths.append(figures.save(res.plot(), folder / f"{stem}.png"))
    return paths
