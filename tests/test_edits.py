"""Weight edits and the journal: exact revert in any order, no-ops, causality, bad input.

Property tests run on the tiny random models of both families, on the golden
fixtures (tests/fixtures/) and, with fewer examples, on the real SmolLM2.
Weights are compared as bytes: "equal" means bit for bit.
"""

from __future__ import annotations

import copy
import hashlib

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import minillm
from minillm import edits
from minillm.edit.drift import ulp_distance
from minillm.errors import MinillmError
from tests.conftest import GOLDEN, golden_folder, random_model

# --- models --------------------------------------------------------------------------------------

_MODELS: dict[str, minillm.HookedModel] = {}
SMALL = ["tiny-gpt2", "tiny-llama", *GOLDEN]


def small_model(name: str) -> minillm.HookedModel:
    """A tiny random model or a golden fixture, loaded once per session (tests leave it pristine)."""
    if name not in _MODELS:
        if name.startswith("tiny-"):
            _MODELS[name] = random_model(name[5:])
        else:
            _MODELS[name] = minillm.load(golden_folder(name))
    model = _MODELS[name]
    assert model.journal.pristine, f"a previous test left edits on {name}"
    return model


def state(model, names=None) -> dict:
    """Every parameter's bytes (or only those named), W_U separately when it is untied, and the tie flag."""
    out = {n: v.tobytes() for n, v in model.named_parameters() if names is None or n in names}
    if not model.unembed.tied:
        out["unembed.W_U"] = model.unembed.W_U.tobytes()
    out["tied"] = model.unembed.tied
    return out


def diff_names(a: dict, b: dict) -> list[str]:
    return [n for n in sorted(set(a) | set(b)) if a.get(n) != b.get(n)]


# --- strategies ----------------------------------------------------------------------------------

FACTORS = st.sampled_from([0.0, 0.04, 25.0, 1.0, -1.5, 3.0]) | st.floats(1e-3, 1e3)


def block_norms(cfg) -> list[str]:
    """The norms each block of this config has (OLMo-2: only the post-norms)."""
    return ((["ln1", "ln2"] if cfg.pre_norms else []) +
            (["ln1_post", "ln2_post"] if cfg.post_norms else []))


def op_strategy(cfg) -> st.SearchStrategy:
    """Any edit on small index ranges, so that edits overlap often."""
    layer = st.integers(0, cfg.n_layers - 1)
    neuron = st.integers(0, min(3, cfg.d_mlp - 1))
    head = st.integers(0, min(2, cfg.n_heads - 1))
    token = st.integers(0, 3)
    delta = st.floats(-2, 2, width=32)

    def add(kind, l, i, d):
        name, index = {
            "W_E": ("embed.W_E", (i,)),
            "W_U": ("unembed.W_U", (slice(None), i)),
            "W_out": (f"blocks.{l}.mlp.W_out", (i,)),
            "W_Q": (f"blocks.{l}.attn.W_Q", (i % cfg.n_heads, slice(0, 3))),
        }[kind]
        return name, index, d

    where = st.builds(add, st.sampled_from(["W_E", "W_U", "W_out", "W_Q"]), layer, st.integers(0, 3), delta)
    return st.one_of(
        st.builds(edits.scale_neuron, layer, neuron, FACTORS, st.sampled_from(["in", "out", "both"])),
        st.builds(edits.scale_head, layer, head, FACTORS, st.sampled_from(["O", "Q", "V", "QKVO"]),
                  st.just(True)),
        st.builds(edits.scale_embedding, token, FACTORS, st.booleans()),
        st.builds(edits.scale_norm, layer, st.sampled_from(block_norms(cfg)), FACTORS),
        st.builds(lambda f: edits.scale_norm(None, "final", f), FACTORS),
        where.map(lambda w: edits.add_to_weight(*w)),
        where.map(lambda w: edits.set_weight(*w)),
    )


def reference(pristine_copy, ops) -> dict:
    """The state of 'pristine weights with these edits applied in order', on a fresh copy."""
    model = copy.deepcopy(pristine_copy)
    for op in ops:
        model.edit(op)
    return state(model)


