"""The verification contract: every hook of a model, its shape and meaning, and the conventions
another implementation must follow to match minillm number for number.

`contract(cfg)` returns it as plain data (what `minillm hooks MODEL --json` prints), so a
C, Rust or JAX port can read it without Python. The hook names come from the model's own
list (`minillm.model.hook_names`); the shapes are symbolic (`["batch", "pos", "n_heads",
"d_head"]`) with the sizes of this model beside them. docs/hooks.md is the same reference
for people; tests/test_contract.py runs every model family and checks each shape here
against the arrays the forward pass really produces.
"""

from __future__ import annotations

import math
from typing import Any

from minillm.config import ModelConfig
from minillm.hooks import split_name

CONTRACT_VERSION = 1

# Symbolic axes. batch, pos and key_pos vary per run; the others come from the config.
AXES = {
    "batch": "sequences in the batch (b)",
    "pos": "positions of this call (p)",
    "key_pos": "key positions: the KV cache's length plus p (P; = p without a cache)",
    "d_model": "residual stream width",
    "n_heads": "query heads",
    "n_kv_heads": "key/value heads (grouped-query attention: fewer than n_heads)",
    "d_head": "width of one head",
    "d_mlp": "MLP hidden width (neurons)",
    "d_vocab": "vocabulary size",
    "q_width": "n_heads · d_head: all query heads side by side",
    "kv_width": "n_kv_heads · d_head: all key/value heads side by side",
    "1": "a kept axis of length 1",
}

# Shapes that recur.
RESID = ("batch", "pos", "d_model")
SCALE = ("batch", "pos", "1")
Q_HEADS = ("batch", "pos", "n_heads", "d_head")
KV_HEADS = ("batch", "pos", "n_kv_heads", "d_head")
SCORES = ("batch", "n_heads", "pos", "key_pos")
NEURONS = ("batch", "pos", "d_mlp")

_SCALE = ("the divisor of this norm, per position: sqrt(mean(x²) + eps) (RMSNorm) or "
          "sqrt(var(x) + eps) (LayerNorm)")
_NORMED = ("the normalized input before the gain: x / hook_scale (RMSNorm) or "
           "(x - mean(x)) / hook_scale (LayerNorm)")


def _norm_hooks(norm: str, of: str = "") -> dict[str, tuple[tuple[str, ...], str]]:
    """The two hooks every norm has: its divisor and its normalized input."""
    return {f"{norm}.hook_scale": (SCALE, _SCALE + of), f"{norm}.hook_normalized": (RESID, _NORMED)}


# hook suffix (after "blocks.{l}." for block hooks) -> (shape, meaning)
HOOKS: dict[str, tuple[tuple[str, ...], str]] = {
    "hook_embed": (RESID, "token embeddings W_E[tokens] (Gemma: times sqrt(d_model))"),
    "hook_pos_embed": (RESID, "learned position embeddings W_pos[positions] (GPT-2)"),
    "hook_resid_pre": (RESID, "the residual stream entering the block"),
    **_norm_hooks("ln1"),
    "attn.hook_q": (Q_HEADS, "queries x·W_Q (+ b_Q), before RoPE"),
    "attn.hook_k": (KV_HEADS, "keys x·W_K (+ b_K), before RoPE, one per key/value head"),
    "attn.hook_v": (KV_HEADS, "values x·W_V (+ b_V), one per key/value head"),
    "attn.q_norm.hook_scale": (("batch", "pos", "n_heads", "1"),
                               "the divisor of the per-head RMSNorm of q (Qwen3, Gemma 3)"),
    "attn.q_norm.hook_normalized": (Q_HEADS, "q / its hook_scale, before the gain"),
    "attn.k_norm.hook_scale": (("batch", "pos", "n_kv_heads", "1"),
                               "the divisor of the per-head RMSNorm of k"),
    "attn.k_norm.hook_normalized": (KV_HEADS, "k / its hook_scale, before the gain"),
    "attn.hook_rot_q": (Q_HEADS, "queries after RoPE (rotate-half layout, see rope)"),
    "attn.hook_rot_k": (KV_HEADS, "keys after RoPE"),
    "attn.hook_attn_scores": (SCORES, "q·k times the attention scale (soft-capped if the model "
                                      "does), -inf where masked"),
    "attn.hook_pattern": (SCORES, "softmax of the scores over key_pos"),
    "attn.hook_z": (Q_HEADS, "pattern · v: each head's output before W_O"),
    "attn.hook_result": (("batch", "pos", "n_heads", "d_model"),
                         "each head's write z·W_O (only with the setting use_attn_result: it is large); "
                         "sums to hook_attn_out - b_O"),
    **_norm_hooks("ln1_post", "; of the attention output (Gemma, OLMo-2)"),
    "hook_attn_out": (RESID, "what attention adds to the residual stream"),
    "hook_resid_mid": (RESID, "the residual stream between attention and MLP"),
    **_norm_hooks("ln2"),
    "mlp.hook_pre": (NEURONS, "gated MLP: the gate x·W_gate; else x·W_in + b_in"),
    "mlp.hook_pre_linear": (NEURONS, "gated MLP only: the up projection x·W_in"),
    "mlp.hook_post": (NEURONS, "the neurons: act(hook_pre) · hook_pre_linear (gated), else act(hook_pre)"),
    **_norm_hooks("ln2_post", "; of the MLP output (Gemma, OLMo-2)"),
    "hook_mlp_out": (RESID, "what the MLP adds to the residual stream: hook_post·W_out (+ b_out)"),
    "hook_resid_post": (RESID, "the residual stream leaving the block"),
    **_norm_hooks("ln_final"),
    "hook_logits": (("batch", "pos", "d_vocab"), "ln_final(x)·W_U (soft-capped if the model does)"),
}


