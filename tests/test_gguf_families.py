"""`minillm convert FILE.gguf` on GGUF files written by llama.cpp's own converter.

tests/fixtures/gguf/<family>.f32.gguf is the family's tiny transformers checkpoint
(tests/fixtures/<family>/) converted by llama.cpp's convert_hf_to_gguf.py
(tests/fixtures/make_gguf_fixtures.py says how, and what it had to add). Float32 GGUF means
the same float32 weights, so converting back must give back the checkpoint's tensors --
bit for bit, except Gemma's norm gains, which llama.cpp stores as fl(1 + w) -- and the
converted model must compute transformers' logits within the derived float32 tolerance of
tests/numerics.py. <family>.reference.safetensors holds transformers' float32 logits of the
configuration the GGUF describes; for Gemma that differs from the fixture's in the one
setting a GGUF cannot carry (query_pre_attn_scalar), for the others it is the fixture's own
configuration and logits.

The whole module takes about 3 s.
"""

from __future__ import annotations

import json

import gguf as gguf_lib
import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import load_file

import minillm
from minillm.checkpoints import gguf as conv
from minillm.checkpoints.gguf_names import gguf_name
from minillm.cli import main
from minillm.errors import MinillmError
from tests.conftest import golden_folder
from tests.numerics import F64_ATOL, assert_model_close, assert_reordered_close

FAMILIES = ["pythia", "gemma2", "gemma3", "qwen3", "phi3", "olmo2"]
GEMMA = {"gemma2", "gemma3"}
GGUF = golden_folder("gguf")


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """Each family's f32 GGUF converted once, through the command (with its progress bar)."""
    folders = {}
    for family in FAMILIES:
        out = tmp_path_factory.mktemp("gguf") / family
        assert main(["convert", str(GGUF / f"{family}.f32.gguf"), "-o", str(out)]) == 0
        folders[family] = out
    return folders


def tensors(path) -> dict[str, np.ndarray]:
    return load_file(str(path))


@pytest.mark.parametrize("family", FAMILIES)
def test_converted_weights_are_the_checkpoints(converted, family):
    ours = tensors(converted[family] / "model.safetensors")
    theirs = tensors(golden_folder(family) / "model.safetensors")
    assert set(ours) == set(theirs)
    for name, w in theirs.items():
        if family in GEMMA and name.endswith("norm.weight"):
            # llama.cpp stored fl(1 + w): the gain the model computes, 1 + w', is that value
            one = np.float32(1)
            assert np.array_equal(one + ours[name], one + w), name
            assert np.abs(ours[name] - w).max() <= 2.0**-23 * np.abs(one + w).max(), name
        else:  # q/k rows, fused qkv (Pythia's per-head interleave), gate_up: back in place
            assert ours[name].dtype == np.float32 and np.array_equal(ours[name], w), name


@pytest.mark.parametrize("family", FAMILIES)
def test_converted_model_computes_transformers_logits(converted, family):
    ref = load_file(str(GGUF / f"{family}.reference.safetensors"))
    model = minillm.load(converted[family])
    assert_model_close(model, model(ref["input_ids"]), ref["logits"], f"{family} GGUF logits")
    if family not in GEMMA:  # the GGUF describes the fixture itself: same logits as its tests
        fixture = load_file(str(golden_folder(family) / "reference.safetensors"))
        assert np.array_equal(ref["logits"], fixture["logits"])
        model64 = minillm.load(converted[family], dtype=np.float64)
        assert_reordered_close(model64(fixture["input_ids"]), fixture["logits_f64"], F64_ATOL,
                               f"{family} GGUF logits (float64)")


