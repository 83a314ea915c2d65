"""The forward pass of GPT-2 and Llama, in NumPy, readable top to bottom.

Legend for the shape comments:
    b = batch            p = positions in this call     P = key positions (cache + p)
    d = d_model          h = query heads                kv = key/value heads
    e = d_head           m = d_mlp                      V = vocabulary size

One forward pass (both families):

    x = embed(tokens) (+ pos_embed)                  hook_embed, hook_pos_embed
    for each block l:                                blocks.l.hook_resid_pre
        x = x + attn(norm1(x))                       ... hook_attn_out, hook_resid_mid
        x = x + mlp(norm2(x))                        ... hook_mlp_out, hook_resid_post
    logits = norm_final(x) @ W_U                     hook_logits

The families differ only in data: LayerNorm (centre, divide by std, gain
and bias) vs RMSNorm (divide by rms, gain); learned positions vs rotary
positions (RoPE) applied to q and k; GELU MLP vs SiLU-gated MLP. Each such
difference is chosen once in `__init__`, not inside the loop.

Every intermediate goes through `self.hooks.fire(name, array)`, which returns
the array unchanged unless a hook is registered (see hooks.py).
"""

from __future__ import annotations

import numpy as np

from minillm import ops
from minillm.config import ModelConfig
from minillm.errors import MinillmError
from minillm.hooks import HookRegistry
from minillm.kv_cache import KVCache
from minillm.params import Block, Embed, Norm, PosEmbed, Unembed


def hook_names(cfg: ModelConfig) -> list[str]:
    """Every hook point of a model with this config, in the order they fire."""
    names = ["hook_embed"] + (["hook_pos_embed"] if cfg.family == "gpt2" else [])
    rope = cfg.family == "llama"
    mlp = ["hook_pre", "hook_pre_linear", "hook_post"] if rope else ["hook_pre", "hook_post"]
    for l in range(cfg.n_layers):
        names += [
            f"blocks.{l}.{n}"
            for n in (
                "hook_resid_pre",
                "ln1.hook_scale",
                "ln1.hook_normalized",
                "attn.hook_q",
                "attn.hook_k",
                "attn.hook_v",
                *(("attn.hook_rot_q", "attn.hook_rot_k") if rope else ()),
                "attn.hook_attn_scores",
                "attn.hook_pattern",
                "attn.hook_z",
                "attn.hook_result",
                "hook_attn_out",
                "hook_resid_mid",
                "ln2.hook_scale",
                "ln2.hook_normalized",
                *(f"mlp.{n}" for n in mlp),
                "hook_mlp_out",
                "hook_resid_post",
            )
        ]
    return names + ["ln_final.hook_scale", "ln_final.hook_normalized", "hook_logits"]


