"""Checks for lesson 10: your gradients against the reference, minillm.grad.backward and finite differences.

Small exercises (norm, softmax, linear, central difference) run on real SmolLM2 activations
with a seeded upstream gradient; the block and attribution exercises use the gradient of the
IOI logit difference that `minillm.grad.backward` computes (one backward pass, cached). When an
answer is wrong, the check also tries the usual mistakes and names the one you made.
"""

from __future__ import annotations

import functools

import numpy as np

from minillm.course import relative_error as _rel
from minillm.course import shared_model
from minillm.course import verdict as _verdict
from minillm.grad.backward import backward
from minillm.interp.metrics import logit_diff

CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPT = "When Mary and John went to the store, Mary gave a drink to"
NORM_LAYER = 3  # the rms_norm / softmax exercises read this block's activations
MLP_LAYER = 21  # an MLP that matters for the IOI logit difference
HEAD_LAYER = 23  # holds the head with the largest attribution (23.3)


@functools.lru_cache(maxsize=1)
def _grads():
    """The clean run's activations and ∂(logit(' Mary') - logit(' John'))/∂activation."""
    model = shared_model()
    return backward(model, CLEAN, logit_diff(model, " Mary", " John"), params=False)


@functools.lru_cache(maxsize=1)
def _corrupt_z() -> np.ndarray:
    _, cache = shared_model().run_with_cache(CORRUPT, names_filter=[f"blocks.{HEAD_LAYER}.attn.hook_z"])
    return cache[f"blocks.{HEAD_LAYER}.attn.hook_z"]


def _rng(seed: int = 0):
    return np.random.default_rng(seed)


def _pair(result, what: str, names: tuple[str, str]):
    if not isinstance(result, tuple) or len(result) != 2:
        raise AssertionError(f"{what} must return a tuple ({names[0]}, {names[1]}), "
                             f"got {type(result).__name__}")
    return result


# --- the checks ----------------------------------------------------------------------------------


def check_rms_norm_backward(student, ref) -> None:
    model = shared_model()
    x = _grads().cache[f"blocks.{NORM_LAYER}.hook_resid_mid"].astype(np.float64)  # ln2's input [1, p, d]
    w = model.blocks[NORM_LAYER].ln2.w.astype(np.float64)
    eps = model.cfg.eps
    dout = _rng(1).standard_normal(x.shape)
    dx, dw = _pair(student.rms_norm_backward(dout, x, w, eps), "rms_norm_backward", ("dx", "dw"))
    want_dx, want_dw = ref.rms_norm_backward(dout, x, w, eps)

    s = 1.0 / np.sqrt((x * x).mean(-1, keepdims=True) + eps)
    y = x * s

    def fd_note() -> str:  # what a finite difference says, to show the student it is not a matter of taste
        v = _rng(2).standard_normal(x.shape)

        def loss(xx):
            return float((dout * xx / np.sqrt((xx * xx).mean(-1, keepdims=True) + eps) * w).sum())

        fd = ref.central_difference(loss, x, v, 1e-4)
        return (f" A central finite difference of Σ dout·rms_norm(x) along a random direction v gives "
                f"{fd:.6g}; Σ dx·v with your dx gives {float((np.asarray(dx) * v).sum()):.6g}.")

    dx_mistakes = lambda: {  # noqa: E731
        "You treated the scale s = 1/rms(x) as a constant (dx = dout·w·s). But s depends on x: every "
        "x_i changes s, which changes every output. Add the term -s·y·mean(dy·y).": dout * w * s,
        "You forgot the gain w: the upstream gradient of y = x·s is dy = dout·w, not dout.":
            s * (dout - y * (dout * y).mean(-1, keepdims=True)),
        "You subtracted mean(dy) as well: that is LayerNorm's backward (it centres x). RMSNorm does not "
        "centre, so there is no mean(dy) term.":
            s * (dout * w - (dout * w).mean(-1, keepdims=True) - y * (dout * w * y).mean(-1, keepdims=True)),
        "The sign of the correction term is flipped: dx = s·(dy − y·mean(dy·y)).":
            s * (dout * w + y * (dout * w * y).mean(-1, keepdims=True)),
        "You used a sum where the mean belongs: mean(x²) has 1/d in it, so the correction is "
        "y·MEAN(dy·y), not y·Σ(dy·y).": s * (dout * w - y * (dout * w * y).sum(-1, keepdims=True)),
    }
    _verdict("rms_norm_backward: dx", dx, want_dx, dx_mistakes,
             "dx = s·(dy − y·mean(dy·y)) with y = x·s, dy = dout·w." + (fd_note() if _rel(dx, want_dx) >= 1e-8
                                                                          else ""), tol=1e-8)
    dw_mistakes = {
        "dw is Σ_rows dout·y with the NORMALISED y = x·s, not the raw x.":
            (dout * x).reshape(-1, x.shape[-1]).sum(0),
        "That is Σ dout: the gradient of a bias. The gain multiplies y, so dw = Σ_rows dout·y.":
            dout.reshape(-1, x.shape[-1]).sum(0),
        "You averaged over the rows; a parameter used at every position gets the SUM of the gradients.":
            (dout * y).reshape(-1, x.shape[-1]).mean(0),
    }
    _verdict("rms_norm_backward: dw", np.asarray(dw).reshape(np.shape(dw)), want_dw, dw_mistakes,
             "dw has shape [d]: sum dout·y over every leading axis (batch and position).", tol=1e-8)