# --- the journal: any order of reverts -----------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(data=st.data(), name=st.sampled_from(SMALL))
def test_any_revert_order_gives_pristine_plus_remaining_edits(data, name):
    model = small_model(name)
    pristine, pristine_copy = state(model), copy.deepcopy(model)
    ops = data.draw(st.lists(op_strategy(model.cfg), min_size=1, max_size=6), label="ops")
    order = data.draw(st.permutations(range(len(ops))), label="revert order")
    try:
        handles = [model.edit(op) for op in ops]
        assert state(model) == reference(pristine_copy, ops)
        remaining = list(range(len(ops)))
        for k in order:
            handles[k].revert()
            remaining.remove(k)
            expect = reference(pristine_copy, [ops[i] for i in remaining])
            got = state(model)
            assert got == expect, f"after reverting edit {k}: {diff_names(got, expect)} differ"
            assert [h.op for h in model.edits] == [ops[i] for i in remaining]
        assert state(model) == pristine and model.journal.pristine
    finally:
        model.revert_all()


@settings(max_examples=60, deadline=None)
@given(data=st.data(), name=st.sampled_from(SMALL))
def test_inverse_reverts_then_journal_reverts_are_exact(data, name):
    """Mixing inverse reverts (rounding) with journal reverts: the journal still gets every bit back."""
    model = small_model(name)
    pristine, pristine_copy = state(model), copy.deepcopy(model)
    ops = data.draw(st.lists(op_strategy(model.cfg), min_size=1, max_size=5), label="ops")
    inverse = data.draw(st.lists(st.booleans(), min_size=len(ops), max_size=len(ops)), label="inverse")
    try:
        handles = [model.edit(op) for op in ops]
        for h, inv in zip(handles, inverse):
            if inv:
                try:
                    h.revert(mode="inverse")
                except MinillmError:  # zeroing / set: no inverse; nothing changes
                    pass
        inverted = [h.state == "inverse-reverted" for h in handles]
        assert model.journal.pristine == (not ops)
        assert [h.op for h in model.edits] == [op for op, i in zip(ops, inverted) if not i]
        # journal-reverting an inverse-reverted edit removes both records, exactly
        for h, inv in zip(handles, inverted):
            if inv:
                h.revert()
        expect = reference(pristine_copy, [op for op, i in zip(ops, inverted) if not i])
        assert state(model) == expect
        model.revert_all()
        assert state(model) == pristine
    finally:
        model.revert_all()


def slice_state(model, ops) -> list:
    """The bytes of every slice the ops touch (and of W_U's columns for embedding edits), and the tie flag."""
    slices = [s for op in ops for s in op.plan(model) if isinstance(s, edits.Slice)]
    slices += [edits.Slice("unembed.W_U", (slice(None), s.index[0]), "")
               for s in slices if s.name == "embed.W_E"]
    return [s.save(model).tobytes() for s in slices] + [model.unembed.tied]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_revert_order_on_smollm2(smollm2, data):
    """On the real model (540 MB) states are compared on the slices the edits touch."""
    model = smollm2
    ops = data.draw(st.lists(op_strategy(model.cfg), min_size=1, max_size=4), label="ops")
    pristine = slice_state(model, ops)
    order = data.draw(st.permutations(range(len(ops))), label="revert order")
    try:
        handles = dict(enumerate(model.edit(op) for op in ops))
        remaining = list(range(len(ops)))
        for k in order[:-1]:
            handles[k].revert()
            remaining.remove(k)
            got = slice_state(model, ops)
            # reference: everything reverted, then the remaining edits re-applied in order
            model.revert_all()
            assert slice_state(model, ops) == pristine
            handles = dict(zip(remaining, [model.edit(ops[i]) for i in remaining]))
            assert slice_state(model, ops) == got, f"after reverting edit {k}"
        handles[order[-1]].revert()
        assert slice_state(model, ops) == pristine and model.journal.pristine
    finally:
        model.revert_all()


# --- commuting and no-ops ----------------------------------------------------------------------


