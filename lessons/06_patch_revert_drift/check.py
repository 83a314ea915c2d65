"""Checks for lesson 06: each runs the student's function and the reference on the same inputs."""

from __future__ import annotations

import numpy as np

from minillm.edit import drift


def _ulp_cases():
    f32, f64 = np.float32, np.float64
    x = np.array([1.0, 0.04, -3.5, 1e-30, 7.0, 2.0, 0.0, 1e-45], f32)
    cases = [
        ("identical float32", x, x.copy()),
        ("one step up (np.nextafter)", x, np.nextafter(x, f32(np.inf))),
        ("+0.0 and -0.0", np.array([0.0], f32), np.array([-0.0], f32)),
        ("across zero: smallest subnormal and its negative", np.array([1e-45], f32), np.array([-1e-45], f32)),
        ("across a binade: 2.0 and the float just below it", np.array([2.0], f32),
         np.nextafter(np.array([2.0], f32), f32(0))),
        ("far apart: 1.0 and 2.0 (2^23 floats between)", np.array([1.0], f32), np.array([2.0], f32)),
        ("negative numbers", np.array([-1.0, -5.0], f32), np.array([-1.0000001, -5.0000005], f32)),
        ("float64", np.array([1.0, -2.0, 0.1], f64), np.nextafter(np.array([1.0, -2.0, 0.1], f64), 10.0)),
        ("real scale-and-inverse weights", (x * f32(0.04)) * f32(25), x),
    ]
    return cases


def check_ulp_distance(student, ref) -> None:
    for what, a, b in _ulp_cases():
        got = np.asarray(student.ulp_distance(a.copy(), b.copy()))
        want = ref.ulp_distance(a, b)
        assert np.array_equal(want, drift.ulp_distance(a, b)), "internal: reference disagrees with minillm"
        assert got.shape == want.shape, f"ulp_distance({what}): expected shape {want.shape}, got {got.shape}"
        if np.array_equal(got.astype(np.int64), want):
            continue
        hint = ""
        if "zero" in what or "+0.0" in what:
            hint = (" Negative floats need care: as raw integers their order is reversed and -0.0 is "
                    "INT_MIN. Map a negative integer i to INT_MIN - i before subtracting.")
        elif "binade" in what or "far" in what:
            hint = (" Distances must count floats, not divide by np.spacing: the spacing doubles at each "
                    "power of 2.")
        elif "float64" in what:
            hint = " float64 needs a 64-bit integer view (np.int64), float32 a 32-bit one."
        raise AssertionError(f"ulp_distance for {what}: expected {want.tolist()}, got {got.tolist()}.{hint}")


def check_scale_with_undo(student, ref) -> None:
    rng = np.random.default_rng(8)
    for index, factor in ((3, 0.04), ((slice(None), 2), 25.0), ((1, slice(0, 4)), 0.0)):
        W = rng.normal(size=(5, 6)).astype(np.float32)
        before = W.copy()
        saved = student.scale_with_undo(W, index, factor)
        want_W = before.copy()
        ref.scale_with_undo(want_W, index, factor)
        assert saved is not None, "scale_with_undo should return the saved copy of W[index]"
        saved = np.asarray(saved)
        assert np.array_equal(saved, before[index]), (
            f"scale_with_undo(index={index!r}): the returned copy should hold the values from BEFORE the "
            f"edit, {before[index].tolist()}, got {saved.tolist()}. Did you save a view (W[index]) "
            "instead of a copy? A view shows the edited values once W changes.")
        assert not np.shares_memory(saved, W), (
            "scale_with_undo returned a view into W: a later edit of W would change your 'saved' bytes. "
            "Copy it (np.array(W[index], copy=True)).")
        assert W.dtype == np.float32, f"W changed dtype to {W.dtype}: write into it, do not replace it"
        if not np.array_equal(W, want_W):
            hint = ""
            if np.array_equal(W, before):
                hint = " W did not change: scale it IN PLACE (W[index] = W[index] * f), the caller's array."
            raise AssertionError(f"scale_with_undo(index={index!r}, factor={factor}): W afterwards should be "
                                 f"{want_W[index].tolist()} at the index, got {W[index].tolist()}.{hint}")


def check_undo(student, ref) -> None:
    rng = np.random.default_rng(9)
    for index, factor in ((3, 0.04), ((slice(None), 2), 25.0), ((1, slice(0, 4)), 0.0)):
        W = rng.normal(size=(5, 6)).astype(np.float32)
        W[0, 0] = -0.0  # a signed zero must come back as -0.0
        before = W.copy()
        saved = ref.scale_with_undo(W, index, factor)
        out = student.undo(W, index, saved)
        if out is not None and not np.array_equal(W.view(np.uint32), before.view(np.uint32)):
            raise AssertionError("undo should write into W in place and return None; you returned a new "
                                 "array and left the caller's W edited. Assign into the slice: "
                                 "W[index] = saved.")
        assert np.array_equal(W.view(np.uint32), before.view(np.uint32)), (
            f"undo(index={index!r}) after ×{factor}: W should be back to its original bytes. Got "
            f"{W[index].tolist()}, expected {before[index].tolist()}. "
            + ("Multiplying by 1/factor is the INVERSE revert (and impossible after ×0): write the saved "
               "copy back instead." if factor else "After ×0 only the saved copy can restore the values."))


def check_per_layer_relative_drift(student, ref) -> None:
    rng = np.random.default_rng(10)
    L1, p, d = 9, 4, 16
    clean = (rng.normal(size=(L1, p, d)) * np.geomspace(1, 100, L1)[:, None, None]).astype(np.float32)
    run = clean.copy()
    run[4:] += (rng.normal(size=(L1 - 4, p, d)) * 1e-3).astype(np.float32)  # drift from row 4 on
    run[6:, 2] += 0.5  # one position drifts much more
    got = np.asarray(student.per_layer_relative_drift(clean.copy(), run.copy()), dtype=np.float64)
    want = ref.per_layer_relative_drift(clean, run)
    assert got.shape == want.shape, (
        f"per_layer_relative_drift should return one value per layer row, shape {want.shape}, got "
        f"{got.shape}. "
        "Norm over d (axis=-1), then max over positions.")
    assert np.all(got[:4] == 0), (
        f"rows 0-3 are identical in both runs, so their drift must be exactly 0, got {got[:4].tolist()}. "
        "(A symlog plot shows exact zeros; do not add an epsilon to the difference.)")
    if np.allclose(got, want, rtol=1e-5):
        return
    rel = np.linalg.norm((run - clean).astype(np.float64), axis=-1) / np.linalg.norm(clean.astype(np.float64),
                                                                                     axis=-1)
    hint = ""
    if np.allclose(got, rel.mean(-1), rtol=1e-5):
        hint = " You averaged over positions; take the max (the worst position)."
    elif np.allclose(got, np.linalg.norm((run - clean).astype(np.float64), axis=-1).max(-1), rtol=1e-5):
        hint = " You returned the absolute difference: divide by ‖clean‖ per position."
    raise AssertionError(f"per_layer_relative_drift: expected {np.array2string(want, precision=4)}, got "
                         f"{np.array2string(got, precision=4)}.{hint}")


CHECKS = [
    ("ulp_distance", check_ulp_distance),
    ("scale_with_undo", check_scale_with_undo),
    ("undo", check_undo),
    ("per_layer_relative_drift", check_per_layer_relative_drift),
]
