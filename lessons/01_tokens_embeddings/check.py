"""Checks for lesson 01: each runs the student's function and the reference on the same inputs."""

from __future__ import annotations

import functools

import numpy as np

from minillm.course import shared_model

TEXT = "<|im_start|>user\nThe year 2024 was unbelievably good<|im_end|>\n"


@functools.lru_cache(maxsize=1)
def _unit_W_E() -> np.ndarray:
    W_E = shared_model().embed.W_E
    return W_E / np.linalg.norm(W_E, axis=1, keepdims=True)


def _cos(ids, v: np.ndarray) -> np.ndarray:
    """Cosine of each listed token's embedding with v."""
    return _unit_W_E()[np.asarray(ids, dtype=np.int64)] @ (v / np.linalg.norm(v))


def _top_by_cosine(v: np.ndarray, exclude: set[int], k: int) -> list[int]:
    """The reference ranking, from the cached unit rows (the same numbers as solutions.py)."""
    order = np.argsort(-(_unit_W_E() @ (v / np.linalg.norm(v))), kind="stable")
    return [int(i) for i in order[: k + len(exclude)] if int(i) not in exclude][:k]


def _r(xs) -> list[float]:
    return [round(float(x), 3) for x in xs]


def _names(model, ids) -> list[str]:
    return [model.to_string([int(i)]) for i in ids]


def _as_id_list(got, what: str, k: int) -> list[int]:
    try:
        ids = [int(i) for i in np.asarray(got).reshape(-1)]
    except (TypeError, ValueError):
        raise AssertionError(f"{what} should return a list of {k} token ids (ints), got {got!r}") from None
    assert len(ids) == k, f"{what} should return {k} ids, got {len(ids)}: {ids}"
    return ids


def _compare_ranking(model, got, want, v, exclude, what, extra_hint=""):
    """The student's ranking must have the reference's cosines (ties may swap places)."""
    got_cos, want_cos = _cos(got, v), _cos(want, v)
    bad_excl = [i for i in got if i in exclude]
    assert not bad_excl, (
        f"{what}: your answer contains the input token(s) {_names(model, bad_excl)}; they are always "
        f"closest to themselves, so exclude them. Expected {_names(model, want)}.")
    if np.allclose(got_cos, want_cos, atol=1e-4):
        return
    W_E = model.embed.W_E
    dots = W_E @ v
    by_dot = [int(i) for i in np.argsort(-dots) if int(i) not in exclude][: len(want)]
    hint = ""
    if got == by_dot:
        hint = (" You ranked by the raw dot product: long rows (word fragments, code tokens) "
                "win whatever their direction. Divide each row by its norm (cosine similarity).")
    elif list(got) == list(reversed(want)) or np.all(np.diff(got_cos) >= -1e-6) and len(got) > 1:
        hint = " Your list looks sorted in ascending order: put the MOST similar first (np.argsort(-sims))."
    raise AssertionError(
        f"{what}: expected {_names(model, want)} (cosines {_r(want_cos)}), got "
        f"{_names(model, got)} (cosines {_r(got_cos)}).{hint}{extra_hint}")


def check_decode_ids(student, ref) -> None:
    model = shared_model()
    ids = model.to_tokens(TEXT)[0]
    got = student.decode_ids(model, ids.tolist())
    want = ref.decode_ids(model, ids)
    assert isinstance(got, list) and all(isinstance(s, str) for s in got), (
        f"decode_ids should return a list of str, got {type(got).__name__}: {got!r}")
    assert len(got) == len(want), (
        f"decode_ids: {len(ids)} ids should give {len(ids)} strings, got {len(got)}. "
        "Decode each id on its own, not the whole list at once.")
    if got != want:
        raw = [model.tokenizer.id_to_token(int(i)) for i in ids]
        hint = (" These are the raw vocabulary entries (with 'Ġ' for a space): decode the ids to text "
                "with model.to_string([i]) instead of id_to_token." if got == raw else "")
        diff = next(j for j, (a, b) in enumerate(zip(got, want)) if a != b)
        raise AssertionError(f"decode_ids: token {diff} (id {int(ids[diff])}) should be {want[diff]!r}, "
                             f"got {got[diff]!r}. Full expected: {want}.{hint}")


def check_cosine_neighbours(student, ref) -> None:
    model = shared_model()
    for text in (" king", " Monday"):
        t = model.to_single_token(text)
        got = _as_id_list(student.cosine_neighbours(model.embed.W_E, t, 8), "cosine_neighbours", 8)
        want = _top_by_cosine(model.embed.W_E[t], {t}, 8)
        _compare_ranking(model, got, want, model.embed.W_E[t], {t}, f"cosine_neighbours({text!r})")


def check_analogy(student, ref) -> None:
    model = shared_model()
    W_E = model.embed.W_E
    for a, b, c in ((" king", " man", " woman"), (" walked", " walk", " swim")):
        ia, ib, ic = (model.to_single_token(x) for x in (a, b, c))
        got = _as_id_list(student.analogy(W_E, ia, ib, ic, 5), "analogy", 5)
        v = W_E[ia] - W_E[ib] + W_E[ic]
        want = _top_by_cosine(v, {ia, ib, ic}, 5)
        hint = ""
        flipped = _top_by_cosine(W_E[ib] - W_E[ia] + W_E[ic], {ia, ib, ic}, 5)
        if got == flipped:
            hint = f" You computed {b!r} - {a!r} + {c!r}: the offset goes a - b + c."
        _compare_ranking(model, got, want, v, {ia, ib, ic}, f"analogy({a!r} - {b!r} + {c!r})", hint)


def check_tying(student, ref) -> None:
    model = shared_model()
    W_E = model.embed.W_E
    rng = np.random.default_rng(0)
    small = rng.normal(size=(50, 8)).astype(np.float32)
    cases = [
        ("the real SmolLM2 (tied: W_U is a view of W_E.T)", W_E, model.unembed.W_U, "shared"),
        ("a small tied pair (W_U = W_E.T)", small, small.T, "shared"),
        ("W_E and an exact copy of W_E.T (what minillm.edits.untie makes)", small, small.T.copy(), "equal"),
        ("W_E and a separately trained W_U (like TinyLlama)", small,
         rng.normal(size=(8, 50)).astype(np.float32), "untied"),
        ("W_E and a copy of W_E.T with one entry changed", small,
         np.where(np.arange(50) == 3, small.T + 1e-3, small.T), "untied"),
    ]
    for what, a, b, want in cases:
        got = student.tying(a, b)
        assert got == want, (
            f"tying: for {what} expected {want!r}, got {got!r}. "
            + {"shared": "Same memory means np.shares_memory(W_E, W_U) is True (a transpose is a view, "
                         "not a copy).",
               "equal": "Separate memory but identical values: np.shares_memory is False, "
                        "np.array_equal(W_U, W_E.T) is True.",
               "untied": "Different values mean untied, even if only one entry differs; compare with "
                         "np.array_equal, not np.allclose, and check the shapes first."}[want])


CHECKS = [
    ("decode_ids", check_decode_ids),
    ("cosine_neighbours", check_cosine_neighbours),
    ("analogy", check_analogy),
    ("tying", check_tying),
]
