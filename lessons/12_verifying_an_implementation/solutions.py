"""Lesson 12 reference solutions: comparing two implementations hook by hook, and the fix.

Activations are NumPy arrays keyed by minillm hook names ("blocks.3.attn.hook_z", ...).
Shape legend: b = batch, p = positions, h = heads, e = d_head.
"""

from __future__ import annotations

import numpy as np

from minillm.verify import forward_key


def max_errors(ref: np.ndarray, cand: np.ndarray, floor: float = 1e-3) -> tuple[float, float]:
    """(max |a − b|, max |a − b| / max(|a|, floor · RMS(a))) for reference a, candidate b.

    The floor keeps entries near zero from turning rounding noise into huge relative errors.
    """
    a, b = np.asarray(ref, np.float64), np.asarray(cand, np.float64)
    diff = np.abs(a - b)
    rms = np.sqrt(np.mean(a * a))
    rel = diff / np.maximum(np.abs(a), floor * rms)
    return float(diff.max()), float(rel.max())


def _fails(a: np.ndarray, b: np.ndarray, atol: float, rtol: float) -> bool:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    with np.errstate(invalid="ignore"):
        diff = np.abs(a - b)
    diff[a == b] = 0.0  # equal infinities (masked scores) are equal
    diff[np.isnan(diff)] = np.inf  # NaN, or an infinity on one side only: wrong
    return bool((diff > atol + rtol * np.where(np.isfinite(a), np.abs(a), 0.0)).any())


def first_failure(ref: dict, cand: dict, atol: float = 1e-3, rtol: float = 1e-3) -> str | None:
    """The first hook, in the order the forward pass computes them, where some element breaks
    |a − b| <= atol + rtol·|a|; None if every hook both dicts have passes."""
    for name in sorted(set(ref) & set(cand), key=forward_key):
        if _fails(ref[name], cand[name], atol, rtol):
            return name
    return None


def worst_position_head(ref: np.ndarray, cand: np.ndarray) -> tuple[int, int]:
    """(position, head) of the largest |a − b| in a per-head activation [b, p, h, e]."""
    diff = np.abs(np.asarray(ref, np.float64) - np.asarray(cand, np.float64))
    _, pos, head, _ = np.unravel_index(np.argmax(diff), diff.shape)
    return int(pos), int(head)


def error_per_head(ref: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """max |a − b| over batch, position and d_head, for each head.   [b, p, h, e] -> [h]"""
    diff = np.abs(np.asarray(ref, np.float64) - np.asarray(cand, np.float64))
    return diff.max(axis=(0, 1, 3))


def repeat_kv(x: np.ndarray, n_rep: int) -> np.ndarray:
    """[b, p, kv, e] -> [b, p, kv·n_rep, e]: query head j reads kv-head j // n_rep.

    np.repeat gives kv-heads 0,0,0,1,1,1,2,2,2; np.tile gave 0,1,2,0,1,2,0,1,2 (head j read
    kv-head j % kv), which is right only for heads 0, 4 and 8 of SmolLM2's 9.
    """
    return np.repeat(x, n_rep, axis=2)


def port_fixes() -> dict:
    """{name of the broken function in port.py: its corrected version}."""
    return {"repeat_kv": repeat_kv}
