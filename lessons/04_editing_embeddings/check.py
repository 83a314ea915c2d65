"""Checks for lesson 04: each runs the student's function and the reference on the same inputs."""

from __future__ import annotations

import numpy as np

from minillm.course import shared_model


def _rows(texts=(" sorry", " cat", " Paris", " the")) -> tuple[np.ndarray, list[int]]:
    """A small float32 matrix made of real SmolLM2 embedding rows (and the ids they came from)."""
    model = shared_model()
    ids = [model.to_single_token(t) for t in texts]
    return model.embed.W_E[ids].copy(), ids


def check_edit_embedding_row(student, ref) -> None:
    W, _ = _rows()
    rng = np.random.default_rng(4)
    W = np.concatenate([W, rng.normal(size=(6, W.shape[1])).astype(np.float32)])
    for op, alpha, token in (("reduce", 0.3, 0), ("boost", 0.3, 0), ("zero", 0.3, 0), ("reduce", 0.5, 7),
                             ("boost", 0.9, 3)):
        before = W.copy()
        got = student.edit_embedding_row(W, token, op, alpha)
        want = ref.edit_embedding_row(before, token, op, alpha)
        assert np.array_equal(W, before), (
            f"edit_embedding_row({op!r}) changed the W_E you were given: copy it first (out = W_E.copy()) "
            "and edit the copy. In the model, minillm.edits writes in place only because the journal "
            "saved the old bytes first.")
        assert isinstance(got, np.ndarray) and got.shape == want.shape, (
            f"edit_embedding_row should return an array of shape {want.shape}, got "
            f"{getattr(got, 'shape', type(got).__name__)}")
        assert got.dtype == W.dtype, (
            f"edit_embedding_row returned dtype {got.dtype}; keep the model's dtype {W.dtype} "
            "(multiply by W_E.dtype.type(factor)).")
        others = np.arange(len(W)) != token
        assert np.array_equal(got[others], W[others]), (
            f"edit_embedding_row({op!r}) changed rows other than row {token}: only the token's own row "
            "is edited (index it: out[token] = ...).")
        if np.allclose(got[token], want[token], rtol=1e-6, atol=0):
            continue
        factor = got[token] @ W[token] / max(float(W[token] @ W[token]), 1e-30)
        expect = ref.FACTORS[op](alpha)
        hint = ""
        if op != "zero" and abs(factor - (2 - expect)) < 1e-4:
            hint = " You swapped the sign: REDUCE is E·(1−α), BOOST is E·(1+α)."
        elif op != "zero" and abs(factor - alpha) < 1e-4:
            hint = " You multiplied by α itself; the factor is 1−α (reduce) or 1+α (boost)."
        raise AssertionError(
            f"edit_embedding_row(W_E, {token}, {op!r}, alpha={alpha}): row {token} should be "
            f"E·{expect:g}, yours is E·{factor:.4g}.{hint}")


def check_rms_norm_change(student, ref) -> None:
    W, _ = _rows()
    eps = shared_model().cfg.eps
    cases = [(W[0], 0.7, eps), (W[0], 1.3, eps), (W[1], 0.7, eps), (W[2], 0.0, eps),
             (W[3] * 0.05, 0.7, eps), (W[0], 0.7, 0.0), (W[0] * 0.01, 2.0, 1e-3)]
    for x, c, e in cases:
        got = student.rms_norm_change(x.copy(), c, e)
        want = ref.rms_norm_change(x, c, e)
        try:
            got = float(got)
        except (TypeError, ValueError):
            raise AssertionError(f"rms_norm_change should return a float, got {got!r}") from None
        if np.isclose(got, want, rtol=1e-3, atol=1e-12):
            continue
        x64 = x.astype(np.float64)
        ms = (x64 * x64).mean()
        hint = ""
        outside = abs(c * (np.sqrt(ms) + e) / (abs(c) * np.sqrt(ms) + e) - 1) if c else 1.0
        if e and abs(got - outside) < 1e-3 * max(outside, 1e-12) + 1e-12:
            hint = " Is your epsilon inside the sqrt? RMSNorm divides by sqrt(mean(x²) + eps)."
        elif e and got == 0.0:
            hint = " You got exactly 0: did you leave out eps? Without it the rescaling is invisible."
        elif abs(got - want) > 0.5 * want and ms > 0:
            hint = (" RMSNorm does not subtract the mean (that is LayerNorm), and it uses the mean of x², "
                    "not the sum.")
        raise AssertionError(
            f"rms_norm_change(x with mean(x²)={ms:.3g}, c={c}, eps={e:g}): expected {want:.6g}, got "
            f"{got:.6g}.{hint}")


