"""Checks for lesson 07: each runs the student's function and the reference on the same inputs.

The real-model parts use SmolLM2's MLP activations at the last position of
"It was a dark and stormy" (the study's prompt).
"""

from __future__ import annotations

import functools

import numpy as np

from minillm.course import shared_model
from minillm.hooks import HookPoint

PROMPT = "It was a dark and stormy"
TARGET = " night"


@functools.lru_cache(maxsize=1)
def _acts() -> tuple[np.ndarray, np.ndarray]:
    """(tokens [1, p], hook_post at the last position of every layer [L, m]) on the real model."""
    model = shared_model()
    toks = model.to_tokens(PROMPT)
    _, cache = model.run_with_cache(toks, names_filter=lambda n: n.endswith("mlp.hook_post"))
    post = np.stack([cache[f"blocks.{l}.mlp.hook_post"][0, -1] for l in range(model.cfg.n_layers)])
    return toks, post


def _log_p_target(logits: np.ndarray) -> float:
    z = np.asarray(logits, np.float64)[0, -1]
    zmax = z.max()
    return float(z[shared_model().to_single_token(TARGET)] - zmax - np.log(np.exp(z - zmax).sum()))


# --- exercise 1 ----------------------------------------------------------------------------------


def _top_p_verdict(student, ref, acts, rate, by, what) -> None:
    got = student.top_p_neurons(acts.copy(), rate, by)
    want = ref.top_p_neurons(acts, rate, by)
    if got is None:
        raise AssertionError("top_p_neurons returned None: return the array of neuron indices")
    got = np.asarray(got).astype(np.int64).ravel()
    m = acts.shape[0]
    if len(got) != len(want):
        hint = ""
        if len(got) == int(round(rate / 100 * m)) and int(round(rate / 100 * m)) != len(want):
            hint = (" You rounded to the nearest integer; the study takes the floor (and at least one "
                    "neuron): max(1, floor(rate / 100 · m)).")
        elif len(got) == 0:
            hint = " No neurons: the study replaces at least one neuron at any rate above 0."
        elif len(got) == min(m, int(rate * m)):
            hint = " rate is a percentage: 10 means 10 %, so k = rate / 100 · m."
        raise AssertionError(f"top_p_neurons({what}, rate={rate}%, by={by!r}): expected "
                             f"k = max(1, floor({rate}/100 · {m})) = {len(want)} indices, got {len(got)}.{hint}")
    if np.array_equal(got, want):
        return
    hint = ""
    score = acts.astype(np.float64) if by == "value" else np.abs(acts - np.median(acts))
    if np.array_equal(np.sort(got), np.sort(want)):
        hint = (" You picked the right neurons in the wrong order: most active first, and ties keep the "
                "lower index first (np.argsort(-score, kind='stable')).")
    elif np.array_equal(got, np.argsort(score, kind="stable")[: len(want)]):
        hint = " These are the LEAST active neurons: sort by -score (or reverse a descending sort)."
    elif by == "value" and np.array_equal(got, np.argsort(-np.abs(acts), kind="stable")[: len(want)]):
        hint = (" You ranked by |a|, but by='value' asks for the SIGNED activation: the study replaces the "
                "most positive neurons and leaves large negative ones alone. That difference is the point "
                "of this lesson (section 5 compares the two rankings).")
    elif by == "value" and np.array_equal(got, np.argsort(-np.abs(acts - np.median(acts)),
                                                          kind="stable")[: len(want)]):
        hint = " That is by='magnitude' (|a − median|); by='value' ranks by the signed activation itself."
    elif by == "magnitude" and np.array_equal(got, np.argsort(-np.abs(acts), kind="stable")[: len(want)]):
        hint = (" You ranked by |a|; rank by |a − median(a)|: the neurons that replacement moves the most "
                "are the ones farthest from the value they get.")
    elif by == "magnitude" and np.array_equal(got, np.argsort(-acts, kind="stable")[: len(want)]):
        hint = (" by='magnitude' ranks by distance from the median, |a − median(a)|: a large negative "
                "activation is far from the median too.")
    raise AssertionError(f"top_p_neurons({what}, rate={rate}%, by={by!r}): expected indices "
                         f"{want[:10].tolist()}{' ...' if len(want) > 10 else ''}, got "
                         f"{got[:10].tolist()}{' ...' if len(got) > 10 else ''}.{hint}")


