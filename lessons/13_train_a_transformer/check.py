"""Checks for lesson 13: each runs the student's function and the reference on the same inputs.

The grader passes (student, ref): the student's exercises module and the reference.
"""

from __future__ import annotations

import numpy as np


def _adam_inputs(seed: int):
    rng = np.random.default_rng(seed)
    shape = (3, 5)
    return (rng.normal(size=shape), rng.normal(size=shape), rng.normal(size=shape) * 0.1,
            np.abs(rng.normal(size=shape)) * 0.01)


def check_adam_step(student, ref) -> None:
    for seed, t, lr in ((0, 1, 1e-3), (1, 2, 1e-2), (2, 10, 3e-4), (3, 1000, 1e-3)):
        param, g, m, v = _adam_inputs(seed)
        before = [a.copy() for a in (param, g, m, v)]
        out = student.adam_step(param, g, m, v, t, lr=lr)
        assert out is not None and len(out) == 3, (
            "adam_step should return a tuple (new param, new m, new v)")
        for a, b, what in zip((param, g, m, v), before, ("param", "grad", "m", "v")):
            assert np.array_equal(a, b), (
                f"adam_step changed its input `{what}` in place: compute new arrays "
                "(m = beta1 * m + ...) instead of writing into the old ones (m *= ...).")
        want = ref.adam_step(param, g, m, v, t, lr=lr)
        names = ("new param", "new m", "new v")
        for got, exp, what in zip(out, want, names):
            got = np.asarray(got, np.float64)
            if np.allclose(got, exp, rtol=1e-10, atol=1e-14):
                continue
            hint = ""
            if what == "new param":
                m1, v1 = want[1], want[2]
                no_bias = param - lr * m1 / (np.sqrt(v1) + 1e-8)
                eps_in = param - lr * (m1 / (1 - 0.9**t)) / np.sqrt(v1 / (1 - 0.99**t) + 1e-8)
                if np.allclose(got, no_bias, rtol=1e-10):
                    hint = (" That is the update WITHOUT bias correction: divide m by (1 − β1^t) and v "
                            "by (1 − β2^t) first. At small t the moments are still near their zero start.")
                elif np.allclose(got, eps_in, rtol=1e-10):
                    hint = " ε goes outside the square root: √v̂ + ε."
                elif not np.isfinite(got).all():
                    hint = " Non-finite values: is t counted from 1 (1 − β^0 = 0)?"
            if what == "new v" and np.allclose(got, 0.99 * v + 0.01 * np.abs(g), rtol=1e-10):
                hint = " v is a running mean of the SQUARED gradient, g², not |g|."
            if what in ("new m", "new v") and np.allclose(got, want[1] if what == "new v" else want[2]):
                hint = " You swapped m and v (or β1 and β2) in the returned tuple."
            raise AssertionError(
                f"adam_step(t={t}, lr={lr}): {what} differs from the reference by up to "
                f"{np.abs(got - exp).max():.3g}.{hint}")


def check_finite_difference(student, ref) -> None:
    rng = np.random.default_rng(4)
    a = rng.normal(size=(4, 3))
    w = rng.normal(size=(4, 3))

    def loss() -> float:  # a smooth function of `a` with a known gradient: 3·w·a² + sin(a)
        return float((w * a**3).sum() + np.sin(a).sum())

    for index in ((0, 0), (2, 1), (3, 2)):
        before = a.copy()
        got = student.finite_difference(loss, a, index, h=1e-5)
        assert got is not None, "finite_difference returned None: return the slope, a float"
        assert np.array_equal(a, before), (
            f"after finite_difference(index={index}) the parameter is not what it was (max change "
            f"{np.abs(a - before).max():.3g}): restore param[index] = original exactly; do not subtract h "
            "back (x + h − h is not always x in floating point).")
        exact = 3 * w[index] * a[index] ** 2 + np.cos(a[index])
        want = ref.finite_difference(loss, a, index, h=1e-5)
        if abs(got - want) <= 1e-7 * max(1.0, abs(exact)):
            continue
        hint = ""
        x0 = a[index]
        a[index] = x0 + 1e-5
        up = loss()
        a[index] = x0
        one_sided = (up - loss()) / 1e-5
        if abs(got - one_sided) < 1e-9:
            hint = (" That is the one-sided difference (f(x+h) − f(x))/h: its error is O(h); the central "
                    "difference (f(x+h) − f(x−h))/2h has error O(h²).")
        elif abs(got - 2 * want) < 1e-6 * max(1, abs(want)):
            hint = " Divide by 2h, not h: the two points are 2h apart."
        raise AssertionError(f"finite_difference(index={index}): expected {want:.8f} (exact derivative "
                             f"{exact:.8f}), got {got:.8f}.{hint}")

    calls = []

    def failing() -> float:
        calls.append(1)
        if len(calls) == 2:
            raise FloatingPointError("the loss failed")
        return loss()

    before = a.copy()
    try:
        student.finite_difference(failing, a, (1, 1))
    except FloatingPointError:
        pass
    assert np.array_equal(a, before), (
        "when loss() raised, finite_difference left the parameter changed: restore it in a "
        "`finally:` block so a failed evaluation cannot leave the model edited.")


def check_per_position_loss(student, ref) -> None:
    rng = np.random.default_rng(5)
    b, p, V = 3, 6, 11
    tokens = rng.integers(0, V, size=(b, p))
    for scale, what in ((1.0, "random logits"), (300.0, "logits in the hundreds")):
        logits = (rng.normal(size=(b, p, V)) * scale).astype(np.float32)
        got = student.per_position_loss(logits, tokens)
        assert got is not None, "per_position_loss returned None"
        got = np.asarray(got, np.float64)
        want = ref.per_position_loss(logits, tokens)
        assert got.shape == want.shape, (
            f"per_position_loss ({what}): expected shape {want.shape} = [b, p-1] (the last position "
            f"predicts a token we do not have), got {got.shape}.")
        assert np.isfinite(got).all(), (
            f"per_position_loss ({what}) is not finite: subtract each row's max before exp().")
        if np.allclose(got, want, rtol=1e-6, atol=1e-6):
            continue
        hint = ""
        z = logits.astype(np.float64)
        lse = np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1)) + z.max(-1)
        same_pos = lse[:, :-1] - np.take_along_axis(z[:, :-1], tokens[:, :-1, None], -1)[..., 0]
        late = lse[:, 1:] - np.take_along_axis(z[:, 1:], tokens[:, 1:, None], -1)[..., 0]
        if np.allclose(got, same_pos, rtol=1e-6):
            hint = (" Off by one: the logits at position i predict the NEXT token, tokens[:, i + 1], "
                    "not tokens[:, i].")
        elif np.allclose(got, late, rtol=1e-6):
            hint = " Off by one: use logits[:, :-1] (positions 0 .. p-2) against tokens[:, 1:]."
        elif np.allclose(got, -want, rtol=1e-6):
            hint = " The sign: a loss is −log p, a positive number."
        raise AssertionError(f"per_position_loss ({what}): max difference {np.abs(got - want).max():.3g} "
                             f"from the reference.{hint}")


CHECKS = [
    ("adam_step", check_adam_step),
    ("finite_difference", check_finite_difference),
    ("per_position_loss", check_per_position_loss),
]