class Transformer:
    """A GPT-2 or Llama-family model: config, parameters, hooks and the forward pass.

    Use `minillm.load(...)` to get one with real weights (it returns the
    `HookedModel` subclass with tokenizer, caching and editing helpers).
    """

    def __init__(self, cfg: ModelConfig, dtype=np.float32):
        self.cfg = cfg
        self.dtype = np.dtype(dtype)
        self.embed = Embed(cfg, self.dtype)
        self.pos_embed = PosEmbed(cfg, self.dtype) if cfg.family == "gpt2" else None
        self.blocks = [Block(cfg, self.dtype) for _ in range(cfg.n_layers)]
        self.ln_final = Norm(cfg, self.dtype)
        self.unembed = Unembed(cfg, self.dtype, self.embed)
        self.hooks = HookRegistry(hook_names(cfg))
        # The family differences, decided once:
        gpt2 = cfg.family == "gpt2"
        self.norm_parts = ops.layer_norm_parts if gpt2 else ops.rms_norm_parts
        self.act_fn = ops.ACTIVATIONS[cfg.act_fn]
        self.rope_inv_freq = None if gpt2 else ops.rope_inv_freq(
            cfg.d_head, cfg.rope_theta, cfg.rope_scaling
        )

    # --- the forward pass ------------------------------------------------------------------

    def forward(
        self,
        tokens: np.ndarray,
        attention_mask: np.ndarray | None = None,
        cache: KVCache | None = None,
        last_only: bool = False,
        start_at_layer: int | None = None,
        stop_at_layer: int | None = None,
    ) -> np.ndarray:
        """Logits for a batch of token ids.   tokens [b, p] -> logits [b, p, V]

        attention_mask [b, p] (1 = real token, 0 = padding) allows ragged,
        left- or right-padded batches; positions count real tokens only, so a
        padded row computes what the row alone computes (the same numbers up to
        float32 rounding: other batch shapes may sum in another order). With a `cache`,
        `tokens` are the next positions after those already in the cache, and
        the cache is extended. `last_only` computes logits for the last
        position only ([b, 1, V]).

        start_at_layer / stop_at_layer run only blocks[start_at_layer:stop_at_layer]
        (a Python slice: negative indices allowed, as in TransformerLens). With
        start_at_layer, `tokens` is the residual stream entering that block
        [b, p, d]; with stop_at_layer, the stream leaving the last block run is
        returned [b, p, d] (no final norm, no unembedding).
        """
        partial = start_at_layer is not None or stop_at_layer is not None
        if partial and cache is not None:
            raise MinillmError("start_at_layer / stop_at_layer cannot be used with a KV cache "
                               "(the cache needs every layer)")
        if start_at_layer is None:
            tokens = self._check_tokens(tokens, cache)
            shape = tokens.shape
        else:
            x = self._check_residual(tokens)  # [b, p, d]
            shape = x.shape[:2]
        start = cache.length if cache is not None else 0
        mask = self._full_mask(attention_mask, shape, cache)  # [b, P] or None
        positions = self._positions(mask, start, shape)  # [b, p]
        self.hooks.pos_offset = start
        hook = self.hooks.fire

        if start_at_layer is None:
            x = hook("hook_embed", self.embed.W_E[tokens])  # [b, p, d]
            if self.pos_embed is not None:
                x = x + hook("hook_pos_embed", self.pos_embed.W_pos[positions])  # [b, p, d]
        rope = None
        if self.rope_inv_freq is not None:
            rope = ops.rope_cos_sin(positions, self.rope_inv_freq, self.dtype)  # 2× [b, p, 1, e]
        allowed = ops.attention_mask(  # [b or 1, 1, p, P]
            q_slots=np.arange(start, start + shape[1]),
            k_slots=np.arange(start + shape[1]),
            key_padding=mask,
            sliding_window=self.cfg.sliding_window,
        )
        for l in range(self.cfg.n_layers)[start_at_layer:stop_at_layer]:
            x = self.block_forward(l, self.blocks[l], x, rope, allowed, cache)
        if cache is not None:
            cache.advance(shape[1], mask)
        if stop_at_layer is not None:
            return x  # [b, p, d]

        if last_only:
            x = x[:, -1:]  # [b, 1, d]
        x = self.norm(x, self.ln_final, "ln_final")  # [b, p, d]
        return hook("hook_logits", ops.linear(x, self.unembed.W_U))  # [b, p, V]

    __call__ = forward

    def block_forward(self, l, block, x, rope, allowed, cache) -> np.ndarray:
        """One block: x + attn(ln1(x)), then + mlp(ln2(x)).   [b, p, d] -> [b, p, d]"""
        hook = self.hooks.fire
        x = hook(f"blocks.{l}.hook_resid_pre", x)
        attn_out = self.attention(l, block.attn, self.norm(x, block.ln1, f"blocks.{l}.ln1"),
                                  rope, allowed, cache)
        x = hook(f"blocks.{l}.hook_resid_mid", x + hook(f"blocks.{l}.hook_attn_out", attn_out))
        mlp_out = self.mlp(l, block.mlp, self.norm(x, block.ln2, f"blocks.{l}.ln2"))
        return hook(f"blocks.{l}.hook_resid_post", x + hook(f"blocks.{l}.hook_mlp_out", mlp_out))

    def norm(self, x: np.ndarray, norm: Norm, name: str) -> np.ndarray:
        """LayerNorm or RMSNorm.   [b, p, d] -> [b, p, d]

        normalized = (x - mean) / std  (LayerNorm)  or  x / rms  (RMSNorm);
        output = normalized * w (+ b). `hook_scale` is the divisor, std or rms
        (as in TransformerLens).
        """
        centered, scale = self.norm_parts(x, self.cfg.eps)  # [b, p, d], [b, p, 1]
        scale = self.hooks.fire(f"{name}.hook_scale", scale)
        normalized = self.hooks.fire(f"{name}.hook_normalized", centered / scale)  # [b, p, d]
        out = normalized * norm.w
        return out if norm.b is None else out + norm.b

    def attention(self, l, attn, x, rope, allowed, cache) -> np.ndarray:
        """Multi-head (grouped-query) causal self-attention.   [b, p, d] -> [b, p, d]"""
        hook, name = self.hooks.fire, f"blocks.{l}.attn"
        b, p, _ = x.shape
        h, kv, e = self.cfg.n_heads, self.cfg.n_kv_heads, self.cfg.d_head
        # W_QKV holds W_Q, W_K, W_V side by side: one GEMM gives all three.
        qkv = ops.linear(x, attn.W_QKV, attn.b_QKV)  # [b, p, (h + 2kv)·e]
        q = hook(f"{name}.hook_q", qkv[..., : h * e].reshape(b, p, h, e))  # [b, p, h, e]
        k = hook(f"{name}.hook_k", qkv[..., h * e : (h + kv) * e].reshape(b, p, kv, e))
        v = hook(f"{name}.hook_v", qkv[..., (h + kv) * e :].reshape(b, p, kv, e))  # [b, p, kv, e]
        if rope is not None:
            q = hook(f"{name}.hook_rot_q", ops.apply_rope(q, *rope))  # [b, p, h, e]
            k = hook(f"{name}.hook_rot_k", ops.apply_rope(k, *rope))  # [b, p, kv, e]
        k, v = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)  # [b, kv, p, e]
        if cache is not None:
            k, v = cache.append(l, k, v)  # [b, kv, P, e]: earlier positions + these

        scores = ops.attention_scores(q, k)  # [b, h, p, P]
        scores = hook(f"{name}.hook_attn_scores", np.where(allowed, scores, -np.inf))
        pattern = hook(f"{name}.hook_pattern", ops.softmax(scores, axis=-1))  # [b, h, p, P]
        z = hook(f"{name}.hook_z", ops.attention_mix(pattern, v))  # [b, p, h, e]

        if self.hooks.wants(f"{name}.hook_result"):  # per-head outputs: large, only on request
            result = np.einsum("bphe,hed->bphd", z, attn.W_O)  # [b, p, h, d]
            out = hook(f"{name}.hook_result", result).sum(axis=2)
            return out if attn.b_O is None else out + attn.b_O
        return ops.linear(z.reshape(b, p, h * e), attn.W_O_flat, attn.b_O)  # [b, p, d]

    def mlp(self, l, mlp, x) -> np.ndarray:
        """GPT-2: W_out·gelu(W_in·x).  Llama: W_out·(silu(W_gate·x) * (W_in·x)).   [b, p, d] -> [b, p, d]"""
        hook, name = self.hooks.fire, f"blocks.{l}.mlp"
        if mlp.gated:
            gate_in = ops.linear(x, mlp.W_gate_in)  # [b, p, 2m]: W_gate and W_in side by side
            pre = hook(f"{name}.hook_pre", gate_in[..., : mlp.d_mlp])  # [b, p, m]
            pre_linear = hook(f"{name}.hook_pre_linear", gate_in[..., mlp.d_mlp :])  # [b, p, m]
            post = hook(f"{name}.hook_post", self.act_fn(pre) * pre_linear)  # [b, p, m]
        else:
            pre = hook(f"{name}.hook_pre", ops.linear(x, mlp.W_in, mlp.b_in))  # [b, p, m]
            post = hook(f"{name}.hook_post", self.act_fn(pre))  # [b, p, m]
        return ops.linear(post, mlp.W_out, mlp.b_out)  # [b, p, d]

    # --- inputs ------------------------------------------------------------------------------

    def _check_tokens(self, tokens, cache: KVCache | None) -> np.ndarray:
        tokens = np.asarray(tokens)
        if tokens.ndim == 1:
            tokens = tokens[None, :]
        if tokens.ndim != 2 or tokens.shape[1] == 0:
            raise MinillmError(f"tokens must have shape [batch, positions], got {tokens.shape}")
        if not np.issubdtype(tokens.dtype, np.integer):
            raise MinillmError(f"tokens must be integer ids, got dtype {tokens.dtype}")
        bad = (tokens < 0) | (tokens >= self.cfg.d_vocab)
        if bad.any():
            i = tuple(int(j) for j in np.argwhere(bad)[0])
            raise MinillmError(
                f"token id {int(tokens[i])} at index {i} is outside the vocabulary "
                f"(0 .. {self.cfg.d_vocab - 1})"
            )
        start = cache.length if cache is not None else 0
        if start + tokens.shape[1] > self.cfg.n_ctx:
            raise MinillmError(
                f"{start + tokens.shape[1]} positions exceed the context length of "
                f"{self.cfg.n_ctx} tokens" + (f" ({start} already in the cache)" if start else "")
            )
        if cache is not None and cache.batch != tokens.shape[0]:
            raise MinillmError(
                f"the KV cache holds a batch of {cache.batch}, but tokens have batch "
                f"{tokens.shape[0]}"
            )
        return tokens

    def _check_residual(self, x) -> np.ndarray:
        """The input of a run with start_at_layer: a residual stream [b, p, d]."""
        x = np.asarray(x)
        if x.ndim == 2:
            x = x[None]
        if x.ndim != 3 or x.shape[-1] != self.cfg.d_model or x.shape[1] == 0:
            raise MinillmError(f"with start_at_layer the input is the residual stream [batch, "
                               f"positions, {self.cfg.d_model}], got shape {x.shape}")
        if x.shape[1] > self.cfg.n_ctx:
            raise MinillmError(f"{x.shape[1]} positions exceed the context length of "
                               f"{self.cfg.n_ctx} tokens")
        if not np.issubdtype(x.dtype, np.floating):
            raise MinillmError(f"with start_at_layer the input must be floating-point, got "
                               f"dtype {x.dtype}")
        return x.astype(self.dtype, copy=False)

    def _full_mask(self, attention_mask, shape, cache) -> np.ndarray | None:
        """The padding mask over all key positions (cache + new).   -> [b, P] or None"""
        if attention_mask is not None:
            attention_mask = np.asarray(attention_mask)
            if attention_mask.shape != shape:
                raise MinillmError(
                    f"attention_mask has shape {attention_mask.shape}, tokens have {shape}"
                )
        old = cache.attention_mask if cache is not None else None
        if old is None and attention_mask is None:
            return None
        if old is None:
            old = np.ones((shape[0], cache.length if cache else 0), np.int64)
        if attention_mask is None:
            attention_mask = np.ones(shape, np.int64)
        return np.concatenate([old, attention_mask], axis=1).astype(np.int64)

    @staticmethod
    def _positions(mask, start, shape) -> np.ndarray:
        """Position ids of the new tokens: slot index, or count of real tokens before.   -> [b, p]"""
        b, p = shape
        if mask is None:
            return np.broadcast_to(np.arange(start, start + p), (b, p))
        return np.maximum(np.cumsum(mask, axis=1) - 1, 0)[:, start:]
