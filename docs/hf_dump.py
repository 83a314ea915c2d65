#!/usr/bin/env python
"""Dump a Hugging Face transformers model's activations under minillm's hook names.

An optional helper for `minillm compare` (docs/verifying.md): it needs torch
and transformers, which minillm itself never imports. It registers PyTorch
forward hooks on the HF modules, runs one prompt, and writes a dump that
`minillm compare` lines up with a minillm dump:

    python docs/hf_dump.py weights/smollm2-135m "It was a dark and stormy" -o hf.safetensors
    minillm dump smollm2-135m "It was a dark and stormy" -o ref.safetensors --dtype float64
    minillm compare ref.safetensors hf.safetensors

Llama-family (LlamaForCausalLM, Qwen2, Mistral) and GPT-2 models. What it captures, per layer:
resid_pre, q/k/v (before RoPE, [b, p, heads, d_head]), pattern (eager attention),
z (the input of the output projection), attn_out, resid_mid, mlp pre / pre_linear / post,
mlp_out, resid_post; then ln_final.out (the final norm's output) and the logits.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
from safetensors.numpy import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer


def capture(model, ids: torch.Tensor) -> dict[str, np.ndarray]:
    """Run the model once with forward hooks; activations by minillm hook name."""
    cfg = model.config
    gpt2 = cfg.model_type == "gpt2"
    h = cfg.num_attention_heads
    kv = getattr(cfg, "num_key_value_heads", None) or h
    e = getattr(cfg, "head_dim", None) or cfg.hidden_size // h
    acts: dict[str, np.ndarray] = {}
    handles = []

    def save(name, reshape=None):
        def fn(module, args, output):
            x = output[0] if isinstance(output, tuple) else output
            x = x.detach().double().numpy()
            acts[name] = x if reshape is None else x.reshape(*x.shape[:2], *reshape)
        return fn

    def save_input(name, reshape=None):
        def fn(module, args):
            x = args[0].detach().double().numpy()
            acts[name] = x if reshape is None else x.reshape(*x.shape[:2], *reshape)
        return fn

    def on(module, fn, pre=False):
        handles.append(module.register_forward_pre_hook(fn) if pre else module.register_forward_hook(fn))

    if gpt2:
        layers, final_norm = model.transformer.h, model.transformer.ln_f
    else:
        layers, final_norm = model.model.layers, model.model.norm
    for l, layer in enumerate(layers):
        b = f"blocks.{l}"
        on(layer, save_input(f"{b}.hook_resid_pre"), pre=True)
        on(layer, save(f"{b}.hook_resid_post"))
        if gpt2:
            attn, mlp = layer.attn, layer.mlp
            on(attn.c_attn, lambda m, a, out, b=b: acts.update({
                f"{b}.attn.hook_{n}": t.detach().double().numpy().reshape(*t.shape[:2], h, e)
                for n, t in zip("qkv", out.split(cfg.hidden_size, dim=-1))}))
            on(attn.c_proj, save_input(f"{b}.attn.hook_z", (h, e)), pre=True)
            on(layer.ln_2, save_input(f"{b}.hook_resid_mid"), pre=True)
            on(mlp.c_fc, save(f"{b}.mlp.hook_pre"))
            on(mlp.c_proj, save_input(f"{b}.mlp.hook_post"), pre=True)
        else:
            attn, mlp = layer.self_attn, layer.mlp
            on(attn.q_proj, save(f"{b}.attn.hook_q", (h, e)))
            on(attn.k_proj, save(f"{b}.attn.hook_k", (kv, e)))
            on(attn.v_proj, save(f"{b}.attn.hook_v", (kv, e)))
            on(attn.o_proj, save_input(f"{b}.attn.hook_z", (h, e)), pre=True)
            on(layer.post_attention_layernorm, save_input(f"{b}.hook_resid_mid"), pre=True)
            on(mlp.gate_proj, save(f"{b}.mlp.hook_pre"))
            on(mlp.up_proj, save(f"{b}.mlp.hook_pre_linear"))
            on(mlp.down_proj, save_input(f"{b}.mlp.hook_post"), pre=True)
        on(attn, save(f"{b}.hook_attn_out"))
        on(mlp, save(f"{b}.hook_mlp_out"))
    on(final_norm, save("ln_final.out"))
    try:
        with torch.no_grad():
            out = model(ids, output_attentions=True)
    finally:
        for handle in handles:
            handle.remove()
    for l, pattern in enumerate(out.attentions):
        acts[f"blocks.{l}.attn.hook_pattern"] = pattern.double().numpy()
    acts["hook_logits"] = out.logits.double().numpy()
    return acts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("model", help="a Hugging Face model folder or hub id")
    parser.add_argument("prompt")
    parser.add_argument("-o", "--output", required=True)
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype,
                                                 attn_implementation="eager").eval()
    ids = AutoTokenizer.from_pretrained(args.model)(args.prompt, return_tensors="pt").input_ids
    acts = capture(model, ids)
    tensors = {n: np.ascontiguousarray(a.astype(np.dtype(args.dtype))) for n, a in acts.items()}
    tensors["input_ids"] = ids.numpy().astype(np.int64)
    meta = {"source": f"Hugging Face transformers {model.__class__.__name__} (docs/hf_dump.py)",
            "model": args.model, "prompt": args.prompt, "dtype": args.dtype,
            "token_ids": json.dumps(ids.tolist())}
    save_file(tensors, args.output, metadata=meta)
    print(f"wrote {len(acts)} activations of {ids.shape[1]} tokens to {args.output}")


if __name__ == "__main__":
    main()