def axis_sizes(cfg: ModelConfig) -> dict[str, int | None]:
    """The size of each symbolic axis for this model (None: set by the run)."""
    return {"batch": None, "pos": None, "key_pos": None, "d_model": cfg.d_model,
            "n_heads": cfg.n_heads, "n_kv_heads": cfg.n_kv_heads, "d_head": cfg.d_head,
            "d_mlp": cfg.d_mlp, "d_vocab": cfg.d_vocab, "q_width": cfg.n_heads * cfg.d_head,
            "kv_width": cfg.n_kv_heads * cfg.d_head, "1": 1}


def hook_shape(cfg: ModelConfig, name: str, b: int, p: int, key_pos: int | None = None) -> tuple[int, ...]:
    """The shape of a hook's activation for b sequences of p tokens (key_pos: p + cached)."""
    sizes = {**axis_sizes(cfg), "batch": b, "pos": p, "key_pos": p if key_pos is None else key_pos}
    return tuple(sizes[a] for a in symbolic_shape(name, cfg))  # type: ignore[misc]


# OLMo-2 normalizes q and k over the whole projection, not per head
_PROJ_QK_NORM = {
    "attn.q_norm.hook_scale": ("batch", "pos", "1"),
    "attn.q_norm.hook_normalized": ("batch", "pos", "q_width"),
    "attn.k_norm.hook_scale": ("batch", "pos", "1"),
    "attn.k_norm.hook_normalized": ("batch", "pos", "kv_width"),
}


def symbolic_shape(name: str, cfg: ModelConfig | None = None) -> tuple[str, ...]:
    """The symbolic shape of a hook, e.g. ("batch", "pos", "n_heads", "d_head")."""
    _, rest = split_name(name)
    if rest not in HOOKS:
        raise KeyError(f"{name!r} is not in the verification contract")
    if cfg is not None and cfg.qk_norm == "proj" and rest in _PROJ_QK_NORM:
        return _PROJ_QK_NORM[rest]
    return HOOKS[rest][0]


def _rope(cfg: ModelConfig) -> dict[str, Any] | None:
    if not cfg.rotary:
        return None
    scaling = None
    if cfg.rope_scaling is not None:
        s = cfg.rope_scaling
        scaling = {"kind": s.kind, "factor": s.factor, "low_freq_factor": s.low_freq_factor,
                   "high_freq_factor": s.high_freq_factor,
                   "original_max_position_embeddings": s.original_max_position_embeddings}
    return {
        "layout": "rotate_half",
        "pairs": "element i is rotated with element i + rotary_dim/2, by angle position · inv_freq[i]",
        "rotary_dim": cfg.rotary_dim,
        "theta": cfg.rope_theta,
        "inv_freq": "theta ** (-2i / rotary_dim), i = 0 .. rotary_dim/2 - 1 (then scaled, see scaling)",
        "scaling": scaling,
        "local_theta": cfg.local_rope_theta,
        "formula": "rot(x)[i] = x[i]·cos - x[i + r/2]·sin, rot(x)[i + r/2] = x[i + r/2]·cos + x[i]·sin",
        "not_rotated": ("elements rotary_dim .. d_head-1 pass through"
                        if cfg.rotary_dim < cfg.d_head else None),
        "gguf": "GGUF (llama.cpp) stores q/k rows so that pairs are adjacent (2i, 2i+1): element j of a "
                "llama.cpp head is element (j % 2)·d_head/2 + j // 2 here",
    }


