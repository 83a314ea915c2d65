"""llama.cpp's GGUF tensor names for a model's Hugging Face tensors, every family.

    gguf_tensor_names(model)   -> {"model.layers.0.self_attn.q_proj.weight": "blk.0.attn_q.weight", ...}

llama.cpp names a tensor by its role, not by the checkpoint's spelling: the
norm before attention is `attn_norm` whether Hugging Face calls it
`input_layernorm` (Llama) or `input_layernorm` of a GPT-NeoX layer. One
spelling differs by family: `post_attention_layernorm` is the norm before the
MLP in Llama, Qwen, Phi-3 and GPT-NeoX (`ffn_norm`), but the norm of the
attention's *output* in Gemma and OLMo-2 (`post_attention_norm`). Fused
tensors keep their fusion: Phi-3's gate_up_proj is llama.cpp's `ffn_up` (2·m
rows), qkv_proj and GPT-NeoX's query_key_value are `attn_qkv`.

The names match the `gguf` package's own table (checked against it by the
golden fixtures, tests/fixtures/<family>/reference.safetensors metadata).
"""

from __future__ import annotations

import re

from minillm.checkpoints.hf import model_entries

# HF name of a layer's tensor (after "layers.{l}.") -> llama.cpp's role name
_LAYER = {
    "input_layernorm": "attn_norm",
    "pre_feedforward_layernorm": "ffn_norm",
    "post_feedforward_layernorm": "post_ffw_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.qkv_proj": "attn_qkv",
    "self_attn.o_proj": "attn_output",
    "self_attn.q_norm": "attn_q_norm",
    "self_attn.k_norm": "attn_k_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.gate_up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "attention.query_key_value": "attn_qkv",
    "attention.dense": "attn_output",
    "mlp.dense_h_to_4h": "ffn_up",
    "mlp.dense_4h_to_h": "ffn_down",
}
_GLOBAL = {
    "model.embed_tokens": "token_embd",
    "gpt_neox.embed_in": "token_embd",
    "model.norm": "output_norm",
    "gpt_neox.final_layer_norm": "output_norm",
    "lm_head": "output",
    "embed_out": "output",
}
_LAYER_KEY = re.compile(r"(?:model|gpt_neox)\.layers\.(\d+)\.(.+)\.(weight|bias)")


def gguf_name(hf_key: str, post_norms: bool = False) -> str | None:
    """llama.cpp's name for one Hugging Face tensor, or None if llama.cpp has none.

    post_norms: the model normalizes sublayer outputs (Gemma, OLMo-2), which
    makes `post_attention_layernorm` the attention's output norm.
    """
    m = _LAYER_KEY.fullmatch(hf_key)
    if m:
        layer, part, kind = m.groups()
        if part == "post_attention_layernorm":
            role = "post_attention_norm" if post_norms else "ffn_norm"
        else:
            role = _LAYER.get(part)
        return None if role is None else f"blk.{layer}.{role}.{kind}"
    stem, _, kind = hf_key.rpartition(".")
    role = _GLOBAL.get(stem)
    return None if role is None else f"{role}.{kind}"


def gguf_tensor_names(model) -> dict[str, str | None]:
    """{Hugging Face tensor name: llama.cpp GGUF name} for every tensor of `model`'s checkpoint."""
    return {key: gguf_name(key, model.cfg.post_norms) for key, *_ in model_entries(model)}
