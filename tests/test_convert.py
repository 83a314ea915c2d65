"""`minillm convert FILE.gguf` for each GGUF architecture it reads: llama, qwen2, gpt2.

Each test writes a GGUF from a golden fixture the way llama.cpp's converter does
(convert_hf_to_gguf: q/k rows permuted for llama only, GPT-2's Conv1D weights transposed
to [out, in] and its tied output written again, F32 tensors), converts it back with the
command, and checks that the model computes what the fixture computes, bit for bit
(same float32 weights, same code). The real SmolLM2 GGUF is converted by
test_gguf_convert.py and `make weights`.
"""

from __future__ import annotations

import json

import gguf as gguf_lib
import numpy as np
import pytest
from safetensors.numpy import load_file
from tokenizers import pre_tokenizers

import minillm
from minillm.checkpoints import gguf as conv
from minillm.checkpoints.gguf_names import gguf_name
from minillm.cli import main
from tests.conftest import golden_folder

GPT2_NAMES = {"wte": "token_embd", "wpe": "position_embd", "ln_f": "output_norm"}
GPT2_LAYER = {"ln_1": "attn_norm", "attn.c_attn": "attn_qkv", "attn.c_proj": "attn_output",
              "ln_2": "ffn_norm", "mlp.c_fc": "ffn_up", "mlp.c_proj": "ffn_down"}


def gpt2_gguf_name(key: str) -> str:
    key = key.removeprefix("transformer.")
    stem, _, kind = key.rpartition(".")
    if stem in GPT2_NAMES:
        return f"{GPT2_NAMES[stem]}.{kind}"
    _, layer, part = stem.split(".", 2)
    return f"blk.{layer}.{GPT2_LAYER[part]}.{kind}"


def write_gguf(fixture: str, path, arch: str):
    cfg = json.loads((golden_folder(fixture) / "config.json").read_text())
    weights = load_file(str(golden_folder(fixture) / "model.safetensors"))
    w = gguf_lib.GGUFWriter(path, arch)
    if arch == "gpt2":
        w.add_block_count(cfg["n_layer"])
        w.add_context_length(cfg["n_positions"])
        w.add_embedding_length(cfg["n_embd"])
        w.add_feed_forward_length(cfg.get("n_inner") or 4 * cfg["n_embd"])
        w.add_head_count(cfg["n_head"])
        w.add_layer_norm_eps(cfg["layer_norm_epsilon"])
    else:
        w.add_block_count(cfg["num_hidden_layers"])
        w.add_context_length(cfg["max_position_embeddings"])
        w.add_embedding_length(cfg["hidden_size"])
        w.add_feed_forward_length(cfg["intermediate_size"])
        w.add_head_count(cfg["num_attention_heads"])
        w.add_head_count_kv(cfg["num_key_value_heads"])
        w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
        w.add_rope_freq_base(cfg["rope_parameters"]["rope_theta"])
    # the fixtures' vocabulary: 255 byte-level tokens and one merge ("Ġ" + "Ġ")
    tokens = sorted(pre_tokenizers.ByteLevel.alphabet())[:255] + ["ĠĠ"]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2")
    w.add_token_list(tokens)
    w.add_token_types([1] * len(tokens))
    w.add_token_merges(["Ġ Ġ"])
    for key, value in weights.items():
        if key.endswith((".attn.bias", ".attn.masked_bias")):
            continue
        if arch == "gpt2":
            name = gpt2_gguf_name(key)
            if key.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight")):
                value = np.ascontiguousarray(value.T)
        else:
            name = gguf_name(key)
            if arch == "llama" and key.endswith("q_proj.weight"):
                value = conv.permute_rotary(value, cfg["num_attention_heads"])
            elif arch == "llama" and key.endswith("k_proj.weight"):
                value = conv.permute_rotary(value, cfg["num_key_value_heads"])
        w.add_tensor(name, value)
        if arch == "gpt2" and name == "token_embd.weight":
            w.add_tensor("output.weight", value)  # as llama.cpp's GPT-2 converter writes it
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.mark.parametrize("fixture, arch", [("llama_tied", "llama"), ("llama_gqa_untied", "llama"),
                                           ("qwen2_bias", "qwen2"), ("gpt2", "gpt2")])
def test_convert_command_round_trips_each_architecture(tmp_path, capsys, fixture, arch):
    path = write_gguf(fixture, tmp_path / f"{fixture}.gguf", arch)
    out = tmp_path / "converted"
    assert main(["convert", str(path), "-o", str(out)]) == 0
    captured = capsys.readouterr()
    assert f"load it with minillm.load('{out}')" in captured.out
    assert "converting" in captured.err  # the progress bar
    ours, ref = minillm.load(out), minillm.load(golden_folder(fixture))
    ids = load_file(str(golden_folder(fixture) / "reference.safetensors"))["input_ids"]
    assert np.array_equal(ours(ids), ref(ids))
    ids = ours.to_tokens("hi there")  # the tokenizer came along: one token per byte here
    assert ids.shape == (1, 8) and ours.to_string(ids[0]) == "hi there"


def test_convert_refuses_a_non_empty_folder_and_a_missing_file(tmp_path, capsys):
    path = write_gguf("gpt2", tmp_path / "g.gguf", "gpt2")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    assert main(["convert", str(path), "-o", str(tmp_path / "full")]) == 1
    assert "is not empty" in capsys.readouterr().err
    assert main(["convert", str(tmp_path / "none.gguf")]) == 1
    assert "is not a file" in capsys.readouterr().err
