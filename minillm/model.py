"""The forward pass of every supported family, in NumPy, readable top to bottom.

Legend for the shape comments:
    b = batch            p = positions in this call     P = key positions (cache + p)
    d = d_model          h = query heads                kv = key/value heads
    e = d_head           m = d_mlp                      V = vocabulary size
    r = rotated dims of a head (e, or a fraction of it)

One forward pass (every family):

    x = embed(tokens) (+ pos_embed)                  hook_embed, hook_pos_embed
    for each block l:                                blocks.l.hook_resid_pre
        x = x + attn(norm1(x))                       ... hook_attn_out, hook_resid_mid
        x = x + mlp(norm2(x))                        ... hook_mlp_out, hook_resid_post
    logits = norm_final(x) @ W_U                     hook_logits

GPT-2 and Llama differ only in data: LayerNorm (centre, divide by std, gain
and bias) vs RMSNorm (divide by rms, gain); learned positions vs rotary
positions (RoPE) applied to q and k; GELU MLP vs gated MLP. The newer
families add a few ideas, each also data in the config, chosen once in
`__init__` or read from `cfg` where it applies, never an `if family == ...`:

    parallel residual (Pythia)     x + attn(ln1(x)) + mlp(ln2(x)): both read x
    partial rotary (Pythia)        RoPE turns only the first r dims of each head
    norm after a sublayer          ln1_post / ln2_post on attn and MLP outputs
      (Gemma: also before; OLMo-2: only after)
    gain offset (Gemma)            RMSNorm output · (1 + w) instead of · w
    q/k norms (Qwen3, Gemma 3,     RMSNorm of q and k before RoPE: per head
      OLMo-2)                      (over e) or over the whole projection
    embedding scale (Gemma)        x = W_E[tokens] · √d
    query_pre_attn_scalar (Gemma)  scores · 1/√scalar instead of 1/√e
    soft-caps (Gemma 2)            scores and logits -> c · tanh(x / c)
    local and global layers        a sliding window on some layers only, with
      (Gemma 2, 3)                 their own rope base (Gemma 3)

Every intermediate goes through `self.hooks.fire(name, array)`, which returns
the array unchanged unless a hook is registered (see hooks.py).
"""

from __future__ import annotations

import numpy as np

from minillm import ops
from minillm.config import ModelConfig
from minillm.errors import MinillmError, format_bytes
from minillm.hooks import HookRegistry
from minillm.kv_cache import KVCache
from minillm.params import Block, Embed, Norm, PosEmbed, Unembed

PRE_HOOKS = ("hook_embed", "hook_pos_embed")
# Every per-block hook any family has, in the order they fire ("blocks.{l}." + name). A
# model has the subset its config asks for (`hook_names`); dumps, comparisons and the hook
# contract take the order from here.
BLOCK_HOOKS = (
    "hook_resid_pre",
    "ln1.hook_scale", "ln1.hook_normalized",
    "attn.hook_q", "attn.hook_k", "attn.hook_v",
    "attn.q_norm.hook_scale", "attn.q_norm.hook_normalized",
    "attn.k_norm.hook_scale", "attn.k_norm.hook_normalized",
    "attn.hook_rot_q", "attn.hook_rot_k",
    "attn.hook_attn_scores", "attn.hook_pattern", "attn.hook_z", "attn.hook_result",
    "ln1_post.hook_scale", "ln1_post.hook_normalized",
    "hook_attn_out", "hook_resid_mid",
    "ln2.hook_scale", "ln2.hook_normalized",
    "mlp.hook_pre", "mlp.hook_pre_linear", "mlp.hook_post",
    "ln2_post.hook_scale", "ln2_post.hook_normalized",
    "hook_mlp_out", "hook_resid_post",
)
POST_HOOKS = ("ln_final.hook_scale", "ln_final.hook_normalized", "hook_logits")


