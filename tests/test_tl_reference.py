"""minillm against TransformerLens itself (frozen by tests/fixtures/make_fixtures.py, tl_*.safetensors).

TransformerLens 3.9's HookedTransformer ran the tiny GPT-2 and Llama-GQA checkpoints and
SmolLM2-135M, unprocessed ("raw") and with its default weight processing ("proc"). Here
minillm's model — loaded plainly, or with the same processing (`minillm.load(...,
fold_ln=True, ...)`) — must reproduce every hook, the processed weights, the cache methods,
loss, eigenvalues, activation patching and the gradients a backward hook sees.

Tolerances. Both sides are float32 implementations of the same maths in a different order:
differences are a few float32 roundings (2^-24 ≈ 6e-8 relative) accumulated over a few hundred
terms, so 2e-5 of the largest value in an array is a 10x margin over what is measured (the
docstring of each test prints nothing: `pytest -s` prints the measured maxima). Arrays stored
in float16 (SmolLM2's activations and the processed-model activations, to keep the files
small) add their own rounding, 2^-11 ≈ 4.9e-4 relative per value: 2e-3 relative there.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import load_file

import minillm
from minillm.grad.backward import backward
from minillm.interp import interventions as iv
from minillm.interp.metrics import logit_diff

FIXTURES = Path(__file__).parent / "fixtures"
TINY = {"gpt2": "gpt2", "llama_gqa": "llama_gqa_untied"}
TL_DEFAULTS = dict(fold_ln=True, center_writing_weights=True, center_unembed=True, fold_value_biases=True)


@cache
def reference(name: str) -> tuple[dict, dict]:
    path = FIXTURES / f"tl_{name}.safetensors"
    with safe_open(str(path), "np") as f:
        info = json.loads(f.metadata()["info"])
    return load_file(str(path)), info


@cache
def model(name: str, processed: bool) -> minillm.HookedModel:
    flags = TL_DEFAULTS if processed else {}
    return minillm.load(FIXTURES / TINY[name], **flags)


def close(ours, ref, what: str, rel: float = 2e-5) -> float:
    """Assert |ours - ref| <= rel · max|ref| (+ float16 rounding if ref is float16); return the max diff."""
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref)
    assert ours.shape == ref.shape, f"{what}: shape {ours.shape} vs TransformerLens {ref.shape}"
    finite = np.isfinite(ref)
    assert (np.isfinite(ours) == finite).all() and (ours[~finite] == ref[~finite]).all(), \
        f"{what}: -inf (masked) entries differ"
    ref64 = ref.astype(np.float64)
    diff = np.abs(ours[finite] - ref64[finite])
    scale = np.abs(ref64[finite]).max() if finite.any() else 0.0
    bound = rel * scale + (2e-3 * np.abs(ref64[finite]) + 6e-8 if ref.dtype == np.float16 else 0.0)
    worst = float(diff.max()) if diff.size else 0.0
    assert (diff <= bound).all(), f"{what}: max |diff| {worst:.3g} (largest value {scale:.3g})"
    return worst


def at_positions(act: np.ndarray, hook: str, positions) -> np.ndarray:
    act = act[0]  # [p, ...] (or [h, q, k])
    return act[:, positions] if hook.endswith(("hook_attn_scores", "hook_pattern")) else act[positions]


# --- every hook, unprocessed and processed ---------------------------------------------------------


@pytest.mark.parametrize("name", TINY)
@pytest.mark.parametrize("tag", ["raw", "proc"])
def test_every_hook_matches_transformer_lens(name, tag):
    ref, info = reference(name)
    m = model(name, tag == "proc")
    logits, cache = m.run_with_cache(ref["clean_ids"])
    keys = [k for k in ref if k.startswith(f"{tag}.act.")]
    assert len(keys) >= 17 * m.cfg.n_layers  # every hook of every block (17 for GPT-2, 20 Llama)
    worst = {}
    for key in keys:
        hook = key[len(f"{tag}.act."):]
        worst[hook] = close(at_positions(cache[hook], hook, info["positions_kept"]), ref[key], key)
    close(logits[0, -1], ref[f"{tag}.logits_last"], f"{tag} logits")
    # the conventions themselves: the scale is the divisor (normalized · scale = the centred
    # input, float32: 1e-5 of the stream), k/v carry n_kv_heads heads
    x = cache["blocks.0.hook_resid_pre"]
    x = x - x.mean(-1, keepdims=True) if m.ln_final.b is not None else x
    np.testing.assert_allclose(cache["blocks.0.ln1.hook_normalized"] * cache["blocks.0.ln1.hook_scale"], x,
                               atol=1e-5 * np.abs(x).max())
    assert cache["blocks.0.attn.hook_k"].shape[2] == m.cfg.n_kv_heads


# --- the processed weights ---------------------------------------------------------------------------


def _fingerprint(name: str, w: np.ndarray) -> np.ndarray:
    """As in make_fixtures.py: [sum, sum of squares, projection on a fixed N(0, 1) vector]."""
    import zlib

    w = w.astype(np.float64).ravel()
    r = np.random.default_rng(zlib.crc32(name.encode())).standard_normal(w.size)
    return np.array([w.sum(), (w * w).sum(), (w * r).sum()]), np.array([np.abs(w).sum(), (w * w).sum(),
                                                                        np.abs(w * r).sum()])


@pytest.mark.parametrize("name", TINY)
def test_processed_weights_match_transformer_lens(name):
    """fold_ln, center_writing_weights, center_unembed, fold_value_biases give TransformerLens's
    weights. Fingerprints: each element may differ by a few float32 ulps (~1e-7 relative), so each
    sum may differ by 1e-6 of the same sum taken over absolute values."""
    ref, _ = reference(name)
    m = model(name, True)
    ours = dict(m.named_parameters())
    if "unembed.W_U" not in ours:
        ours["unembed.W_U"] = m.unembed.W_U
    checked = 0
    for key in [k for k in ref if k.startswith("proc.w_fingerprint.")]:
        pname = key[len("proc.w_fingerprint."):]
        if pname not in ours:  # TransformerLens keeps all-zero biases minillm does not have
            assert (ref[key] == 0).all(), f"{pname}: TransformerLens has a non-zero {pname}"
            continue
        fp, size = _fingerprint(pname, ours[pname])
        assert (np.abs(fp - ref[key]) <= 1e-6 * size + 1e-12).all(), f"{pname}: {fp} vs {ref[key]}"
        checked += 1
    for key in [k for k in ref if k.startswith("proc.w.") and k[len("proc.w."):] in ours]:
        close(ours[key[len("proc.w."):]], ref[key], key)
    assert checked >= 10
    # the folded norms are the identity (TransformerLens removes them: LayerNormPre / RMSNormPre)
    for pname, value in ours.items():
        if pname.endswith((".w",)) and ("ln" in pname):
            assert (value == 1).all(), pname
        if pname.endswith(".b") and "ln" in pname:
            assert (value == 0).all(), pname


@pytest.mark.parametrize("name", TINY)
def test_processing_is_one_revertible_edit(name):
    """The processing is a journal edit: reverting it restores the checkpoint bit for bit,
    the tie between W_E and W_U included, and processed logits differ from raw ones only by a
    per-position constant (center_unembed), so log-probabilities agree (float32: 1e-5)."""
    plain = minillm.load(FIXTURES / TINY[name])
    before = {k: v.copy() for k, v in plain.named_parameters()}
    tied = plain.unembed.tied
    ids = reference(name)[0]["clean_ids"]
    raw_logits = plain(ids)
    handle = plain.edit(minillm.edits.process_weights(**TL_DEFAULTS))
    assert [str(e) for e in plain.edits] == [str(handle)]
    proc_logits = plain(ids)
    from minillm.ops import log_softmax

    np.testing.assert_allclose(log_softmax(proc_logits), log_softmax(raw_logits), atol=1e-5)
    handle.revert()
    assert plain.unembed.tied == tied and plain.unembed.b_U is None
    after = dict(plain.named_parameters())
    assert after.keys() == before.keys() and all((after[k] == before[k]).all() for k in before)
    assert (plain(ids) == raw_logits).all()


# --- cache methods ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", TINY)
def test_cache_methods_match_transformer_lens_processed(name):
    """On the processed model the cache methods are TransformerLens's, number for number."""
    ref, _ = reference(name)
    m = model(name, True)
    _, cache = m.run_with_cache(ref["clean_ids"])
    c, w = (int(t) for t in ref["answer_ids"])
    dec = cache.decompose_resid(pos_slice=-1)
    heads = cache.stack_head_results(pos_slice=-1)
    got = {
        "accumulated_resid_ln": cache.accumulated_resid(apply_ln=True, pos_slice=-1)[:, 0],
        "accumulated_resid_ln_layer1_mid": cache.accumulated_resid(layer=1, incl_mid=True, apply_ln=True,
                                                                   pos_slice=-1)[:, 0],
        "decompose_resid": dec[:, 0],
        "decompose_resid_ln": cache.decompose_resid(apply_ln=True, pos_slice=-1)[:, 0],
        "apply_ln_to_stack_layer1": cache.apply_ln_to_stack(cache.decompose_resid(layer=1, pos_slice=-1),
                                                            layer=1, pos_slice=-1)[:, 0],
        "stack_head_results": heads[:, 0],
        "stack_head_results_ln": cache.stack_head_results(pos_slice=-1, apply_ln=True)[:, 0],
        "logit_attrs": cache.logit_attrs(dec, c, w, pos_slice=-1)[:, 0],
        "head_logit_attrs": cache.logit_attrs(heads, c, w, pos_slice=-1)[:, 0],
    }
    for key, value in got.items():
        close(value, ref[f"proc.{key}"], f"proc.{key}")


