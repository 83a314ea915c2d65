"""Checks for lesson 05: each runs the student's function and the reference on the same inputs."""

from __future__ import annotations

import numpy as np

from minillm.course import shared_model
from minillm.hooks import HookPoint


def check_neuron_label_correlation(student, ref) -> None:
    rng = np.random.default_rng(5)
    n, m = 60, 9
    labels = (rng.random(n) < 0.3).astype(np.float64)
    acts = rng.normal(size=(n, m)).astype(np.float32)
    acts[:, 0] += 3 * labels  # a detector
    acts[:, 1] -= 2 * labels  # an anti-detector
    acts[:, 2] = 0.7  # a dead neuron: zero variance -> r = 0
    acts[:, 3] = 50 + 0.01 * labels + 0.001 * rng.normal(size=n)  # large offset, tiny signal
    got = np.asarray(student.neuron_label_correlation(acts.copy(), labels.copy()), dtype=np.float64)
    want = ref.neuron_label_correlation(acts, labels)
    assert got.shape == want.shape, (
        f"neuron_label_correlation should return one r per neuron, shape {want.shape}, got {got.shape}. "
        "Reduce over the samples (axis 0).")
    assert np.isfinite(got).all(), (
        "neuron_label_correlation returned nan/inf for neuron(s) "
        f"{np.flatnonzero(~np.isfinite(got)).tolist()}: "
        "neuron 2 never changes, so its variance is 0 — return r = 0 there instead of dividing by 0.")
    if np.allclose(got, want, atol=1e-4):
        return
    hint = ""
    cov = ((acts - acts.mean(0)) * (labels - labels.mean())[:, None]).mean(0)
    if np.allclose(got, cov, atol=1e-4):
        hint = " You returned the covariance: divide by both standard deviations."
    elif abs(got[3] - want[3]) > 0.1:
        hint = " Neuron 3 has a large offset: centre each neuron on its own mean before multiplying."
    raise AssertionError(f"neuron_label_correlation: expected {np.round(want, 3)}, got "
                         f"{np.round(got, 3)}.{hint}")


def check_mean_ablation_hook(student, ref) -> None:
    rng = np.random.default_rng(6)
    act = rng.normal(size=(2, 5, 16)).astype(np.float32)
    hook = HookPoint("blocks.22.mlp.hook_post", layer=22)
    for neuron, value in ((3, 1.7), (15, -0.25)):
        fn = student.mean_ablation_hook(neuron, value)
        assert callable(fn), f"mean_ablation_hook should return a function fn(act, hook), got {fn!r}"
        before = act.copy()
        out = fn(act, hook)
        want = ref.mean_ablation_hook(neuron, value)(before, hook)
        assert out is not None, ("your hook returned None: return the new activation array (the model keeps "
                                 "the old one when a hook returns None).")
        assert np.array_equal(act, before), (
            "your hook modified `act` in place: copy it first (out = act.copy()). A hook registered before "
            "yours (one that caches activations, for instance) may hold the same array and would then "
            "silently see the ablated values.")
        out = np.asarray(out)
        assert out.shape == want.shape, f"your hook returned shape {out.shape}, expected {want.shape}"
        others = np.arange(act.shape[-1]) != neuron
        assert np.array_equal(out[..., others], act[..., others]), (
            f"your hook changed neurons other than {neuron}: index the LAST axis only (out[..., neuron]).")
        assert np.allclose(out[..., neuron], value), (
            f"neuron {neuron} should be {value} at every position and batch row, got "
            f"{np.round(out[..., neuron], 3).tolist()}. Mean ablation replaces the activation (not adds, not "
            "multiplies).")


def check_output_readout(student, ref) -> None:
    model = shared_model()
    W_U, w_final = model.unembed.W_U, model.ln_final.w
    for layer, neuron in ((22, 1293), (15, 685)):
        w_out = model.blocks[layer].mlp.W_out[neuron]
        got = student.output_readout(w_out, w_final, W_U, 8)
        try:
            promoted, suppressed = ([int(i) for i in x] for x in got)
        except (TypeError, ValueError):
            raise AssertionError("output_readout should return (promoted ids, suppressed ids), got "
                                 f"{got!r}") from None
        want_p, want_s = ref.output_readout(w_out, w_final, W_U, 8)
        scores = (w_out * w_final) @ W_U
        names = lambda ids: [model.to_string([i]) for i in ids]  # noqa: E731
        for what, g, w in (("promoted", promoted, want_p), ("suppressed", suppressed, want_s)):
            if np.allclose(scores[g], scores[w], atol=1e-4) and len(g) == len(w):
                continue
            no_gain = w_out @ W_U
            hint = ""
            order = np.argsort(no_gain)
            if g == [int(i) for i in (order[::-1] if what == "promoted" else order)[:8]]:
                hint = " You left out the final norm's gain w_final: multiply w_out by it before W_U."
            elif g == list(reversed(w)) or g == (want_s if what == "promoted" else want_p):
                hint = " Check the sort order: promoted = largest scores first, suppressed = smallest first."
            raise AssertionError(f"output_readout for L{layer}N{neuron}, {what}: expected {names(w)}, got "
                                 f"{names(g)}.{hint}")


def check_token_set_mass(student, ref) -> None:
    rng = np.random.default_rng(7)
    V = 300
    logits = rng.normal(0, 3, size=(2, 4, V)).astype(np.float32)
    logits[0, 1, 5] = 120.0  # a very confident position: exp(120) overflows float32 and float64 alike
    ids = [5, 17, 42, 43]
    got = np.asarray(student.token_set_mass(logits.copy(), ids), dtype=np.float64)
    want = ref.token_set_mass(logits, ids)
    assert got.shape == want.shape, (
        f"token_set_mass: logits of shape {logits.shape} should give shape {want.shape}, got {got.shape}. "
        "Softmax over the LAST axis, then sum over the ids.")
    assert np.isfinite(got).all(), (
        "token_set_mass returned nan/inf: a logit of 120 overflows exp. Subtract the max logit (per "
        "position) before exp; softmax does not change.")
    if np.allclose(got, want, atol=1e-6):
        return
    hint = ""
    if np.allclose(got, logits[..., ids].sum(-1), atol=1e-3):
        hint = " You summed logits: turn them into probabilities with a softmax first."
    elif (got > 1 + 1e-6).any():
        hint = " A probability mass above 1: normalise over the vocabulary axis (-1)."
    raise AssertionError(f"token_set_mass: expected {np.round(want, 4).tolist()}, got "
                         f"{np.round(got, 4).tolist()}.{hint}")


CHECKS = [
    ("neuron_label_correlation", check_neuron_label_correlation),
    ("mean_ablation_hook", check_mean_ablation_hook),
    ("output_readout", check_output_readout),
    ("token_set_mass", check_token_set_mass),
]
