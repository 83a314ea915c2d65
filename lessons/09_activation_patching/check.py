"""Checks for lesson 09: each runs the student's function and the reference on the same inputs.

The real-model parts use SmolLM2 on the lesson's IOI pair.
"""

from __future__ import annotations

import functools

import numpy as np

from minillm.course import shared_model
from minillm.hooks import HookPoint
from minillm.interp import patching as P
from minillm.interp.results import LabelledArray

CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPTED = "When Mary and John went to the store, Mary gave a drink to"


@functools.lru_cache(maxsize=1)
def _ioi() -> dict:
    """Tokens, logits and the clean resid_pre cache of the IOI pair on SmolLM2."""
    model = shared_model()
    clean, corrupted = model.to_tokens(CLEAN), model.to_tokens(CORRUPTED)
    clean_logits, cache = model.run_with_cache(clean, names_filter=lambda n: n.endswith("hook_resid_pre"))
    return dict(clean=clean, corrupted=corrupted, clean_logits=clean_logits, cache=cache,
                corrupted_logits=model(corrupted), mary=model.to_single_token(" Mary"),
                john=model.to_single_token(" John"))


# --- exercise 1 ----------------------------------------------------------------------------------


def check_logit_difference(student, ref) -> None:
    rng = np.random.default_rng(9)
    logits = (rng.normal(size=(3, 5, 40)) * 4).astype(np.float32)
    correct, wrong = 7, 11
    got = student.logit_difference(logits.copy(), correct, wrong)
    want = ref.logit_difference(logits, correct, wrong)
    assert got is not None, "logit_difference returned None: return one number per batch row"
    got = np.asarray(got, dtype=np.float64)
    assert got.shape == want.shape, (
        f"logit_difference: expected shape {want.shape} (one value per batch row), got {got.shape}. "
        "Read the last position only: logits[:, -1].")
    if not np.allclose(got, want, atol=1e-5):
        z = logits.astype(np.float64)
        p = np.exp(z[:, -1] - z[:, -1].max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        hint = ""
        if np.allclose(got, -want, atol=1e-5):
            hint = (" The sign is reversed: correct minus wrong (positive = the model prefers the clean "
                    "answer).")
        elif np.allclose(got, z[:, 0, correct] - z[:, 0, wrong], atol=1e-5):
            hint = " You read position 0; the prediction of the next token is at the last position."
        elif np.allclose(got, (z[..., correct] - z[..., wrong]).mean(1), atol=1e-5):
            hint = " You averaged over positions; use the last position only."
        elif np.allclose(got, p[:, correct] - p[:, wrong], atol=1e-5):
            hint = (" That is a difference of probabilities; the metric is a difference of logits "
                    "(= of log-probabilities), which does not saturate near 0 and 1.")
        raise AssertionError(f"logit_difference: expected {np.round(want, 4).tolist()}, got "
                             f"{np.round(got, 4).tolist()}.{hint}")
    r = _ioi()
    got = float(np.asarray(student.logit_difference(r["clean_logits"], r["mary"], r["john"]))[0])
    want = float(ref.logit_difference(r["clean_logits"], r["mary"], r["john"])[0])
    assert abs(got - want) < 1e-4, (f"logit_difference on SmolLM2's clean IOI prompt: expected {want:+.4f} "
                                    f"(' Mary' ahead of ' John'), got {got:+.4f}.")


# --- exercise 2 ----------------------------------------------------------------------------------


def check_normalised(student, ref) -> None:
    cases = [(6.12, 6.12, -5.49, "the clean value"), (-5.49, 6.12, -5.49, "the corrupted value"),
             (0.315, 6.12, -5.49, "halfway"), (2.0, -2.0, 3.0, "clean below corrupted")]
    for value, clean, corrupted, what in cases:
        got = student.normalised(value, clean, corrupted)
        want = float(ref.normalised(value, clean, corrupted))
        assert got is not None, "normalised returned None: return the normalised value"
        got = float(np.asarray(got))
        if abs(got - want) < 1e-9:
            continue
        hint = ""
        if abs(got - (1 - want)) < 1e-9:
            hint = " You measured from the clean end: the corrupted run must give 0 and the clean run 1."
        elif abs(got - value / clean) < 1e-9 if clean else False:
            hint = " Dividing by the clean value ignores where the corrupted run starts: subtract it first."
        elif abs(got - (value - corrupted / (clean - corrupted))) < 1e-9:
            hint = " Operator precedence: write (value - corrupted) / (clean - corrupted)."
        raise AssertionError(f"normalised({value}, clean={clean}, corrupted={corrupted}) [{what}]: expected "
                             f"{want:.4f}, got {got:.4f}.{hint}")
    values = np.array([6.12, -5.49, 0.0, 7.0])
    got = np.asarray(student.normalised(values.copy(), 6.12, -5.49), dtype=np.float64)
    want = ref.normalised(values, 6.12, -5.49)
    assert got.shape == want.shape and np.allclose(got, want, atol=1e-9), (
        f"normalised on an array of values (one per patched run): expected {np.round(want, 4).tolist()}, got "
        f"{np.round(got, 4).tolist()}. Use array arithmetic, not float(value). Values above 1 are allowed: "
        "a patch can overshoot the clean run.")
    try:
        student.normalised(1.0, 2.5, 2.5)
    except ValueError:
        pass
    except ZeroDivisionError:
        raise AssertionError("normalised(1.0, clean=2.5, corrupted=2.5) raised ZeroDivisionError; check "
                             "clean == corrupted first and raise ValueError with a message: a corruption "
                             "that does not change the metric gives no scale.") from None
    else:
        raise AssertionError("normalised(1.0, clean=2.5, corrupted=2.5) should raise ValueError: when "
                             "the corruption does not change the metric there is nothing to normalise (and "
                             "a nearly equal pair, like swapping the first two names, makes every value "
                             "noisy).")


# --- exercise 3 ----------------------------------------------------------------------------------


def check_patch_resid_pre_hook(student, ref) -> None:
    rng = np.random.default_rng(10)
    act = rng.normal(size=(3, 6, 8)).astype(np.float32)
    source = rng.normal(size=(1, 6, 8)).astype(np.float32)
    point = HookPoint("blocks.4.hook_resid_pre", layer=4)
    for pos in (2, -1):
        fn = student.patch_resid_pre_hook(source.copy(), pos)
        assert callable(fn), f"patch_resid_pre_hook should return a function fn(act, hook), got {fn!r}"
        before = act.copy()
        out = fn(act, point)
        want = ref.patch_resid_pre_hook(source, pos)(before, point)
        assert out is not None, ("your hook returned None: return the patched activation (the model keeps "
                                 "the old one when a hook returns None).")
        assert np.array_equal(act, before), (
            "your hook modified `act` in place: copy it first (out = act.copy()); a cache taken at the same "
            "hook would otherwise hold the patched values.")
        out = np.asarray(out)
        assert out.shape == want.shape, f"your hook returned shape {out.shape}, expected {want.shape}"
        if np.array_equal(out, want):
            continue
        hint = ""
        if np.array_equal(out, np.broadcast_to(source, act.shape)):
            hint = " You replaced every position; a cell of the sweep patches ONE position: out[:, pos]."
        elif np.array_equal(out[0], want[0]) and not np.array_equal(out[1:], want[1:]):
            hint = " Only batch row 0 was patched: write out[:, pos] so every row gets it."
        elif np.array_equal(out, act):
            hint = " Nothing changed: assign into the copy, out[:, pos] = source[0, pos]."
        else:
            p = act.shape[1]
            for shift in (-1, 1):  # the right slot, filled from the neighbouring source position
                src_pos = (pos % p) + shift
                if 0 <= src_pos < p:
                    shifted = act.copy()
                    shifted[:, pos] = source[0, src_pos]
                    if np.array_equal(out, shifted):
                        hint = (f" Off by one in the SOURCE position: you copied source[0, {src_pos}] into "
                                f"position {pos % p}. Take the other run's activation at the same position, "
                                "source[0, pos].")
            for shift in (-1, 1):  # the right source, written into the neighbouring slot
                dst = (pos % p) + shift
                if 0 <= dst < p:
                    moved = act.copy()
                    moved[:, dst] = source[0, pos]
                    if np.array_equal(out, moved):
                        hint = (f" Off by one in the patched position: you wrote position {dst}; patch position "
                                f"{pos % p} itself, out[:, pos].")
        raise AssertionError(f"patch_resid_pre_hook(pos={pos}): the patched activation differs from the "
                             f"expected one at {np.argwhere(out != want)[:3].tolist()} (first 3).{hint}")

    # one cell of the real sweep: clean resid_pre at (layer 16, position 9: ' John') into the corrupted run
    model, r = shared_model(), _ioi()
    name = "blocks.16.hook_resid_pre"
    src = r["cache"][name]

    def ld(logits):
        return float(ref.logit_difference(logits, r["mary"], r["john"])[0])

    got = ld(model.run_with_hooks(r["corrupted"], [(name, student.patch_resid_pre_hook(src, 9))]))
    want = ld(model.run_with_hooks(r["corrupted"], [(name, ref.patch_resid_pre_hook(src, 9))]))
    assert abs(got - want) < 1e-3, (
        f"with your hook at {name}, position 9, the corrupted prompt's logit difference is {got:+.3f}; "
        f"expected {want:+.3f} (the clean value is {ld(r['clean_logits']):+.3f}: the whole answer is carried "
        "by the second name's position at layer 16).")


# --- exercise 4 ----------------------------------------------------------------------------------


def check_effect_shares(student, ref) -> None:
    rng = np.random.default_rng(11)
    values = rng.normal(size=(5, 6)) * 0.3
    values[1, 3] = np.nan  # an unmeasured cell
    values[2] = 0.0  # a row without effect
    values[3, 2], values[3, 5] = 0.9, -0.4  # opposite signs: both are effects
    groups = {"name": [2], "end": [5], "both": [2, 5]}
    for base, direction in ((0.0, "denoising"), (1.0, "noising")):
        vals = values + base
        vals[2] = base  # the row without effect stays at the unpatched value
        got = student.effect_shares(vals.copy(), groups, base)
        want = ref.effect_shares(vals, groups, base)
        lab = LabelledArray(vals, ("layer", "pos"), ([str(i) for i in range(5)], [str(i) for i in range(6)]),
                            meta=dict(normalize=True, direction=direction))
        tool = P.effect_shares(lab, groups)
        assert all(np.allclose(tool[g], want[g]) for g in groups), "internal: reference disagrees with tool"
        assert isinstance(got, dict) and set(got) == set(groups), (
            f"effect_shares should return a dict with one entry per group {sorted(groups)}, got "
            f"{sorted(got) if isinstance(got, dict) else type(got).__name__}")
        for g in groups:
            gv = np.asarray(got[g], dtype=np.float64)
            assert gv.shape == want[g].shape, (f"effect_shares[{g!r}]: expected one share per row, shape "
                                               f"{want[g].shape}, got {gv.shape}")
            assert np.isfinite(gv).all(), (
                f"effect_shares[{g!r}] ({direction}) has nan/inf {gv.tolist()}: NaN cells count as no effect "
                "(np.nan_to_num), and a row whose total effect is 0 must give share 0, not 0/0.")
            if np.allclose(gv, want[g], atol=1e-9):
                continue
            hint = ""
            raw = np.nan_to_num(vals - base)
            signed = raw[:, groups[g]].sum(1) / np.where(raw.sum(1) == 0, 1, raw.sum(1))
            if base and np.allclose(gv, ref.effect_shares(vals, groups, 0.0)[g], atol=1e-9):
                hint = (" For noising the unpatched value is 1 (base=1.0): the effect is |value − 1|, not "
                        "|value|.")
            elif np.allclose(gv, signed, atol=1e-9):
                hint = " Take |value − base|: effects of opposite signs must not cancel."
            raise AssertionError(f"effect_shares[{g!r}] ({direction}, base={base}): expected "
                                 f"{np.round(want[g], 4).tolist()}, got {np.round(gv, 4).tolist()}.{hint}")


CHECKS = [
    ("logit_difference", check_logit_difference),
    ("normalised", check_normalised),
    ("patch_resid_pre_hook", check_patch_resid_pre_hook),
    ("effect_shares", check_effect_shares),
]