def check_softmax_backward(student, ref) -> None:
    res = _grads()
    pattern = res.cache[f"blocks.{NORM_LAYER}.attn.hook_pattern"].astype(np.float64)  # [1, h, p, p]
    dpattern = res.grad(f"blocks.{NORM_LAYER}.attn.hook_pattern").astype(np.float64)
    got = student.softmax_backward(dpattern, pattern)
    want = ref.softmax_backward(dpattern, pattern)
    mistakes = lambda: {  # noqa: E731
        "You kept only the diagonal of the Jacobian (dx = dout·y·(1 − y)). Each y_i depends on every x_j "
        "through the normaliser: dx_j = y_j·(dout_j − Σ_i dout_i·y_i).": dpattern * pattern * (1 - pattern),
        "You forgot the factor y_j in front: dx = y·(dout − Σ dout·y). (Your masked entries, where y = 0, "
        "should then come out exactly 0.)": dpattern - (dpattern * pattern).sum(-1, keepdims=True),
        "You summed over the wrong axis: the softmax runs over the LAST axis (keys), so the sum "
        "Σ_i dout_i y_i is over axis=-1 with keepdims=True.":
            pattern * (dpattern - (dpattern * pattern).sum(-2, keepdims=True)),
        "Your sign is flipped: dx = y·(dout − Σ dout·y).":
            pattern * ((dpattern * pattern).sum(-1, keepdims=True) - dpattern),
    }
    _verdict(f"softmax_backward(grad of blocks.{NORM_LAYER}.attn.hook_pattern)", got, want, mistakes,
             "Write the Jacobian of a 3-element softmax on paper, then multiply by dout.", tol=1e-6)
    # and against minillm's own backward pass: the gradient at the scores hook
    mine = res.grad(f"blocks.{NORM_LAYER}.attn.hook_attn_scores")
    if _rel(got, mine) > 1e-4:
        raise AssertionError(f"softmax_backward agrees with the reference but not with minillm.grad.backward's "
                             f"gradient at blocks.{NORM_LAYER}.attn.hook_attn_scores (relative error "
                             f"{_rel(got, mine):.1e}); please report this.")


def check_linear_backward(student, ref) -> None:
    rng = _rng(3)
    x, W, dout = rng.standard_normal((2, 5, 7)), rng.standard_normal((7, 4)), rng.standard_normal((2, 5, 4))
    dx, dW = _pair(student.linear_backward(dout, x, W), "linear_backward", ("dx", "dW"))
    want_dx, want_dW = ref.linear_backward(dout, x, W)
    if np.shape(dx) != x.shape:
        raise AssertionError(f"linear_backward: dx must have x's shape {x.shape}, got {np.shape(dx)}. "
                             "Did you multiply dout by W instead of W.T?")
    _verdict("linear_backward: dx", dx, want_dx, {}, "dx = dout @ W.T.", tol=1e-10)
    if np.shape(dW) == W.T.shape:
        raise AssertionError(f"linear_backward: dW must have W's shape {W.shape}, got {np.shape(dW)}: you "
                             "computed dout_rowsᵀ @ x_rows; the gradient is x_rowsᵀ @ dout_rows.")
    rows_x, rows_d = x.reshape(-1, 7), dout.reshape(-1, 4)
    mistakes = {
        "You averaged over the rows. Each row (batch × position) uses the same W, so its gradient is the "
        "SUM over rows: x_rowsᵀ @ dout_rows.": rows_x.T @ rows_d / rows_x.shape[0],
        "Only the first batch row contributed: flatten ALL leading axes (batch and position) into rows.":
            x[0].T @ dout[0],
        "Only the last position contributed: flatten all leading axes into rows before the product.":
            x[:, -1].T @ dout[:, -1],
    }
    _verdict("linear_backward: dW", dW, want_dW, mistakes,
             "dW[i, k] = Σ_rows x[row, i] · dout[row, k].", tol=1e-10)