def _mask(model, op) -> dict[str, np.ndarray]:
    """Which elements an op writes, per storage array (W_U of a tied model is W_E)."""
    out = {}
    for s in op.plan(model):
        if isinstance(s, edits.TieState):  # untying W_U from W_E: conflicts with any W_E / W_U edit
            name, index = "embed.W_E", (Ellipsis,)
        else:
            name, index = s.name, s.index
        if name == "unembed.W_U" and model.unembed.tied:
            name, index = "embed.W_E", index[::-1]
        m = out.setdefault(name, np.zeros(model.get_parameter(name).shape, bool))
        m[index] = True
    return out


@settings(max_examples=100, deadline=None)
@given(data=st.data(), name=st.sampled_from(SMALL))
def test_disjoint_edits_commute(data, name):
    model = small_model(name)
    a, b = (data.draw(op_strategy(model.cfg), label=x) for x in "ab")
    ma, mb = _mask(model, a), _mask(model, b)
    assume(not any((ma[n] & mb[n]).any() for n in set(ma) & set(mb)))
    pristine_copy = copy.deepcopy(model)
    assert reference(pristine_copy, [a, b]) == reference(pristine_copy, [b, a])


@settings(max_examples=60, deadline=None)
@given(data=st.data(), name=st.sampled_from(SMALL))
def test_factor_one_and_adding_zero_change_no_bit(data, name):
    model = small_model(name)
    cfg = model.cfg
    op = data.draw(st.one_of(
        st.builds(edits.scale_neuron, st.integers(0, cfg.n_layers - 1), st.integers(0, cfg.d_mlp - 1),
                  st.just(1.0), st.sampled_from(["in", "out", "both"])),
        st.builds(edits.scale_head, st.integers(0, cfg.n_layers - 1), st.integers(0, cfg.n_heads - 1),
                  st.just(1.0), st.just("QKVO"), st.just(True)),
        st.builds(edits.scale_embedding, st.integers(0, cfg.d_vocab - 1), st.just(1.0)),
        st.builds(edits.scale_norm, st.integers(0, cfg.n_layers - 1), st.sampled_from(["ln1", "ln2"]),
                  st.just(1.0)),
        st.builds(edits.add_to_weight, st.sampled_from(["embed.W_E", "blocks.0.mlp.W_out", "ln_final.w"]),
                  st.just(None), st.just(0.0)),
    ))
    before = state(model)
    with model.edited(op):
        assert state(model) == before
    assert model.journal.pristine


# --- inverse revert: the ulp bound ---------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(factor=st.floats(1e-3, 1e3), dtype=st.sampled_from([np.float32, np.float64]),
       seed=st.integers(0, 2**32 - 1))
def test_scale_then_inverse_scale_is_within_the_ulp_bound_arithmetic(factor, dtype, seed):
    """The arithmetic the edits do, on 1000 random normal numbers: w·fl(f)·fl(1/f) is <= 4 ulps from w."""
    w = np.random.default_rng(seed).normal(0, 1, 1000).astype(dtype)
    w2 = (w * dtype(factor)) * dtype(1.0 / factor)
    assert ulp_distance(w, w2).max() <= edits.INVERSE_ULP_BOUND


@settings(max_examples=60, deadline=None)
@given(data=st.data(), name=st.sampled_from(SMALL), factor=st.floats(1e-3, 1e3))
def test_inverse_revert_stays_within_the_ulp_bound(data, name, factor):
    model = small_model(name)
    cfg = model.cfg
    op = data.draw(st.one_of(
        st.builds(edits.scale_neuron, st.integers(0, cfg.n_layers - 1), st.integers(0, cfg.d_mlp - 1),
                  st.just(factor), st.sampled_from(["in", "out", "both"])),
        st.builds(edits.scale_head, st.integers(0, cfg.n_layers - 1), st.integers(0, cfg.n_heads - 1),
                  st.just(factor), st.just("QKVO"), st.just(True)),
        st.builds(edits.scale_embedding, st.integers(0, cfg.d_vocab - 1), st.just(factor)),
        st.builds(edits.scale_norm, st.integers(0, cfg.n_layers - 1), st.sampled_from(block_norms(cfg)),
                  st.just(factor)),
    ))
    slices = op.plan(model)
    clean = [s.save(model) for s in slices]
    # Gemma's norms scale the gain (1 + w): the bound holds for the gain, not for w near 0
    gain = model.dtype.type(model.ln_final.offset if isinstance(op, edits.scale_norm) else 0)
    h = model.edit(op)
    try:
        h.revert(mode="inverse")
        assert not model.journal.pristine
        worst = max(int(ulp_distance(gain + s.save(model), gain + c).max())
                    for s, c in zip(slices, clean))
        assert worst <= edits.inverse_ulp_bound(op, model)
    finally:
        h.revert()
    assert all(s.save(model).tobytes() == c.tobytes() for s, c in zip(slices, clean))