@pytest.mark.parametrize("family", FAMILIES)
def test_rebuilt_config_matches_the_checkpoint(converted, family):
    """Every setting the GGUF carries comes back (Gemma 3's layer pattern from the period
    llama.cpp reads, Gemma 2's from llama.cpp's default); Gemma's query_pre_attn_scalar, which
    no GGUF carries, comes back as llama.cpp assumes it: head_dim."""
    ours = minillm.load(converted[family]).cfg
    theirs = minillm.load(golden_folder(family)).cfg
    same = ("n_layers", "d_model", "n_heads", "n_kv_heads", "d_head", "d_mlp", "d_vocab", "n_ctx",
            "eps", "tie_embeddings", "act_fn", "rotary_dim", "rope_theta", "rope_scaling",
            "sliding_window", "local_rope_theta", "norm_offset", "pre_norms", "post_norms",
            "qk_norm", "attn_softcap", "final_softcap", "embed_scale", "parallel_residual",
            "qkv_bias", "o_bias", "mlp_bias")
    for key in same:
        assert getattr(ours, key) == getattr(theirs, key), key
    windows = [ours.window(layer) for layer in range(ours.n_layers)]
    assert windows == [theirs.window(layer) for layer in range(theirs.n_layers)]
    if family in GEMMA:
        assert windows == [6, None]  # layer 0 local, layer 1 global
        assert ours.query_pre_attn_scalar == ours.d_head != theirs.query_pre_attn_scalar
    else:
        assert ours.query_pre_attn_scalar == theirs.query_pre_attn_scalar


def test_phi3_longrope_comes_back_from_the_factor_tensors(converted):
    rope = json.loads((converted["phi3"] / "config.json").read_text())["rope_parameters"]
    fixture = json.loads((golden_folder("phi3") / "config.json").read_text())["rope_parameters"]
    assert rope["rope_type"] == "longrope"
    assert rope["long_factor"] == fixture["long_factor"]  # float32 in the file, shortest decimal here
    assert rope["short_factor"] == fixture["short_factor"]
    assert rope["original_max_position_embeddings"] == fixture["original_max_position_embeddings"]


@pytest.mark.parametrize("family", FAMILIES)
def test_tokenizer_comes_along(converted, family):
    """The tokenizer rebuilt from the GGUF cuts text as the tiny tokenizer did before llama.cpp
    converted it: SentencePiece's own library (gemma2, gemma3, phi3: merges rebuilt from the
    scores, with and without the '▁' prefix) or byte-level BPE with its merges."""
    with safe_open(GGUF / f"{family}.reference.safetensors", framework="numpy") as f:
        text, expected = f.metadata()["text"], f.get_tensor("text_ids")
    model = minillm.load(converted[family])
    ids = model.to_tokens(text)[0]  # none of these GGUFs asks for a BOS (add_bos_token)
    assert ids.tolist() == expected.tolist()
    assert model.to_string(ids) == text


def test_q8_0_gguf_converts_within_the_quantization_error(tmp_path):
    """llama.cpp's Q8_0: blocks of 32 values along a row, each value d·q with d = max|x| / 127
    (stored as float16) and q = round(x / d). So a converted weight is within d/2 of the
    original, plus 127·|d - fl16(d)| <= 127·d·2^-11 < 0.07·d for the float16 scale. Rows whose
    length is not a multiple of 32 are written as float16 instead (within 2^-11 relative);
    the norms stay float32 (exact). A wrong row or column order would be off by the weights'
    own size (~0.1), hundreds of d."""
    out = conv.convert_gguf_to_hf(GGUF / "qwen3.q8_0.gguf", tmp_path / "q8")
    reader = gguf_lib.GGUFReader(GGUF / "qwen3.q8_0.gguf")
    kinds = {t.name: t.tensor_type.name for t in reader.tensors}
    assert "Q8_0" in kinds.values()
    theirs = tensors(golden_folder("qwen3") / "model.safetensors")
    names = {name: gguf_name(name) for name in theirs}
    with safe_open(out / "model.safetensors", framework="numpy") as f:
        for name, w in theirs.items():
            ours, kind = f.get_tensor(name), kinds[names[name]]
            if kind == "F32":
                assert np.array_equal(ours, w), name
            elif kind == "F16":
                assert np.array_equal(ours, w.astype(np.float16).astype(np.float32)), name
            else:
                assert kind == "Q8_0", name
                blocks = w.reshape(w.shape[0], -1, 32)
                d = np.abs(blocks).max(-1, keepdims=True) / 127
                err = np.abs(ours.reshape(blocks.shape) - blocks)
                assert (err <= 0.57 * d + 1e-12).all(), name
                assert err.max() > 0, name  # it really was quantized
    model = minillm.load(out)
    ref = load_file(str(GGUF / "qwen3.reference.safetensors"))
    assert np.isfinite(model(ref["input_ids"])).all()