@pytest.mark.parametrize("name", TINY)
def test_unprocessed_cache_methods_give_true_logit_contributions(name):
    """Without processing, minillm's apply_ln_to_stack multiplies by the norm's gain, so its
    logit attributions equal those of TransformerLens's *processed* model (the true ones); the
    unprocessed TransformerLens model's own numbers lack the gain and are off."""
    ref, _ = reference(name)
    m = model(name, False)
    logits, cache = m.run_with_cache(ref["clean_ids"])
    c, w = (int(t) for t in ref["answer_ids"])
    dec = cache.decompose_resid(pos_slice=-1)
    attrs = cache.logit_attrs(dec, c, w, pos_slice=-1)[:, 0]
    close(attrs, ref["proc.logit_attrs"], "raw logit_attrs vs TransformerLens processed")
    if m.blocks[0].attn.b_QKV is None:  # (fold_value_biases moves b_V's share of each head into b_O)
        close(cache.logit_attrs(cache.stack_head_results(pos_slice=-1), c, w, pos_slice=-1)[:, 0],
              ref["proc.head_logit_attrs"], "raw head logit_attrs vs TransformerLens processed")
    # the sum is the logit difference, up to the constant the LayerNorm bias adds
    bias = 0.0 if m.ln_final.b is None else float(m.ln_final.b @ (m.unembed.W_U[:, c] - m.unembed.W_U[:, w]))
    true = float(logits[0, -1, c] - logits[0, -1, w])
    assert abs(attrs.sum() + bias - true) < 1e-4 * max(1.0, abs(true))
    # the plain stacks are TransformerLens's unprocessed ones; normalised, they carry the gain
    close(dec[:, 0], ref["raw.decompose_resid"], "raw decompose_resid")
    close(cache.stack_head_results(pos_slice=-1)[:, 0], ref["raw.stack_head_results"], "raw heads")
    close(cache.decompose_resid(apply_ln=True, pos_slice=-1)[:, 0],
          ref["raw.decompose_resid_ln"] * m.ln_final.w, "raw decompose_resid(apply_ln) = TL's × w")
    close(cache.apply_ln_to_stack(cache.decompose_resid(layer=1, pos_slice=-1), layer=1, pos_slice=-1)[:, 0],
          ref["raw.apply_ln_to_stack_layer1"] * m.blocks[1].ln1.w, "raw apply_ln_to_stack(layer=1)")
    # the logit lens (own scale, gain and bias) is TransformerLens's in both cases
    acc = cache.accumulated_resid(apply_ln=True, pos_slice=-1)[:, 0]
    close(acc, ref["raw.accumulated_resid_ln"], "raw accumulated_resid(apply_ln=True)")
    assert ((acc @ m.unembed.W_U).argmax(-1) == ref["raw.lens_top1"]).all()


