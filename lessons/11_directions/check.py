"""Checks for lesson 11: steering vectors, a steering hook, PCA and embedding analogies.

The steering checks use real SmolLM2 activations of small positive / negative prompt sets at
layer LAYER and compare your hook with `minillm.interp.interventions.add` on a forward pass and
during generation; PCA runs on the residual streams of a few prompts; the analogies on the
real embedding matrix. When an answer is wrong, the check tries the usual mistakes and
names the one you made.
"""

from __future__ import annotations

import functools

import numpy as np

from minillm.course import relative_error as _rel
from minillm.course import shared_model
from minillm.course import verdict as _verdict
from minillm.hooks import HookPoint
from minillm.interp import pca as pca_mod
from minillm.interp import steering as st

LAYER = 6
POSITIVE = ["I love this", "What a wonderful day", "I am so happy", "This is great", "Best film ever"]
NEGATIVE = ["I hate this", "What an awful day", "I am so sad", "This is terrible"]  # one fewer, on purpose
PCA_PROMPTS = [f"The word is {w}" for w in ("France", "Japan", "Kenya", "dog", "horse", "eagle", "seven",
                                            "twelve", "forty", "happy", "angry", "proud")]
PROMPT = "I think the movie was"


def _last_acts(prompts, layer: int, hook: str = "resid_pre") -> np.ndarray:
    """The activation at the last real token of each prompt.   -> [n, d]"""
    model = shared_model()
    name = f"blocks.{layer}.hook_{hook}"
    tokens, mask = model.to_tokens_and_mask(list(prompts))  # left-padded: -1 is each prompt's last token
    _, cache = model.run_with_cache(tokens, names_filter=[name], attention_mask=mask)
    return cache[name][:, -1]


@functools.lru_cache(maxsize=1)
def _sets() -> tuple[np.ndarray, np.ndarray]:
    return _last_acts(POSITIVE, LAYER), _last_acts(NEGATIVE, LAYER)


# --- the checks ----------------------------------------------------------------------------------


def check_mean_difference(student, ref) -> None:
    pos, neg = _sets()
    got = student.mean_difference(pos, neg)
    want = ref.mean_difference(pos, neg)
    if np.shape(got) == (pos.shape[0],) or np.shape(got) == ():
        raise AssertionError(f"mean_difference: expected a vector of shape {want.shape}, got shape "
                             f"{np.shape(got)}. Average over the PROMPTS (axis 0), not over the features.")
    unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
    mistakes = {
        "Your sign is flipped: the vector points from the negative set TO the positive one "
        "(mean(pos) − mean(neg)), so adding it makes the model more positive.": -want,
        "You summed instead of averaging. With 5 positive and 4 negative prompts the sums do not even "
        "cancel the shared part of the activations (the 'I', 'This', 'What' they have in common).":
            pos.sum(0) - neg.sum(0),
        "You normalised each activation to unit length first. The steering vector is a plain mean "
        "difference; its size is part of the signal (it is on the scale of the stream).":
            unit(pos).mean(0) - unit(neg).mean(0),
        "You subtracted row by row and averaged (mean(pos[:n] − neg[:n])): with sets of different sizes "
        "that drops prompts. Take each set's mean first.":
            (pos[: len(neg)] - neg).mean(0),
    }
    _verdict(f"mean_difference(blocks.{LAYER}.hook_resid_pre: 5 positive, 4 negative prompts)", got, want,
             mistakes, "mean over axis 0 of each set, then subtract.", tol=1e-5)
    lib = st.steering_vector(shared_model(), POSITIVE, NEGATIVE, LAYER)
    if _rel(got, lib) > 1e-4:
        raise AssertionError(f"your vector agrees with the reference but not with "
                             f"minillm.interp.steering.steering_vector (relative gap {_rel(got, lib):.1e}); "
                             "please report.")


