"""Lesson 09 solutions: activation patching."""

from __future__ import annotations

import numpy as np


def logit_difference(logits: np.ndarray, correct: int, wrong: int) -> np.ndarray:
    """logit[correct] − logit[wrong] at the last position, per batch row.   [b, p, V] -> [b]"""
    z = np.asarray(logits, dtype=np.float64)[:, -1]  # [b, V]
    return z[:, correct] - z[:, wrong]


def normalised(value, clean: float, corrupted: float):
    """(value − corrupted) / (clean − corrupted): 0 = the corrupted run, 1 = the clean run.

    Raises ValueError when clean == corrupted (the corruption changed nothing: no scale).
    """
    if clean == corrupted:
        raise ValueError(f"clean and corrupted are both {clean}: the corruption does not change the metric")
    return (np.asarray(value, dtype=np.float64) - corrupted) / (clean - corrupted)


def patch_resid_pre_hook(source: np.ndarray, pos: int):
    """A hook fn(act, hook) for blocks.L.hook_resid_pre [b, p, d]: position `pos` of every row
    takes the value from `source` [1, p, d] (the other run's cached activation); a copy is returned."""
    source = np.asarray(source)

    def hook(act, hook_point=None):
        out = act.copy()
        out[:, pos] = source[0, pos]  # [d], broadcast over the batch rows
        return out

    return hook


def effect_shares(values: np.ndarray, groups: dict, base: float = 0.0) -> dict:
    """Per row of a [rows, pos] patching result, the share of the total effect in each group.

    effect = |value − base| (base = the value of an unpatched run: 0 for normalised denoising,
    1 for normalised noising); NaN counts as no effect; a row without any effect gets shares 0.
    groups: {name: [positions]}  ->  {name: [rows]}
    """
    eff = np.abs(np.nan_to_num(np.asarray(values, dtype=np.float64) - base))  # [rows, pos]
    total = eff.sum(1)
    total[total == 0] = 1.0
    return {name: eff[:, list(pos)].sum(1) / total for name, pos in groups.items()}