def test_inverse_revert_on_smollm2_measures_ulps_and_logit_drift(smollm2, capsys):
    """×0.04 then ×25 in float32: weights within the bound (but not all identical), logits drift a little."""
    model = smollm2
    ids = model.to_tokens("It was a dark and stormy")
    op = edits.scale_neuron(layer=5, neuron=123, factor=0.04, which="both")
    slices = op.plan(model)
    clean_w = [s.save(model) for s in slices]
    clean = model(ids)
    h = model.edit(op)
    try:
        h.revert(mode="inverse")
        ulps = np.concatenate([ulp_distance(s.save(model), c).ravel() for s, c in zip(slices, clean_w)])
        drift = np.abs(model(ids) - clean).max()
    finally:
        h.revert()
    assert np.array_equal(model(ids), clean)
    assert 0 < ulps.max() <= edits.INVERSE_ULP_BOUND  # f32(0.04)·f32(25) != 1: some weights move
    with capsys.disabled():
        print(f"\n[smollm2 scale_neuron 5:123 ×0.04 then ×25 (in+out)] weights: {np.mean(ulps > 0):.1%} "
              f"moved, max {ulps.max()} ulps; max |Δlogit| {drift:.3g}")
    assert drift < 1e-3


# --- what the edits do -------------------------------------------------------------------------


@pytest.mark.parametrize("name", SMALL)
def test_zero_neuron_and_zero_head_are_exactly_zero(name):
    model = small_model(name)
    ids = np.array([[1, 5, 2, 7, 3]])
    l, i, h = model.cfg.n_layers - 1, 2, 1
    for which in ("in", "both"):
        with model.edited(edits.zero_neuron(l, i, which)):
            _, cache = model.run_with_cache(ids, names_filter=f"blocks.{l}.mlp.hook_post")
        assert (cache[f"blocks.{l}.mlp.hook_post"][..., i] == 0).all()
    model.set_use_attn_result(True)
    with model.edited(edits.zero_head(l, h)):
        _, cache = model.run_with_cache(ids, names_filter=f"blocks.{l}.attn.hook_result")
    model.set_use_attn_result(False)
    result = cache[f"blocks.{l}.attn.hook_result"]  # [b, p, h, d]
    assert (result[:, :, h] == 0).all() and (np.delete(result, h, axis=2) != 0).any()


def _position_axis(name: str) -> int:
    return 2 if name.endswith(("hook_pattern", "hook_attn_scores")) else 1


@settings(max_examples=60, deadline=None)
@given(data=st.data(), name=st.sampled_from(SMALL))
def test_an_edit_at_layer_l_changes_nothing_before_it(data, name):
    model = small_model(name)
    op = data.draw(op_strategy(model.cfg).filter(lambda o: getattr(o, "layer", None) is not None))
    ids = np.array([data.draw(st.lists(st.integers(0, model.cfg.d_vocab - 1), min_size=1, max_size=8))])
    _, clean = model.run_with_cache(ids)
    with model.edited(op):
        _, edited = model.run_with_cache(ids)
    from minillm.hooks import layer_of

    for n in clean.keys():
        l = layer_of(n)
        before_edit = l < op.layer if l is not None else n in ("hook_embed", "hook_pos_embed")
        if before_edit:
            assert clean[n].tobytes() == edited[n].tobytes(), f"{n} changed by an edit at layer {op.layer}"


