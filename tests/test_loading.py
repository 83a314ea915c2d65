"""Loading real HF folders, and every kind of bad input getting a clear error."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import minillm
from minillm.checkpoints.hf import save_pretrained
from minillm.errors import CheckpointError, ConfigError, MinillmError
from tests.conftest import random_model


@pytest.fixture(params=["gpt2", "llama"])
def folder(request, tmp_path):
    """A tiny random checkpoint written in HF layout."""
    model = random_model(request.param, seed=3)
    save_pretrained(model, tmp_path / "ckpt")
    return tmp_path / "ckpt", model


def test_save_then_load_round_trips_bit_exactly(folder):
    path, model = folder
    loaded = minillm.load(path)
    for (name, a), (_, b) in zip(model.named_parameters(), loaded.named_parameters()):
        assert a.tobytes() == b.tobytes(), name
    ids = np.array([[1, 2, 3, 4]])
    assert (loaded(ids) == model(ids)).all()


def test_gpt2_keys_with_and_without_transformer_prefix(tmp_path):
    model = random_model("gpt2")
    save_pretrained(model, tmp_path / "a")
    tensors = load_file(str(tmp_path / "a" / "model.safetensors"))
    bare = {k.removeprefix("transformer."): v for k, v in tensors.items()}
    bare["h.0.attn.bias"] = np.ones((1, 1, 4, 4), np.float32)  # an old causal-mask buffer
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    save_file(bare, str(tmp_path / "b" / "model.safetensors"))
    ids = np.array([[5, 6, 7]])
    assert (minillm.load(tmp_path / "b")(ids) == minillm.load(tmp_path / "a")(ids)).all()


def test_bf16_and_f16_checkpoints_load_as_float32(tmp_path):
    model = random_model("llama")
    save_pretrained(model, tmp_path / "a")
    tensors = load_file(str(tmp_path / "a" / "model.safetensors"))
    save_file({k: v.astype(np.float16) for k, v in tensors.items()},
              str(tmp_path / "a" / "model.safetensors"))
    loaded = minillm.load(tmp_path / "a")
    assert loaded.embed.W_E.dtype == np.float32
    assert np.allclose(loaded.embed.W_E, model.embed.W_E, atol=1e-3)


def test_truncated_safetensors_names_the_file_and_tensor(folder):
    path, _ = folder
    f = path / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*truncated"):
        minillm.load(path)


def test_corrupt_header(folder):
    path, _ = folder
    f = path / "model.safetensors"
    data = bytearray(f.read_bytes())
    data[10:20] = b"\xff" * 10
    f.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="not a valid safetensors file"):
        minillm.load(path)


def test_empty_file(folder):
    path, _ = folder
    (path / "model.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="shorter than"):
        minillm.load(path)


def test_missing_tensor_is_named(folder):
    path, model = folder
    tensors = load_file(str(path / "model.safetensors"))
    victim = sorted(tensors)[3]
    del tensors[victim]
    save_file(tensors, str(path / "model.safetensors"))
    with pytest.raises(CheckpointError, match=f"missing tensor {victim}"):
        minillm.load(path)


def test_unexpected_tensor_is_named(folder):
    path, _ = folder
    tensors = load_file(str(path / "model.safetensors"))
    tensors["model.layers.9.extra.weight"] = np.zeros(3, np.float32)
    save_file(tensors, str(path / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"unexpected tensor model\.layers\.9\.extra\.weight"):
        minillm.load(path)


def test_wrong_shape_names_tensor_and_both_shapes(folder):
    path, _ = folder
    tensors = load_file(str(path / "model.safetensors"))
    key = next(k for k in tensors if k.endswith(("ln_f.weight", "model.norm.weight")))
    tensors[key] = np.ones(31, np.float32)
    save_file(tensors, str(path / "model.safetensors"))
    with pytest.raises(CheckpointError, match=rf"{key} has shape \[31\], expected \[32\]"):
        minillm.load(path)


def test_integer_weights_are_refused(folder):
    path, _ = folder
    tensors = load_file(str(path / "model.safetensors"))
    key = sorted(tensors)[0]
    tensors[key] = tensors[key].astype(np.int32)
    save_file(tensors, str(path / "model.safetensors"))
    with pytest.raises(CheckpointError, match=f"{key} has dtype I32"):
        minillm.load(path)


def test_pickle_checkpoints_are_refused_with_a_reason(tmp_path):
    save_pretrained(random_model("gpt2"), tmp_path)
    (tmp_path / "model.safetensors").unlink()
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04")
    with pytest.raises(CheckpointError, match="only safetensors"):
        minillm.load(tmp_path)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"model_type": "bert"}, "model_type 'bert' is not supported"),
        ({"num_hidden_layers": 0}, "n_layers = 0 is out of range"),
        ({"num_attention_heads": 3}, "multiple of num_key_value_heads"),
        ({"rope_scaling": {"rope_type": "yarn", "factor": 2.0}}, "'yarn' is not implemented"),
        ({"hidden_act": "relu"}, "hidden_act 'relu' is not supported"),
        ({"hidden_size": "big"}, "hidden_size must be an integer"),
    ],
)
def test_bad_configs(tmp_path, change, message):
    model = random_model("llama")
    save_pretrained(model, tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg.update(change)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match=message):
        minillm.load(tmp_path)


def test_rope_theta_from_transformers5_rope_parameters():
    from minillm.config import ModelConfig
    from tests.conftest import TINY_CONFIGS

    raw = {**TINY_CONFIGS["llama"], "rope_parameters": {"rope_type": "default", "rope_theta": 5e5}}
    assert ModelConfig.from_dict(raw).rope_theta == 5e5


def test_token_ids_outside_the_vocabulary(tiny):
    with pytest.raises(MinillmError, match=r"token id 64 at index \(0, 2\) is outside the vocabulary"):
        tiny(np.array([[1, 2, 64]]))
    with pytest.raises(MinillmError, match="outside the vocabulary"):
        tiny(np.array([[-1]]))


def test_prompt_longer_than_context(tiny):
    with pytest.raises(MinillmError, match="33 positions exceed the context length of 32"):
        tiny(np.zeros((1, 33), np.int64))


def test_float_tokens_refused(tiny):
    with pytest.raises(MinillmError, match="integer ids"):
        tiny(np.zeros((1, 3)))


def test_text_without_tokenizer_says_so(folder):
    path, _ = folder
    model = minillm.load(path)
    with pytest.raises(MinillmError, match="no tokenizer.json"):
        model.to_tokens("hello")


def test_unknown_model_name_lists_catalog():
    with pytest.raises(MinillmError, match="smollm2-135m") as e:
        minillm.load("smollm3-135m")
    assert "fetch" in str(e.value) or "catalog" in str(e.value)


def test_unsupported_dtype(folder):
    path, _ = folder
    with pytest.raises(MinillmError, match="float32 or float64"):
        minillm.load(path, dtype=np.float16)
