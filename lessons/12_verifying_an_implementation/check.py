"""Checks for lesson 12: compare two implementations hook by hook, localise the bug, fix it.

The reference is minillm's own run of SmolLM2 (float32, the shared model), the candidate is
the provided port.py on the same tokens. Each check feeds your function real activations
(and, where a special case matters, a small synthetic one) and compares with the reference
answer; when an answer is wrong it tries the usual mistakes and names the one you made.
"""

from __future__ import annotations

import functools
import inspect
from pathlib import Path

import numpy as np

import minillm.course
from minillm import verify
from minillm.course import shared_model

HERE = Path(__file__).parent
PROMPT = "When Mary and John went to the store, John gave a drink to"


def _fresh_port():
    """A new copy of port.py (so one student's replacements never leak into another check)."""
    return minillm.course.import_file(HERE / "port.py", name=f"_lesson12_port_{id(object())}")


@functools.lru_cache(maxsize=1)
def _ref() -> dict[str, np.ndarray]:
    """minillm's activations on PROMPT (every hook but hook_result, plus ln_final.out)."""
    return dict(verify.run_dump(shared_model(), PROMPT).acts)


@functools.lru_cache(maxsize=1)
def _port() -> dict[str, np.ndarray]:
    """The provided (broken) port's activations on the same tokens."""
    return _fresh_port().forward(shared_model(), shared_model().to_tokens(PROMPT))[1]


def _shuffled(d: dict, seed: int) -> dict:
    keys = list(d)
    np.random.default_rng(seed).shuffle(keys)
    return {k: d[k] for k in keys}


def _num(x, what: str) -> float:
    if np.ndim(x) != 0:
        raise AssertionError(f"{what} must be a single number, got an array of shape {np.shape(x)}")
    return float(x)


# --- the checks ----------------------------------------------------------------------------------


def check_max_errors(student, ref) -> None:
    name = "blocks.0.attn.hook_z"
    a, b = _ref()[name], _port()[name]
    for floor in (1e-3, 0.3):
        got = student.max_errors(a, b, floor)
        if not isinstance(got, tuple) or len(got) != 2:
            raise AssertionError(f"max_errors must return a tuple (max_abs, max_rel), "
                                 f"got {type(got).__name__}")
        got_abs, got_rel = _num(got[0], "max_abs"), _num(got[1], "max_rel")
        row = verify.compare_arrays(name, a, b, 1e-3, 1e-3, rel_floor=floor)  # minillm's own numbers
        if not np.isclose(got_abs, row.max_abs, rtol=1e-9, atol=0):
            hint = " Did you take the absolute value of the difference?" if np.isclose(
                got_abs, float((a.astype(np.float64) - b).max()), rtol=1e-9) else ""
            raise AssertionError(f"max_errors({name}): max_abs should be {row.max_abs:.6g}, you gave "
                                 f"{got_abs:.6g}.{hint}")
        if np.isclose(got_rel, row.max_rel, rtol=1e-9, atol=0):
            continue
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        diff, rms = np.abs(a64 - b64), np.sqrt(np.mean(a64**2))
        with np.errstate(divide="ignore", invalid="ignore"):
            mistakes = {
                "You divided by |a| with no floor: near-zero reference entries blow the relative error up "
                "(that is what the floor is for).": (diff / np.abs(a64)).max(),
                "You used the floor as an absolute number; it is a fraction of RMS(a): "
                "max(|a|, floor·sqrt(mean(a²))).": (diff / np.maximum(np.abs(a64), floor)).max(),
                "You divided by the candidate |b|; the reference a is the yardstick.":
                    (diff / np.maximum(np.abs(b64), floor * rms)).max(),
                "You scaled the floor by max|a| instead of the RMS of a.":
                    (diff / np.maximum(np.abs(a64), floor * np.abs(a64).max())).max(),
                "You ignored the floor argument (used 1e-3 whatever was passed).":
                    (diff / np.maximum(np.abs(a64), 1e-3 * rms)).max(),
            }
        for hint, value in mistakes.items():
            if np.isclose(got_rel, value, rtol=1e-9, atol=0):
                raise AssertionError(f"max_errors({name}, floor={floor}): max_rel should be "
                                     f"{row.max_rel:.6g}, you gave {got_rel:.6g}. {hint}")
        raise AssertionError(f"max_errors({name}, floor={floor}): max_rel should be {row.max_rel:.6g}, you "
                             f"gave {got_rel:.6g}. rel = |a − b| / max(|a|, floor·sqrt(mean(a²))).")