# --- loss, eigenvalues, patching, gradients --------------------------------------------------------


@pytest.mark.parametrize("name", TINY)
@pytest.mark.parametrize("tag", ["raw", "proc"])
def test_loss_and_per_token_loss(name, tag):
    ref, _ = reference(name)
    m = model(name, tag == "proc")
    ids = ref["clean_ids"]
    assert abs(m.loss(ids) - float(ref[f"{tag}.loss"])) < 1e-5
    per_token = ref[f"{tag}.loss_per_token"]
    close(m.loss(ids, per_token=True).reshape(per_token.shape), per_token, f"{tag}.loss_per_token")


def _eigenvalues(M: np.ndarray) -> np.ndarray:
    return np.linalg.eigvals(M.astype(np.float64))


def _match(ours: np.ndarray, re: np.ndarray, im: np.ndarray, what: str) -> None:
    """Each TransformerLens eigenvalue has one of ours within 1e-4 of the largest modulus
    (float32 inputs; eigenvalues of a nearly defective matrix are more sensitive)."""
    ref = re.astype(np.float64) + 1j * im.astype(np.float64)
    assert len(ours) == len(ref), f"{what}: {len(ours)} eigenvalues, TransformerLens has {len(ref)}"
    scale = np.abs(ref).max()
    left = list(ours)
    for z in ref:
        i = int(np.argmin([abs(z - o) for o in left]))
        assert abs(z - left[i]) <= 1e-4 * scale, f"{what}: TransformerLens eigenvalue {z} has no match"
        left.pop(i)


