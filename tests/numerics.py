"""How numerical tests compare floats: bit-exact only for identical shapes, else a derived tolerance.

Why. A float32 matrix product's bits depend on the BLAS kernel (OpenBLAS picks one per
CPU: Haswell, SkylakeX, Sandybridge, Neoverse, ...), on the number of rows (a 1-row GEMM
goes to gemv, 2-3 rows to small-matrix kernels, more rows to blocked kernels that sum in
other orders) and on the number of threads. So:

* the same call twice, or two calls whose every GEMM has the same shape (a batch of 1
  against separate runs of batch 1), may be compared bit for bit;
* anything else (a batch of 14 against batches of 1, a left-padded row against the row
  alone, a per-head sum against one GEMM) agrees only up to rounding, with a tolerance
  derived below, and is paired with the same comparison in float64 at <= 1e-12: that is
  the check that catches a real masking or patching bug (which moves results by far more
  than 1e-12 in float64, where reordering moves them by ~1e-15).

The float32 tolerance (derivation).
  u = 2^-24 is float32's unit roundoff (half of np.finfo(np.float32).eps).
  A dot product of n terms computed in any order is, with high probability, within
  λ·√n·u·Σ|a_i b_i| of the exact value for a modest constant λ (probabilistic rounding
  error analysis, Higham & Mary 2019; the worst case n·u needs every rounding error to
  have the same sign). Two summation orders therefore differ by about 2λ√n·u relative
  to the size of the terms. We take the size of the terms to be the size M of the values
  compared (max |expected|), the longest sum in the model for n (d_model, d_mlp, the
  flattened heads h·d_head, or the number of key positions), and let the errors of the
  `depth` matrix products on the way from the input to the compared values add up
  linearly (each block has six: the fused QKV, q·k, pattern·v, W_O, the MLP's input and
  output maps; then the unembedding). With λ = 1/2:

      tol = u · M · √n · depth

  Measured against it (max difference / tol, OPENBLAS_CORETYPE Haswell, SkylakeX,
  Sandybridge): left-padded golden rows <= 0.22, batched SmolLM2 variants <= 0.004.
"""

from __future__ import annotations

import math

import numpy as np

U32 = 2.0**-24  # float32 unit roundoff
F64_ATOL = 1e-12  # the float64 companion of every float32 tolerance


def reorder_tolerance(magnitude: float, n_terms: int, depth: int) -> float:
    """u · M · √n · depth: how far two float32 evaluations of the same sums in other orders
    may drift apart (see the module docstring for the derivation)."""
    return U32 * float(magnitude) * math.sqrt(n_terms) * depth


def model_tolerance(model, expected, n_positions: int | None = None, depth: int | None = None) -> float:
    """The reorder tolerance for values `expected` produced by a forward pass of `model`.

    n = the longest sum in the model (d_model, d_mlp, h·d_head, key positions);
    depth = 6 matrix products per block + the unembedding, unless given.
    """
    cfg = model.cfg
    n = max(cfg.d_model, cfg.d_mlp, cfg.n_heads * cfg.d_head, n_positions or 0)
    depth = 6 * cfg.n_layers + 1 if depth is None else depth
    magnitude = float(np.abs(np.asarray(expected, np.float64)).max())
    return reorder_tolerance(magnitude, n, depth)


def max_abs_diff(a, b) -> tuple[float, tuple]:
    diff = np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))
    if diff.size == 0:
        return 0.0, ()
    where = np.unravel_index(np.nanargmax(diff) if not np.isnan(diff).all() else 0, diff.shape)
    return float(diff.max()), tuple(int(i) for i in where)


def assert_reordered_close(actual, expected, tol: float, what: str) -> None:
    """|actual - expected| <= tol everywhere (NaN never passes); the message says where and by how much."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shapes {actual.shape} vs {expected.shape}"
    diff, where = max_abs_diff(actual, expected)
    assert np.isfinite(actual).all() == np.isfinite(expected).all(), f"{what}: non-finite values differ"
    assert diff <= tol, f"{what}: max abs diff {diff:.3g} at {where} exceeds the tolerance {tol:.3g}"


def assert_model_close(model, actual, expected, what: str, **kw) -> None:
    """float32: within model_tolerance; float64: within F64_ATOL."""
    if np.dtype(model.dtype) == np.float64:
        assert_reordered_close(actual, expected, F64_ATOL, what + " (float64)")
    else:
        assert_reordered_close(actual, expected, model_tolerance(model, expected, **kw),
                               what + " (float32, reorder tolerance)")


def metric_tolerance(model, *prompts, gap: float = 1.0) -> float:
    """For a metric that is a difference of two logits (a logit difference, or a logit minus
    its unpatched value), optionally divided by a normalising `gap`: each logit is within the
    model's reorder tolerance t, so the metric within 2t / gap. float64: F64_ATOL."""
    if np.dtype(model.dtype) == np.float64:
        return F64_ATOL
    logits = np.concatenate([np.asarray(model(np.asarray(p))).reshape(-1) for p in prompts])
    return 2 * model_tolerance(model, logits) / abs(gap)