@settings(max_examples=40, deadline=None)
@given(data=st.data(), name=st.sampled_from(SMALL), alpha=st.floats(-1, 1))
def test_an_embedding_edit_changes_nothing_before_the_tokens_first_occurrence(data, name, alpha):
    model = small_model(name)
    ids = data.draw(st.lists(st.integers(0, 9), min_size=2, max_size=10))
    t = data.draw(st.sampled_from(ids[1:]))
    first = ids.index(t)
    assume(first > 0)
    ids = np.array([ids])
    _, clean = model.run_with_cache(ids)
    with model.edited(edits.boost_embedding(t, alpha)):
        _, edited = model.run_with_cache(ids)
    for n in clean.keys():
        ax = _position_axis(n)
        a, b = np.take(clean[n], range(first), axis=ax), np.take(edited[n], range(first), axis=ax)
        if n == "hook_logits" and model.unembed.tied:  # tied: W_U[:, t] is the edited row
            a, b = np.delete(a, t, axis=-1), np.delete(b, t, axis=-1)
        assert a.tobytes() == b.tobytes(), f"{n} changed before position {first}"


def test_tied_embedding_edit_changes_the_logit_and_untie_keeps_it(smollm2):
    model = smollm2
    t = model.to_single_token(" night")
    ids = model.to_tokens("It was a dark and stormy")
    clean = model(ids)[0, -1]
    row = model.embed.W_E[t].copy()
    op = edits.zero_embedding(" night")
    assert "tied" in op.describe(model) and "output logit" in op.describe(model)
    with model.edited(op):
        assert (model.unembed.W_U[:, t] == 0).all()
        assert model(ids)[0, -1, t] == 0.0  # its logit is the dot product with a zero column
    untied = edits.zero_embedding(" night", untie=True)
    assert "input side only" in untied.describe(model)
    with model.edited(untied) as (h,):
        assert not model.unembed.tied and (model.embed.W_E[t] == 0).all()
        assert np.array_equal(model.unembed.W_U[:, t], row)  # the output side is untouched
        assert model(ids)[0, -1, t] == clean[t]  # " night" is not in the prompt: nothing changes
        assert "untied" in model.journal.describe()
    assert model.unembed.tied and model.unembed._W_U is None
    assert np.array_equal(model.embed.W_E[t], row) and np.array_equal(model(ids)[0, -1], clean)


def test_gqa_shared_kv_head_must_be_explicit():
    model = small_model("llama_gqa_untied")  # 4 heads, 2 kv-heads
    before = state(model)
    with pytest.raises(MinillmError, match="shares kv-head 0 with heads \\[0, 1\\].*allow_shared_kv"):
        model.edit(edits.zero_head(0, 1, parts="V"))
    assert state(model) == before
    op = edits.zero_head(0, 1, parts="V", allow_shared_kv=True)
    assert "shared with heads [0, 1]" in op.describe(model)
    with model.edited(op):  # the stored kv-head 0 is zero, so are both query heads reading it
        attn = model.blocks[0].attn
        assert (attn._W_V[0] == 0).all() and (attn._W_V[1] != 0).any()
        assert (attn.W_V[:2] == 0).all() and (attn.W_V[2:] != 0).any()