@pytest.mark.parametrize("name", TINY)
@pytest.mark.parametrize("tag", ["raw", "proc"])
def test_ov_qk_eigenvalues_use_per_query_head_weights(name, tag):
    """FactoredMatrix eigenvalues of OV = W_V[h] W_O[h] and QK = W_Q[h] W_K[h]ᵀ are those of the
    small products W_O[h] W_V[h] and W_K[h]ᵀ W_Q[h] ([d_head, d_head]). With per-query-head W_K /
    W_V (TransformerLens's convention) head h's matrices are indexed by h, also under GQA."""
    ref, info = reference(name)
    l, h = info["eigen_head"]
    a = model(name, tag == "proc").blocks[l].attn
    _match(_eigenvalues(a.W_O[h] @ a.W_V[h]), ref[f"{tag}.OV_eigenvalues_real"],
           ref[f"{tag}.OV_eigenvalues_imag"], "OV")
    _match(_eigenvalues(a.W_K[h].T @ a.W_Q[h]), ref[f"{tag}.QK_eigenvalues_real"],
           ref[f"{tag}.QK_eigenvalues_imag"], "QK")


@pytest.mark.parametrize("name", TINY)
def test_activation_patching_matches_transformer_lens(name):
    """get_act_patch_resid_pre [L, p] and get_act_patch_attn_head_out_by_pos [L, p, h] on the
    fixture's clean / corrupted pair, metric = logit difference at the last position. The
    logit difference is the same with or without processing; compared with the plain model."""
    ref, _ = reference(name)
    m = model(name, False)
    clean, corrupted = ref["clean_ids"], ref["corrupted_ids"]
    c, w = (int(t) for t in ref["answer_ids"])
    _, clean_cache = m.run_with_cache(clean)

    def metric(logits):
        return float(logits[0, -1, c] - logits[0, -1, w])

    L, p, H = m.cfg.n_layers, clean.shape[1], m.cfg.n_heads
    resid = np.array([[metric(m.run_with_interventions(corrupted, [iv.patch("resid_pre", clean_cache, layer=l,
                                                                              pos=q)]))
                       for q in range(p)] for l in range(L)])
    close(resid, ref["patch.resid_pre"], "get_act_patch_resid_pre", rel=1e-4)
    heads = np.array([[[metric(m.run_with_interventions(corrupted, [iv.patch("z", clean_cache, layer=l, pos=q,
                                                                               head=hh)]))
                        for hh in range(H)] for q in range(p)] for l in range(L)])
    close(heads, ref["patch.attn_head_out_by_pos"], "get_act_patch_attn_head_out_by_pos", rel=1e-4)


