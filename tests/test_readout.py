"""Neuron and head readouts through the vocabulary, top-activating contexts, and PCA."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from matplotlib.figure import Figure

from minillm.errors import MinillmError
from minillm.interp import readout
from minillm.interp.pca import activation_pca, collect_activations, pca
from tests.conftest import random_model

# --- neurons -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_neuron_readout_is_W_out_through_W_U(family):
    model = random_model(family)
    model.ln_final.w[...] = np.linspace(0.5, 2.0, model.cfg.d_model)
    r = readout.neuron_readout(model, layer=1, neuron=7, k=4)
    W_out, W_U = model.blocks[1].mlp.W_out[7], model.unembed.W_U
    np.testing.assert_allclose(r.logits_out, (W_out * model.ln_final.w) @ W_U, rtol=1e-6)
    np.testing.assert_allclose(r.logits_out_no_gain, W_out @ W_U, rtol=1e-6)
    assert [int(t) for t, _ in r.promoted] == list(np.argsort(-r.logits_out, kind="stable")[:4])
    assert [int(t) for t, _ in r.suppressed] == list(np.argsort(r.logits_out, kind="stable")[:4])
    assert (r.gate_tokens is not None) == (family == "llama")
    inp = model.embed.W_E @ (model.blocks[1].ln2.w * model.blocks[1].mlp.W_in[:, 7])
    assert int(r.input_tokens[0][0]) == int(np.argmax(inp))
    assert "neuron L1N7" in str(r)


def test_neuron_readout_promotes_what_it_writes():
    """Plant a neuron whose output row is token 11's unembedding: it must promote token 11 first."""
    model = random_model("llama")
    model.blocks[0].mlp.W_out[3] = model.unembed.W_U[:, 11] * 10
    r = readout.neuron_readout(model, 0, 3, k=1, ln_gain=False)
    assert r.promoted[0][0] == "11"


def test_top_activating_contexts_match_a_direct_run(smollm2):
    texts = ["The cat sat on the mat.", "Paris is the capital of France.", "1 2 3 4 5"]
    ctx = readout.top_activating_contexts(smollm2, texts, layer=3, neuron=100, k=4, window=3)
    acts = [smollm2.run_with_cache(t, names_filter=["blocks.3.mlp.hook_post"])[1]
            ["blocks.3.mlp.hook_post"][0, :, 100] for t in texts]
    best = sorted(((float(a[p]), j, p) for j, a in enumerate(acts) for p in range(len(a))), reverse=True)
    assert [(c.text_index, c.pos) for c in ctx] == [(j, p) for _, j, p in best[:4]]
    assert ctx[0].activation == pytest.approx(best[0][0])
    assert f"[[{ctx[0].token}]]" in ctx[0].context


def test_neuron_readout_on_smollm2_and_plot(smollm2, tmp_path):
    r = readout.neuron_readout(smollm2, layer=20, neuron=123, k=5)
    assert len(r.promoted) == len(r.suppressed) == 5 and r.gate_tokens is not None
    assert r.promoted[0][1] > 0 > r.suppressed[0][1]
    assert isinstance(readout.plot_neuron_readout(r, tmp_path / "neuron.png"), Figure)
    assert (tmp_path / "neuron.png").stat().st_size > 1000


def test_readout_errors(tiny):
    with pytest.raises(MinillmError, match="neuron 999 does not exist in layer 0"):
        readout.neuron_readout(tiny, 0, 999)
    with pytest.raises(MinillmError, match="layer 5 does not exist"):
        readout.head_ov(tiny, 5, 0)
    with pytest.raises(MinillmError, match="head 4 does not exist"):
        readout.head_qk(tiny, 0, 4)


# --- heads -------------------------------------------------------------------------------------------


def test_ov_and_qk_circuits_use_the_kv_head_of_each_query_head():
    """GQA: query head h reads kv-head h // (n_heads / n_kv_heads); the circuits are what the
    forward pass computes: the score is q·k and the head's write is (pattern · v) W_O."""
    model = random_model("llama", dtype=np.float64)  # 4 heads, 2 kv-heads
    attn = model.blocks[1].attn
    for h in range(4):
        kv = h // 2
        np.testing.assert_allclose(readout.head_ov(model, 1, h), attn._W_V[kv] @ attn.W_O[h])
        np.testing.assert_allclose(readout.head_qk(model, 1, h), attn.W_Q[h] @ attn._W_K[kv].T)
        np.testing.assert_allclose(readout.head_qk(model, 1, h), attn.W_Q[h] @ attn.W_K[h].T)
    # check against activations: pre-RoPE q·k at one pair of positions equals x_q^T QK x_k
    _, cache = model.run_with_cache(np.arange(5)[None])
    x = cache["normalized", 1, "ln1"][0] * model.blocks[1].ln1.w  # [p, d]: the input of attention
    q, k = cache["q", 1][0], cache["k", 1][0]  # [p, h, e], [p, kv, e]
    assert q[4, 3] @ k[2, 1] == pytest.approx(x[4] @ readout.head_qk(model, 1, 3) @ x[2], rel=1e-10)
    v_write = x[2] @ readout.head_ov(model, 1, 3)
    np.testing.assert_allclose(v_write, cache["v", 1][0, 2, 1] @ attn.W_O[3], rtol=1e-10)


