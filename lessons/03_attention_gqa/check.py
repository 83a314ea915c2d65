"""Checks for lesson 03: patterns from real q and k, the GQA mapping, head scores."""

from __future__ import annotations

import functools

import numpy as np

from minillm.course import relative_error, shared_model

LAYER, HEADS = 18, (0, 4, 6)
PROMPT = "Mr and Mrs Dursley were proud to say that they were perfectly normal. Mr and Mrs Dursley"


@functools.lru_cache(maxsize=1)
def _run() -> dict[str, np.ndarray]:
    model = shared_model()
    names = [f"blocks.{LAYER}.attn.hook_{n}" for n in ("rot_q", "rot_k", "pattern")]
    _, cache = model.run_with_cache(PROMPT, names_filter=names)
    return dict(cache)


def _random_patterns(b: int, h: int, P: int, seed: int) -> np.ndarray:
    """Causal random patterns [b, h, P, P] (rows sum to 1), different for every head."""
    rng = np.random.default_rng(seed)
    w = rng.gamma(0.5, size=(b, h, P, P)) * np.tril(np.ones((P, P)))
    return w / w.sum(-1, keepdims=True)


def check_pattern_from_qk(student, ref) -> None:
    model = shared_model()
    act = _run()
    g = model.cfg.n_heads // model.cfg.n_kv_heads
    for head in HEADS:
        q = act[f"blocks.{LAYER}.attn.hook_rot_q"][0, :, head]  # [p, e]
        k = act[f"blocks.{LAYER}.attn.hook_rot_k"][0, :, head // g]  # [p, e]: its kv-head
        want = act[f"blocks.{LAYER}.attn.hook_pattern"][0, head]  # [p, p]
        got = np.asarray(student.pattern_from_qk(q, k))
        what = f"pattern_from_qk(head {LAYER}.{head})"
        assert got.shape == want.shape, f"{what}: expected shape {want.shape} [query, key], got {got.shape}"
        assert not np.isnan(got).any(), (
            f"{what}: NaN in your pattern. Is the diagonal masked too? A query must see itself.")
        if relative_error(got, want) < 1e-5:
            continue
        p, e = q.shape
        raw = q.astype(np.float64) @ k.T
        future = np.triu(np.ones((p, p), bool), 1)

        def softmax(s, axis=-1):
            s = np.exp(s - s.max(axis, keepdims=True))
            return s / s.sum(axis, keepdims=True)

        hint = ""
        if relative_error(got, softmax(np.where(future, -np.inf, raw))) < 1e-5:
            hint = "Did you scale by 1/sqrt(d_head)? Without it the pattern is far too sharp."
        elif relative_error(got, softmax(raw / np.sqrt(e))) < 1e-5:
            hint = ("Is your mask letting queries see the future? Row q must be 0 for every key after q "
                    f"(your row 0 puts {1 - float(got[0, 0]):.2f} on future keys).")
        elif relative_error(got, softmax(np.where(future, -np.inf, raw / np.sqrt(e)), axis=0)) < 1e-5:
            hint = "Your softmax runs down the columns; each ROW (one query, over keys) must sum to 1."
        elif relative_error(got, softmax(np.where(future, -np.inf, raw / np.sqrt(e))).T) < 1e-5:
            hint = "Your pattern is transposed: rows are queries, columns are keys (q @ k.T)."
        err = float(np.abs(got - want).max())
        raise AssertionError(f"{what}: max |error| {err:.2e} against the model's hook_pattern. "
                             + (hint or "Expected softmax over keys of q·k/sqrt(e) with future keys "
                                "masked to -inf; check each step."))


def check_kv_head_of(student, ref) -> None:
    for n_heads, n_kv in ((9, 3), (32, 4), (12, 12), (8, 1)):
        want = [ref.kv_head_of(j, n_heads, n_kv) for j in range(n_heads)]
        got = [student.kv_head_of(j, n_heads, n_kv) for j in range(n_heads)]
        if got != want:
            modulo = [j % n_kv for j in range(n_heads)]
            hint = (" That is j % n_kv_heads (heads interleaved); GQA groups CONSECUTIVE query heads: "
                    "j // (n_heads // n_kv_heads), i.e. np.repeat, not np.tile." if got == modulo else "")
            raise AssertionError(f"kv_head_of with {n_heads} heads and {n_kv} kv-heads: expected {want} "
                                 f"for heads 0..{n_heads - 1}, got {got}.{hint}")


def check_prev_token_score(student, ref) -> None:
    pattern = _random_patterns(2, 5, 12, seed=3)
    pattern[:, 1] = np.eye(12, k=-1) + np.eye(12) * (np.arange(12) == 0)  # a perfect previous-token head
    got = np.asarray(student.prev_token_score(pattern), dtype=np.float64)
    want = ref.prev_token_score(pattern)
    if relative_error(got, want) < 1e-5:
        return
    p = pattern.shape[-1]
    hint = ""
    if got.shape == want.shape:
        if np.allclose(got, np.einsum("bhqq->h", pattern) / (2 * p)):
            hint = " You scored the diagonal (a query attending to ITSELF); the previous token is q - 1."
        elif np.allclose(got, pattern[:, :, np.arange(1, p), np.arange(1, p) - 1].sum(2).mean(0) / p):
            hint = " You divided by p; there are only p - 1 queries that have a previous token."
        elif np.allclose(got, pattern[:, :, np.arange(p - 1), np.arange(1, p)].mean((0, 2))):
            hint = " You read the super-diagonal (keys AFTER the query, always 0 in a causal pattern)."
    raise AssertionError(f"prev_token_score on random patterns (head 1 is a perfect previous-token head, "
                         f"score 1): expected {np.round(want, 4).tolist()}, got {np.round(got, 4).tolist()}."
                         f"{hint}")


def check_induction_score(student, ref) -> None:
    T, offset = 6, 1
    P = offset + 2 * T
    pattern = _random_patterns(2, 4, P, seed=4)
    perfect = np.eye(P)  # head 2: a perfect induction head on the second copy
    q = np.arange(offset + T, P)
    perfect[q] = 0
    perfect[q, q - T + 1] = 1
    pattern[:, 2] = perfect
    got = np.asarray(student.induction_score(pattern, T, offset), dtype=np.float64)
    want = ref.induction_score(pattern, T, offset)
    if relative_error(got, want) < 1e-5:
        return
    hint = ""
    if got.shape == want.shape:
        if np.allclose(got, pattern[:, :, q, q - T].mean((0, 2))):
            hint = (" You scored attention to the earlier copy of the SAME token (q - T): that is a "
                    "duplicate-token head. An induction head looks at the token AFTER it: q - T + 1.")
        elif np.allclose(got, ref.induction_score(pattern, T, 0)):
            hint = " You ignored the offset (the prefix token, e.g. BOS, shifts every position by offset)."
        else:
            qq = np.arange(T, P)
            if np.allclose(got, pattern[:, :, qq, qq - T + 1].mean((0, 2))):
                hint = " Your queries start one position early: the second copy starts at offset + T."
    raise AssertionError(f"induction_score (T={T}, offset={offset}; head 2 is a perfect induction head, "
                         f"score 1): expected {np.round(want, 4).tolist()}, got {np.round(got, 4).tolist()}."
                         f"{hint}")


CHECKS = [
    ("pattern_from_qk", check_pattern_from_qk),
    ("kv_head_of", check_kv_head_of),
    ("prev_token_score", check_prev_token_score),
    ("induction_score", check_induction_score),
]