def check_central_difference(student, ref) -> None:
    rng = _rng(4)
    x, v = rng.standard_normal(6), rng.standard_normal(6)

    def f(z):
        return float((np.sin(z) * z**2).sum())

    h = 1e-2
    got = student.central_difference(f, x, v, h)
    if not np.isscalar(got) and np.shape(got) != ():
        raise AssertionError(f"central_difference must return a number, got an array of shape "
                             f"{np.shape(got)}")
    want = ref.central_difference(f, x, v, h)
    exact = float(((np.cos(x) * x**2 + 2 * x * np.sin(x)) * v).sum())
    mistakes = {
        f"You used the one-sided difference (f(x + h·v) − f(x)) / h; its error is of order h "
        f"({abs((f(x + h * v) - f(x)) / h - exact):.1e} here), the central one's of order h² "
        f"({abs(want - exact):.1e}).": (f(x + h * v) - f(x)) / h,
        "You forgot the 2: the central difference spans 2h, so divide by 2h.":
            (f(x + h * v) - f(x - h * v)) / h,
        "You did not scale the direction by h: evaluate f at x ± h·v.": (f(x + v) - f(x - v)) / (2 * h),
    }
    _verdict("central_difference(Σ sin(x)·x², along v, h = 0.01)", np.float64(got), np.float64(want),
             mistakes, f"The exact directional derivative here is {exact:.8g}.", tol=1e-9)


def check_mlp_backward(student, ref) -> None:
    model, res = shared_model(), _grads()
    L, blk, eps = MLP_LAYER, model.blocks[MLP_LAYER], model.cfg.eps
    d_post = res.grad(f"blocks.{L}.hook_resid_post")
    mid = res.cache[f"blocks.{L}.hook_resid_mid"]
    got = student.mlp_backward(d_post, mid, blk, eps)
    want = res.grad(f"blocks.{L}.hook_resid_mid")  # minillm.grad.backward's answer at the hook point

    def mistakes():
        d64, m64 = d_post.astype(np.float64), mid.astype(np.float64)
        branch = ref.mlp_backward(d64, m64, blk, eps) - d64
        s = 1.0 / np.sqrt((m64 * m64).mean(-1, keepdims=True) + eps)
        # the MLP branch with the norm's scale treated as a constant
        u = m64 * s * blk.ln2.w
        pre, lin = u @ blk.mlp.W_gate, u @ blk.mlp.W_in
        sig = 1 / (1 + np.exp(-pre))
        dpost = d64 @ blk.mlp.W_out.T
        d_in = (dpost * pre * sig) @ blk.mlp.W_in.T  # through the up projection
        du = (dpost * lin * sig * (1 + pre * (1 - sig))) @ blk.mlp.W_gate.T + d_in
        no_gate_in_deriv = (dpost * lin * sig) @ blk.mlp.W_gate.T + d_in
        return {
            "You left out the skip connection: resid_post = resid_mid + MLP(...), so d resid_mid = "
            "d_resid_post + (the gradient through the MLP branch).": branch,
            "You treated RMSNorm's scale as a constant (du·s·w): use your rms_norm_backward for the norm.":
                d64 + du * s * blk.ln2.w,
            "The derivative of silu is not σ(z): silu'(z) = σ(z)·(1 + z·(1 − σ(z))).":
                d64 + ref.rms_norm_backward(no_gate_in_deriv, m64, blk.ln2.w, eps)[0],
        }

    _verdict(f"mlp_backward(grad of blocks.{L}.hook_resid_post)", got, want, mistakes,
             f"Compare your intermediate gradients with minillm's: "
             f"backward(...).grad('blocks.{L}.mlp.hook_post'), '...mlp.hook_pre', '...mlp.hook_pre_linear' "
             "and '...ln2.hook_normalized' (that one is du·w: the gradient of the normalised input, "
             "before the gain).",
             tol=2e-3)


def check_head_attribution(student, ref) -> None:
    res = _grads()
    name = f"blocks.{HEAD_LAYER}.attn.hook_z"
    z_clean, z_corrupt, grad = res.cache[name], _corrupt_z(), res.grad(name)
    got = student.head_attribution(z_clean, z_corrupt, grad)
    f64 = [a.astype(np.float64) for a in (z_clean, z_corrupt, grad)]
    want = ref.head_attribution(*f64)
    delta = (z_corrupt - z_clean).astype(np.float64)
    mistakes = {
        "Your sign is flipped: the patch moves the activation from clean TO corrupted, so the change is "
        "(z_corrupt − z_clean)·grad.": -want,
        "You took absolute values: attribution keeps its sign (a head can push toward either name).":
            np.abs(delta * grad).sum(axis=(0, 1, 3)),
        "You forgot the gradient: (z_corrupt − z_clean) alone says how much the head changed, not how much "
        "the metric cares.": delta.sum(axis=(0, 1, 3)),
        "You multiplied the clean activation by its gradient (that is zero-ablation importance, a·grad); "
        "attribution patching uses the DIFFERENCE z_corrupt − z_clean.":
            -(z_clean * grad).sum(axis=(0, 1, 3)),
    }
    _verdict(f"head_attribution(layer {HEAD_LAYER})", got, want, mistakes,
             "Sum (z_corrupt − z_clean)·grad over batch, position and d_head: one number per head, "
             "shape [h].",
             tol=1e-4)


CHECKS = [
    ("rms_norm_backward", check_rms_norm_backward),
    ("softmax_backward", check_softmax_backward),
    ("linear_backward", check_linear_backward),
    ("central_difference", check_central_difference),
    ("mlp_backward", check_mlp_backward),
    ("head_attribution", check_head_attribution),
]