@pytest.mark.parametrize("name", TINY)
def test_gradients_match_transformer_lens_backward_hooks(name):
    """bwd_hooks receive d(logit difference)/d(activation) at each hook, as TransformerLens's
    backward hooks do (the unprocessed model). Float32 backward passes in a different order:
    1e-4 of the largest value.

    TransformerLens applies ln1 once per attention input (q, k, v), so its backward hook at
    `ln1.hook_scale` fires three times, each with one path's share; the fixture holds their
    sum, the derivative (which minillm's one ln1 gives in one call; checked against finite
    differences in test_backward.py)."""
    ref, info = reference(name)
    m = model(name, False)
    c, w = (int(t) for t in ref["answer_ids"])
    seen: dict = {}

    def save(grad, hook):
        seen[hook.name] = grad

    logits = m.run_with_hooks(ref["clean_ids"], bwd_hooks=[(h, save) for h in info["grad_hooks"]],
                              metric=logit_diff(None, c, w))
    assert abs(float(logits[0, -1, c] - logits[0, -1, w]) - float(ref["grad.metric"])) < 1e-5
    assert list(seen) == sorted(seen, key=m.hook_names().index, reverse=True)  # backward order
    for hook in info["grad_hooks"]:
        close(seen[hook][0], ref[f"grad.{hook}"], f"bwd hook {hook}", rel=1e-4)
    assert info["checks"]["bwd_hook_calls"]["blocks.0.ln1.hook_scale"] == 3
    # the same gradients from backward() itself, and bwd hooks fire there too while registered
    with m.hooks(bwd_hooks=[("blocks.0.hook_resid_pre", save)]):
        res = backward(m, ref["clean_ids"], logit_diff(None, c, w), params=False)
    assert seen["blocks.0.hook_resid_pre"] is res.grad("blocks.0.hook_resid_pre")
    with pytest.raises(minillm.MinillmError, match="need a metric"):
        m.run_with_hooks(ref["clean_ids"], bwd_hooks=[("hook_embed", save)])
    with pytest.raises(minillm.MinillmError, match="cannot replace"):
        m.run_with_hooks(ref["clean_ids"], bwd_hooks=[("hook_embed", lambda g, hook: g * 2)],
                         metric=logit_diff(None, c, w))


# --- SmolLM2-135M: the real model, on the IOI prompt ----------------------------------------------


@pytest.fixture(scope="module")
def smollm2_processed():
    return minillm.load("smollm2-135m", **TL_DEFAULTS)


def _smollm2_pair(smollm2, smollm2_processed, tag):
    return smollm2 if tag == "raw" else smollm2_processed


@pytest.mark.parametrize("tag", ["raw", "proc"])
def test_smollm2_hooks_logits_loss_and_eigenvalues(smollm2, smollm2_processed, tag):
    """Blocks 0, 15, 29 (every hook) and the global hooks at the last two positions, stored in
    float16 (2e-3 relative, see the module docstring); loss; OV/QK eigenvalues of head 29.1."""
    ref, info = reference("smollm2")
    m = _smollm2_pair(smollm2, smollm2_processed, tag)
    logits, cache = m.run_with_cache(ref["clean_ids"])
    keys = [k for k in ref if k.startswith(f"{tag}.act.")]
    assert len(keys) >= (60 if tag == "raw" else 20)  # proc: block 29 and ln_final (README.md)
    for key in keys:
        hook = key[len(f"{tag}.act."):]
        close(at_positions(cache[hook], hook, info["positions_kept"]), ref[key], key)
    top = ref[f"{tag}.logits_last_ids"]  # SmolLM2: the 256 largest logits
    close(logits[0, -1, top], ref[f"{tag}.logits_last"], f"{tag} logits")
    assert abs(m.loss(ref["clean_ids"]) - float(ref[f"{tag}.loss"])) < 1e-4
    per_token = ref[f"{tag}.loss_per_token"]
    close(m.loss(ref["clean_ids"], per_token=True).reshape(per_token.shape), per_token, "loss per token")
    l, h = info["eigen_head"]
    a = m.blocks[l].attn
    _match(_eigenvalues(a.W_O[h] @ a.W_V[h]), ref[f"{tag}.OV_eigenvalues_real"],
           ref[f"{tag}.OV_eigenvalues_imag"], "OV")
    _match(_eigenvalues(a.W_K[h].T @ a.W_Q[h]), ref[f"{tag}.QK_eigenvalues_real"],
           ref[f"{tag}.QK_eigenvalues_imag"], "QK")


