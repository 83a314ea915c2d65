"""Hook points and the activation cache: names, shapes, exactness, bad input.

The expected hook list below is written out by hand from docs/hooks.md (TransformerLens's
names), not generated from the code under test.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.numpy import load_file

import minillm
from minillm import ops
from minillm.activation_cache import act_name
from minillm.kv_cache import KVCache
from tests.conftest import GOLDEN, golden_folder, random_model
from tests.numerics import assert_model_close

# name inside block l -> shape, for batch b, positions p (P = key positions), per docs/hooks.md.
BLOCK_HOOKS = [
    ("hook_resid_pre", "b p d"),
    ("ln1.hook_scale", "b p 1"),
    ("ln1.hook_normalized", "b p d"),
    ("attn.hook_q", "b p h e"),
    ("attn.hook_k", "b p kv e"),
    ("attn.hook_v", "b p kv e"),
    ("attn.hook_rot_q", "b p h e"),  # llama only
    ("attn.hook_rot_k", "b p kv e"),  # llama only
    ("attn.hook_attn_scores", "b h p P"),
    ("attn.hook_pattern", "b h p P"),
    ("attn.hook_z", "b p h e"),
    ("attn.hook_result", "b p h d"),  # only when asked for
    ("hook_attn_out", "b p d"),
    ("hook_resid_mid", "b p d"),
    ("ln2.hook_scale", "b p 1"),
    ("ln2.hook_normalized", "b p d"),
    ("mlp.hook_pre", "b p m"),
    ("mlp.hook_pre_linear", "b p m"),  # llama only
    ("mlp.hook_post", "b p m"),
    ("hook_mlp_out", "b p d"),
    ("hook_resid_post", "b p d"),
]
LLAMA_ONLY = {"attn.hook_rot_q", "attn.hook_rot_k", "mlp.hook_pre_linear"}


def expected_hooks(model, b: int, p: int, start: int = 0) -> list[tuple[str, tuple]]:
    c = model.cfg
    size = dict(b=b, p=p, P=start + p, d=c.d_model, h=c.n_heads, kv=c.n_kv_heads, e=c.d_head,
                m=c.d_mlp, V=c.d_vocab)
    shape = lambda s: tuple(int(size.get(k, k)) for k in s.split())  # noqa: E731
    llama = c.family == "llama"
    out = [("hook_embed", shape("b p d"))]
    if not llama:
        out.append(("hook_pos_embed", shape("b p d")))
    for l in range(c.n_layers):
        out += [(f"blocks.{l}.{n}", shape(s)) for n, s in BLOCK_HOOKS if llama or n not in LLAMA_ONLY]
    return out + [("ln_final.hook_scale", shape("b p 1")), ("ln_final.hook_normalized", shape("b p d")),
                  ("hook_logits", shape("b p V"))]


def record_firing(model, tokens, cache=None):
    """[(name, shape, pos_offset)] of every hook (attn.hook_result too: use_attn_result on)."""
    fired = []
    model.set_use_attn_result(True)
    try:
        model.run_with_hooks(tokens, [(lambda n: True, lambda a, h: fired.append((h.name, a.shape,
                                                                                   h.pos_offset)))],
                             cache=cache)
    finally:
        model.set_use_attn_result(False)
    return fired


def test_hook_names_and_shapes_match_design(tiny):
    tokens = np.array([[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]])
    expected = expected_hooks(tiny, 2, 5)
    assert tiny.hook_names() == [n for n, _ in expected]
    fired = record_firing(tiny, tokens)
    assert [(n, s) for n, s, _ in fired] == expected  # forward order, every hook, right shape


def test_cached_decoding_fires_every_hook_with_pos_offset(tiny):
    """Prefill 4 tokens, then decode 1: same names, p = 1, P = 5, pos_offset = 4."""
    cache = KVCache.for_model(tiny)
    record_firing(tiny, np.array([[1, 2, 3, 4]]), cache)
    fired = record_firing(tiny, np.array([[5]]), cache)
    assert [(n, s) for n, s, _ in fired] == expected_hooks(tiny, 1, 1, start=4)
    assert {o for _, _, o in fired} == {4}


def test_smollm2_hook_shapes(smollm2):
    ids = np.array([[1, 2, 3, 4, 5, 6]])
    expected = expected_hooks(smollm2, 1, 6)
    assert smollm2.hook_names() == [n for n, _ in expected]
    _, cache = smollm2.run_with_cache(ids, names_filter=lambda n: n.startswith("blocks.7.")
                                      or not n.startswith("blocks."))
    want = {n: s for n, s in expected if n in cache}
    # block 7 without attn.hook_result (a predicate skips it unless use_attn_result is on) + 4 global
    assert len(want) == len(cache) == 20 + 4
    assert {n: a.shape for n, a in cache.items()} == want


@pytest.mark.numerics
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_identity_hooks_are_bit_exact(family, dtype):
    model = random_model(family, seed=1, dtype=dtype)
    tokens = np.array([[3, 1, 4, 1, 5, 9, 2, 6]])
    clean = model(tokens)
    # Every hook (a predicate skips attn.hook_result while use_attn_result is off). The setting
    # switches attention's output to a per-head einsum + sum (to expose the heads), which sums
    # in another order: the reorder tolerance of tests/numerics.py in float32, 1e-12 in float64.
    every = lambda n: True  # noqa: E731
    assert (model.run_with_hooks(tokens, [(every, lambda a, h: a)]) == clean).all()
    assert (model.run_with_hooks(tokens, [(every, lambda a, h: a.copy())]) == clean).all()
    assert (model.run_with_hooks(tokens, [(every, lambda a, h: None)]) == clean).all()
    assert not model.hooks
    model.set_use_attn_result(True)
    with_result = model.run_with_hooks(tokens, [(lambda n: True, lambda a, h: a)])
    model.set_use_attn_result(False)
    assert_model_close(model, with_result, clean, "with hook_result vs without")


def test_hook_result_needs_the_setting_use_attn_result(tiny):
    ids = np.array([[1, 2, 3]])
    name = "blocks.0.attn.hook_result"
    for ask in (lambda: tiny.run_with_cache(ids, names_filter=name),
                lambda: tiny.run_with_hooks(ids, [(name, lambda a, h: a)]),
                lambda: tiny.add_hook(name, lambda a, h: a)):
        with pytest.raises(minillm.MinillmError, match=r"use_attn_result.*set_use_attn_result\(True\)"):
            ask()
        assert not tiny.hooks
    _, c = tiny.run_with_cache(ids)
    assert name not in c
    tiny.set_use_attn_result(True)
    try:
        _, c = tiny.run_with_cache(ids)  # the setting on: cached by default, as in TransformerLens
        assert c[name].shape == (1, 3, tiny.cfg.n_heads, tiny.cfg.d_model)
    finally:
        tiny.set_use_attn_result(False)


def test_none_keeps_activation_and_array_replaces_it(tiny):
    tokens = np.array([[1, 2, 3]])
    clean = tiny(tokens)
    assert (tiny.run_with_hooks(tokens, [("blocks.0.hook_resid_post", lambda a, h: None)]) == clean).all()
    zeroed = tiny.run_with_hooks(tokens, [("blocks.1.hook_resid_post", lambda a, h: np.zeros_like(a))])
    # the final norm of a zero stream is 0 (RMS) or 0 (LayerNorm: centred zeros), so logits = bias only
    b = tiny.ln_final.b
    expected = np.zeros_like(clean) if b is None else np.broadcast_to(b @ tiny.unembed.W_U, clean.shape)
    np.testing.assert_allclose(zeroed, expected, atol=1e-6)


def test_hook_point_layer_and_name(tiny):
    seen = {}

    def record(a, h):
        seen[h.name] = h.layer() if h.name.startswith("blocks.") else None
        if h.name == "hook_embed":
            with pytest.raises(minillm.MinillmError, match="not inside a block"):
                h.layer()  # TransformerLens raises too: the name has no block index

    tiny.run_with_hooks(np.array([[1, 2]]), [(lambda n: n.endswith("hook_z") or n == "hook_embed",
                                              record)])
    assert seen == {"hook_embed": None, "blocks.0.attn.hook_z": 0, "blocks.1.attn.hook_z": 1}


# --- bad input ---------------------------------------------------------------------------------


def test_unknown_hook_name_suggests_nearest(tiny):
    with pytest.raises(minillm.MinillmError, match="did you mean 'blocks.1.hook_resid_post'"):
        tiny.run_with_hooks(np.array([[1]]), [("blocks.1.hook_resid_pots", lambda a, h: None)])
    with pytest.raises(minillm.MinillmError, match="did you mean 'blocks.0.attn.hook_pattern'"):
        tiny.run_with_cache(np.array([[1]]), names_filter=["blocks.0.attn.hook_patern"])
    assert not tiny.hooks


@pytest.mark.parametrize("bad, message", [
    (lambda a, h: a[:, :1], r"blocks.0.hook_mlp_out returned shape \(1, 1, 32\)"),
    (lambda a, h: a[..., None], r"blocks.0.hook_mlp_out returned shape \(1, 3, 32, 1\)"),
    (lambda a, h: a.astype(np.int64), r"blocks.0.hook_mlp_out returned dtype int64"),
])
def test_wrong_hook_return_is_a_clear_error_and_hooks_are_clean(tiny, bad, message):
    with pytest.raises(minillm.MinillmError, match=message):
        tiny.run_with_hooks(np.array([[1, 2, 3]]), [("blocks.0.hook_mlp_out", bad)])
    assert not tiny.hooks
    assert (tiny(np.array([[1, 2, 3]])) == tiny(np.array([[1, 2, 3]]))).all()


def test_hooks_removed_when_the_hook_or_the_block_raises(tiny):
    def boom(a, h):
        raise ValueError("in hook")

    with pytest.raises(ValueError):
        tiny.run_with_hooks(np.array([[1]]), [("hook_embed", boom)])
    assert not tiny.hooks
    with pytest.raises(KeyError), tiny.hooks([("hook_logits", lambda a, h: None)]):
        assert tiny.hooks.wants("hook_logits")
        raise KeyError("in block")
    assert not tiny.hooks


# --- run_with_cache and the ActivationCache ------------------------------------------------------


def test_names_filter_keeps_only_what_was_asked(tiny):
    ids = np.array([[1, 2, 3]])
    _, c = tiny.run_with_cache(ids, names_filter="blocks.1.hook_resid_pre")
    assert list(c) == ["blocks.1.hook_resid_pre"]
    _, c = tiny.run_with_cache(ids, names_filter=["hook_logits", "hook_embed"])
    assert list(c) == ["hook_embed", "hook_logits"]  # forward order
    _, c = tiny.run_with_cache(ids, names_filter=lambda n: n.endswith("hook_scale"))
    assert list(c) == ["blocks.0.ln1.hook_scale", "blocks.0.ln2.hook_scale", "blocks.1.ln1.hook_scale",
                       "blocks.1.ln2.hook_scale", "ln_final.hook_scale"]
    _, c = tiny.run_with_cache(ids)
    assert not any(n.endswith("hook_result") for n in c)  # large: only on request
    assert len(c) == len(tiny.hook_names()) - tiny.cfg.n_layers


@pytest.mark.numerics
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_hook_result_on_request_equals_z_times_W_O(family, dtype):
    tiny = random_model(family, dtype=dtype)
    tiny.set_use_attn_result(True)
    ids = np.array([[5, 4, 3, 2]])
    logits, c = tiny.run_with_cache(ids, names_filter=lambda n: "attn" in n or "result" in n)
    assert_model_close(tiny, logits, tiny(ids), "per-head sum vs one GEMM")  # other summation order
    for l in range(tiny.cfg.n_layers):
        heads = c.stack_head_results(l + 1)[-tiny.cfg.n_heads:]  # from hook_result
        z_heads = np.einsum("bphe,hed->hbpd", c["z", l], tiny.blocks[l].attn.W_O)
        # the same products, maybe another einsum path: one matrix product of d_head terms
        assert_model_close(tiny, heads, z_heads, f"hook_result {l}", depth=1)


def test_short_keys_like_transformer_lens(tiny):
    _, c = tiny.run_with_cache(np.array([[1, 2, 3]]))
    assert c["pattern", 1] is c["blocks.1.attn.hook_pattern"]
    assert c["resid_post", -1] is c["blocks.1.hook_resid_post"]
    assert c["scale", 0, "ln2"] is c["blocks.0.ln2.hook_scale"]
    assert act_name("scale") == "ln_final.hook_scale"
    assert act_name("normalized", 3, "ln2") == "blocks.3.ln2.hook_normalized"
    with pytest.raises(minillm.MinillmError, match="needs a layer"):
        act_name("resid_pre")
    with pytest.raises(minillm.MinillmError, match="not in this cache"):
        c["blocks.0.attn.hook_result"]


def test_remove_batch_dim_and_to(tiny):
    _, c = tiny.run_with_cache(np.array([[1, 2, 3]]))
    c64 = c.to(np.float64)
    resid = c["blocks.0.hook_resid_pre"]
    one = c.remove_batch_dim()  # in place, as in TransformerLens
    assert one is c and not c.has_batch_dim
    assert c["blocks.0.hook_resid_pre"].shape == (3, tiny.cfg.d_model)
    assert (c["blocks.0.hook_resid_pre"] == resid[0]).all()
    assert c.accumulated_resid(apply_ln=True, pos_slice=-1).shape == (3, tiny.cfg.d_model)
    assert c.remove_batch_dim() is c  # a second call changes nothing
    _, direct = tiny.run_with_cache(np.array([[1, 2, 3]]), remove_batch_dim=True)
    assert not direct.has_batch_dim and all((direct[k] == c[k]).all() for k in c)
    assert all(a.dtype == np.float64 for a in c64.values())
    assert (c64["hook_logits"] == c["hook_logits"].astype(np.float64)).all()
    _, c2 = tiny.run_with_cache(np.array([[1, 2], [3, 4]]))
    with pytest.raises(minillm.MinillmError, match="batch size 2"):
        c2.remove_batch_dim()


@pytest.mark.numerics
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_stacks_sum_to_the_residual_stream(family, dtype):
    """Decompositions are linear: their components add up to what the model computed.

    The sums run in another order (and per-head / per-neuron products replace one GEMM):
    the reorder tolerance of tests/numerics.py in float32, 1e-12 in float64.
    """
    model = random_model(family, seed=3, dtype=dtype)
    _, c = model.run_with_cache(np.array([[7, 3, 9, 1, 4]]))
    L = model.cfg.n_layers
    final = c["resid_post", L - 1]
    acc, labels = c.accumulated_resid(return_labels=True, incl_mid=True)
    assert labels == ["0_pre", "0_mid", "1_pre", "1_mid", "final_post"]
    assert (acc[-1] == final).all() and (acc[2] == c["resid_pre", 1]).all()
    assert c.accumulated_resid(1).shape[0] == 2
    # the final stream through ln_final (own statistics, gain, bias) is exactly its output
    w, b = model.ln_final.w, model.ln_final.b
    ln_out = c["ln_final.hook_normalized"] * w
    ln_out = ln_out if b is None else ln_out + b
    assert (c.accumulated_resid(apply_ln=True)[-1] == ln_out).all()
    # apply_ln_to_stack freezes the cached scale and multiplies by the gain: the true
    # input of the unembedding, minus the bias (this model's weights are not folded)
    assert (c.apply_ln_to_stack(final[None])[0] == c["ln_final.hook_normalized"] * w).all()
    parts, labels = c.decompose_resid(return_labels=True)
    assert labels[-2:] == ["1_attn_out", "1_mlp_out"]
    assert_model_close(model, parts.sum(0), final, "decompose_resid")
    normalized = c.decompose_resid(apply_ln=True).sum(0)
    assert_model_close(model, normalized, c["ln_final.hook_normalized"] * w, "decompose_resid(apply_ln)")
    heads = c.stack_head_results(incl_remainder=True)
    assert heads.shape == (L * model.cfg.n_heads + 1, 1, 5, model.cfg.d_model)
    assert_model_close(model, heads.sum(0), final, "stack_head_results")
    for l in range(L):  # heads of block l + b_O = attn_out
        block_heads = c.stack_head_results(l + 1)[l * model.cfg.n_heads:]
        b_O = model.blocks[l].attn.b_O
        assert_model_close(model, block_heads.sum(0) + (0 if b_O is None else b_O), c["attn_out", l],
                           f"heads of block {l}")
        neurons = c.stack_neuron_results(l + 1, pos_slice=[1, 4])[l * model.cfg.d_mlp:]
        b_out = model.blocks[l].mlp.b_out
        assert_model_close(model, neurons.sum(0) + (0 if b_out is None else b_out),
                           c["mlp_out", l][:, [1, 4]], f"neurons of block {l}")
    some, labels = c.stack_neuron_results(1, neuron_slice=[2, 5], return_labels=True)
    assert labels == ["L0N2", "L0N5"] and some.shape == (2, 1, 5, model.cfg.d_model)


@pytest.mark.parametrize("name", GOLDEN)
def test_cache_equals_golden_hidden_states(name):
    """Hugging Face's hidden_states (frozen fixtures) vs accumulated_resid: hidden_states[l]
    is resid_pre of block l; the last entry is after the final norm (normalized · gain + b).
    5e-5: float32, as in test_forward."""
    model = minillm.load(golden_folder(name))
    ref = load_file(str(golden_folder(name) / "reference.safetensors"))
    _, c = model.run_with_cache(ref["input_ids"])
    acc = c.accumulated_resid()
    L = model.cfg.n_layers
    np.testing.assert_allclose(acc[:L], ref["hidden_states"][:L], atol=5e-5)
    np.testing.assert_allclose(acc[L], ref["resid_post_last"], atol=5e-5)
    final = c.accumulated_resid(apply_ln=True)[L]  # ln_final with its gain and bias
    np.testing.assert_allclose(final, ref["hidden_states"][L], atol=5e-5)


def test_smollm2_mlp_post_by_hand(smollm2):
    """hook_post = silu(x·W_gate) * (x·W_in), x = ln2 output, from the live weight views.
    2e-5: float32 GEMMs of 576 terms in a different order (activations of size ~1)."""
    ids = smollm2.to_tokens("The quick brown fox jumps over the lazy dog")
    names = ["blocks.4.ln2.hook_normalized", "blocks.4.mlp.hook_pre", "blocks.4.mlp.hook_pre_linear",
             "blocks.4.mlp.hook_post"]
    _, c = smollm2.run_with_cache(ids, names_filter=names)
    mlp = smollm2.blocks[4].mlp
    x = c["blocks.4.ln2.hook_normalized"] * smollm2.blocks[4].ln2.w  # [1, p, d]
    gate = np.einsum("bpd,dm->bpm", x.astype(np.float64), mlp.W_gate.astype(np.float64))
    up = np.einsum("bpd,dm->bpm", x.astype(np.float64), mlp.W_in.astype(np.float64))
    post = gate / (1 + np.exp(-gate)) * up
    np.testing.assert_allclose(c["blocks.4.mlp.hook_pre"], gate, atol=2e-5)
    np.testing.assert_allclose(c["blocks.4.mlp.hook_post"], post, atol=2e-5)
    assert (c["post", 4] == ops.silu(c["pre", 4]) * c["pre_linear", 4]).all()


@settings(max_examples=15, deadline=None)
@given(family=st.sampled_from(["gpt2", "llama"]), seed=st.integers(0, 2**16),
       p=st.integers(1, 8))
def test_cache_is_what_the_forward_pass_used(family, seed, p):
    """Recomputing the next activation from the cached previous one gives the cached value:
    hook_normalized = (resid - mean) / scale (or resid / scale), bit for bit."""
    model = random_model(family, seed=seed % 7)
    ids = np.random.default_rng(seed).integers(0, model.cfg.d_vocab, (1, p))
    _, c = model.run_with_cache(ids)
    for l in range(model.cfg.n_layers):
        centered, scale = model.norm_parts(c["resid_pre", l], model.cfg.eps)
        assert (scale == c["scale", l, "ln1"]).all()
        assert (centered / scale == c["normalized", l, "ln1"]).all()
        assert (c["resid_pre", l] + c["attn_out", l] == c["resid_mid", l]).all()