def check_relative_change_per_layer(student, ref) -> None:
    rng = np.random.default_rng(0)
    L1, p, d = 7, 5, 12
    growth = np.geomspace(1, 50, L1)[:, None, None]
    clean = (rng.normal(size=(L1, p, d)) * growth).astype(np.float32)
    edited = (clean + rng.normal(size=(L1, p, d)) * np.linspace(0.3, 3, L1)[:, None, None]).astype(np.float32)
    for pos in (2, 4):
        got = np.asarray(student.relative_change_per_layer(clean, edited, pos), dtype=np.float64)
        want = ref.relative_change_per_layer(clean, edited, pos)
        assert got.shape == want.shape, (
            f"relative_change_per_layer should return one value per layer row, shape {want.shape}, got "
            f"{got.shape}. Select the position first ([:, pos]) and take the norm over d (axis=-1).")
        if np.allclose(got, want, rtol=1e-5):
            continue
        diff = np.linalg.norm((edited - clean).astype(np.float64)[:, pos], axis=-1)
        hint = ""
        if np.allclose(got, diff, rtol=1e-5):
            hint = " You returned the absolute change: divide by ‖clean‖."
        elif np.allclose(got, diff / np.linalg.norm(edited.astype(np.float64)[:, pos], axis=-1), rtol=1e-5):
            hint = " You divided by the EDITED norm; the reference is the clean run's norm."
        elif np.allclose(got, want**2, rtol=1e-5):
            hint = " You squared the ratio (‖·‖² / ‖·‖²): take plain L2 norms."
        raise AssertionError(f"relative_change_per_layer(pos={pos}): expected {np.round(want, 4)}, got "
                             f"{np.round(got, 4)}.{hint}")


def check_fit_exponential(student, ref) -> None:
    x = np.arange(12)
    rng = np.random.default_rng(1)
    cases = [("an exact exponential 3·0.8^x", 3 * 0.8**x),
             ("a noisy exponential", 0.5 * 0.9**x * np.exp(rng.normal(0, 0.1, 12))),
             ("a flat, noisy curve (not exponential)", 0.2 * np.exp(rng.normal(0, 0.2, 12)))]
    for what, y in cases:
        got = student.fit_exponential(y.copy())
        try:
            factor, r2 = (float(v) for v in got)
        except (TypeError, ValueError):
            raise AssertionError(f"fit_exponential should return (factor, r2), got {got!r}") from None
        want_f, want_r2 = ref.fit_exponential(y)
        b = np.log(want_f)
        hint = ""
        if abs(factor - b) < 1e-6 and abs(b - want_f) > 1e-3:
            hint = " You returned the slope b of log y; the factor per step is exp(b)."
        elif abs(factor - np.polyfit(x, y, 1)[0]) < 1e-6:
            hint = " You fitted y itself; fit log y (np.log(y)) so that an exponential is a straight line."
        assert abs(factor - want_f) < 1e-6, (
            f"fit_exponential on {what}: factor per step should be {want_f:.5f}, got {factor:.5f}.{hint}")
        assert abs(r2 - want_r2) < 1e-6, (
            f"fit_exponential on {what}: R² should be {want_r2:.5f}, got {r2:.5f}. Compute R² of the fit "
            "in log space: 1 − Σ(log y − (a + b·x))² / Σ(log y − mean(log y))².")


CHECKS = [
    ("edit_embedding_row", check_edit_embedding_row),
    ("rms_norm_change", check_rms_norm_change),
    ("relative_change_per_layer", check_relative_change_per_layer),
    ("fit_exponential", check_fit_exponential),
]