def test_smollm2_ioi_logit_attribution_is_true_without_processing(smollm2, smollm2_processed):
    """The issue's example: on IOI, Σ logit_attrs of decompose_resid must be the model's logit
    difference (" Mary" − " John"). TransformerLens unprocessed gives a number without the final
    norm's gain (recorded in the fixture); minillm gives the true one with or without processing,
    equal to TransformerLens's processed attributions component by component."""
    ref, info = reference("smollm2")
    mary, john = (int(t) for t in ref["answer_ids"])
    checks = info["checks"]
    for m in (smollm2, smollm2_processed):
        logits, cache = m.run_with_cache(ref["clean_ids"])
        true = float(logits[0, -1, mary] - logits[0, -1, john])
        dec = cache.decompose_resid(pos_slice=-1)
        attrs = cache.logit_attrs(dec, " Mary", " John", pos_slice=-1)[:, 0]
        assert abs(attrs.sum() - true) < 1e-3 * abs(true)
        assert abs(true - checks["proc_logit_diff"]) < 1e-3
        close(attrs, ref["proc.logit_attrs"], "logit_attrs vs TransformerLens processed", rel=1e-4)
        close(cache.logit_attrs(cache.stack_head_results(pos_slice=-1), mary, john, pos_slice=-1)[:, 0],
              ref["proc.head_logit_attrs"], "head logit_attrs", rel=1e-4)
        # the ported one-liner: apply_ln_to_stack(...) @ (W_U[:, a] - W_U[:, b])
        direction = m.unembed.W_U[:, mary] - m.unembed.W_U[:, john]
        assert abs((cache.apply_ln_to_stack(dec, pos_slice=-1)[:, 0] @ direction).sum() - true) < 1e-3 * true
        # logit lens: the final row's top-1 is the model's own prediction
        acc = cache.accumulated_resid(apply_ln=True, pos_slice=-1)[:, 0]
        lens = acc @ m.unembed.W_U + (0 if m.unembed.b_U is None else m.unembed.b_U)
        assert lens[-1].argmax() == logits[0, -1].argmax() == ref["proc.lens_top1"][-1]
    assert abs(checks["raw_logit_attrs_sum"] - checks["proc_logit_diff"]) > 1.0  # TL unprocessed is off
    _, cache = smollm2.run_with_cache(ref["clean_ids"])
    close(cache.accumulated_resid(apply_ln=True, pos_slice=-1)[:, 0], ref["raw.accumulated_resid_ln"],
          "raw accumulated_resid(apply_ln=True)", rel=1e-4)
    rows = [*range(smollm2.cfg.n_heads), *range(-smollm2.cfg.n_heads, 0)]
    close(cache.stack_head_results(pos_slice=-1)[rows, 0], ref["raw.stack_head_results_L0_Llast"], "heads")


def test_smollm2_activation_patching_entries(smollm2):
    """Entries of TransformerLens's patching grids (the fixture's index lists): block 16's
    resid_pre at every position and every head of block 29 at S2 and the last position."""
    ref, _ = reference("smollm2")
    clean, corrupted = ref["clean_ids"], ref["corrupted_ids"]
    mary, john = (int(t) for t in ref["answer_ids"])
    _, clean_cache = smollm2.run_with_cache(clean, names_filter=lambda n: n.endswith(("resid_pre",
                                                                                     "hook_z")))

    def metric(interventions):
        logits = smollm2.run_with_interventions(corrupted, interventions)
        return float(logits[0, -1, mary] - logits[0, -1, john])

    for (l, q), want in zip(ref["patch.resid_pre_index"], ref["patch.resid_pre"]):
        if l == 16:
            assert abs(metric([iv.patch("resid_pre", clean_cache, layer=int(l), pos=int(q))]) - want) < 1e-3
    for (l, q, h), want in zip(ref["patch.attn_head_out_by_pos_index"], ref["patch.attn_head_out_by_pos"]):
        if l == 29:
            got = metric([iv.patch("z", clean_cache, layer=int(l), pos=int(q), head=int(h))])
            assert abs(got - want) < 1e-3


def test_smollm2_backward_hooks(smollm2):
    """d(logit difference)/d(activation) at blocks 0 and 29 (see the tiny-model test)."""
    ref, info = reference("smollm2")
    mary, john = (int(t) for t in ref["answer_ids"])
    seen: dict = {}
    smollm2.run_with_hooks(ref["clean_ids"], bwd_hooks=[(h, lambda g, hook: seen.update({hook.name: g}))
                                                        for h in info["grad_hooks"]],
                           metric=logit_diff(None, mary, john))
    for hook in info["grad_hooks"]:
        close(seen[hook][0], ref[f"grad.{hook}"], f"bwd hook {hook}", rel=1e-4)