def conventions(cfg: ModelConfig) -> dict[str, Any]:
    """How the numbers are computed, for a port to reproduce them."""
    group = cfg.n_heads // cfg.n_kv_heads
    scale = cfg.query_pre_attn_scalar if cfg.query_pre_attn_scalar else cfg.d_head
    return {
        "arrays": "row-major (C order), batch first; a hook's array is exactly what "
                  "model.run_with_cache returns under that name, in the model's dtype",
        "norm": {
            "kind": "layernorm" if cfg.layer_norm else "rmsnorm",
            "eps": cfg.eps,
            "hook_scale": "the divisor (as TransformerLens): sqrt(mean(x²) + eps) or sqrt(var(x) + eps), "
                          "variance with 1/d_model (not 1/(d_model-1))",
            "output": "hook_normalized · (1 + w) (Gemma)" if cfg.norm_offset else "hook_normalized · w (+ b)",
        },
        "attention": {
            "scale": f"1/sqrt({scale:g}) = {1 / math.sqrt(scale):.9g}",
            "scores": "hook_attn_scores = (rot_q · rot_k) · scale"
                      + (f", then {cfg.attn_softcap:g}·tanh(scores/{cfg.attn_softcap:g})"
                         if cfg.attn_softcap else ""),
            "masking": "causal: query i sees keys j <= i; with attention_mask, padded keys are masked too; "
                       "masked scores are -inf and get probability exactly 0"
                       + (f"; sliding window: keys more than {cfg.sliding_window - 1} slots back are masked"
                          + (" (on the local layers only)" if cfg.local_layers else "")
                          if cfg.sliding_window else ""),
            "softmax": "over key_pos, computed as exp(s - max s) / sum",
            "gqa": {"n_heads": cfg.n_heads, "n_kv_heads": cfg.n_kv_heads, "group": group,
                    "kv_head_of_query_head": f"h // {group}" if group > 1 else "h",
                    "note": "consecutive query heads share a key/value head: heads 0..group-1 use kv head 0"},
            "positions": "0, 1, 2, ... after the cache; with attention_mask, a row's positions count its "
                         "real tokens only (cumsum(mask) - 1), so left padding does not shift them",
        },
        "rope": _rope(cfg),
        "mlp": {"gated": cfg.gated_mlp, "act_fn": cfg.act_fn,
                "gelu_tanh": "0.5·x·(1 + tanh(sqrt(2/π)·(x + 0.044715·x³)))",
                "silu": "x · sigmoid(x)"},
        "residual": "parallel: x + attn(ln1(x)) + mlp(ln2(x))" if cfg.parallel_residual else
                    "sequential: x + attn(...), then + mlp(...)",
        "logits": "ln_final(resid_post of the last block) · W_U"
                  + (f", then {cfg.final_softcap:g}·tanh(logits/{cfg.final_softcap:g})"
                     if cfg.final_softcap else ""),
        "derived": {"ln_final.out": "ln_final.hook_normalized · w (+ b): the final norm's output, which "
                                    "Hugging Face returns as hidden_states[-1]; `minillm dump` writes it"},
        "dtypes": "float32 by default; float64 in reference mode (every intermediate in float64)",
    }


def contract(cfg: ModelConfig, hook_names: list[str] | None = None, model: str = "") -> dict[str, Any]:
    """The whole contract for one model as JSON-ready data (see the module docstring)."""
    from minillm.model import hook_names as model_hook_names

    names = list(hook_names) if hook_names is not None else model_hook_names(cfg)
    sizes = axis_sizes(cfg)
    hooks = []
    for name in names:
        layer, rest = split_name(name)
        shape, meaning = symbolic_shape(name, cfg), HOOKS[rest][1]
        hooks.append({"name": name, "layer": layer, "shape": list(shape),
                      "sizes": [sizes[a] for a in shape], "meaning": meaning})
    return {
        "contract_version": CONTRACT_VERSION,
        "model": model,
        "family": cfg.family,
        "model_type": cfg.model_type,
        "config": {"n_layers": cfg.n_layers, "d_model": cfg.d_model, "n_heads": cfg.n_heads,
                   "n_kv_heads": cfg.n_kv_heads, "d_head": cfg.d_head, "d_mlp": cfg.d_mlp,
                   "d_vocab": cfg.d_vocab, "n_ctx": cfg.n_ctx, "eps": cfg.eps,
                   "tie_embeddings": cfg.tie_embeddings},
        "axes": {a: {"size": sizes[a], "meaning": m} for a, m in AXES.items()},
        "conventions": conventions(cfg),
        "hooks": hooks,
    }