def check_first_failure(student, ref) -> None:
    mine, port = _ref(), _port()
    # 1. the real case: minillm against the port, dicts in a random order
    want = ref.first_failure(mine, port)
    got = student.first_failure(_shuffled(mine, 0), _shuffled(port, 1))
    if got != want:
        common = [n for n in _shuffled(mine, 0) if n in port]
        fails = [n for n in common if ref._fails(mine[n], port[n], 1e-3, 1e-3)]
        worst = max(fails, key=lambda n: verify.compare_arrays(n, mine[n], port[n], 1e-3, 1e-3).max_abs)
        if got == fails[0]:
            hint = "That is the first failing hook in the DICT's order; sort the names into forward order."
        elif got == sorted(fails)[0]:
            hint = ("That is the first failing hook in alphabetical order ('attn.hook_q' < 'hook_resid_pre', "
                    "'blocks.10' < 'blocks.2'); sort with minillm.verify.forward_key instead.")
        elif got == worst:
            hint = "That is the hook with the LARGEST error; the question is where the error starts."
        elif got is None:
            hint = "You found no failure, but the port fails hundreds of hooks."
        else:
            hint = "Check the rule |a − b| <= atol + rtol·|a| element by element (any element failing fails)."
        raise AssertionError(f"first_failure(minillm, port): expected {want!r}, got {got!r}. {hint}")
    # 2. forward order is not alphabetical: errors planted in blocks.10 and blocks.2
    rng = np.random.default_rng(5)
    names = ["blocks.10.hook_resid_post", "blocks.2.hook_resid_post", "blocks.2.attn.hook_q",
             "blocks.2.hook_resid_pre", "hook_embed", "hook_logits"]
    a = {n: rng.standard_normal((1, 3, 4)) for n in names}
    b = {n: x.copy() for n, x in a.items()}
    b["blocks.10.hook_resid_post"][0, 1, 2] += 1.0
    b["blocks.2.hook_resid_post"][0, 0, 0] += 1e-2
    b["blocks.2.attn.hook_q"][0, 2, 3] += 5e-4  # within the tolerance
    got = student.first_failure(_shuffled(a, 2), _shuffled(b, 3))
    if got != "blocks.2.hook_resid_post":
        raise AssertionError(
            f"first_failure: errors were planted in blocks.10.hook_resid_post (large) and "
            f"blocks.2.hook_resid_post (small, 1e-2 > 1e-3 + 1e-3·|a|); blocks.2 comes first in the forward "
            f"pass, but you returned {got!r}. A plain sort puts 'blocks.10' before 'blocks.2'; use "
            f"minillm.verify.forward_key. (blocks.2.attn.hook_q differs by 5e-4, within tolerance.)")
    # 3. nothing wrong, masked scores -inf on both sides: no failure
    clean = {n: x for n, x in mine.items() if "hook_attn_scores" in n or n == "hook_embed"}
    got = student.first_failure(clean, {n: x.copy() for n, x in clean.items()})
    if got is not None:
        raise AssertionError(f"first_failure(x, copy of x) should be None, got {got!r}. Attention scores "
                             "hold -inf (masked keys) on both sides: -inf − (-inf) is NaN, so treat equal "
                             "entries as equal (diff[a == b] = 0) before comparing.")
    # 4. NaN in the candidate is a failure
    bad = {n: x.copy() for n, x in clean.items()}
    bad["blocks.1.attn.hook_attn_scores"][0, 0, 5, 2] = np.nan
    got = student.first_failure(clean, bad)
    if got != "blocks.1.attn.hook_attn_scores":
        raise AssertionError("first_failure: a NaN in the candidate's blocks.1.attn.hook_attn_scores must "
                             f"fail, "
                             f"got {got!r}. NaN > limit is False: turn NaN differences into inf first.")