def test_gqa_per_query_head_keys_are_read_only_repeats():
    """TransformerLens's convention: W_K / W_V [n_heads, d, e] per query head (head j reads
    kv-head j // group); for GQA a read-only copy, the stored _W_K / _W_V are live and writable."""
    model = small_model("llama_gqa_untied")  # 4 heads, 2 kv-heads
    attn = model.blocks[0].attn
    assert attn.W_K.shape == (4, model.cfg.d_model, model.cfg.d_head)
    assert attn._W_K.shape == (2, model.cfg.d_model, model.cfg.d_head)
    for j in range(4):
        assert (attn.W_K[j] == attn._W_K[j // 2]).all() and (attn.W_V[j] == attn._W_V[j // 2]).all()
    with pytest.raises(ValueError, match="read-only"):
        attn.W_K[0] *= 2
    with pytest.raises(MinillmError, match="assign `_W_K`"):
        attn.W_K = np.zeros_like(attn.W_K)
    before = state(model)
    with model.edited(edits.set_weight("blocks.0.attn._W_K", (1,), 0.0)):
        assert (attn.W_K[2:] == 0).all() and (model.get_parameter("blocks.0.attn._W_K")[1] == 0).all()
    assert state(model) == before
    assert "blocks.0.attn._W_K" in dict(model.named_parameters())  # TransformerLens's state-dict key
    mha = small_model("tiny-llama")
    if mha.cfg.n_kv_heads == mha.cfg.n_heads:  # without grouping, W_K is the stored array itself
        mha.blocks[0].attn.W_K[0, 0, 0] = 5.0
        assert mha.blocks[0].attn._W_K[0, 0, 0] == 5.0


def test_edits_list_descriptions_and_context_manager_reverts_on_exceptions():
    model = small_model("tiny-llama")
    before = state(model)
    with pytest.raises(RuntimeError):
        with model.edited(edits.scale_neuron(1, 3, 0.04), edits.scale_norm(None, "final", 2.0)):
            assert [str(e) for e in model.edits] == [
                "<edit: scale neuron 1:3 ×0.04 (out)>", "<edit: scale ln_final.w ×2>"]
            raise RuntimeError("boom")
    assert state(model) == before and model.edits == []
    h = model.edit(edits.scale_neuron(layer=1, neuron=3, factor=0.04))
    h.revert()
    with pytest.raises(MinillmError, match="not applied"):
        h.revert()
    h = model.edit(edits.zero_neuron(0, 0))
    with pytest.raises(MinillmError, match="no inverse"):
        h.revert(mode="inverse")
    h.revert()
    assert state(model) == before


# --- bad input: a clear error, and not one byte changed ------------------------------------------


BAD = [
    (lambda: edits.scale_neuron(2, 0, 2.0), "layer 2 does not exist: the model has 2 layers"),
    (lambda: edits.scale_neuron(-1, 0, 2.0), "layer -1 does not exist"),
    (lambda: edits.scale_neuron(0, 48, 2.0), "neuron 48 does not exist in layer 0: the model has 48"),
    (lambda: edits.scale_neuron(0, 1, float("nan")), "factor must be finite"),
    (lambda: edits.scale_neuron(0, 1, float("inf")), "factor must be finite"),
    (lambda: edits.scale_neuron(0, 1, 2.0, which="up"), "which must be"),
    (lambda: edits.zero_head(0, 4), "head 4 does not exist in layer 0"),
    (lambda: edits.scale_head(0, 0, 2.0, parts="X"), "parts must be"),
    (lambda: edits.zero_embedding(64), "token 64 does not exist"),
    (lambda: edits.zero_embedding("hello"), "no tokenizer"),
    (lambda: edits.scale_norm(0, "ln3", 2.0), "which must be one of"),
    (lambda: edits.scale_norm(0, "final", 2.0), "pass layer=None"),
    (lambda: edits.add_to_weight("blocks.0.mlp.W_outt", (0,), 1.0), "did you mean 'blocks.0.mlp.W_out'"),
    (lambda: edits.add_to_weight("blocks.0.mlp.W_out", (99,), 1.0), "out of range"),
    (lambda: edits.add_to_weight("blocks.0.mlp.W_out", (0,), np.ones(3)), "does not fit"),
    (lambda: edits.set_weight("ln_final.w", None, np.nan), "must be finite"),
]


@pytest.mark.parametrize("make, message", BAD, ids=[m for _, m in BAD])
def test_bad_edits_raise_and_change_nothing(make, message):
    model = small_model("tiny-llama")
    before = state(model)
    with pytest.raises(MinillmError, match=message.replace("[", "\\[")):
        model.edit(make())
    with pytest.raises(MinillmError):  # a bad op after a good one: the good one is undone too
        with model.edited(edits.scale_neuron(0, 0, 3.0), make()):
            pass
    assert state(model) == before and model.journal.pristine


def test_bad_factor_is_refused_when_the_op_is_built():
    with pytest.raises(MinillmError, match="alpha must be finite"):
        edits.reduce_embedding(3, float("nan"))


def test_multi_token_text_says_how_it_tokenizes(smollm2):
    before = hashlib.sha256(smollm2.embed.W_E.data).hexdigest()
    message = r"'stormy' is not a single token: it tokenizes as \['storm', 'y'\]"
    with pytest.raises(MinillmError, match=message):
        smollm2.edit(edits.reduce_embedding("stormy", alpha=0.3))
    assert hashlib.sha256(smollm2.embed.W_E.data).hexdigest() == before and smollm2.journal.pristine