def check_top_p_neurons(student, ref) -> None:
    rng = np.random.default_rng(7)
    ties = np.array([1, 3, 3, 0, 3, -5, 2, 2, 0.5, -1, 4, 3, 0, 0, -2, 1, 1, 2, -6, 0.25], np.float32)
    shifted = (rng.normal(size=40) + 5).astype(np.float32)  # median far from 0
    shifted[[3, 17]] = [-3.0, -2.5]  # far below the median: magnitude ranks them high
    around2 = (rng.normal(size=40) + 2).astype(np.float32)
    around2[[5, 30]] = [-4.0, -3.5]  # |a| and |a − median| rank these differently
    for acts, rate, by, what in (
        (ties, 25, "value", "20 values with ties"),
        (ties, 10, "value", "20 values with ties"),
        (shifted, 12.5, "value", "40 values around 5"),
        (shifted, 12.5, "magnitude", "40 values around 5"),
        (around2, 10, "magnitude", "40 values around 2"),
        (ties, 35, "magnitude", "20 values with ties"),
    ):
        _top_p_verdict(student, ref, acts, rate, by, what)
    _, post = _acts()
    for layer, rate, by in ((0, 0.2, "value"), (0, 10, "value"), (21, 3.5, "value"), (0, 0.5, "magnitude"),
                            (28, 90, "magnitude")):
        _top_p_verdict(student, ref, post[layer], rate, by, f"SmolLM2 layer {layer}")


# --- exercise 2 ----------------------------------------------------------------------------------


def check_median_replacement_hook(student, ref) -> None:
    rng = np.random.default_rng(8)
    act = rng.normal(size=(2, 5, 16)).astype(np.float32)
    point = HookPoint("blocks.3.mlp.hook_post", layer=3)
    for neurons, median, pos in (([3, 7, 11], 0.25, -1), ([0, 15], -0.125, 2)):
        fn = student.median_replacement_hook(list(neurons), median, pos)
        assert callable(fn), f"median_replacement_hook should return a function fn(act, hook), got {fn!r}"
        before = act.copy()
        out = fn(act, point)
        want = ref.median_replacement_hook(neurons, median, pos)(before, point)
        assert out is not None, ("your hook returned None: return the new activation array (the model "
                                 "keeps the old one when a hook returns None).")
        assert np.array_equal(act, before), (
            "your hook modified `act` in place: copy it first (out = act.copy()). The model may cache the "
            "same array, and the check of the unedited run would then see the replaced values.")
        out = np.asarray(out)
        assert out.shape == want.shape, f"your hook returned shape {out.shape}, expected {want.shape}"
        if np.array_equal(out, want):
            continue
        changed = np.argwhere(out != act)
        should = np.argwhere(want != act)
        hint = ""
        if not changed.size:
            hint = " Nothing changed: assign into the copy, out[:, pos, neurons] = median."
        elif (out[:, :, neurons] == np.float32(median)).all():
            hint = (f" You replaced the neurons at EVERY position; the study replaces them at position {pos} "
                    "only (out[:, pos, neurons]).")
        elif (out[0, pos, neurons] == np.float32(median)).all() and not (out[1, pos, neurons] ==
                                                                           np.float32(median)).all():
            hint = " Only batch row 0 changed: use ':' for the batch axis so every row is edited."
        raise AssertionError(
            f"median_replacement_hook(neurons={neurons}, median={median}, pos={pos}): expected "
            f"{len(should)} changed entries at {should[:4].tolist()}..., got {len(changed)} at "
            f"{changed[:4].tolist()}.{hint}")

    # the real model: layer 0, the top 10 % by value replaced by the layer's median
    model = shared_model()
    toks, post = _acts()
    neurons = ref.top_p_neurons(post[0], 10)
    median = float(np.median(post[0]))
    name = "blocks.0.mlp.hook_post"
    hook = student.median_replacement_hook(neurons, median)
    got = _log_p_target(model.run_with_hooks(toks, [(name, hook)]))
    want = _log_p_target(model.run_with_hooks(toks, [(name, ref.median_replacement_hook(neurons, median))]))
    assert abs(got - want) < 1e-4, (
        f"with your hook on {name} (top 10 % replaced at the last position) SmolLM2 gives log p({TARGET!r}) "
        f"= {got:.4f}, expected {want:.4f}. The synthetic cases passed, so look at how the neuron indices "
        "arrive: an int array of 153 indices.")