def check_steering_hook(student, ref) -> None:
    model = shared_model()
    pos, neg = _sets()
    v = ref.mean_difference(pos, neg).astype(np.float32)
    alpha, name = 3.0, f"blocks.{LAYER}.hook_resid_pre"
    hook = student.steering_hook(v, alpha)
    # 1. it must not edit its input in place
    probe = np.zeros((1, 3, v.shape[0]), np.float32)
    out = hook(probe, HookPoint(name, LAYER, 0))
    if np.any(probe != 0):
        raise AssertionError("your hook changed the activation it was given in place (act += ...). Return "
                             "a new array (act + alpha * vector): the same array may be held by the cache "
                             "or by another hook.")
    if out is None or np.shape(out) != probe.shape:
        raise AssertionError(f"your hook must RETURN the new activation, shape {probe.shape}; it returned "
                             f"{None if out is None else np.shape(out)}.")
    # 2. a forward pass with the hook = the library's intervention
    tokens = model.to_tokens(PROMPT)
    want = model.run_with_interventions(tokens, [st.steer(v, LAYER, alpha)])
    got = model.run_with_hooks(tokens, [(name, hook)])

    def variant(fn):
        return model.run_with_hooks(tokens, [(name, fn)])

    def last_only(act, h):
        act = act.copy()
        act[:, -1] += alpha * v
        return act

    def first_only(act, h):
        act = act.copy()
        act[:, 0] += alpha * v
        return act

    mistakes = lambda: {  # noqa: E731
        "You added the vector only at the last position. Activation addition steers EVERY position "
        "(the prompt's and, while generating, each new one): act + alpha·vector, broadcast over [b, p].":
            variant(last_only),
        "You added the vector only at position 0.": variant(first_only),
        "You forgot alpha: add alpha·vector.": variant(lambda a, h: a + v),
        "Your sign is flipped: add +alpha·vector.": variant(lambda a, h: a - alpha * v),
    }
    _verdict(f"forward pass of {PROMPT!r} with your hook at {name} (alpha = {alpha})", got, want, mistakes,
             "The hook receives act [b, p, d] and must return act + alpha·vector.", tol=1e-4)
    # 3. generation with a KV cache: each decoding step's new position must be steered too
    with model.intervened([st.steer(v, LAYER, alpha)]):
        ref_text, ref_logits = model.generate(PROMPT, max_new_tokens=4, return_logits=True)
    with model.hooks([(name, hook)]):
        text, logits = model.generate(PROMPT, max_new_tokens=4, return_logits=True)
    if text != ref_text or _rel(logits, ref_logits) > 1e-3:
        raise AssertionError(f"with your hook, generating 4 tokens gives {text!r} instead of {ref_text!r}. "
                             "While decoding with a KV cache the hook sees act [b, 1, d] (only the new "
                             "token): it must add the vector there too, whatever the number of positions.")


def check_pca_svd(student, ref) -> None:
    X = _last_acts(PCA_PROMPTS, 10, "resid_post").astype(np.float64)  # [12, d]
    k = 3
    result = student.pca_svd(X, k)
    if not isinstance(result, tuple) or len(result) != 2:
        raise AssertionError(f"pca_svd must return a tuple (components, ratios), got {type(result).__name__}")
    comps, ratios = (np.asarray(a, np.float64) for a in result)
    want_c, want_r = ref.pca_svd(X, k)
    lib = pca_mod.pca(X, k)
    if _rel(want_r, lib.explained_variance_ratio) > 1e-8:
        raise AssertionError("the reference and minillm.interp.pca disagree; please report.")
    n, D = X.shape
    if comps.shape == (D, k):
        raise AssertionError(f"components have shape {comps.shape}: one direction per COLUMN. Return one per "
                             f"ROW, shape ({k}, {D}) (the rows of Vt in X = U S Vt).")
    if comps.shape == (n, k) or comps.shape == (k, n):
        raise AssertionError(f"components have shape {comps.shape}: those are coordinates of the {n} samples "
                             f"(U), not directions in activation space. Return the first {k} rows of Vt.")
    if ratios.shape == (k,) and ratios.shape != want_r.shape:
        raise AssertionError(f"ratios have shape {ratios.shape}: give the ratio of EVERY component "
                             f"(shape {want_r.shape}, summing to 1), not only of the {k} you keep; the "
                             f"denominator is the total variance Σ S².")
    _, S_raw, Vt_raw = np.linalg.svd(X, full_matrices=False)
    _, S, _ = np.linalg.svd(X - X.mean(0), full_matrices=False)
    mistakes = {
        "You did not centre X. PCA explains the variance around the MEAN; without centring, the first "
        "'component' is mostly the mean activation itself (here it would claim "
        f"{S_raw[0] ** 2 / (S_raw**2).sum():.0%} of the 'variance').": S_raw**2 / (S_raw**2).sum(),
        "Your ratios use S, not S²: the variance along component j is S_j² / (n − 1).": S / S.sum(),
        "Your ratios are not normalised: divide S² by Σ S² so they sum to 1.": S**2,
    }
    _verdict(f"pca_svd(12 residual streams at layer 10, k={k}): explained-variance ratios", ratios, want_r,
             mistakes, "ratios = S² / Σ S² from the SVD of X − mean(X).", tol=1e-6)
    if comps.shape != want_c.shape:
        raise AssertionError(f"components: expected shape {want_c.shape}, got {comps.shape}.")
    if _rel(np.abs(comps), np.abs(Vt_raw[:k])) < 1e-6 and _rel(np.abs(comps), np.abs(want_c)) > 1e-3:
        raise AssertionError("your components are the singular vectors of the UNCENTRED data: subtract the "
                             "mean of X (over the samples, axis 0) before the SVD.")
    dots = np.abs((comps * want_c).sum(1))  # |cos| per component (each defined up to its sign)
    if not np.all(np.abs(dots - 1) < 1e-5):
        raise AssertionError(f"components: |cos| between yours and the reference's, per component: "
                             f"{np.round(dots, 4).tolist()} (each should be 1; a component's sign is "
                             f"arbitrary, so -1 would be fine). Are they the rows of Vt of the centred data, "
                             "in order of decreasing singular value?")


