"""Batched variants: N interventions on one prompt, run as batches instead of N runs.

    from minillm.interp import interventions as iv
    from minillm.interp.batch import run_variants
    _, clean = model.run_with_cache(clean_tokens)
    logits = run_variants(model, corrupt_tokens,                       # [30, p, V]
                          [[iv.patch("resid_pre", clean, layer=l, pos=4)] for l in range(30)])

Variant j's interventions act on batch row j only (each is re-targeted with
`.at(batch=row)`), so one forward pass of a batch of N computes N patched
runs. NumPy spends most of a small forward pass in per-call overhead and
small GEMMs; batching amortises both.

Exactness: every row of the batch goes through the same operations as a
batch-1 run (GEMMs on flattened [b·p, d] rows, per-row softmax and attention),
so the results are N separate runs up to float32 rounding. They are not bit
for bit in general: a float32 GEMM's bits depend on the BLAS kernel the CPU
gets, on the number of rows and on threads, so a batch of N rows may sum in
another order than a batch of 1. `batch_size=1` runs exactly the GEMMs of a
separate run and gives the same bits on any CPU. Otherwise expect differences
of float32 rounding (measured on SmolLM2, logits of size ~20: from 0 with
OpenBLAS's SkylakeX and Sandybridge kernels to 3.7e-5 with its Haswell
kernel); in float64 the batch agrees with separate runs to ~1e-14.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from tqdm.auto import tqdm

from minillm.errors import MinillmError
from minillm.interp.interventions import Intervention, to_hooks


def run_variants(
    model,
    tokens,
    variants: Sequence[Intervention | Sequence[Intervention]],
    batch_size: int | None = None,
    metric: Callable[[np.ndarray], np.ndarray] | None = None,
    last_only: bool = False,
    attention_mask: np.ndarray | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Run one prompt once per variant, `batch_size` variants per forward pass.

    tokens: a str or ids [1, p]. variants: a list whose entry j is an
    intervention or a list of interventions (an empty list = the plain run).
    metric: optional fn(logits [n, p, V]) -> [n, ...] applied to each batch,
    to keep memory small in long sweeps. Returns the stacked logits [N, p, V]
    (or [N, 1, V] with last_only), or the stacked metric values [N, ...].
    """
    tokens = model.to_tokens(tokens) if isinstance(tokens, str) else np.asarray(tokens)
    if tokens.ndim == 1:
        tokens = tokens[None]
    if tokens.shape[0] != 1:
        raise MinillmError(f"run_variants takes one prompt [1, p], got a batch of {tokens.shape[0]}")
    variants = [[v] if isinstance(v, Intervention) else list(v) for v in variants]
    if not variants:
        raise MinillmError("run_variants needs at least one variant")
    n = len(variants)
    batch_size = n if batch_size is None else int(batch_size)
    if batch_size < 1:
        raise MinillmError(f"batch_size must be at least 1, got {batch_size}")
    for v in variants:  # validate everything before the first forward pass
        for i in v:
            if i.batch is not None:
                raise MinillmError("interventions in run_variants must not set batch=: "
                                   "each variant is assigned its own row")
            i.check_positions(tokens.shape[1])
    outs = []
    starts = range(0, n, batch_size)
    for start in tqdm(starts, desc="variants", disable=not progress):
        chunk = variants[start : start + batch_size]
        hooks = [pair for row, v in enumerate(chunk) for pair in to_hooks(model, [i.at(batch=row)
                                                                               for i in v])]
        batch = np.repeat(tokens, len(chunk), axis=0)  # [n, p]
        mask = None if attention_mask is None else np.repeat(np.asarray(attention_mask), len(chunk), 0)
        logits = model.run_with_hooks(batch, hooks, attention_mask=mask, last_only=last_only)
        outs.append(logits if metric is None else np.asarray(metric(logits)))
    return np.concatenate(outs)