def hook_names(cfg: ModelConfig) -> list[str]:
    """Every hook point of a model with this config, in the order they fire."""
    present = {  # hooks that only some configs have: name prefix -> present?
        "hook_pos_embed": not cfg.rotary,
        "ln1.": cfg.pre_norms, "ln2.": cfg.pre_norms,
        "attn.q_norm.": cfg.qk_norm is not None, "attn.k_norm.": cfg.qk_norm is not None,
        "attn.hook_rot_": cfg.rotary,
        "ln1_post.": cfg.post_norms, "ln2_post.": cfg.post_norms,
        "mlp.hook_pre_linear": cfg.gated_mlp,
        # an attention-only block has no MLP half: resid_post = resid_pre + attn_out
        "hook_resid_mid": not cfg.attn_only, "ln2": not cfg.attn_only, "mlp.": not cfg.attn_only,
        "hook_mlp_out": not cfg.attn_only,
    }

    def has(name: str) -> bool:
        return all(ok for prefix, ok in present.items() if name.startswith(prefix))

    block = [n for n in BLOCK_HOOKS if has(n)]
    return ([n for n in PRE_HOOKS if has(n)] + [f"blocks.{l}.{n}" for l in range(cfg.n_layers) for n in block]
            + list(POST_HOOKS))


