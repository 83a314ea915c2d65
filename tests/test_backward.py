"""The hand-written backward pass, checked three ways.

1. Every op's backward (ops_backward.py) against central finite differences in
   float64, on hypothesis-chosen shapes and inputs: relative error < 1e-6.
   With step 1e-6 the central difference has truncation error ~h² ≈ 1e-12 and
   rounding error ~ε/h ≈ 1e-10 relative, so 1e-6 leaves ample room yet catches
   any wrong term (a missing term is an O(1) error).
2. Whole-model parameter gradients on the golden fixtures against PyTorch
   autograd's (tests/fixtures/<name>/grads.safetensors, made by
   make_fixtures.py): float32 within 1e-4 of the largest entry per tensor
   (float32 accumulates ~1e-6 relative rounding per op; 1e-4 allows two
   orders of magnitude for the depth of the graph and summation order).
3. Whole-model gradients in float64 against finite differences on random
   coordinates of parameters and hook activations, both families.
Plus: the recorded forward is the model's own; a few SGD steps lower the loss.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.numpy import load_file

import minillm
from minillm import ops
from minillm.errors import MinillmError
from minillm.grad import backward as bw
from minillm.grad import ops_backward as B
from minillm.interp import metrics as M
from tests.conftest import GOLDEN, golden_folder, random_model

EPS = 1e-6  # finite-difference step (float64)
TOL = 1e-6  # relative error allowed between analytic and numeric gradients


def numeric_grad(f, x: np.ndarray) -> np.ndarray:
    """Central differences of the scalar f() w.r.t. every entry of x (perturbed in place)."""
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + EPS
        fp = f()
        x[i] = old - EPS
        fm = f()
        x[i] = old
        g[i] = (fp - fm) / (2 * EPS)
    return g


def assert_close(analytic, numeric, what):
    err = np.abs(analytic - numeric).max() / max(np.abs(numeric).max(), 1e-3)
    assert err < TOL, f"{what}: relative error {err:.2e} between backward and finite differences"


def check_op(forward, backward, inputs: dict, seed: int, what: str):
    """Loss L = Σ forward(**inputs) · R (R random): compare backward(R) with finite differences."""
    rng = np.random.default_rng(seed)
    out = forward(**inputs)
    R = rng.normal(size=out.shape)
    grads = backward(R, **inputs)
    loss = lambda: float((forward(**inputs) * R).sum())  # noqa: E731
    for name, g in grads.items():
        assert g.shape == inputs[name].shape, f"{what}: d{name} has the wrong shape"
        assert_close(g, numeric_grad(loss, inputs[name]), f"{what}: d{name}")


dims = st.integers(1, 4)
seeds = st.integers(0, 10_000)
OPS = settings(max_examples=8, deadline=None)


def arr(rng, *shape, scale=1.0):
    return rng.normal(0, scale, shape)


@OPS
@given(b=dims, n_in=dims, n_out=dims, seed=seeds)
def test_linear_backward(b, n_in, n_out, seed):
    rng = np.random.default_rng(seed)
    inp = dict(x=arr(rng, b, 2, n_in), W=arr(rng, n_in, n_out), b=arr(rng, n_out))

    def back(R, x, W, b):
        dx, dW, db = B.linear_backward(R, x, W, has_bias=True)
        return dict(x=dx, W=dW, b=db)

    check_op(ops.linear, back, inp, seed, "linear")


@OPS
@given(b=dims, d=st.integers(2, 6), seed=seeds, centre=st.booleans())
def test_norm_backward(b, d, seed, centre):
    rng = np.random.default_rng(seed)
    inp = dict(x=arr(rng, b, 2, d, scale=2.0), w=arr(rng, d), bias=arr(rng, d))
    parts = ops.layer_norm_parts if centre else ops.rms_norm_parts

    def fwd(x, w, bias):
        n, s = parts(x, 1e-5)
        return n / s * w + (bias if centre else 0)  # the scale is the divisor

    def back(R, x, w, bias):
        if centre:
            dx, dw, db = B.layer_norm_backward(R, x, w, 1e-5)
            return dict(x=dx, w=dw, bias=db)
        dx, dw = B.rms_norm_backward(R, x, w, 1e-5)
        return dict(x=dx, w=dw)

    check_op(fwd, back, inp, seed, "layer_norm" if centre else "rms_norm")


@OPS
@given(n=st.integers(1, 12), seed=seeds, which=st.sampled_from(["gelu_tanh", "silu"]))
def test_activation_backward(n, seed, which):
    rng = np.random.default_rng(seed)
    inp = dict(x=arr(rng, n, scale=3.0))
    back = lambda R, x: dict(x=B.ACTIVATION_BACKWARDS[which](R, x))  # noqa: E731
    check_op(ops.ACTIVATIONS[which], back, inp, seed, which)


@OPS
@given(rows=dims, n=st.integers(1, 6), seed=seeds, masked=st.booleans())
def test_softmax_and_log_softmax_backward(rows, n, seed, masked):
    rng = np.random.default_rng(seed)
    x = arr(rng, rows, n, scale=2.0)
    if masked and n > 1:  # a -inf entry (causal mask) must get gradient 0
        x[:, -1] = -np.inf
    inp = dict(x=x)
    finite = np.isfinite(x)

    def back_sm(R, x):
        return dict(x=np.where(finite, B.softmax_backward(R, ops.softmax(x)), 0.0))

    def fwd_sm(x):
        return np.where(finite, ops.softmax(x), 0.0)

    if not masked:
        check_op(fwd_sm, back_sm, inp, seed, "softmax")
        check_op(ops.log_softmax, lambda R, x: dict(x=B.log_softmax_backward(R, ops.log_softmax(x))),
                 inp, seed, "log_softmax")
    else:
        R = np.random.default_rng(seed).normal(size=x.shape)
        dx = B.softmax_backward(R, ops.softmax(x))
        assert np.all(dx[~finite] == 0)


@OPS
@given(b=dims, p=dims, heads=dims, half=st.integers(1, 3), seed=seeds)
def test_rope_backward(b, p, heads, half, seed):
    rng = np.random.default_rng(seed)
    e = 2 * half
    cos, sin = ops.rope_cos_sin(np.broadcast_to(np.arange(p), (b, p)),
                                ops.rope_inv_freq(e, 10000.0), np.float64)
    inp = dict(x=arr(rng, b, p, heads, e))
    check_op(lambda x: ops.apply_rope(x, cos, sin),
             lambda R, x: dict(x=B.rope_backward(R, cos, sin)), inp, seed, "rope")


@OPS
@given(b=st.integers(1, 2), p=st.integers(1, 3), kv=st.integers(1, 2), g=st.integers(1, 3),
       e=st.integers(1, 3), seed=seeds)
def test_attention_backward_with_gqa(b, p, kv, g, e, seed):
    """scores, causal mask, softmax and mix together, for any number of heads per kv-head."""
    rng = np.random.default_rng(seed)
    h = kv * g
    inp = dict(q=arr(rng, b, p, h, e), k=arr(rng, b, kv, p, e), v=arr(rng, b, kv, p, e))
    causal = ops.attention_mask(np.arange(p), np.arange(p))

    def fwd(q, k, v):
        scores = np.where(causal, ops.attention_scores(q, k), -np.inf)
        return ops.attention_mix(ops.softmax(scores), v)

    def back(R, q, k, v):
        pattern = ops.softmax(np.where(causal, ops.attention_scores(q, k), -np.inf))
        dpattern, dv = B.attention_mix_backward(R, pattern, v)
        dq, dk = B.attention_scores_backward(B.softmax_backward(dpattern, pattern), q, k)
        return dict(q=dq, k=dk, v=dv)

    check_op(fwd, back, inp, seed, "attention")


@OPS
@given(rows=dims, d=dims, m=dims, seed=seeds)
def test_gated_mlp_backward(rows, d, m, seed):
    rng = np.random.default_rng(seed)
    inp = dict(x=arr(rng, rows, d), W_gate=arr(rng, d, m), W_in=arr(rng, d, m), W_out=arr(rng, m, d))

    def back(R, x, W_gate, W_in, W_out):
        dx, dg, di, do = B.gated_mlp_full_backward(R, x, W_gate, W_in, W_out)
        return dict(x=dx, W_gate=dg, W_in=di, W_out=do)

    check_op(B.gated_mlp_forward, back, inp, seed, "gated mlp")


@OPS
@given(vocab=st.integers(2, 6), d=dims, seed=seeds)
def test_embedding_and_unembedding_backward(vocab, d, seed):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, vocab, (2, 3))  # repeated ids must accumulate
    check_op(lambda W_E: W_E[tokens],
             lambda R, W_E: dict(W_E=B.embedding_backward(R, tokens, vocab)),
             dict(W_E=arr(rng, vocab, d)), seed, "embedding")

    def back_unembed(R, x, W_U):
        dx, dW = B.unembed_backward(R, x, W_U)
        return dict(x=dx, W_U=dW)

    check_op(lambda x, W_U: ops.linear(x, W_U), back_unembed,
             dict(x=arr(rng, 2, 3, d), W_U=arr(rng, d, vocab)), seed, "unembedding")


# --- whole model ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", GOLDEN)
def test_parameter_gradients_match_pytorch_autograd(name):
    folder = golden_folder(name)
    model = minillm.load(folder)
    ref = load_file(folder / "reference.safetensors")
    torch_grads = load_file(folder / "grads.safetensors")
    ids = ref["input_ids"]
    res = bw.backward(model, ids, M.cross_entropy(ids))
    assert abs(res.value - float(ref["loss"])) < 1e-5, f"{name}: loss {res.value} vs HF {ref['loss']}"
    ours = res.hf_grads()
    assert set(ours) == {k.removeprefix("grad.") for k in torch_grads}
    for key, expected in torch_grads.items():
        got = ours[key.removeprefix("grad.")]
        err = np.abs(got - expected).max() / np.abs(expected).max()
        assert err < 1e-4, f"{name}: gradient of {key[5:]} differs from autograd by {err:.2e} relative"


def test_tied_embedding_gradient_includes_the_unembedding():
    model = random_model("llama", dtype=np.float64, tie_word_embeddings=True)
    ids = np.array([[1, 5, 9, 5]])
    res = bw.backward(model, ids, M.cross_entropy(ids))
    dW_E = res.grad("embed.W_E")
    assert np.array_equal(res.grad("unembed.W_U"), dW_E.T)
    # rows of tokens that never occur in the input get gradient only through the unembedding
    assert np.abs(dW_E[2]).max() > 0


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_float64_gradients_match_finite_differences(family):
    model = random_model(family, seed=3, dtype=np.float64)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 64, (2, 6))
    metric = M.cross_entropy(ids)
    res = bw.backward(model, ids, metric)
    for name, param in model.named_parameters():
        for _ in range(2):
            i = tuple(int(rng.integers(0, n)) for n in param.shape)
            fd = entry_fd(lambda: metric.value(model(ids)), param, i)
            assert abs(res.grad(name)[i] - fd) < TOL * max(1.0, abs(fd)), f"{name}{i}"
    hooks = [n for n in model.hook_names() if not n.endswith("hook_result")]
    for hook_name in rng.choice(hooks, 12, replace=False):
        act = res.cache.get(hook_name)
        if act is None:
            act = model.run_with_cache(ids, names_filter=hook_name)[1][hook_name]
        i = tuple(int(rng.integers(0, n)) for n in act.shape)
        if not np.isfinite(act[i]) or (hook_name.endswith("hook_pattern") and act[i] == 0):
            continue  # a masked score / pattern entry: not a free variable

        def run(delta, hook_name=hook_name, i=i):
            def nudge(a, hook):
                a = a.copy()
                a[i] += delta
                return a

            return metric.value(model.run_with_hooks(ids, [(hook_name, nudge)]))

        fd = (run(EPS) - run(-EPS)) / (2 * EPS)
        assert abs(res.grad(hook_name)[i] - fd) < TOL * max(1.0, abs(fd)), f"{hook_name}{i}"


def entry_fd(f, param, i):
    """Central difference of f() w.r.t. one entry of an array (restored afterwards)."""
    old = param[i]
    param[i] = old + EPS
    fp = f()
    param[i] = old - EPS
    fm = f()
    param[i] = old
    return (fp - fm) / (2 * EPS)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_metrics_logit_diff_and_log_prob(family):
    model = random_model(family, seed=1, dtype=np.float64)
    ids = np.array([[3, 1, 4, 1, 5], [9, 2, 6, 5, 3]])
    W = model.blocks[0].attn.W_Q
    for metric in (M.logit_diff(None, 7, [[8], [2]]), M.log_prob(None, 11, pos=2)):
        res = bw.backward(model, ids, metric)
        for i in [(0, 1, 2), (3, 0, 1)]:
            fd = entry_fd(lambda m=metric: m.value(model(ids)), W, i)
            assert abs(res.grad("blocks.0.attn.W_Q")[i] - fd) < TOL * max(1.0, abs(fd))


def test_recorded_forward_is_the_models_forward(tiny):
    """The backward differentiates what model.py computed: its record is run_with_cache's,
    and the values it recomputes (norm outputs feeding q/k/v and the MLP) reproduce the cache."""
    ids = np.array([[1, 2, 3, 4, 5]])
    res = bw.backward(tiny, ids, M.cross_entropy(ids), params=False)
    logits, cache = tiny.run_with_cache(ids)
    np.testing.assert_array_equal(res.logits, logits)
    for name, act in res.cache.items():
        np.testing.assert_array_equal(act, cache[name], err_msg=name)
    for l, blk in enumerate(tiny.blocks):
        x = cache[f"blocks.{l}.ln1.hook_normalized"] * blk.ln1.w + (0 if blk.ln1.b is None else blk.ln1.b)
        q = ops.linear(x, blk.attn.W_QKV, blk.attn.b_QKV)[..., : tiny.cfg.n_heads * tiny.cfg.d_head]
        np.testing.assert_allclose(q.reshape(cache[f"blocks.{l}.attn.hook_q"].shape),
                                   cache[f"blocks.{l}.attn.hook_q"], rtol=1e-5, atol=1e-5)
    # every hook point except the optional hook_result gets a gradient of its activation's shape
    for name in tiny.hook_names():
        if not name.endswith("hook_result"):
            assert res.grad(name).shape == cache[name].shape, name


def test_float32_and_float64_gradients_agree(tiny):
    ids = np.array([[1, 7, 3, 9, 5, 2]])
    g32 = bw.backward(tiny, ids, M.cross_entropy(ids)).named_grads()
    m64 = random_model(tiny.cfg.family, dtype=np.float64)
    g64 = bw.backward(m64, ids, M.cross_entropy(ids)).named_grads()
    for name, g in g32.items():
        assert g.dtype == np.float32 and g64[name].dtype == np.float64
        # b_K's gradient is exactly 0 (a bias on k adds q·b_K to every key's score alike,
        # and softmax ignores a constant): compare it in absolute terms.
        err = np.abs(g - g64[name]).max() / max(np.abs(g64[name]).max(), 1e-3)
        assert err < 1e-4, f"{name}: float32 vs float64 gradient differ by {err:.1e}"
    if "blocks.0.attn.b_K" in g64:
        assert np.abs(g64["blocks.0.attn.b_K"]).max() < 1e-12


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_a_few_sgd_steps_lower_the_loss(family):
    model = random_model(family, seed=5, dtype=np.float64)
    ids = np.random.default_rng(0).integers(0, 64, (2, 12))
    losses = []
    for _ in range(5):
        res = bw.backward(model, ids, M.cross_entropy(ids))
        losses.append(res.value)
        for name, grad in res.named_grads().items():
            model.get_parameter(name)[...] -= 0.05 * grad
    assert losses[-1] < losses[0] - 0.3 and all(np.diff(losses) < 0), losses


def test_unknown_names_and_skipped_parameter_gradients_are_clear_errors(tiny):
    ids = np.array([[1, 2, 3]])
    res = bw.backward(tiny, ids, M.cross_entropy(ids), params=False)
    with pytest.raises(MinillmError, match="params=True"):
        res.grad("blocks.0.attn.W_Q")
    with pytest.raises(MinillmError, match="no gradient named"):
        bw.backward(tiny, ids, M.cross_entropy(ids)).grad("blocks.0.attn.W_X")
    with pytest.raises(MinillmError, match="needs a metric from minillm.interp.metrics"):
        bw.backward(tiny, ids, lambda logits: (0.0, np.zeros(3)))

    class WrongShape(M.Metric):
        def __call__(self, logits):
            return logits[:, -1, 0]

        def grad(self, logits):
            return np.zeros(3)

    with pytest.raises(MinillmError, match="must match the logits"):
        bw.backward(tiny, ids, WrongShape())


def test_smollm2_backward(smollm2):
    """The real model: gradients of log p(a token) are finite and non-zero where they should be
    (the 64-token time and peak memory are measured outside the suite, see the issue report)."""
    ids = np.random.default_rng(0).integers(0, smollm2.cfg.d_vocab, (1, 16))
    res = bw.backward(smollm2, ids, M.log_prob(None, int(ids[0, -1])))
    assert np.isfinite(res.value) and res.value < 0
    g = res.grad("blocks.3.attn.W_Q")
    assert g.shape == (smollm2.cfg.n_heads, smollm2.cfg.d_model, smollm2.cfg.d_head)
    assert np.isfinite(g).all() and np.abs(g).max() > 0
    assert np.isfinite(res.grad("embed.W_E")).all()
