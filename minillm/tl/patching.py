"""TransformerLens's `patching` module: activation patching, one patched run per index.

    from minillm.tl import patching
    results = patching.get_act_patch_resid_pre(model, corrupted_tokens, clean_cache, metric)
    # [n_layers, pos]: metric(logits) of the corrupted run with the clean resid_pre
    # of one (layer, position) patched in

The functions, their argument order, axis names and result shapes are
TransformerLens's. The metric receives the patched run's logits [b, p, V]
and returns a number. The one difference: `index_df` (and what
`return_index_df` returns) is an int array [n_patches, n_axes] instead of a
pandas DataFrame (a DataFrame is accepted: its values are used), because
minillm does not depend on pandas.

The patched runs are batched through minillm's engine (`minillm.interp.batch`).
For sweeps with normalised results, labels and heatmaps, see
minillm's own `minillm.interp.patching` (`patching_sweep`, `patch_all`).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from functools import partial

import numpy as np

from minillm.errors import MinillmError
from minillm.interp.batch import run_batch
from minillm.tl.utils import get_act_name

AXES = ("layer", "pos", "head_index", "head", "src_pos", "dest_pos")


def make_index_array(column_max_ranges: Sequence[int]) -> np.ndarray:
    """Every combination of indices, last axis fastest.   -> int [prod(ranges), n_axes]"""
    rows = list(itertools.product(*[range(r) for r in column_max_ranges]))
    return np.array(rows, np.int64).reshape(len(rows), len(column_max_ranges))


def generic_activation_patch(model, corrupted_tokens, clean_cache, patching_metric: Callable,
                             patch_setter: Callable, activation_name: str,
                             index_axis_names: Sequence[str] | None = None, index_df=None,
                             return_index_df: bool = False, progress: bool = True,
                             batch_size: int = 32):
    """Patch one index of a clean activation into the corrupted run, for every index.

    Either `index_axis_names` (the first must be "layer") gives axes to
    iterate over fully (result shape: one axis each), or `index_df` lists the
    indices to patch, one row each (result: one value per row). For
    activation "k" / "v" the head axis counts key/value heads.

    The patched runs go through minillm's batched-run engine
    (`minillm.interp.batch.run_batch`): each patch gets its own copy of the corrupted
    prompts' rows, `batch_size` rows per forward pass (a patch's rows are never split),
    and `patching_metric` sees one patch's logits [b, p, V] at a time, as in
    TransformerLens. Batched rows equal separate runs up to float32 rounding.
    Ctrl-C stops the sweep (KeyboardInterrupt) and leaves the model's hooks as they were.
    """
    corrupted_tokens = np.atleast_2d(np.asarray(corrupted_tokens))
    if index_df is None:
        if index_axis_names is None:
            raise MinillmError("give index_axis_names or index_df")
        unknown = [a for a in index_axis_names if a not in AXES]
        if unknown:
            raise MinillmError(f"unknown axis names {unknown}; use {AXES}")
        cfg = model.cfg
        heads = cfg.n_kv_heads if activation_name in ("k", "v") else cfg.n_heads
        n_pos = corrupted_tokens.shape[-1]
        size = {"layer": cfg.n_layers, "pos": n_pos, "head_index": heads, "head": heads,
                "src_pos": n_pos, "dest_pos": n_pos}
        shape = [size[a] for a in index_axis_names]
        index_rows = make_index_array(shape)
    else:
        if index_axis_names is not None:
            raise MinillmError("give index_axis_names or index_df, not both")
        index_rows = np.asarray(getattr(index_df, "values", index_df), np.int64)
        if index_rows.ndim != 2:
            raise MinillmError(f"index_df must be [n_patches, n_axes], got shape {index_rows.shape}")
        shape = [len(index_rows)]
    b = corrupted_tokens.shape[0]

    def patch_hooks(chunk: list[list[int]], b: int) -> list[tuple[str, Callable]]:
        """The hooks of one forward pass: patch chunk[j]'s index into rows j·b .. j·b + b - 1."""
        by_name: dict[str, list[tuple[int, list[int]]]] = {}
        for j, index in enumerate(chunk):
            by_name.setdefault(get_act_name(activation_name, layer=index[0]), []).append((j, index))
        return [(name, partial(patching_hook, patches=patches, clean_activation=clean_cache[name]))
                for name, patches in by_name.items()]

    def patching_hook(corrupted_activation, hook, patches, clean_activation):
        out = corrupted_activation.copy()  # [k·b, ...]
        for j, index in patches:
            rows = slice(j * b, (j + 1) * b)  # this patch's copy of the corrupted prompts
            out[rows] = patch_setter(out[rows].copy(), index, clean_activation)
        return out

    def metric_per_row(logits: np.ndarray) -> np.ndarray:
        """TransformerLens's metric reads one patch's logits [b, p, V] and returns one number;
        the engine wants a value per row, so each patch's number stands in each of its rows."""
        k = logits.shape[0] // b
        values = [float(np.asarray(patching_metric(logits[j * b : (j + 1) * b]))) for j in range(k)]
        return np.repeat(np.asarray(values), b)  # [k·b]

    res = run_batch(model, corrupted_tokens, index_rows.tolist(), metric_per_row,
                    batch_size=batch_size, hooks_for=patch_hooks, progress=progress,
                    desc=f"patching {activation_name}")
    if res.interrupted:
        raise KeyboardInterrupt
    out = res.values[:, 0].reshape(shape)  # variants in index_rows' order: last axis fastest
    return (out, index_rows) if return_index_df else out