def test_svd_readout_of_a_planted_rank_2_circuit(smollm2):
    """M = 5 p1 q1^T + 2 p2 q2^T: the readout recovers σ = (5, 2) and reads q1 through ln_final.w, W_U."""
    model = smollm2
    rng = np.random.default_rng(0)
    P, _ = np.linalg.qr(rng.normal(size=(576, 2)))
    Q, _ = np.linalg.qr(rng.normal(size=(576, 2)))
    M = 5 * np.outer(P[:, 0], Q[:, 0]) + 2 * np.outer(P[:, 1], Q[:, 1])
    r = readout.svd_readout(model, M, "ov", rank=2, k=3)
    np.testing.assert_allclose(r.singular_values[:3], [5, 2, 0], atol=1e-9)
    expected = [[t for t, _ in readout.top_tokens(model, readout.unembed_direction(model, s * Q[:, 0]), 3)]
                for s in (1, -1)]
    assert [t for t, _ in r.outputs[0]] in expected  # a singular pair is defined up to a joint sign
    copy = readout.ov_token_table(model, 20, 5, [" Paris"], k=3)
    assert list(copy) == [" Paris"] and len(copy[" Paris"]) == 3
    assert "qk circuit" in str(readout.svd_readout(model, readout.head_qk(model, 20, 5), "qk", 20, 1, 3))


# --- PCA ---------------------------------------------------------------------------------------------


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10**6), d=st.integers(3, 40), n=st.integers(30, 80))
def test_pca_finds_a_planted_direction(seed, d, n):
    rng = np.random.default_rng(seed)
    direction = rng.normal(size=d)
    direction /= np.linalg.norm(direction)
    X = rng.normal(size=(n, 1)) * 10 * direction + rng.normal(size=(n, d)) * 0.1 + rng.normal(size=d)
    res = pca(X, k=3)
    assert abs(res.components[0] @ direction) > 0.99
    assert res.explained_variance_ratio.sum() == pytest.approx(1.0, abs=1e-12)
    assert res.explained_variance_ratio[0] > 0.9
    np.testing.assert_allclose(np.abs(res.components @ res.components.T), np.eye(3), atol=1e-10)
    # projecting the data reproduces its own coordinates
    np.testing.assert_allclose(res.project(X), res.coords, atol=1e-9)


def test_pca_errors():
    with pytest.raises(MinillmError, match="n >= 2"):
        pca(np.zeros((1, 4)))
    with pytest.raises(MinillmError, match="fitted on size 4"):
        pca(np.random.default_rng(0).normal(size=(5, 4))).project(np.zeros((2, 3)))


def test_activation_pca_on_smollm2_separates_two_groups(smollm2, tmp_path):
    """Numbers vs animals at layer 5 (last token): one of the top components splits the groups
    cleanly and new prompts land on their group's side. (PC1 is not always it: single prompts
    with very large activations, e.g. 'lion tiger', can own PC1 — PCA is variance, not meaning.)"""
    numbers = ["one two three", "seven eight", "four five six", "nine ten", "twelve"]
    animals = ["cat dog", "horse cow sheep", "lion tiger", "mouse rat", "eagle hawk"]
    hook = "blocks.5.hook_resid_post"
    res = activation_pca(smollm2, numbers + animals, hook, k=3)
    split = [j for j in range(3) if max(res.coords[:5, j]) < min(res.coords[5:, j])
             or min(res.coords[:5, j]) > max(res.coords[5:, j])]
    assert split, f"no component separates the groups: {res.coords.round(1)}"
    j = split[0]
    sign = np.sign(res.coords[:5, j].mean())
    new, _ = collect_activations(smollm2, ["thirteen fourteen", "wolf fox"], hook)
    proj = res.project(new)[:, j]
    assert np.sign(proj[0]) == sign and np.sign(proj[1]) == -sign
    groups = ["number"] * 5 + ["animal"] * 5
    fig = res.plot_scatter(tmp_path / "pca.png", labels=numbers + animals, groups=groups, pcs=(0, j or 1))
    assert isinstance(fig, Figure) and (tmp_path / "pca.png").stat().st_size > 1000
    assert isinstance(res.plot_variance(tmp_path / "var.png"), Figure)
    assert (tmp_path / "var.png").stat().st_size > 1000
    X, labels = collect_activations(smollm2, ["a b c"], hook, pos=None)
    assert X.shape == (3, 576) and labels == ["a", " b", " c"]