def check_worst_position_head(student, ref) -> None:
    name = "blocks.0.attn.hook_z"
    a, b = _ref()[name], _port()[name]
    want = ref.worst_position_head(a, b)
    got = student.worst_position_head(a, b)
    got = tuple(int(i) for i in got) if np.ndim(got) == 1 else got
    if got != want:
        if got == want[::-1]:
            raise AssertionError(f"worst_position_head({name}): expected (position, head) = {want}, you gave "
                                 f"{got}: the order is swapped.")
        raise AssertionError(f"worst_position_head({name}): expected (position, head) = {want}, got {got}. "
                             "hook_z is [b, p, h, e]: unravel the argmax of |a − b| and keep axes 1 and 2.")
    x = np.zeros((2, 5, 4, 3))
    y = x.copy()
    y[1, 3, 2, 0] = 1.0  # the worst element is in batch row 1
    y[0, 1, 1, 1] = 0.5
    got = student.worst_position_head(x, y)
    got = tuple(int(i) for i in got) if np.ndim(got) == 1 else got
    if got != (3, 2):
        raise AssertionError(f"worst_position_head: in a [2, 5, 4, 3] array whose largest difference is at "
                             f"(batch 1, position 3, head 2, dim 0) you returned {got}, expected (3, 2). "
                             "Search every batch row, not just row 0.")


def check_error_per_head(student, ref) -> None:
    name = "blocks.0.attn.hook_z"
    a, b = _ref()[name], _port()[name]
    want = ref.error_per_head(a, b)
    got = np.asarray(student.error_per_head(a, b), np.float64)
    if got.shape != want.shape:
        raise AssertionError(f"error_per_head({name}): expected one number per head, shape {want.shape}, got "
                             f"{got.shape}. Reduce over batch, position and d_head (axes 0, 1, 3).")
    if np.allclose(got, want, rtol=1e-6, atol=1e-12):
        return
    diff = np.abs(a.astype(np.float64) - b)
    mistakes = {
        "You averaged; the question is the LARGEST error of each head (max, not mean).":
            diff.mean(axis=(0, 1, 3)),
        "You summed; take the max over batch, position and d_head.": diff.sum(axis=(0, 1, 3)),
        "You forgot the absolute value: max of (a − b) misses negative errors.":
            (a.astype(np.float64) - b).max(axis=(0, 1, 3)),
    }
    for hint, value in mistakes.items():
        if np.allclose(got, value, rtol=1e-6, atol=1e-12):
            raise AssertionError(f"error_per_head({name}): {hint}")
    raise AssertionError(f"error_per_head({name}): expected {np.round(want, 4).tolist()}, got "
                         f"{np.round(got, 4).tolist()}.")


def check_port_fixes(student, ref) -> None:
    fixes = student.port_fixes()
    port = _fresh_port()
    helpers = {n for n, f in vars(port).items() if inspect.isfunction(f) and f.__module__ == port.__name__}
    if not isinstance(fixes, dict) or not fixes:
        raise AssertionError("port_fixes must return a non-empty dict {function name in port.py: function}")
    for name, fn in fixes.items():
        if name == "forward":
            raise AssertionError("Replacing forward() proves nothing about the port: fix the helper that is "
                                 "wrong.")
        if name not in helpers:
            raise AssertionError(f"port.py has no function {name!r}; its functions are {sorted(helpers)}")
        if not callable(fn):
            raise AssertionError(f"port_fixes()[{name!r}] must be a function, got {type(fn).__name__}")
    if len(fixes) > 2:
        raise AssertionError(f"You replaced {len(fixes)} functions ({sorted(fixes)}); the port has one bug. "
                             "Find it with first_failure and error_per_head and replace only that function.")
    for name, fn in fixes.items():
        setattr(port, name, fn)
    model = shared_model()
    _, acts = port.forward(model, model.to_tokens(PROMPT))
    report = verify.compare(_ref(), acts)
    if not report.passed:
        raise AssertionError(f"With your fix ({', '.join(sorted(fixes))}) the port still disagrees with "
                             f"minillm: "
                             f"{report.summary()}")


CHECKS = [
    ("max_errors", check_max_errors),
    ("first_failure", check_first_failure),
    ("worst_position_head", check_worst_position_head),
    ("error_per_head", check_error_per_head),
    ("port_fixes", check_port_fixes),
]
