"""Lesson 12 exercises: find the bug in port.py with minillm.verify's ideas, then fix it.

Fill in each function, then grade yourself with `minillm lesson check 12`. Activations are
NumPy arrays keyed by minillm hook names ("blocks.3.attn.hook_z", ...); "reference" (a) is
minillm, "candidate" (b) is the implementation under test.
Shape legend: b = batch, p = positions, h = heads, e = d_head.
"""

from __future__ import annotations

import numpy as np


def max_errors(ref: np.ndarray, cand: np.ndarray, floor: float = 1e-3) -> tuple[float, float]:
    """Exercise 1 (easy, 10 min). Return (max absolute error, max relative error) of candidate b against reference a.

    relative error = |a − b| / max(|a|, floor · RMS(a)), with RMS(a) = sqrt(mean(a²)) over the
    whole array: the floor stops entries near zero from making rounding look like a bug.
    """
    raise NotImplementedError("hint: diff = |a − b|; rms = sqrt(mean(a²)); divide by "
                              "np.maximum(|a|, floor·rms); return two Python floats")


def first_failure(ref: dict, cand: dict, atol: float = 1e-3, rtol: float = 1e-3) -> str | None:
    """Exercise 2 (medium, 15 min). The first hook IN FORWARD ORDER where some element breaks |a − b| <= atol + rtol·|a|.

    ref, cand: {hook name: array}; compare only the names both have; the dicts may be in any
    order. Masked attention scores are -inf on both sides: equal infinities count as equal, and
    a NaN or an infinity on one side only is a failure. Return None if every hook passes.
    """
    raise NotImplementedError("hint: sorted(common names, key=minillm.verify.forward_key) puts "
                              "hook names in the order the forward pass computes them")


def worst_position_head(ref: np.ndarray, cand: np.ndarray) -> tuple[int, int]:
    """Exercise 3 (easy, 10 min). (position, head) of the largest |a − b| in a per-head activation [b, p, h, e] (e.g. hook_z)."""
    raise NotImplementedError("hint: np.unravel_index(np.argmax(diff), diff.shape) gives (b, p, h, e)")


def error_per_head(ref: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """Exercise 4 (medium, 10 min). The largest |a − b| of each head.   [b, p, h, e] -> [h]"""
    raise NotImplementedError("hint: reduce the absolute difference with max over axes 0, 1 and 3")


def port_fixes() -> dict:
    """Exercise 5 (hard, 20 min). Fix port.py: return {name of the broken function in port.py: your corrected function}.

    The check installs your replacement(s) in a fresh copy of port.py, runs its forward pass
    on SmolLM2 and compares every hook with minillm. Replace the faulty helper, not `forward`.
    """
    raise NotImplementedError("hint: first_failure tells you which step goes wrong first, "
                              "error_per_head which heads; read that part of port.py with the "
                              "pattern of good and bad heads in mind")
