"""Checks for lesson 14. They run on a model trained here with minillm.course.training (any
seed works: the checks compare with the reference on the same model and test the mechanism,
never fixed head indices). The grader passes (student, ref).
"""

from __future__ import annotations

import numpy as np

from minillm.course import training as T

SEQ_LEN = 24


def _model_and_patterns():
    model = T.trained_model(seed=0)  # lesson 13's model (seed 0); any seed's model would do
    tokens = T.repeated_tokens(np.random.default_rng(11), 16, SEQ_LEN, model.cfg.d_vocab - 1)
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_pattern"))
    return model, tokens, [cache[f"blocks.{l}.attn.hook_pattern"] for l in range(model.cfg.n_layers)]


def check_head_scores(student, ref) -> None:
    # a synthetic pattern: head 0 looks at the previous token, head 1 at the induction key,
    # head 2 at BOS
    T_, P = 5, 11
    pat = np.zeros((1, 3, P, P))
    for q in range(P):
        pat[0, 0, q, max(q - 1, 0)] = 1
        pat[0, 1, q, q - T_ + 1 if q >= T_ + 1 else 0] = 1
        pat[0, 2, q, 0] = 1
    _, _, pats = _model_and_patterns()
    for pattern, what in ((pat, "a synthetic 3-head pattern, T = 5"),
                          (pats[0], "layer 0 of the trained model"), (pats[1], "layer 1 of the trained model")):
        T_here = 5 if pattern is pat else SEQ_LEN
        out = student.head_scores(pattern, T_here)
        assert out is not None and len(out) == 2, "head_scores should return (prev [h], induction [h])"
        want = ref.head_scores(pattern, T_here)
        for got, exp, which in zip(out, want, ("previous-token", "induction")):
            got = np.asarray(got, np.float64)
            assert got.shape == exp.shape, f"{which} scores ({what}): expected shape {exp.shape}, got {got.shape}"
            if np.allclose(got, exp, atol=1e-6):
                continue
            hint = ""
            if which == "induction":
                q = np.arange(T_here + 1, 2 * T_here + 1)
                if np.allclose(got, pattern[:, :, q, q - T_here].mean(axis=(0, 2)), atol=1e-6):
                    hint = (" You scored attention to the token's own first occurrence (q − T). An induction "
                            "head attends to the token AFTER it (q − T + 1): that is the one to copy.")
                elif np.allclose(got, pattern[:, :, q - 1, q - T_here].mean(axis=(0, 2)), atol=1e-6):
                    hint = " Off by one in the queries: the second copy's queries are T+1 .. 2T."
            elif np.allclose(got, pattern[:, :, np.arange(P if pattern is pat else 2 * SEQ_LEN + 1)[:-1],
                                               np.arange(1, pattern.shape[-1])].mean(axis=(0, 2)), atol=1e-6):
                hint = " You scored attention to the NEXT token: a causal model cannot see it (that is 0)."
            raise AssertionError(f"{which} scores ({what}): expected {np.round(exp, 4).tolist()}, got "
                                 f"{np.round(got, 4).tolist()}.{hint}")


def check_k_composition(student, ref) -> None:
    rng = np.random.default_rng(12)
    A, B = rng.normal(size=(6, 4)), rng.normal(size=(4, 6))
    got = student.composition_score(A, B)
    want = ref.composition_score(A, B)
    assert got is not None and abs(float(got) - want) < 1e-9, (
        f"composition_score: expected {want:.6f}, got {got}. Frobenius norms: np.linalg.norm(M) of a "
        "matrix; the score divides ‖AB‖ by the product of the two norms.")
    model = T.trained_model(seed=0)
    b0, b1 = model.blocks[0].attn, model.blocks[1].attn
    args = (b0.W_V, b0.W_O, b1.W_Q, b1.W_K)
    got = student.k_composition(*[a.copy() for a in args])
    want = ref.k_composition(*args)
    assert got is not None, "k_composition returned None"
    got = np.asarray(got, np.float64)
    assert got.shape == want.shape, f"k_composition: expected shape {want.shape} [h0, h1], got {got.shape}"
    if np.allclose(got, want, atol=1e-6):
        return
    hint = ""
    if np.allclose(got, want.T, atol=1e-6):
        hint = " Rows are layer-0 heads and columns layer-1 heads: you returned the transpose."
    else:
        W_OV = args[0] @ args[1]
        W_QK = args[2] @ args[3].transpose(0, 2, 1)
        q_comp = np.array([[ref.composition_score(ov, qk) for qk in W_QK] for ov in W_OV])
        if np.allclose(got, q_comp, atol=1e-6):
            hint = (" That is Q-composition (W_OV @ W_QK): layer 0's output read by the queries. K-composition "
                    "reads it through the keys: W_OV @ W_QKᵀ.")
    raise AssertionError(f"k_composition on the trained model: max difference {np.abs(got - want).max():.3g}."
                         f"{hint}")


def check_ablation_effect(student, ref) -> None:
    model, tokens, pats = _model_and_patterns()
    _, ind = ref.head_scores(pats[1], SEQ_LEN)
    prev, _ = ref.head_scores(pats[0], SEQ_LEN)
    for layer, head in ((1, int(np.argmax(ind))), (0, int(np.argmax(prev))), (1, int(np.argmin(ind)))):
        got = student.ablation_effect(model, tokens, layer, head, SEQ_LEN)
        want = ref.ablation_effect(model, tokens, layer, head, SEQ_LEN)
        assert got is not None, "ablation_effect returned None: return ablated − clean, a float"
        if abs(float(got) - want) < 1e-4:
            continue
        hint = ""
        if abs(float(got) + want) < 1e-4:
            hint = " The sign: ablated − clean (positive when the head was helping)."
        elif abs(float(got)) < 1e-9:
            hint = (" Nothing changed: did your hook return the edited copy? (A hook that returns None "
                    "leaves the activation as it was.)")
        raise AssertionError(f"ablation_effect(layer {layer}, head {head}): expected {want:+.4f} nats, got "
                             f"{float(got):+.4f}.{hint}")


CHECKS = [
    ("head_scores", check_head_scores),
    ("k_composition", check_k_composition),
    ("ablation_effect", check_ablation_effect),
]