@functools.lru_cache(maxsize=1)
def _embeddings() -> tuple[np.ndarray, np.ndarray]:
    W64 = shared_model().embed.W_E.astype(np.float64)  # [V, d]
    return W64, np.linalg.norm(W64, axis=1)


def check_cosine_analogy(student, ref) -> None:
    model = shared_model()
    W_E = model.embed.W_E
    W64, norms = _embeddings()
    for words in ((" king", " man", " woman"), (" Paris", " France", " Japan")):
        a, b, c = (model.to_single_token(w) for w in words)
        k = 5
        got = [int(i) for i in student.cosine_analogy(W_E, a, b, c, k)]
        want = ref.cosine_analogy(W_E, a, b, c, k)
        query = W64[a] - W64[b] + W64[c]
        sims = W64 @ query / (norms * np.linalg.norm(query))
        what = f"cosine_analogy({words[0]!r} − {words[1]!r} + {words[2]!r}, k={k})"
        show = lambda ids: [model.to_string([i]) for i in ids]  # noqa: E731
        if len(got) != k:
            raise AssertionError(f"{what}: expected {k} token ids, got {len(got)}.")
        if got == want or np.allclose(sims[got], sims[want], atol=1e-6):  # near-ties may swap
            continue
        if set(got) & {a, b, c}:
            raise AssertionError(f"{what}: your answer {show(got)} contains one of the three input words. "
                                 f"a − b + c is nearest to a or c themselves; exclude a, b and c.")
        dot = W64 @ query
        dot[[a, b, c]] = -np.inf
        if got == [int(i) for i in np.argsort(-dot, kind="stable")[:k]]:
            raise AssertionError(f"{what}: you ranked by the dot product ({show(got)}); that favours tokens "
                                 f"with long embeddings. Divide by both norms: cosine similarity.")
        flipped = W64[b] - W64[a] + W64[c]
        fs = W64 @ flipped / (norms * np.linalg.norm(flipped))
        fs[[a, b, c]] = -np.inf
        if got == [int(i) for i in np.argsort(-fs, kind="stable")[:k]]:
            raise AssertionError(f"{what}: you used b − a + c. The convention here, as in lesson 01, is "
                                 f"a − b + c: king − man + woman ≈ queen.")
        raise AssertionError(f"{what}: expected {show(want)}, got {show(got)} (cosines "
                             f"{np.round(sims[got], 4).tolist()} vs {np.round(sims[want], 4).tolist()}).")


CHECKS = [
    ("mean_difference", check_mean_difference),
    ("steering_hook", check_steering_hook),
    ("pca_svd", check_pca_svd),
    ("cosine_analogy", check_cosine_analogy),
]