# --- exercise 3 ----------------------------------------------------------------------------------


def _deviation_verdict(student, ref, edited, base, target, measure, what, extra="") -> None:
    got = student.deviation(edited.copy(), base.copy(), target, measure)
    want = ref.deviation(edited, base, target, measure)
    assert got is not None, "deviation returned None: return one number per batch row"
    got = np.asarray(got, dtype=np.float64)
    assert got.shape == want.shape, (
        f"deviation ({what}, measure={measure!r}): expected shape {want.shape} (one value per batch row), "
        f"got {got.shape}. Read the LAST position only: logits[:, -1].")
    assert np.isfinite(got).all(), (
        f"deviation ({what}, measure={measure!r}) returned {got.tolist()}: exp() of large logits overflowed. "
        "Subtract the row's max before exponentiating: logsumexp(z) = max + log(sum(exp(z − max))).")
    if np.allclose(got, want, atol=1e-6, rtol=1e-6):
        return
    hint = extra
    z = lambda x: np.asarray(x, np.float64)  # noqa: E731
    if np.allclose(got, -want, atol=1e-6):
        hint = " Your sign is reversed: the deviation is edited − base (negative = the target lost ground)."
    elif measure == "log_prob" and np.allclose(got, ref.deviation(edited, base, target, "logit"), atol=1e-6):
        hint = (" That is the change of the raw logit. log p = z − logsumexp(z): subtract the "
                "log-normaliser, which moves when every logit moves.")
    elif np.allclose(got, z(edited)[:, 0, target] - z(base)[:, 0, target], atol=1e-6):
        hint = " You read position 0; the next-token prediction is at the last position, logits[:, -1]."
    elif measure == "log_prob" and not hint:
        hint = " Check log p = z[target] − logsumexp(z) (natural log) for each row, then edited − base."
    raise AssertionError(f"deviation ({what}, measure={measure!r}): expected {np.round(want, 5).tolist()}, "
                         f"got {np.round(got, 5).tolist()}.{hint}")


def check_deviation(student, ref) -> None:
    rng = np.random.default_rng(9)
    b, p, V, t = 3, 4, 50, 17
    base = rng.normal(size=(b, p, V)).astype(np.float32) * 3
    edited = base + rng.normal(size=(b, p, V)).astype(np.float32)
    for measure in ("logit", "log_prob"):
        _deviation_verdict(student, ref, edited, base, t, measure, "random logits")
    shifted = base + np.float32(7.0)  # every logit up by 7: the distribution does not change
    _deviation_verdict(student, ref, shifted, base, t, "logit", "every logit + 7")
    _deviation_verdict(student, ref, shifted, base, t, "log_prob", "every logit + 7",
                       " Adding 7 to every logit leaves the softmax unchanged, so log p moves by exactly 0.")
    big = base * 60 + 400  # logits in the hundreds: exp() overflows in float32 and float64
    _deviation_verdict(student, ref, big + edited - base, big, t, "log_prob", "logits in the hundreds")

    # the real model: layer 28, top 90 % replaced — its raw logit rises, its probability falls
    model = shared_model()
    toks, post = _acts()
    target = model.to_single_token(TARGET)
    hook = ref.median_replacement_hook(ref.top_p_neurons(post[28], 90), float(np.median(post[28])))
    base_logits = model(toks)
    edited_logits = model.run_with_hooks(toks, [("blocks.28.mlp.hook_post", hook)])
    for measure in ("logit", "log_prob"):
        _deviation_verdict(student, ref, edited_logits, base_logits, target, measure,
                           "SmolLM2, layer 28, 90 % replaced")


CHECKS = [
    ("top_p_neurons", check_top_p_neurons),
    ("median_replacement_hook", check_median_replacement_hook),
    ("deviation", check_deviation),
]