def test_smollm2_ragged_batches_like_transformer_lens(smollm2):
    """to_tokens(list) pads right by default (TransformerLens's default); with
    padding_side="left" the forward pass infers the mask from the leading pads. Either way each
    row's last real token gets TransformerLens's logits, which are the row's own logits."""
    ref, info = reference("smollm2")
    texts = info["ragged_texts"]
    alone = [smollm2(t)[0, -1] for t in texts]
    ids = smollm2.to_tokens(texts)
    assert (ids == ref["ragged_right.ids"]).all()
    lengths = [smollm2.to_tokens(t).shape[1] for t in texts]
    logits = smollm2(ids)
    for i, n in enumerate(lengths):
        top = ref[f"ragged_right.last_logits_row{i}_ids"]
        close(logits[i, n - 1, top], ref[f"ragged_right.last_logits_row{i}"], "right-padded row", rel=1e-4)
        close(logits[i, n - 1], alone[i], "right-padded row vs alone", rel=1e-4)
    smollm2.padding_side = "left"
    try:
        ids = smollm2.to_tokens(texts)
        assert (ids == ref["ragged_left.ids"]).all()
        logits = smollm2(ids)  # no mask passed: inferred from the leading pad ids
        for i in range(len(texts)):
            top = ref[f"ragged_left.last_logits_row{i}_ids"]
            close(logits[i, -1, top], ref[f"ragged_left.last_logits_row{i}"], "left-padded row", rel=1e-4)
            close(logits[i, -1], alone[i], "left-padded row vs alone", rel=1e-4)
    finally:
        smollm2.padding_side = "right"


def test_refactor_factored_attn_matrices_like_transformer_lens():
    """GPT-2 (learned positions): each head's QK and OV circuits refactored by their SVD. The
    factors' singular values (column norms: W_V's are S, W_Q's are √S) are TransformerLens's;
    the model's function is unchanged; W_O becomes orthonormal rows (a rotation)."""
    ref, _ = reference("gpt2")
    flags = dict(TL_DEFAULTS, refactor_factored_attn_matrices=True)
    m = minillm.load(FIXTURES / "gpt2", **flags)
    logits = m(ref["clean_ids"])
    close(logits[0, -1], ref["refac.logits_last"], "refactored logits")
    close(logits[0, -1], model("gpt2", True)(ref["clean_ids"])[0, -1], "same function", rel=1e-5)
    for l, blk in enumerate(m.blocks):
        a = blk.attn
        close(np.linalg.norm(a.W_V, axis=-2), ref["refac.W_V_colnorms"][l], f"layer {l} W_V column norms")
        close(np.linalg.norm(a.W_Q, axis=-2), ref["refac.W_Q_colnorms"][l], f"layer {l} W_Q column norms")
        close(a.b_O, ref["refac.b_O"][l], f"layer {l} b_O")
        eye = np.einsum("hed,hfd->hef", a.W_O, a.W_O)
        assert np.abs(eye - np.eye(eye.shape[-1])).max() < 1e-5  # float32 SVD factors
    m.revert_all()
    assert (m(ref["clean_ids"]) == model("gpt2", False)(ref["clean_ids"])).all()
    with pytest.raises(minillm.MinillmError, match="rotary"):
        minillm.load(FIXTURES / "llama_gqa_untied", refactor_factored_attn_matrices=True)


def test_cache_short_names_and_batch_handling_as_in_transformer_lens():
    """cache["embed"] / cache["scale"] and (name, layer[, sublayer]) keys resolve as
    TransformerLens's get_act_name does; run_with_cache(remove_batch_dim=True) and
    cache.remove_batch_dim() (in place) drop the batch axis."""
    ref, info = reference("llama_gqa")
    m = model("llama_gqa", False)
    _, cache = m.run_with_cache(ref["clean_ids"])
    assert cache["embed"] is cache["hook_embed"] and cache["scale"] is cache["ln_final.hook_scale"]
    assert cache["scale", 1, "ln2"] is cache["blocks.1.ln2.hook_scale"]
    assert cache["resid_pre", -1] is cache["blocks.1.hook_resid_pre"]
    close(cache["scale"][0], ref["raw.act.ln_final.hook_scale"], "cache['scale'] is TL's divisor")
    _, flat = m.run_with_cache(ref["clean_ids"], remove_batch_dim=True)
    assert flat["blocks.0.attn.hook_pattern"].shape == cache["blocks.0.attn.hook_pattern"].shape[1:]
    assert cache.remove_batch_dim() is cache and (cache["scale"] == flat["scale"]).all()