# --- patch setters: write the clean values at one index into the corrupted activation ----------


def layer_pos_patch_setter(corrupted_activation, index, clean_activation):
    """index = [layer, pos]; activations [b, pos, ...]."""
    _, pos = index
    corrupted_activation[:, pos, ...] = clean_activation[:, pos, ...]
    return corrupted_activation


def layer_pos_head_vector_patch_setter(corrupted_activation, index, clean_activation):
    """index = [layer, pos, head]; activations [b, pos, head, ...] (q, k, v, z, result)."""
    _, pos, head = index
    corrupted_activation[:, pos, head] = clean_activation[:, pos, head]
    return corrupted_activation


def layer_head_vector_patch_setter(corrupted_activation, index, clean_activation):
    """index = [layer, head]; activations [b, pos, head, ...], every position."""
    _, head = index
    corrupted_activation[:, :, head] = clean_activation[:, :, head]
    return corrupted_activation


def layer_head_pattern_patch_setter(corrupted_activation, index, clean_activation):
    """index = [layer, head]; attention scores / patterns [b, head, dest, src]."""
    _, head = index
    corrupted_activation[:, head, :, :] = clean_activation[:, head, :, :]
    return corrupted_activation


def layer_head_pos_pattern_patch_setter(corrupted_activation, index, clean_activation):
    """index = [layer, head, dest_pos]; patterns [b, head, dest, src]."""
    _, head, dest = index
    corrupted_activation[:, head, dest, :] = clean_activation[:, head, dest, :]
    return corrupted_activation


def layer_head_dest_src_pos_pattern_patch_setter(corrupted_activation, index, clean_activation):
    """index = [layer, head, dest_pos, src_pos]; patterns [b, head, dest, src]."""
    _, head, dest, src = index
    corrupted_activation[:, head, dest, src] = clean_activation[:, head, dest, src]
    return corrupted_activation


# --- the specialised sweeps: (model, corrupted_tokens, clean_cache, patching_metric) -> array --


def _specialise(setter, activation: str, axes: tuple[str, ...], what: str):
    fn = partial(generic_activation_patch, patch_setter=setter, activation_name=activation,
                 index_axis_names=axes)
    fn.__doc__ = (f"Patch {what} from the clean run into the corrupted run, one "
                  f"({', '.join(axes)}) at a time.   -> [{', '.join(axes)}]")
    return fn


get_act_patch_resid_pre = _specialise(layer_pos_patch_setter, "resid_pre", ("layer", "pos"),
                                      "the residual stream before each block")
get_act_patch_resid_mid = _specialise(layer_pos_patch_setter, "resid_mid", ("layer", "pos"),
                                      "the residual stream between attention and MLP")
get_act_patch_attn_out = _specialise(layer_pos_patch_setter, "attn_out", ("layer", "pos"),
                                     "each attention layer's output")
get_act_patch_mlp_out = _specialise(layer_pos_patch_setter, "mlp_out", ("layer", "pos"),
                                    "each MLP layer's output")
get_act_patch_attn_head_out_by_pos = _specialise(
    layer_pos_head_vector_patch_setter, "z", ("layer", "pos", "head"), "each head's output (z)")
