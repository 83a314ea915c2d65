"""What each newer family adds, checked where the shared golden tests do not look.

The shared tests (test_forward, test_backward, test_generate, test_edits,
test_hooks, test_compare) run every family in conftest.GOLDEN, the new ones
included: logits and hidden states in float32 and float64, padded batches,
greedy continuations, gradients, edits and reverts. Here: the GGUF names,
Phi-3's short LongRoPE factors, save/load round trips through the fused and
interleaved layouts, the new hook points, and config validation.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.numpy import load_file

import minillm
from minillm.checkpoints.gguf_names import gguf_name, gguf_tensor_names
from minillm.checkpoints.hf import save_pretrained
from minillm.config import ModelConfig
from minillm.errors import ConfigError
from tests.conftest import GOLDEN, NEW_FAMILIES, golden_folder

ATOL_F32 = 5e-5  # as in test_forward: float32 logits agree to a few 1e-6


def info(name: str) -> dict:
    with safe_open(str(golden_folder(name) / "reference.safetensors"), "np") as f:
        return json.loads(f.metadata()["info"])


def max_diff(a, b) -> float:
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())


@pytest.mark.parametrize("name", NEW_FAMILIES)
def test_gguf_names_match_llama_cpps_table(name):
    """Every tensor's llama.cpp name, against the gguf package's own table (frozen by
    make_fixtures.py). None where llama.cpp has no name for a tensor."""
    model = minillm.load(golden_folder(name))
    expected = info(name)["facts"]["gguf_tensor_names"]["names"]
    ours = gguf_tensor_names(model)
    assert ours == expected
    assert all(v is not None for v in ours.values()), "llama.cpp names every tensor of these"


@pytest.mark.parametrize("name", NEW_FAMILIES)
def test_the_fixture_stays_a_few_hundred_kilobytes(name):
    """Each family's folder (weights, gradients, references) is at most 300 kB, so the
    repository stays small as families are added (they are 238 to 277 kB today)."""
    size = sum(f.stat().st_size for f in golden_folder(name).iterdir() if f.is_file())
    assert size <= 300_000, f"{name}: {size} bytes"


def test_gguf_names_of_llama_match_the_converter():
    from minillm.checkpoints.gguf import _LAYER_TENSORS

    for hf, gg in _LAYER_TENSORS.items():
        assert gguf_name(hf.format(l=7)) == gg.format(l=7)
    assert gguf_name("model.layers.0.mlp.not_a_tensor.weight") is None


@pytest.mark.parametrize("dtype,key,atol", [(np.float32, "short_logits", ATOL_F32),
                                            (np.float64, "short_logits_f64", 1e-10)])
def test_phi3_longrope_short_factors(dtype, key, atol):
    """8 tokens fit Phi-3's original context (8 in the fixture): the short factors apply;
    the 12-token reference (test_forward) uses the long ones. The two differ by > 1e-3."""
    model = minillm.load(golden_folder("phi3"), dtype=dtype)
    ref = load_file(str(golden_folder("phi3") / "reference.safetensors"))
    short = model(ref["input_ids"][:, :8])
    assert max_diff(short, ref[key]) <= atol
    assert max_diff(short, ref["logits"][:, :8]) > 1e-3


def test_phi3_longrope_switches_factors_past_the_original_context():
    """With a cache, the call that crosses the original context uses the long factors for
    its own tokens while the cached keys keep their short rotation (transformers does the
    same): prefill 8 then decode 1 differs from the 9-token forward at the last position."""
    from minillm.kv_cache import KVCache

    model = minillm.load(golden_folder("phi3"), dtype=np.float64)
    ids = load_file(str(golden_folder("phi3") / "reference.safetensors"))["input_ids"][:1, :9]
    cache = KVCache.for_model(model, batch=1)
    first = model(ids[:, :8], cache=cache)
    last = model(ids[:, 8:], cache=cache)
    assert max_diff(first, model(ids[:, :8])) <= 1e-12  # short factors, as without a cache
    assert max_diff(last[:, -1], model(ids)[:, -1]) > 1e-6


@pytest.mark.parametrize("name", NEW_FAMILIES)
def test_save_pretrained_round_trip_is_bit_exact(name, tmp_path):
    """The inverse mapping (GPT-NeoX's interleaved qkv, Phi-3's fused qkv_proj and
    gate_up_proj, Gemma's norm names) writes back exactly the tensors it read."""
    model = minillm.load(golden_folder(name))
    out = save_pretrained(model, tmp_path / name)
    original = load_file(str(golden_folder(name) / "model.safetensors"))
    written = load_file(str(out / "model.safetensors"))
    assert set(written) == set(original)
    for key, value in original.items():
        assert written[key].tobytes() == value.tobytes(), key


def test_gpt_neox_qkv_is_regrouped_per_head():
    """query_key_value stores, per head, its q, k and v rows; head 1's query rows land in
    W_Q[1] and its key rows in W_K[1]."""
    model = minillm.load(golden_folder("pythia"))
    e = model.cfg.d_head
    w = load_file(str(golden_folder("pythia") / "model.safetensors"))[
        "gpt_neox.layers.0.attention.query_key_value.weight"]  # [3d, d]
    head1 = w.reshape(model.cfg.n_heads, 3, e, -1)[1]  # [3, e, d]
    assert (model.blocks[0].attn.W_Q[1] == head1[0].T).all()
    assert (model.blocks[0].attn.W_K[1] == head1[1].T).all()
    assert (model.blocks[0].attn.W_V[1] == head1[2].T).all()


def test_parallel_block_mlp_reads_the_block_input():
    """Pythia: ln2 normalizes resid_pre (not resid_mid), and resid_post is the sum of all three."""
    model = minillm.load(golden_folder("pythia"), dtype=np.float64)
    ids = load_file(str(golden_folder("pythia") / "reference.safetensors"))["input_ids"]
    _, c = model.run_with_cache(ids)
    x = c["blocks.1.hook_resid_pre"]
    centred = x - x.mean(-1, keepdims=True)
    assert max_diff(c["blocks.1.ln2.hook_normalized"], centred / c["blocks.1.ln2.hook_scale"]) == 0
    total = x + c["blocks.1.hook_attn_out"] + c["blocks.1.hook_mlp_out"]
    assert max_diff(c["blocks.1.hook_resid_post"], total) <= 1e-13


@pytest.mark.parametrize("name,present,absent", [
    ("gemma2", ["ln1.hook_scale", "ln1_post.hook_normalized", "ln2_post.hook_scale"],
     ["attn.q_norm.hook_scale"]),
    ("gemma3", ["attn.q_norm.hook_normalized", "attn.k_norm.hook_scale", "ln2_post.hook_scale"],
     []),
    ("qwen3", ["attn.q_norm.hook_scale", "attn.k_norm.hook_normalized", "ln2.hook_scale"],
     ["ln1_post.hook_scale"]),
    ("olmo2", ["attn.q_norm.hook_normalized", "ln1_post.hook_scale", "ln2_post.hook_normalized"],
     ["ln1.hook_scale", "ln2.hook_normalized"]),
    ("pythia", ["ln1.hook_scale", "attn.hook_rot_q", "mlp.hook_pre", "mlp.hook_post"],
     ["mlp.hook_pre_linear", "ln1_post.hook_scale"]),
])
def test_new_hook_points(name, present, absent):
    names = set(minillm.load(golden_folder(name)).hook_names())
    for n in present:
        assert f"blocks.1.{n}" in names, n
    for n in absent:
        assert f"blocks.1.{n}" not in names, n


@pytest.mark.parametrize("name", ["gemma3", "qwen3", "olmo2"])
def test_qk_norm_hooks_are_what_rope_rotates(name):
    """q_norm.hook_normalized · gain, rotated, is hook_rot_q; a hook on it changes the scores."""
    model = minillm.load(golden_folder(name), dtype=np.float64)
    ids = load_file(str(golden_folder(name) / "reference.safetensors"))["input_ids"]
    _, c = model.run_with_cache(ids)
    attn = model.blocks[1].attn
    q = attn.q_norm.apply(c["blocks.1.attn.q_norm.hook_normalized"]).reshape(
        c["blocks.1.attn.hook_q"].shape)
    assert not np.allclose(q, c["blocks.1.attn.hook_q"])  # the norm does something
    rope = model.rope_tables(np.broadcast_to(np.arange(ids.shape[1]), ids.shape))[1]
    from minillm import ops

    assert max_diff(ops.apply_rope(q, *rope), c["blocks.1.attn.hook_rot_q"]) <= 1e-13
    doubled = model.run_with_hooks(
        ids, fwd_hooks=[("blocks.1.attn.q_norm.hook_scale", lambda s, hook: s * 2)])
    assert max_diff(doubled, model(ids)) > 1e-6


def test_gemma2_soft_caps_bound_scores_and_logits():
    model = minillm.load(golden_folder("gemma2"))
    ids = load_file(str(golden_folder("gemma2") / "reference.safetensors"))["input_ids"]
    logits, c = model.run_with_cache(ids)
    assert np.abs(logits).max() < model.cfg.final_softcap == 3.0
    scores = c["blocks.0.attn.hook_attn_scores"]
    assert np.abs(scores[np.isfinite(scores)]).max() < model.cfg.attn_softcap == 5.0


def test_gemma_local_and_global_layers():
    """Layer 0 is local (window 6), layer 1 global; Gemma 3's local layer has its own rope base."""
    g2 = minillm.load(golden_folder("gemma2"))
    ids = load_file(str(golden_folder("gemma2") / "reference.safetensors"))["input_ids"]
    _, c = g2.run_with_cache(ids)
    pattern0, pattern1 = c["blocks.0.attn.hook_pattern"], c["blocks.1.attn.hook_pattern"]
    assert (pattern0[..., 11, :6] == 0).all() and (pattern0[..., 11, 6:] > 0).all()
    assert (pattern1[..., 11, :] > 0).all()
    g3 = minillm.load(golden_folder("gemma3")).cfg
    assert g3.window(0) == 6 and g3.window(1) is None
    assert g3.layer_rope_theta(0) == 1e4 and g3.layer_rope_theta(1) == 1e6
    assert g3.layer_rope_scaling(0) is None and g3.layer_rope_scaling(1).kind == "linear"


def test_gemma_norm_edit_scales_the_gain():
    """scale_norm means the same in every family: the gain (Gemma: 1 + w) times the factor;
    zeroing ln_final zeroes the logits."""
    model = minillm.load(golden_folder("gemma3"))
    ids = load_file(str(golden_folder("gemma3") / "reference.safetensors"))["input_ids"]
    gain = model.blocks[0].ln2.gain.copy()
    with model.edited(minillm.edits.scale_norm(0, "ln2", 0.5)):
        assert max_diff(model.blocks[0].ln2.gain, 0.5 * gain) <= 1e-7
    with model.edited(minillm.edits.scale_norm(None, "final", 0.0)):
        assert np.abs(model(ids)).max() == 0
    assert model.journal.pristine


def test_olmo2_has_no_pre_norms_to_edit():
    model = minillm.load(golden_folder("olmo2"))
    with pytest.raises(minillm.MinillmError, match="layer 0 has no ln1.*ln1_post, ln2_post"):
        model.edit(minillm.edits.scale_norm(0, "ln1", 2.0))
    assert model.journal.pristine


@pytest.mark.parametrize("name", GOLDEN)
def test_neuron_and_head_edits_mean_the_same_in_every_family(name):
    """Zeroing neuron i zeroes hook_post[..., i] (gated or not, biased or not); zeroing head
    h's W_O zeroes its hook_result, and the attention's raw output loses exactly that term
    (for Gemma and OLMo-2 this is the input of ln1_post)."""
    model = minillm.load(golden_folder(name), dtype=np.float64)
    ids = load_file(str(golden_folder(name) / "reference.safetensors"))["input_ids"]
    with model.edited(minillm.edits.zero_neuron(1, 3)):
        _, c = model.run_with_cache(ids)
    assert (c["blocks.1.mlp.hook_post"][..., 3] == 0).all()
    assert (c["blocks.1.mlp.hook_post"][..., 4] != 0).any()
    names = ["blocks.1.attn.hook_result", "blocks.1.attn.hook_z"]
    model.set_use_attn_result(True)
    _, clean = model.run_with_cache(ids, names_filter=names)
    with model.edited(minillm.edits.zero_head(1, 2)):
        _, c = model.run_with_cache(ids, names_filter=names)
    result, before = c["blocks.1.attn.hook_result"], clean["blocks.1.attn.hook_result"]
    assert (result[:, :, 2] == 0).all() and (before[:, :, 2] != 0).any()
    assert (result[:, :, [0, 1, 3]] == before[:, :, [0, 1, 3]]).all()
    assert model.journal.pristine


@pytest.mark.parametrize("raw,match", [
    ({"model_type": "gemma3"}, "multimodal Gemma 3"),
    ({"model_type": "gemma"}, "Gemma 1 is not supported"),
    ({"partial_rotary_factor": 0.1}, "must be a positive even number"),
    ({"partial_rotary_factor": 1.5}, r"partial_rotary_factor 1.5 must be in \(0, 1\]"),
    ({"layer_types": ["full_attention"]}, "layer_types must list 2 entries"),
    ({"layer_types": ["full_attention", "chunked"]}, "layer_types must list 2 entries"),
    ({"rope_scaling": {"rope_type": "yarn", "factor": 2.0}}, "'yarn' is not implemented"),
    ({"hidden_act": "relu"}, "hidden_act 'relu' is not supported"),
])
def test_unsupported_variants_are_clear_errors(raw, match):
    base = {"model_type": "qwen3", "hidden_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
            "intermediate_size": 96, "vocab_size": 256, "max_position_embeddings": 64}
    with pytest.raises(ConfigError, match=match):
        ModelConfig.from_dict({**base, **raw}, source="cfg.json")


@pytest.mark.parametrize("raw,match", [
    ({"model_type": "gemma2", "attn_logit_softcapping": -1.0}, "attn_logit_softcapping must be"),
    ({"model_type": "qwen3", "use_sliding_window": True, "sliding_window": 8},
     "use_sliding_window=true is not supported for qwen3"),
    ({"model_type": "phi3", "rope_scaling": {"type": "longrope", "short_factor": [1.0],
                                             "long_factor": [1.0] * 8,
                                             "original_max_position_embeddings": 8}},
     "short_factor must list 8 positive numbers"),
    ({"model_type": "gemma3_text", "rope_parameters": {
        "full_attention": {"rope_type": "default", "rope_theta": 1e6},
        "sliding_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4}}},
     "rope scaling on Gemma 3's sliding layers"),
    ({"model_type": "gpt_neox", "rope_scaling": {"type": "linear", "factor": 2.0}},
     "rope scaling is not implemented for gpt_neox"),
    ({"model_type": "gemma3_text", "use_bidirectional_attention": True},
     "use_bidirectional_attention=true"),
])
def test_unsupported_options_per_family(raw, match):
    base = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 2, "head_dim": 16, "intermediate_size": 96,
            "vocab_size": 256, "max_position_embeddings": 64}
    with pytest.raises(ConfigError, match=match):
        ModelConfig.from_dict({**base, **raw}, source="cfg.json")


def test_real_config_spellings():
    """The spellings of the real checkpoints' config.json (older transformers): Pythia's
    rotary_pct / rotary_emb_base, Gemma 3's rope_local_base_freq + sliding_window_pattern,
    Gemma 2 without layer_types."""
    pythia = ModelConfig.from_dict({
        "model_type": "gpt_neox", "hidden_size": 512, "num_hidden_layers": 6,
        "num_attention_heads": 8, "intermediate_size": 2048, "vocab_size": 50304,
        "max_position_embeddings": 2048, "rotary_pct": 0.25, "rotary_emb_base": 10000,
        "use_parallel_residual": True, "hidden_act": "gelu", "tie_word_embeddings": False})
    assert (pythia.rotary_dim, pythia.parallel_residual, pythia.act_fn) == (16, True, "gelu_erf")
    gemma3 = ModelConfig.from_dict({
        "model_type": "gemma3_text", "hidden_size": 640, "num_hidden_layers": 18,
        "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 256,
        "intermediate_size": 2048, "vocab_size": 262144, "max_position_embeddings": 32768,
        "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0, "sliding_window": 512,
        "sliding_window_pattern": 6, "rope_scaling": None, "query_pre_attn_scalar": 256})
    assert gemma3.local_layers == tuple((l + 1) % 6 != 0 for l in range(18))
    assert (gemma3.layer_rope_theta(0), gemma3.layer_rope_theta(5)) == (1e4, 1e6)
    assert gemma3.attn_softcap is None and gemma3.tie_embeddings
    gemma2 = ModelConfig.from_dict({
        "model_type": "gemma2", "hidden_size": 2304, "num_hidden_layers": 26,
        "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256,
        "intermediate_size": 9216, "vocab_size": 256000, "max_position_embeddings": 8192,
        "sliding_window": 4096, "query_pre_attn_scalar": 256})
    assert gemma2.local_layers[:3] == (True, False, True)
    assert (gemma2.attn_softcap, gemma2.final_softcap) == (50.0, 30.0)  # transformers' defaults


@pytest.mark.parametrize("name", NEW_FAMILIES)
def test_loss_of_the_new_families_matches_transformers(name):
    """model.loss against HF's loss (labels=input_ids, reference.safetensors): 1e-4 in float32
    (as test_loss.py); float64 against the float64 log-softmax of HF's float64 logits, 1e-12.
    A left-padded batch gives the loss of its rows alone."""
    ref = load_file(str(golden_folder(name) / "reference.safetensors"))
    model = minillm.load(golden_folder(name))
    assert abs(model.loss(ref["input_ids"]) - float(ref["loss"])) <= 1e-4
    ids, mask = ref["ragged_input_ids"], ref["ragged_attention_mask"]
    alone = np.concatenate([model.loss(ref["input_ids"][:1], per_token=True)[0],
                            model.loss(ref["input_ids"][1:, :9], per_token=True)[0]])
    assert abs(model.loss(ids, attention_mask=mask) - float(alone.mean(dtype=np.float64))) <= 1e-4
    m64 = minillm.load(golden_folder(name), dtype=np.float64)
    logits = ref["logits_f64"][:, :-1]
    logp = logits - logits.max(-1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
    expected = -np.take_along_axis(logp, ref["input_ids"][:, 1:, None], -1)[..., 0]
    assert np.abs(m64.loss(ref["input_ids"], per_token=True) - expected).max() <= 1e-12


JUNK = [None, -1, 0, 1, 2, 0.5, 1.5, float("nan"), "x", True, [], {}, [1.0] * 8, ["full_attention"],
        ["sliding_attention", "full_attention"], {"rope_type": "longrope"},
        {"rope_type": "linear", "factor": 0}, {"full_attention": [], "sliding_attention": 3},
        {"full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6}},
        {"rope_type": "longrope", "short_factor": [1.0] * 8, "long_factor": [1.0] * 8,
         "original_max_position_embeddings": 1}]
NEW_KEYS = ["layer_types", "rope_parameters", "rope_scaling", "partial_rotary_factor",
            "query_pre_attn_scalar", "attn_logit_softcapping", "final_logit_softcapping",
            "sliding_window", "sliding_window_pattern", "rotary_pct", "rotary_emb_base",
            "rope_local_base_freq", "use_parallel_residual", "original_max_position_embeddings",
            "hidden_activation", "hidden_act", "attention_bias", "use_sliding_window", "head_dim"]


@settings(max_examples=300, deadline=None)
@given(model_type=st.sampled_from(["gpt_neox", "gemma2", "gemma3_text", "qwen3", "phi3", "olmo2"]),
       junk=st.dictionaries(st.sampled_from(NEW_KEYS), st.sampled_from(JUNK), max_size=5))
def test_config_junk_is_a_config_error_or_a_working_model(model_type, junk):
    """Any value in the keys the new families read gives a ConfigError naming the file, or a
    config a model can be built from and run."""
    raw = {"model_type": model_type, "hidden_size": 32, "num_hidden_layers": 2,
           "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 48,
           "vocab_size": 64, "max_position_embeddings": 32, **junk}
    try:
        cfg = ModelConfig.from_dict(raw, source="cfg.json")
    except ConfigError as e:
        assert str(e).startswith("cfg.json")
        return
    model = minillm.HookedModel(cfg, np.float64)
    for _, p in model.named_parameters():
        p[...] = np.random.default_rng(0).normal(0, 0.1, p.shape)
    assert np.isfinite(model(np.arange(10)[None] % 64)).all()


def test_info_names_what_each_family_adds(capsys):
    from minillm.commands.info import describe_folder

    text = describe_folder(golden_folder("gemma2"), "gemma2")
    assert "family gemma: norms after each sublayer" in text and "attention soft-cap 5" in text
    assert "parallel attention and MLP" in describe_folder(golden_folder("pythia"), "pythia")


@pytest.mark.parametrize("name", ["gemma2", "gemma3", "olmo2", "pythia", "phi3"])
def test_head_and_neuron_writes_sum_to_the_sublayer_outputs(name):
    """With a post-norm (Gemma, OLMo-2) its scale is frozen, so each head's and neuron's write
    goes through it linearly: the heads of a layer sum to hook_attn_out (+ b_O's share), the
    neurons to hook_mlp_out (+ b_out's). Float64, so 1e-12."""
    model = minillm.load(golden_folder(name), dtype=np.float64)
    ids = load_file(str(golden_folder(name) / "reference.safetensors"))["input_ids"]
    _, c = model.run_with_cache(ids)
    H, L = model.cfg.n_heads, model.cfg.n_layers
    heads = c.stack_head_results(layer=L)  # [L·h, b, p, d]
    neurons = c.stack_neuron_results(layer=L)  # [L·m, b, p, d]
    for l, block in enumerate(model.blocks):
        f1, f2 = (1.0 if getattr(block, n) is None else
                  getattr(block, n).gain / c[f"blocks.{l}.{n}.hook_scale"]
                  for n in ("ln1_post", "ln2_post"))
        bias = 0 if block.attn.b_O is None else block.attn.b_O * f1
        attn = heads[l * H:(l + 1) * H].sum(0) + bias
        assert max_diff(attn, c[f"blocks.{l}.hook_attn_out"]) <= 1e-12
        m = model.cfg.d_mlp
        bias = 0 if block.mlp.b_out is None else block.mlp.b_out * f2
        assert max_diff(neurons[l * m:(l + 1) * m].sum(0) + bias, c[f"blocks.{l}.hook_mlp_out"]) <= 1e-12


@pytest.mark.parametrize("name", ["gemma2", "gemma3", "olmo2", "pythia", "qwen3", "phi3"])
def test_direct_logit_attribution_parts_sum_to_the_logit_difference(name):
    """Including through post-norms and (Gemma 2) the final soft-cap, whose parts sum to the
    logit difference before the cap."""
    from minillm.interp.dla import direct_logit_attribution

    model = minillm.load(golden_folder(name), dtype=np.float64)
    ids = load_file(str(golden_folder(name) / "reference.safetensors"))["input_ids"][:1]
    for neurons in (False, True):
        dla = direct_logit_attribution(model, ids, correct=5, incorrect=7, neurons=neurons)
        assert abs(float(dla.parts.values.sum()) - float(np.mean(dla.total))) <= 1e-10


@pytest.mark.parametrize("name", NEW_FAMILIES)
def test_transformerlens_weight_processing_keeps_the_logits(name):
    """fold_ln (the gain actually applied, 1 + w for Gemma; nothing to fold before OLMo-2's
    sublayers), centring and value-bias folding leave the logits as they were (float64,
    1e-10) and revert bit for bit."""
    model = minillm.load(golden_folder(name), dtype=np.float64)
    ids = load_file(str(golden_folder(name) / "reference.safetensors"))["input_ids"]
    clean = model(ids)
    before = {n: v.copy() for n, v in model.named_parameters()}
    with model.edited(minillm.edits.process_weights(fold_ln=True, center_writing_weights=True,
                                                    center_unembed=False, fold_value_biases=True)):
        assert max_diff(model(ids), clean) <= 1e-10
        if model.blocks[0].ln1 is not None:
            assert (model.blocks[0].ln1.gain == 1).all()
    assert all((v == before[n]).all() for n, v in model.named_parameters())


def test_center_unembed_is_refused_under_a_final_soft_cap():
    model = minillm.load(golden_folder("gemma2"))
    with pytest.raises(minillm.MinillmError, match="final soft-cap"):
        model.edit(minillm.edits.process_weights(center_unembed=True))
    assert model.journal.pristine


@pytest.mark.parametrize("name", NEW_FAMILIES)
def test_activation_patching_of_the_whole_stream_restores_the_clean_run(name):
    """The batched patching engine on every family: patching resid_pre of any layer at every
    position (clean into corrupted) gives back the clean metric, normalized 1 (float64)."""
    from minillm.interp import metrics, patching

    model = minillm.load(golden_folder(name), dtype=np.float64)
    ids = load_file(str(golden_folder(name) / "reference.safetensors"))["input_ids"]
    res = patching.patching_sweep(model, ids[:1, :8], ids[1:, :8], metrics.logit_diff(model, 5, 7),
                                  component="resid_pre", per_position=False, progress=False)
    assert np.abs(np.asarray(res.values) - 1).max() <= 1e-9


@pytest.mark.parametrize("name", ["gemma2", "olmo2", "pythia"])
def test_logit_lens_last_row_is_the_models_logits(name):
    """The lens decodes through ln_final, W_U and (Gemma 2) the final soft-cap, as the model does:
    its last row is the model's logits, bit for bit."""
    from minillm.interp.lens import lens_logits

    model = minillm.load(golden_folder(name))
    ids = load_file(str(golden_folder(name) / "reference.safetensors"))["input_ids"]
    assert (lens_logits(model, ids, model.cfg.n_layers) == model(ids)).all()