class Transformer:
    """A model of any supported family: config, parameters, hooks and the forward pass.

    Use `minillm.load(...)` to get one with real weights (it returns the
    `HookedModel` subclass with tokenizer, caching and editing helpers).
    """

    def __init__(self, cfg: ModelConfig, dtype=np.float32):
        self.cfg = cfg
        self.dtype = np.dtype(dtype)
        self.embed = Embed(cfg, self.dtype)
        self.pos_embed = None if cfg.rotary else PosEmbed(cfg, self.dtype)
        self.blocks = [Block(cfg, self.dtype) for _ in range(cfg.n_layers)]
        self.ln_final = Norm(cfg, self.dtype)
        self.unembed = Unembed(cfg, self.dtype, self.embed)
        self.hooks = HookRegistry(hook_names(cfg))
        # The family differences, decided once:
        self.norm_parts = ops.layer_norm_parts if cfg.layer_norm else ops.rms_norm_parts
        self.act_fn = ops.ACTIVATIONS[cfg.act_fn]
        # Rotary frequencies per layer: one (theta, scaling) for most models; Gemma 3's
        # local layers have their own base. rope_inv_freq: the global layers' [r/2].
        self.layer_rope = [(cfg.layer_rope_theta(l), cfg.layer_rope_scaling(l))
                           for l in range(cfg.n_layers)] if cfg.rotary else []
        self.rope_inv_freq = None if not cfg.rotary else ops.rope_inv_freq(
            cfg.rotary_dim, cfg.rope_theta, cfg.rope_scaling
        )
        # Gemma: embeddings times √d, rounded to the model's dtype as transformers does.
        self.embed_scale = np.sqrt(cfg.d_model).astype(self.dtype) if cfg.embed_scale else None

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
        mask = self.full_mask(attention_mask, shape, cache)  # [b, P] or None
        positions = self.position_ids(mask, start, shape)  # [b, p]
        self.hooks.pos_offset = start
        hook = self.hooks.fire
        layers = range(self.cfg.n_layers)[start_at_layer:stop_at_layer]
        self._check_pattern_memory(shape, start, layers)  # before computing anything

        if start_at_layer is None:
            embedded = self.embed.W_E[tokens]  # [b, p, d]
            if self.embed_scale is not None:
                embedded = embedded * self.embed_scale  # Gemma: · √d
            x = hook("hook_embed", embedded)  # [b, p, d]
            if self.pos_embed is not None:
                x = x + hook("hook_pos_embed", self.pos_embed.W_pos[positions])  # [b, p, d]
        ropes = self.rope_tables(positions)  # per layer: (cos, sin), 2× [b, p, 1, r], or None
        masks = {}  # sliding window (or None) -> which keys each query sees (ops.KeyMask)
        for l in layers:
            window = self.cfg.window(l)
            if window not in masks:
                masks[window] = ops.KeyMask(
                    q_slots=np.arange(start, start + shape[1]),
                    k_slots=np.arange(start + shape[1]),
                    key_padding=mask,
                    sliding_window=window,
                )
            x = self.block_forward(l, self.blocks[l], x, ropes[l], masks[window], cache)
        if cache is not None:
            cache.advance(shape[1], mask)
        if stop_at_layer is not None:
            return x  # [b, p, d]

        if last_only:
            x = x[:, -1:]  # [b, 1, d]
        x = self.norm(x, self.ln_final, "ln_final")  # [b, p, d]
        logits = ops.linear(x, self.unembed.W_U, self.unembed.b_U)  # [b, p, V]
        if self.cfg.final_softcap is not None:  # Gemma 2: c · tanh(logits / c)
            logits = ops.softcap(logits, self.cfg.final_softcap)
        return hook("hook_logits", logits)  # [b, p, V]

    __call__ = forward

    def rope_tables(self, positions: np.ndarray) -> list:
        """cos and sin of each layer's rotations, or None per layer without RoPE.   [b, p] ->

        Layers with the same (theta, scaling) share one table. LongRoPE (Phi-3)
        switches to its long factors once the sequence (the largest position
        + 1) is longer than the context the model was trained on.
        """
        if not self.cfg.rotary:
            return [None] * self.cfg.n_layers
        tables = {}
        for theta, scaling in self.layer_rope:
            if (theta, scaling) in tables:
                continue
            long = scaling is not None and scaling.kind == "longrope" and (
                positions.max() + 1 > scaling.original_max_position_embeddings)
            inv_freq = ops.rope_inv_freq(self.cfg.rotary_dim, theta, scaling, long)  # [r/2]
            factor = scaling.attention_factor if scaling is not None else 1.0
            tables[theta, scaling] = ops.rope_cos_sin(positions, inv_freq, self.dtype, factor)
        return [tables[key] for key in self.layer_rope]

    def block_forward(self, l, block, x, rope, allowed, cache) -> np.ndarray:
        """One block: x + attn(ln1(x)), then + mlp(ln2(x)).   [b, p, d] -> [b, p, d]

        Where a model has them, ln1_post / ln2_post normalize each sublayer's
        output before it is added (Gemma, OLMo-2; OLMo-2 has no ln1 / ln2). In a
        parallel block (Pythia) the MLP reads the block's input x, not x + attn:
        resid_mid = x + attn_out is then only a partial sum.
        """
        hook, name = self.hooks.fire, f"blocks.{l}"
        x = hook(f"{name}.hook_resid_pre", x)
        attn_out = self.attention(l, block.attn, self.norm(x, block.ln1, f"{name}.ln1"),
                                  rope, allowed, cache)
        attn_out = hook(f"{name}.hook_attn_out", self.norm(attn_out, block.ln1_post, f"{name}.ln1_post"))
        if block.mlp is None:  # attention-only (cfg.attn_only, toy models): no second sublayer
            return hook(f"{name}.hook_resid_post", x + attn_out)
        resid_mid = hook(f"{name}.hook_resid_mid", x + attn_out)
        mlp_in = x if self.cfg.parallel_residual else resid_mid
        mlp_out = self.mlp(l, block.mlp, self.norm(mlp_in, block.ln2, f"{name}.ln2"))
        mlp_out = self.norm(mlp_out, block.ln2_post, f"{name}.ln2_post")
        return hook(f"{name}.hook_resid_post", resid_mid + hook(f"{name}.hook_mlp_out", mlp_out))

    def norm(self, x: np.ndarray, norm: Norm | None, name: str) -> np.ndarray:
        """LayerNorm or RMSNorm over the last axis; the identity where `norm` is None.

        normalized = (x - mean) / std  (LayerNorm)  or  x / rms  (RMSNorm);
        output = normalized * gain (+ b), gain = w or (Gemma) 1 + w. `hook_scale`
        is the divisor, std or rms (as in TransformerLens).   [..., n] -> [..., n]
        """
        if norm is None:
            return x
        centered, scale = self.norm_parts(x, self.cfg.eps)  # [..., n], [..., 1]
        scale = self.hooks.fire(f"{name}.hook_scale", scale)
        normalized = self.hooks.fire(f"{name}.hook_normalized", centered / scale)  # [..., n]
        return norm.apply(normalized)

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
        if self.cfg.qk_norm == "head":  # q/k norms per head (Qwen3, Gemma 3): over e
            q = self.norm(q, attn.q_norm, f"{name}.q_norm")  # [b, p, h, e]
            k = self.norm(k, attn.k_norm, f"{name}.k_norm")  # [b, p, kv, e]
        elif self.cfg.qk_norm == "proj":  # over the whole projection (OLMo-2): h·e, kv·e
            q = self.norm(q.reshape(b, p, h * e), attn.q_norm, f"{name}.q_norm").reshape(q.shape)
            k = self.norm(k.reshape(b, p, kv * e), attn.k_norm, f"{name}.k_norm").reshape(k.shape)
        if rope is not None:
            q = hook(f"{name}.hook_rot_q", ops.apply_rope(q, *rope))  # [b, p, h, e]
            k = hook(f"{name}.hook_rot_k", ops.apply_rope(k, *rope))  # [b, p, kv, e]
        k, v = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)  # [b, kv, p, e]
        if cache is not None:
            k, v = cache.append(l, k, v)  # [b, kv, P, e]: earlier positions + these

        rows = self.query_block(b, k.shape[2])
        if rows >= p or self.hooks.wants(f"{name}.hook_attn_scores") or \
                self.hooks.wants(f"{name}.hook_pattern"):
            # All queries at once: a short prompt, or a hook reads the whole pattern (its
            # size was checked against pattern_memory_limit before the forward pass began).
            z = self.attend(q, k, v, allowed.rows(), name)  # [b, p, h, e]
        else:  # nobody looks: a block of queries at a time, memory linear in the prompt
            z = np.empty(q.shape[:3] + v.shape[3:], q.dtype)  # [b, p, h, e]
            for i in range(0, p, rows):
                j = min(i + rows, p)
                keys = k.shape[2] - p + j  # causal: queries before slot start + j see no later key
                z[:, i:j] = self.attend(q[:, i:j], k[:, :, :keys], v[:, :, :keys],
                                        allowed.rows(i, j, keys), name)
        z = hook(f"{name}.hook_z", z)  # [b, p, h, e]

        if self.hooks.use_attn_result:  # per-head outputs: large, only with this setting
            result = np.einsum("bphe,hed->bphd", z, attn.W_O)  # [b, p, h, d]
            out = hook(f"{name}.hook_result", result).sum(axis=2)
            return out if attn.b_O is None else out + attn.b_O
        return ops.linear(z.reshape(b, p, h * e), attn.W_O_flat, attn.b_O)  # [b, p, d]

    def attend(self, q, k, v, allowed, name: str) -> np.ndarray:
        """softmax(q·k / √e, masked) · v for n queries.

        q [b, n, h, e], k and v [b, kv, P, e], allowed [b or 1, 1, n, P] -> z [b, n, h, e]
        """
        hook = self.hooks.fire
        scores = ops.attention_scores(q, k, self.cfg.query_pre_attn_scalar)  # [b, h, n, P]
        if self.cfg.attn_softcap is not None:  # Gemma 2: c · tanh(scores / c)
            scores = ops.softcap(scores, self.cfg.attn_softcap)
        scores = hook(f"{name}.hook_attn_scores", np.where(allowed, scores, -np.inf))
        pattern = hook(f"{name}.hook_pattern", ops.softmax(scores, axis=-1))  # [b, h, n, P]
        return ops.attention_mix(pattern, v)  # [b, n, h, e]

    # Attention without pattern hooks runs in blocks of queries whose scores take at most
    # this many bytes ([b, h, rows, P]); a prompt that fits in one block (SmolLM2, batch 1:
    # up to 1365 tokens) runs exactly the operations of the unblocked computation.
    attention_block_bytes = 2**26

    def query_block(self, b: int, n_keys: int) -> int:
        """How many queries per block: [b, h, rows, n_keys] scores within attention_block_bytes."""
        row = b * self.cfg.n_heads * n_keys * self.dtype.itemsize
        return max(1, self.attention_block_bytes // row)

    # The largest total size of full attention patterns a forward pass may hold when hooks
    # (or a cache) read hook_attn_scores / hook_pattern; raise it to go past (in bytes).
    pattern_memory_limit = 4 * 2**30

    def _check_pattern_memory(self, shape, start: int, layers) -> None:
        """Refuse, before computing, a run whose hooked attention patterns need more than
        pattern_memory_limit: each hooked scores/pattern point holds [b, h, p, P]."""
        points = [f"blocks.{l}.attn.hook_{n}" for l in layers for n in ("attn_scores", "pattern")]
        hooked = [n for n in points if self.hooks.wants(n)]
        if not hooked:
            return
        b, p = shape
        each = b * self.cfg.n_heads * p * (start + p) * self.dtype.itemsize
        need = each * (len(hooked) + 3)  # the hooked arrays, and softmax's working copies
        if need > self.pattern_memory_limit:
            raise MinillmError(
                f"the hooks on {len(hooked)} attention score/pattern points ({hooked[0]}, ...) "
                f"need the full pattern [b, h, p, P] = [{b}, {self.cfg.n_heads}, {p}, {start + p}] "
                f"{self.dtype} at each: {format_bytes(each)} apiece, about {format_bytes(need)} in "
                f"all, more than pattern_memory_limit ({format_bytes(self.pattern_memory_limit)}). "
                "Hook or cache fewer layers (names_filter), use a shorter prompt, or raise the limit: "
                f"model.pattern_memory_limit = {int(need * 1.1)}"
            )

    def mlp(self, l, mlp, x) -> np.ndarray:
        """W_out·act(W_in·x) (GPT-2, Pythia), or gated: W_out·(act(W_gate·x) * (W_in·x)).

        act is GELU (tanh approximation: GPT-2, Gemma's GeGLU; exact: Pythia) or
        SiLU (Llama's SwiGLU).   [b, p, d] -> [b, p, d]
        """
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

    def full_mask(self, attention_mask, shape, cache) -> np.ndarray | None:
        """The padding mask over all key positions (cache + new).   -> [b, P] or None"""
        if attention_mask is not None:
            attention_mask = np.asarray(attention_mask)
            if attention_mask.shape != shape:
                raise MinillmError(
                    f"attention_mask has shape {attention_mask.shape}, tokens have {shape}"
                )
            bad = ~np.isin(attention_mask, (0, 1))
            if bad.any():
                i = tuple(int(j) for j in np.argwhere(bad)[0])
                raise MinillmError(f"attention_mask must hold only 0 (padding) and 1 (token); "
                                   f"it has {attention_mask[i].item()!r} at index {i}")
        old = cache.attention_mask if cache is not None else None
        if old is None and attention_mask is None:
            return None
        if old is None:
            old = np.ones((shape[0], cache.length if cache else 0), np.int64)
        if attention_mask is None:
            attention_mask = np.ones(shape, np.int64)
        return np.concatenate([old, attention_mask], axis=1).astype(np.int64)

    @staticmethod
    def position_ids(mask, start, shape) -> np.ndarray:
        """Position ids of the new tokens: slot index, or count of real tokens before.   -> [b, p]"""
        b, p = shape
        if mask is None:
            return np.broadcast_to(np.arange(start, start + p), (b, p))
        return np.maximum(np.cumsum(mask, axis=1) - 1, 0)[:, start:]