get_act_patch_attn_head_q_by_pos = _specialise(
    layer_pos_head_vector_patch_setter, "q", ("layer", "pos", "head"), "each head's queries")
get_act_patch_attn_head_k_by_pos = _specialise(
    layer_pos_head_vector_patch_setter, "k", ("layer", "pos", "head"), "each key/value head's keys")
get_act_patch_attn_head_v_by_pos = _specialise(
    layer_pos_head_vector_patch_setter, "v", ("layer", "pos", "head"),
    "each key/value head's values")
get_act_patch_attn_head_pattern_by_pos = _specialise(
    layer_head_pos_pattern_patch_setter, "pattern", ("layer", "head_index", "dest_pos"),
    "each head's attention pattern row")
get_act_patch_attn_head_pattern_dest_src_pos = _specialise(
    layer_head_dest_src_pos_pattern_patch_setter, "pattern",
    ("layer", "head_index", "dest_pos", "src_pos"), "each entry of each head's attention pattern")
get_act_patch_attn_head_out_all_pos = _specialise(
    layer_head_vector_patch_setter, "z", ("layer", "head"), "each head's output (z), all positions")
get_act_patch_attn_head_q_all_pos = _specialise(
    layer_head_vector_patch_setter, "q", ("layer", "head"), "each head's queries, all positions")
get_act_patch_attn_head_k_all_pos = _specialise(
    layer_head_vector_patch_setter, "k", ("layer", "head"), "each key/value head's keys")
get_act_patch_attn_head_v_all_pos = _specialise(
    layer_head_vector_patch_setter, "v", ("layer", "head"), "each key/value head's values")
get_act_patch_attn_head_pattern_all_pos = _specialise(
    layer_head_pattern_patch_setter, "pattern", ("layer", "head_index"),
    "each head's whole attention pattern")


def _pad_heads(x: np.ndarray, n: int) -> np.ndarray:
    """Zero-pad the last (head) axis to n: key/value results have n_kv_heads entries."""
    return np.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, n - x.shape[-1])])


def get_act_patch_attn_head_all_pos_every(model, corrupted_tokens, clean_cache, metric) -> np.ndarray:
    """Output, query, key, value and pattern of every head, all positions.   -> [5, layer, head]"""
    h = model.cfg.n_heads
    return np.stack([
        get_act_patch_attn_head_out_all_pos(model, corrupted_tokens, clean_cache, metric),
        get_act_patch_attn_head_q_all_pos(model, corrupted_tokens, clean_cache, metric),
        _pad_heads(get_act_patch_attn_head_k_all_pos(model, corrupted_tokens, clean_cache, metric), h),
        _pad_heads(get_act_patch_attn_head_v_all_pos(model, corrupted_tokens, clean_cache, metric), h),
        get_act_patch_attn_head_pattern_all_pos(model, corrupted_tokens, clean_cache, metric),
    ])


def get_act_patch_attn_head_by_pos_every(model, corrupted_tokens, clean_cache, metric) -> np.ndarray:
    """Output, query, key, value and pattern of every head, by position.   -> [5, layer, pos, head]"""
    h = model.cfg.n_heads
    pattern = get_act_patch_attn_head_pattern_by_pos(model, corrupted_tokens, clean_cache, metric)
    return np.stack([
        get_act_patch_attn_head_out_by_pos(model, corrupted_tokens, clean_cache, metric),
        get_act_patch_attn_head_q_by_pos(model, corrupted_tokens, clean_cache, metric),
        _pad_heads(get_act_patch_attn_head_k_by_pos(model, corrupted_tokens, clean_cache, metric), h),
        _pad_heads(get_act_patch_attn_head_v_by_pos(model, corrupted_tokens, clean_cache, metric), h),
        pattern.transpose(0, 2, 1),  # [layer, head, dest] -> [layer, pos, head]
    ])


def get_act_patch_block_every(model, corrupted_tokens, clean_cache, metric) -> np.ndarray:
    """resid_pre, attn_out and mlp_out of every layer and position.   -> [3, layer, pos]"""
    return np.stack([
        get_act_patch_resid_pre(model, corrupted_tokens, clean_cache, metric),
        get_act_patch_attn_out(model, corrupted_tokens, clean_cache, metric),
        get_act_patch_mlp_out(model, corrupted_tokens, clean_cache, metric),
    ])