def test_phi3_mini_sliding_window_comes_back(tmp_path):
    """Phi-3-mini's GGUF records its window (2047; here 6, set in a copy of the fixture):
    the converted config keeps it, as its Hugging Face config has it (0 means none)."""
    path = tmp_path / "phi3-window.gguf"
    path.write_bytes((GGUF / "phi3.f32.gguf").read_bytes())
    reader = gguf_lib.GGUFReader(path, "r+")
    field = reader.fields["phi3.attention.sliding_window"]
    field.parts[field.data[0]][0] = 6
    del reader
    model = minillm.load(conv.convert_gguf_to_hf(path, tmp_path / "out"))
    assert model.cfg.sliding_window == 6 and model.cfg.window(1) == 6


def test_qwen2_and_olmo_pre_tokenizers_and_user_defined_tokens(tmp_path):
    """Real Qwen3 GGUFs name the pre-tokenizer "qwen2" (digits one by one) and mark added
    tokens that are not special (<think>) as type 4; Pythia's tokenizer is "olmo" (GPT-2's
    split). Here on the tiny llama GGUF of test_gguf_convert with those names."""
    from tests.test_gguf_convert import CONTROL, tiny_weights, write_tiny_gguf

    n_tokens = len(CONTROL) + 256 + 3
    types = [3] * len(CONTROL) + [1] * (n_tokens - len(CONTROL) - 1) + [4]  # "hell": user-defined
    qwen = conv.convert_gguf_to_hf(write_tiny_gguf(tmp_path / "q.gguf", tiny_weights(False), pre="qwen2",
                                                   types=types), tmp_path / "q")
    olmo = conv.convert_gguf_to_hf(write_tiny_gguf(tmp_path / "o.gguf", tiny_weights(False), pre="olmo"),
                                   tmp_path / "o")
    from tokenizers import Tokenizer

    q = Tokenizer.from_file(str(qwen / "tokenizer.json"))
    o = Tokenizer.from_file(str(olmo / "tokenizer.json"))
    def words(tok, text):
        return [w for w, _ in tok.pre_tokenizer.pre_tokenize_str(text)]

    assert words(q, "hello 123") == ["hello", "Ġ", "1", "2", "3"]  # digits one by one
    assert words(o, "hello 123") == ["hello", "Ġ123"]  # GPT-2: a space starts the next word
    added = {t.content: t.special for t in q.get_added_tokens_decoder().values()}
    assert added == {**dict.fromkeys(CONTROL, True), "hell": False}  # user-defined: not special
    assert q.decode(q.encode("hell 123").ids) == "hell 123"


def test_unsupported_architecture_is_named(tmp_path, capsys):
    path = tmp_path / "falcon.gguf"
    w = gguf_lib.GGUFWriter(path, "falcon")
    w.add_token_list(["a", "b"])
    w.add_tensor("token_embd.weight", np.zeros((2, 4), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(MinillmError, match="architecture 'falcon' is not supported .*gemma3.*gptneox"):
        conv.convert_gguf_to_hf(path, tmp_path / "out")
    assert main(["convert", str(path), "-o", str(tmp_path / "out")]) == 1
    assert "falcon" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_progress_bar_is_shown(tmp_path, capsys):
    assert main(["convert", str(GGUF / "olmo2.f32.gguf"), "-o", str(tmp_path / "o")]) == 0
    assert "converting olmo2.f32.gguf" in capsys.readouterr().err
