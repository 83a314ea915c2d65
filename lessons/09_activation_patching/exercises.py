"""Lesson 09 exercises: activation patching. Fill in each function, then run

    minillm lesson check 9

Shapes: b = batch, p = positions, d = d_model, V = vocabulary.
"""

from __future__ import annotations

import numpy as np


def logit_difference(logits: np.ndarray, correct: int, wrong: int) -> np.ndarray:
    """Exercise 1 (easy, 5 min). The IOI metric: logit[correct] − logit[wrong] at the LAST position, per batch row.

    logits [b, p, V]; correct, wrong: token ids. -> [b] float64.
    (It equals log p(correct) − log p(wrong): the softmax normaliser cancels.)
    """
    raise NotImplementedError("hint: z = logits[:, -1].astype(np.float64); return z[:, correct] - z[:, wrong]")


def normalised(value, clean: float, corrupted: float):
    """Exercise 2 (easy, 10 min). The normalised patching metric: 0 = the corrupted run's value, 1 = the clean run's.

    value: a number or an array (one per patched run). Raise ValueError when
    clean == corrupted: then the corruption changed nothing and there is no scale.
    """
    raise NotImplementedError("hint: (value - corrupted) / (clean - corrupted), as float64; check "
                              "clean == corrupted first")


def patch_resid_pre_hook(source: np.ndarray, pos: int):
    """Exercise 3 (medium, 20 min). Return a hook function fn(act, hook) for blocks.L.hook_resid_pre (act [b, p, d]).

    It returns a COPY of act whose position `pos` (in every batch row) holds the other
    run's activation source[0, pos] (source [1, p, d] from run_with_cache). This is one
    cell of an activation-patching sweep: layer L, position pos.
    """
    raise NotImplementedError("hint: def fn(act, hook): out = act.copy(); out[:, pos] = source[0, pos]; "
                              "return out — and return fn")


def effect_shares(values: np.ndarray, groups: dict, base: float = 0.0) -> dict:
    """Exercise 4 (medium, 15 min). Where does the effect sit? For each row (layer) of a [rows, pos] patching result:

        effect[r, q] = |values[r, q] − base|     (base: the value of an unpatched run —
                                                  0 for normalised denoising, 1 for noising)
        share[name][r] = Σ_{q in groups[name]} effect[r, q] / Σ_q effect[r, q]

    Shares are over ALL positions (groups need not cover them). NaN counts as no effect;
    a row with no effect at all gets 0 for every group. -> {name: array [rows]}
    """
    raise NotImplementedError("hint: eff = np.abs(np.nan_to_num(values - base)); total = eff.sum(1) "
                              "(replace zeros by 1); {g: eff[:, list(pos)].sum(1) / total for g, pos in ...}")
