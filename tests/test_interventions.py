"""Activation interventions and batched variants: exactness, causality, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minillm
from minillm.interp import interventions as iv
from minillm.interp.batch import run_variants
from minillm.kv_cache import KVCache
from tests.conftest import random_model
from tests.numerics import assert_model_close

CLEAN = np.array([[1, 5, 7, 9, 3, 2, 8]])
CORRUPT = np.array([[1, 8, 7, 2, 3, 4, 8]])


def every_hook(model):
    return [n for n in model.hook_names() if not n.endswith("hook_result")]


def test_patching_a_run_with_its_own_cache_changes_nothing(tiny):
    logits, cache = tiny.run_with_cache(CLEAN)
    out = tiny.run_with_interventions(CLEAN, [iv.patch(n, cache) for n in every_hook(tiny)])
    assert (out == logits).all()
    out = tiny.run_with_interventions(CLEAN, [iv.patch("z", cache, layer=1, head=[0, 3], pos=[2, 5])])
    assert (out == logits).all()
    assert not tiny.hooks


def test_patching_resid_pre_0_from_corrupt_gives_corrupt_logits(tiny):
    corrupt_logits, corrupt = tiny.run_with_cache(CORRUPT)
    out = tiny.run_with_interventions(CLEAN, [iv.patch("resid_pre", corrupt, layer=0)])
    assert (out == corrupt_logits).all()


def test_smollm2_patching_exactness_and_causality(smollm2):
    clean = smollm2.to_tokens("When Mary and John went to the store, John gave a drink to")
    corrupt = smollm2.to_tokens("When Mary and John went to the store, Mary gave a drink to")
    assert clean.shape == corrupt.shape
    d = int(np.argmax(clean[0] != corrupt[0]))  # the one position where the prompts differ
    clean_logits, clean_cache = smollm2.run_with_cache(clean)
    corrupt_logits, corrupt_cache = smollm2.run_with_cache(corrupt, names_filter=lambda n: "resid_pre" in n)
    out = smollm2.run_with_interventions(clean, [iv.patch("resid_pre", corrupt_cache, layer=0)])
    assert (out == corrupt_logits).all()
    same = smollm2.run_with_interventions(clean, [iv.patch("resid_pre", clean_cache, layer=range(30))])
    assert (same == clean_logits).all()
    # causality: patching (layer 10, position d) changes no earlier hook and no earlier position
    patch = iv.patch("resid_pre", corrupt_cache, layer=10, pos=d)
    _, edited = smollm2.run_with_cache(clean, fwd_hooks=iv.to_hooks(smollm2, [patch]))
    names = list(clean_cache)
    first = names.index("blocks.10.hook_resid_pre")
    assert all((edited[n] == clean_cache[n]).all() for n in names[:first])
    for n in names[first:]:
        before = (slice(None),) * iv.hook_axes(n)[0] + (slice(0, d),)
        assert (edited[n][before] == clean_cache[n][before]).all(), n
    assert not (edited["hook_logits"][:, d:] == clean_logits[:, d:]).all()


def test_zero_scale_add_touch_only_their_selection(tiny):
    _, clean = tiny.run_with_cache(CLEAN)
    h = tiny.cfg.n_heads
    _, c = tiny.run_with_cache(CLEAN, fwd_hooks=iv.to_hooks(tiny, [iv.zero("z", layer=1, head=2, pos=3)]))
    z, z0 = c["z", 1], clean["z", 1]
    assert (z[0, 3, 2] == 0).all()
    keep = np.ones(z.shape, bool)
    keep[0, 3, 2] = False
    assert (z[keep] == z0[keep]).all() and h > 2
    _, c = tiny.run_with_cache(CLEAN, fwd_hooks=iv.to_hooks(tiny, [iv.scale("post", 0.04, layer=0,
                                                                            neuron=[4, 9])]))
    assert np.array_equal(c["post", 0][..., [4, 9]], clean["post", 0][..., [4, 9]] * np.float32(0.04))
    assert (np.delete(c["post", 0], [4, 9], -1) == np.delete(clean["post", 0], [4, 9], -1)).all()
    v = np.arange(tiny.cfg.d_model, dtype=np.float32)
    _, c = tiny.run_with_cache(CLEAN, fwd_hooks=iv.to_hooks(tiny, [iv.add("resid_mid", v, layer=0, pos=-1)]))
    assert (c["resid_mid", 0][0, -1] == clean["resid_mid", 0][0, -1] + v).all()
    assert (c["resid_mid", 0][0, :-1] == clean["resid_mid", 0][0, :-1]).all()
    assert (tiny.run_with_interventions(CLEAN, [iv.scale("mlp_out", 1.0, layer=1)])
            == clean["hook_logits"]).all()


def test_mean_and_median_from_reference_statistics(tiny, tmp_path):
    ref = np.random.default_rng(0).integers(0, tiny.cfg.d_vocab, (6, 5))
    names = ["blocks.0.mlp.hook_post", "blocks.1.attn.hook_z"]
    stats = iv.activation_stats(tiny, ref, names)
    _, rc = tiny.run_with_cache(ref, names_filter=names)
    post = rc["post", 0].reshape(-1, tiny.cfg.d_mlp).astype(np.float64)
    np.testing.assert_allclose(stats.mean[names[0]], post.mean(0), rtol=1e-6)
    np.testing.assert_allclose(stats.median[names[0]], np.median(post, 0), rtol=1e-6)
    assert stats.mean[names[1]].shape == (tiny.cfg.n_heads, tiny.cfg.d_head)
    ivs = [iv.mean("post", stats, layer=0, neuron=[1, 2]), iv.median("z", stats, layer=1, head=0, pos=2)]
    _, c = tiny.run_with_cache(CLEAN, fwd_hooks=iv.to_hooks(tiny, ivs))
    assert (c["post", 0][..., [1, 2]] == stats.mean[names[0]][[1, 2]]).all()
    assert (c["z", 1][0, 2, 0] == stats.median[names[1]][0]).all()
    per_pos = iv.activation_stats(tiny, ref, names, per_position=True)
    assert per_pos.mean[names[0]].shape == (5, tiny.cfg.d_mlp)
    _, c = tiny.run_with_cache(CLEAN, fwd_hooks=iv.to_hooks(tiny, [iv.mean("post", per_pos, layer=0, pos=3)]))
    assert (c["post", 0][0, 3] == per_pos.mean[names[0]][3]).all()
    stats.save(tmp_path / "stats.safetensors")  # kept as data
    back = iv.ActivationStats.load(tmp_path / "stats.safetensors")
    assert all((back.median[n] == stats.median[n]).all() for n in names) and not back.per_position


def test_resample_patches_from_another_prompt(tiny):
    corrupt_logits, corrupt = tiny.run_with_cache(CORRUPT)
    a = tiny.run_with_interventions(CLEAN, [iv.resample("resid_mid", CORRUPT, layer=1, pos=[4, 5])])
    b = tiny.run_with_interventions(CLEAN, [iv.patch("resid_mid", corrupt, layer=1, pos=[4, 5])])
    assert (a == b).all()


def test_context_manager_and_generation(tiny):
    with tiny.intervened([iv.zero("mlp_out", layer=0)]):
        inside = tiny(CLEAN)
        tiny.generate(CLEAN, max_new_tokens=3)
    assert not tiny.hooks
    assert (inside == tiny.run_with_interventions(CLEAN, [iv.zero("mlp_out", layer=0)])).all()
    with pytest.raises(RuntimeError), tiny.intervened([iv.zero("mlp_out", layer=0)]):
        raise RuntimeError
    assert not tiny.hooks


@pytest.mark.numerics
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_positions_respect_the_kv_cache_offset(family, dtype):
    """An intervention at absolute position 5 during cached decoding = the same in a full run.
    The decode steps compute the same sums in smaller GEMMs: the reorder tolerance of
    tests/numerics.py in float32, 1e-12 in float64."""
    tiny = random_model(family, dtype=dtype)
    ivs = [iv.add("resid_pre", np.ones(tiny.cfg.d_model, np.float32), layer=1, pos=5),
           iv.zero("z", layer=0, head=1, pos=[2, 6])]
    full = tiny.run_with_interventions(CLEAN, ivs)
    cache = KVCache.for_model(tiny)
    steps = [tiny.run_with_interventions(CLEAN[:, :4], ivs, cache=cache)]
    steps += [tiny.run_with_interventions(CLEAN[:, i : i + 1], ivs, cache=cache) for i in range(4, 7)]
    assert_model_close(tiny, np.concatenate(steps, axis=1), full, "cached decoding vs full run")
    assert not np.allclose(full, tiny(CLEAN), atol=1e-3)


@settings(max_examples=25, deadline=None)
@given(family=st.sampled_from(["gpt2", "llama"]), layer=st.integers(0, 1), pos=st.integers(0, 6),
       kind=st.sampled_from(["zero", "add", "scale", "patch"]),
       where=st.sampled_from(["resid_pre", "attn_out", "resid_mid", "mlp_out", "post", "z", "q", "v"]))
def test_causality(family, layer, pos, kind, where):
    """An intervention at (layer, pos) leaves every earlier hook, and every earlier position of
    every hook, bit for bit unchanged."""
    model = random_model(family, seed=2)
    _, corrupt = model.run_with_cache(CORRUPT)
    make = {"zero": lambda: iv.zero(where, layer=layer, pos=pos),
            "add": lambda: iv.add(where, np.float32(0.5), layer=layer, pos=pos),
            "scale": lambda: iv.scale(where, 3.0, layer=layer, pos=pos),
            "patch": lambda: iv.patch(where, corrupt, layer=layer, pos=pos)}[kind]
    _, clean = model.run_with_cache(CLEAN)
    _, edited = model.run_with_cache(CLEAN, fwd_hooks=iv.to_hooks(model, [make()]))
    target = make().hook_names(model)[0]
    names = list(clean)
    for name in names[: names.index(target)]:
        assert (edited[name] == clean[name]).all(), f"{name} changed before {target}"
    for name in names[names.index(target):]:
        a, b = edited[name], clean[name]
        axis = iv.hook_axes(name)[0]
        if name == "hook_logits" or axis == 1:
            assert (a[:, :pos] == b[:, :pos]).all(), f"{name} changed before position {pos}"
        else:  # pattern / scores [b, h, q, k]
            assert (a[:, :, :pos] == b[:, :, :pos]).all(), f"{name} changed before position {pos}"


# --- batched variants ------------------------------------------------------------------------


@pytest.mark.numerics
@settings(max_examples=10, deadline=None)
@given(family=st.sampled_from(["gpt2", "llama"]), batch_size=st.integers(1, 14),
       seed=st.integers(0, 100), dtype=st.sampled_from([np.float32, np.float64]))
def test_variants_equal_separate_runs_tiny(family, batch_size, seed, dtype):
    """Batches of 1..14 variants against one run per variant. The GEMMs have other row
    counts, so float32 agrees up to the reorder tolerance (tests/numerics.py); float64
    to 1e-12."""
    model = random_model(family, seed=seed, dtype=dtype)
    _, corrupt = model.run_with_cache(CORRUPT)
    variants = [[iv.patch("resid_pre", corrupt, layer=l, pos=p)] for l in range(2) for p in range(7)]
    variants.append([])  # the plain run
    variants.append([iv.zero("z", layer=1, head=[0, 1]), iv.scale("post", 0.0, layer=0, neuron=3)])
    batched = run_variants(model, CLEAN, variants, batch_size=batch_size)
    separate = np.concatenate([model.run_with_interventions(CLEAN, v) for v in variants])
    assert_model_close(model, batched, separate, f"{family} batch_size={batch_size}")
    if batch_size == 1:  # identical shapes: bit for bit on any CPU
        assert (batched == separate).all()
    assert not model.hooks


SMOL_CLEAN, SMOL_CORRUPT = "It was a dark and stormy", "It was a bright and sunny"


def smollm2_variants(model, batch_size):
    """Patch resid_pre of 4 layers at the last position: batched and separate last logits."""
    clean, corrupt = model.to_tokens(SMOL_CLEAN), model.to_tokens(SMOL_CORRUPT)
    assert clean.shape == corrupt.shape
    _, cache = model.run_with_cache(corrupt, names_filter=lambda n: n.endswith("hook_resid_pre"))
    variants = [iv.patch("resid_pre", cache, layer=l, pos=-1) for l in (0, 9, 17, 29)]
    batched = run_variants(model, clean, variants, batch_size=batch_size, metric=lambda x: x[:, -1])
    separate = np.stack([model.run_with_interventions(clean, [v])[0, -1] for v in variants])
    return batched, separate


def test_variants_batch_size_1_equal_separate_runs_smollm2_bit_exact(smollm2):
    """run_variants(batch_size=1) runs exactly the GEMMs a separate run does: bit for bit."""
    batched, separate = smollm2_variants(smollm2, batch_size=1)
    assert (batched == separate).all(), f"max diff {np.abs(batched - separate).max()}"


@pytest.mark.numerics
def test_variants_equal_separate_runs_smollm2(smollm2):
    """Batches of 3 against separate runs: other GEMM row counts, so float32 agrees up to the
    reorder tolerance (u·M·√n·depth = 1e-2 on logits of ~22; measured 0 to 3.7e-5 depending
    on the OpenBLAS kernel). The float64 twin below holds the logic to 1e-12."""
    batched, separate = smollm2_variants(smollm2, batch_size=3)
    assert_model_close(smollm2, batched, separate, "smollm2 batches of 3 vs separate runs")


@pytest.mark.numerics
@pytest.mark.slow
def test_variants_equal_separate_runs_smollm2_float64():
    model = minillm.load("smollm2-135m", dtype=np.float64)
    batched, separate = smollm2_variants(model, batch_size=3)
    assert_model_close(model, batched, separate, "smollm2 batches of 3 vs separate runs")


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize("intervention, message", [
    (lambda: iv.zero("resid_pre", layer=2), r"layer 2 does not exist: the model has 2 layers \(0..1\)"),
    (lambda: iv.zero("z", layer=0, head=4), r"head 4 does not exist at blocks.0.attn.hook_z: it has 4"),
    (lambda: iv.zero("v", layer=0, head=2), r"kv-head 2 does not exist at blocks.0.attn.hook_v"),
    (lambda: iv.zero("post", layer=1, neuron=999), r"neuron 999 does not exist at blocks.1.mlp.hook_post"),
    (lambda: iv.zero("resid_pre", layer=0, neuron=1), r"has no neuron axis"),
    (lambda: iv.zero("resid_pre", layer=0, head=1), r"has no head axis"),
    (lambda: iv.zero("resid_pre", layer=0, pos=7), r"position 7 does not exist .* 7 positions"),
    (lambda: iv.zero("resid_pre"), r"needs layer="),
    (lambda: iv.zero("blocks.0.hook_resid_pot"), r"did you mean 'blocks.0.hook_resid_post'"),
    (lambda: iv.zero("blocks.0.hook_resid_pre", layer=1), r"already names its layer"),
    (lambda: iv.patch("resid_post", {}, layer=0), r"source cache has no blocks.0.hook_resid_post"),
    (lambda: iv.add("resid_post", np.ones(5, np.float32), layer=0), r"Add at blocks.0.hook_resid_post"),
])
def test_bad_interventions_are_clear_errors_and_leave_no_hooks(intervention, message):
    model = random_model("llama")  # 2 layers, 4 heads, 2 kv-heads, d_mlp 48
    with pytest.raises(minillm.MinillmError, match=message):
        model.run_with_interventions(CLEAN, [intervention()])
    assert not model.hooks
    assert (model(CLEAN) == random_model("llama")(CLEAN)).all()


def test_bad_variant_input():
    model = random_model("gpt2")
    with pytest.raises(minillm.MinillmError, match="one prompt"):
        run_variants(model, np.repeat(CLEAN, 2, 0), [[]])
    with pytest.raises(minillm.MinillmError, match="must not set batch"):
        run_variants(model, CLEAN, [[iv.zero("resid_pre", layer=0, batch=0)]])
    with pytest.raises(minillm.MinillmError, match="position 9 does not exist"):
        run_variants(model, CLEAN, [[iv.zero("resid_pre", layer=0, pos=9)]])
    with pytest.raises(minillm.MinillmError, match="expected an intervention"):
        model.run_with_interventions(CLEAN, [("hook_embed", lambda a, h: a)])
    assert not model.hooks
