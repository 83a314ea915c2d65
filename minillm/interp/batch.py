"""The batched-run engine: N variants of one prompt (or one prompt set) as a few forward passes.

    from minillm.interp import interventions as iv
    from minillm.interp.batch import run_batch, run_variants
    _, clean = model.run_with_cache(clean_tokens)
    logits = run_variants(model, corrupt_tokens,                       # [30, p, V]
                          [[iv.patch("resid_pre", clean, layer=l, pos=4)] for l in range(30)])
    res = run_batch(model, prompts, variants, metric, batch_size=32)   # prompts [b, p]
    res.values          # [N, b]: metric of each variant on each prompt (NaN where not run)
    res.interrupted     # True when Ctrl-C stopped the run (res.done variants finished)

Variant j runs on its own copy of the b prompt rows (rows j·b .. j·b + b - 1
of the batch), and its interventions are re-targeted to those rows with
`.at(batch=...)`, so one forward pass of n·b rows computes n variants.
NumPy spends most of a small forward pass in per-call overhead and small
GEMMs; batching amortises both.

Every patching sweep, ablation sweep, median replacement, pruning curve and
patchscope runs through `run_batch`. It never changes weights; hooks it adds
live only inside each forward pass, and the model's hook registry is restored
from a snapshot on the way out, also after Ctrl-C.

Shared prefix: with `prefix=k` (or a KVCache from `prefix_cache`) the first
k positions, which no variant may change, are computed once; each batch
copies that cache to its rows (`KVCache.repeat`) and runs only the rest.
This needs a metric that reads the last position only.

Exactness: a batched row goes through the same operations as a batch-1 run,
but a float32 GEMM's rounding can depend on its number of rows and on the
CPU's BLAS kernel. So batched results equal separate runs up to float32
rounding (not necessarily bit for bit); measurements on one machine are in
docs/performance.md.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from minillm.errors import MinillmError
from minillm.interp.interventions import Intervention, to_hooks
from minillm.kv_cache import KVCache

if TYPE_CHECKING:
    from minillm.hooked_model import HookedModel, TokensLike


@dataclass
class BatchResult:
    """What `run_batch` measured.

    values: [N, b, ...] the metric (or logits) of variant j on prompt row i;
      NaN for variants not run (after an interrupt).
    interrupted: Ctrl-C stopped the run after `done` variants.
    """

    values: np.ndarray
    interrupted: bool
    done: int


def prefix_cache(model: HookedModel, tokens: np.ndarray, prefix: int) -> KVCache | None:
    """The KV cache of tokens[:, :prefix] (None for prefix 0), to share between `run_batch` calls."""
    if not prefix:
        return None
    if not 0 < prefix < tokens.shape[1]:
        raise MinillmError(f"prefix {prefix} must leave at least one of {tokens.shape[1]} positions to run")
    cache = KVCache.for_model(model, tokens.shape[0])
    model(tokens[:, :prefix], cache=cache)
    return cache


def _as_variant(v) -> list[Intervention]:
    return [v] if isinstance(v, Intervention) else list(v)


def run_batch(
    model: HookedModel,
    tokens: TokensLike,
    variants: Sequence[Any],
    metric: Callable[[np.ndarray], np.ndarray] | None = None,
    batch_size: int | None = None,
    prefix: int | KVCache = 0,
    last_only: bool | None = None,
    attention_mask: np.ndarray | None = None,
    hooks_for: Callable[[list, int], list] | None = None,
    progress: bool = False,
    desc: str = "variants",
) -> BatchResult:
    """Run `tokens` once per variant, `batch_size` rows per forward pass; see the module docstring.

    tokens: text, ids [1, p], or a prompt set [b, p] (with `attention_mask` for padding).
    variants: entry j is an intervention or a list of them (empty = the plain run);
      with `hooks_for`, entries are anything and `hooks_for(chunk, b)` returns the
      hooks of one forward pass whose row block j serves chunk[j].
    metric: fn(logits [n·b, p, V]) -> per-row values [n·b, ...]; None keeps the logits.
    batch_size: rows per forward pass (default: all variants at once); a
      variant's b rows are never split.
    last_only: ask the model for the last position's logits only (default:
      the metric's own `last_only`).
    Ctrl-C returns what was measured so far with `interrupted=True`.
    """
    tokens = np.atleast_2d(model.as_tokens(tokens))
    b, p = tokens.shape
    last_only = bool(getattr(metric, "last_only", False)) if last_only is None else last_only
    if hooks_for is None:
        variants = [_as_variant(v) for v in variants]
        for v in variants:  # validate everything before the first forward pass
            for i in v:
                if i.batch is not None:
                    raise MinillmError("interventions of a batched run must not set batch=: "
                                       "each variant is assigned its own rows")
                i.check_positions(p)
    n = len(variants)
    per_pass = max(1, (batch_size or n * b) // b)
    if batch_size is not None and batch_size < 1:
        raise MinillmError(f"batch_size must be at least 1, got {batch_size}")
    if prefix and not last_only:
        raise MinillmError("a shared prefix needs a metric that reads the last position only")
    if prefix and attention_mask is not None:
        raise MinillmError("a shared prefix cannot be combined with an attention mask")
    mask = None if attention_mask is None else np.asarray(attention_mask)
    values: np.ndarray | None = None
    done, interrupted = 0, False
    snapshot = model.hooks.snapshot()
    bar = tqdm(total=n, desc=desc, disable=not progress, leave=False)
    try:
        cache = prefix if isinstance(prefix, KVCache) else prefix_cache(model, tokens, prefix)
        for start in range(0, n, per_pass):
            chunk = variants[start : start + per_pass]
            k = len(chunk)
            if hooks_for is not None:
                hooks = hooks_for(chunk, b)
            else:
                hooks = [pair for j, v in enumerate(chunk)
                         for pair in to_hooks(model, [i.at(batch=_rows(j, b)) for i in v])]
            batch = np.tile(tokens, (k, 1))  # [k·b, p]: variant j's copy of the prompts at rows j·b..
            rows_mask = None if mask is None else np.tile(mask, (k, 1))
            if cache is None:
                logits = model.run_with_hooks(batch, hooks, attention_mask=rows_mask, last_only=last_only)
            else:
                logits = model.run_with_hooks(batch[:, cache.length :], hooks, cache=cache.repeat(k),
                                              last_only=last_only)
            out = np.asarray(logits if metric is None else metric(logits))
            out = out.reshape(k, b, *out.shape[1:])
            if values is None:
                values = np.full((n, *out.shape[1:]), np.nan, np.result_type(out.dtype, np.float32))
            values[start : start + k] = out
            done = start + k
            bar.update(k)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
        model.hooks.restore(snapshot)
    if values is None:
        values = np.full((n, b), np.nan)
    return BatchResult(values, interrupted, done)


def measure_variants(model: HookedModel, tokens: TokensLike, variants: Sequence[Any], metric: Callable,
            batch_size: int | None = None, progress: bool = False, desc: str = "variants",
            prefix: int | KVCache = 0, hooks_for: Callable[[list, int], list] | None = None,
            ) -> tuple[np.ndarray, bool]:
    """`run_batch` on one prompt [1, p]: the metric of each variant, and whether Ctrl-C stopped
    the run.   -> (values [N], interrupted); NaN for variants not run."""
    res = run_batch(model, tokens, variants, metric, batch_size=batch_size, prefix=prefix,
                    hooks_for=hooks_for, progress=progress, desc=desc)
    return res.values[:, 0], res.interrupted


def _rows(j: int, b: int) -> int | list[int]:
    return j if b == 1 else list(range(j * b, (j + 1) * b))


def run_variants(
    model: HookedModel,
    tokens: TokensLike,
    variants: Sequence[Intervention | Sequence[Intervention]],
    batch_size: int | None = None,
    metric: Callable[[np.ndarray], np.ndarray] | None = None,
    last_only: bool = False,
    attention_mask: np.ndarray | None = None,
    progress: bool = False,
) -> np.ndarray:
    """One prompt [1, p] once per variant: the stacked logits [N, p, V] (or metric values [N, ...]).

    A thin form of `run_batch` for one prompt that returns an array; Ctrl-C
    propagates (use `run_batch` to keep partial results).
    """
    tokens = np.atleast_2d(model.as_tokens(tokens))
    if tokens.shape[0] != 1:
        raise MinillmError(f"run_variants takes one prompt [1, p], got a batch of {tokens.shape[0]}")
    if not len(variants):
        raise MinillmError("run_variants needs at least one variant")
    res = run_batch(model, tokens, variants, metric, batch_size=batch_size, last_only=last_only,
                    attention_mask=attention_mask, progress=progress)
    if res.interrupted:
        raise KeyboardInterrupt
    return res.values[:, 0]
