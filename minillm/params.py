"""The parameter tree: every weight of a model, under TransformerLens's names.

Storage is laid out for the matrix products the forward pass runs: the query,
key and value maps of a layer are one matrix `W_QKV` [d_model, (h + 2·kv)·e]
and Llama's gate and up projections one matrix `W_gate_in` [d_model, 2·m].
The documented names (`W_Q` [h, d_model, e], `W_in` [d_model, m], ...) are
*views* into that storage, so writing through them edits the model:

    model.blocks[3].attn.W_Q[5] *= 0    # zeroes head 5 of layer 3, nothing else

Assigning to a name (`attn.W_Q = array`) copies into the storage as well.
`named_parameters()` lists every documented name with its live view.
"""

from __future__ import annotations

import numpy as np

from minillm.config import ModelConfig
from minillm.errors import MinillmError


def _assign(view: np.ndarray, value: np.ndarray, name: str) -> None:
    value = np.asarray(value)
    if value.shape != view.shape:
        raise MinillmError(f"{name}: expected shape {view.shape}, got {value.shape}")
    view[...] = value


class _View:
    """A documented parameter name that is a view into the storage (read and write)."""

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, obj, owner=None):
        return self if obj is None else obj._view(self.name)

    def __set__(self, obj, value):
        _assign(obj._view(self.name), value, self.name)


class Attention:
    """One attention layer's weights.

    Storage: W_QKV [d, (h + 2kv)·e], b_QKV [(h + 2kv)·e] or None,
             W_O_flat [h·e, d], b_O [d] or None.
    Views:   W_Q [h, d, e], W_O [h, e, d], b_Q [h, e];
             _W_K / _W_V [kv, d, e] and _b_K / _b_V [kv, e]: the stored
             key/value heads (live, writable: what edits act on);
             W_K / W_V [h, d, e] and b_K / b_V [h, e]: per query head, as in
             TransformerLens. Query head j reads kv-head j // (h / kv), so for
             grouped-query attention (kv < h) these are a read-only repeat of
             the stored heads (write `_W_K` instead); with kv = h they are the
             stored heads themselves.
    """

    W_Q = _View()
    W_K = _View()
    W_V = _View()
    W_O = _View()
    b_Q = _View()
    b_K = _View()
    b_V = _View()
    _W_K = _View()
    _W_V = _View()
    _b_K = _View()
    _b_V = _View()

    def __init__(self, cfg: ModelConfig, dtype):
        h, kv, e, d = cfg.n_heads, cfg.n_kv_heads, cfg.d_head, cfg.d_model
        self.n_heads, self.n_kv_heads, self.d_head = h, kv, e
        self.W_QKV = np.zeros((d, (h + 2 * kv) * e), dtype)
        self.b_QKV = np.zeros((h + 2 * kv) * e, dtype) if cfg.qkv_bias else None
        self.W_O_flat = np.zeros((h * e, d), dtype)
        self.b_O = np.zeros(d, dtype) if cfg.o_bias else None
        # RMSNorm of q and k (Qwen3, Gemma 3: per head, over e; OLMo-2: over the whole
        # projection, h·e for q and kv·e for k), or None.
        per_head = cfg.qk_norm == "head"
        self.q_norm = Norm(cfg, dtype, e if per_head else h * e, bias=False) if cfg.qk_norm else None
        self.k_norm = Norm(cfg, dtype, e if per_head else kv * e, bias=False) if cfg.qk_norm else None

    @property
    def grouped(self) -> bool:
        """True for grouped-query attention (fewer key/value heads than query heads)."""
        return self.n_kv_heads < self.n_heads

    def columns(self, which: str) -> slice:
        """Which columns of W_QKV hold Q, K or V."""
        h, kv, e = self.n_heads, self.n_kv_heads, self.d_head
        start = {"Q": 0, "K": h * e, "V": (h + kv) * e}[which]
        return slice(start, start + (h if which == "Q" else kv) * e)

    def _view(self, name: str) -> np.ndarray:
        e = self.d_head
        stored = name.startswith("_")
        kind, which = name.lstrip("_")[0], name.lstrip("_")[2]  # "_W_K" -> ("W", "K")
        if which == "O":
            return self.W_O_flat.reshape(self.n_heads, e, -1)  # [h, e, d]
        cols = self.columns(which)
        if kind == "W":
            W = self.W_QKV[:, cols]  # [d, heads·e]
            out = W.reshape(W.shape[0], -1, e).transpose(1, 0, 2)  # [heads, d, e]
        elif self.b_QKV is None:
            raise AttributeError(f"{name}: this model has no attention biases")
        else:
            out = self.b_QKV[cols].reshape(-1, e)  # [heads, e]
        if stored or which == "Q" or not self.grouped:
            return out
        repeated = np.repeat(out, self.n_heads // self.n_kv_heads, axis=0)  # [h, ...]: a copy
        repeated.flags.writeable = False  # writing it would change nothing: refuse instead
        return repeated

    def __setattr__(self, name, value):
        if name in ("W_K", "W_V", "b_K", "b_V") and self.grouped:
            raise MinillmError(
                f"{name} is per query head, a read-only repeat of the {self.n_kv_heads} stored "
                f"key/value heads (grouped-query attention): assign `_{name}` "
                f"[{self.n_kv_heads}, ...] instead"
            )
        object.__setattr__(self, name, value)

    def named_parameters(self):
        """The parameters under TransformerLens's state-dict names: `W_K` / `W_V` when every
        query head has its own key/value head, the stored `_W_K` / `_W_V` otherwise."""
        kv = "_" if self.grouped else ""
        yield "W_Q", self.W_Q
        yield f"{kv}W_K", self._W_K
        yield f"{kv}W_V", self._W_V
        yield "W_O", self.W_O
        if self.b_QKV is not None:
            yield "b_Q", self.b_Q
            yield f"{kv}b_K", self._b_K
            yield f"{kv}b_V", self._b_V
        if self.b_O is not None:
            yield "b_O", self.b_O
        if self.q_norm is not None:
            yield "q_norm.w", self.q_norm.w
            yield "k_norm.w", self.k_norm.w


class MLP:
    """One MLP layer's weights.

    gpt2, gpt_neox:  W_in [d, m], b_in [m], W_out [m, d], b_out [d].
    gated (llama and the rest): W_gate_in [d, 2m] stores W_gate (first m columns) and W_in (the
           "up" projection, last m columns) side by side; W_out [m, d].
    """

    W_gate = _View()
    W_in = _View()

    def __init__(self, cfg: ModelConfig, dtype):
        d, m = cfg.d_model, cfg.d_mlp
        self.gated = cfg.gated_mlp
        self.d_mlp = m
        self.W_gate_in = np.zeros((d, 2 * m if self.gated else m), dtype)
        self.b_in = np.zeros(m, dtype) if cfg.mlp_bias else None
        self.W_out = np.zeros((m, d), dtype)
        self.b_out = np.zeros(d, dtype) if cfg.mlp_bias else None

    def _view(self, name: str) -> np.ndarray:
        m = self.d_mlp
        if not self.gated:
            if name == "W_gate":
                raise AttributeError("W_gate: this model's MLP has no gate")
            return self.W_gate_in
        return self.W_gate_in[:, :m] if name == "W_gate" else self.W_gate_in[:, m:]

    def named_parameters(self):
        if self.gated:
            yield "W_gate", self.W_gate
        yield "W_in", self.W_in
        if self.b_in is not None:
            yield "b_in", self.b_in
        yield "W_out", self.W_out
        if self.b_out is not None:
            yield "b_out", self.b_out


class Norm:
    """A LayerNorm (gain w and bias b) or RMSNorm (gain w only).   w, b: [size] (size d_model,
    or d_head / the whole q or k projection for q/k norms).

    The gain actually applied is `gain` = offset + w: Gemma stores w and multiplies by (1 + w)
    (offset 1.0); every other family multiplies by w (offset 0.0).
    """

    def __init__(self, cfg: ModelConfig, dtype, size: int | None = None, bias: bool | None = None):
        size = cfg.d_model if size is None else size
        self.offset = cfg.norm_offset
        self.w = np.ones(size, dtype) if self.offset == 0 else np.zeros(size, dtype)
        self.b = np.zeros(size, dtype) if (cfg.layer_norm if bias is None else bias) else None

    @property
    def gain(self) -> np.ndarray:
        """What normalized activations are multiplied by: w, or (1 + w) for Gemma.   [size]"""
        return self.w if self.offset == 0 else self.offset + self.w

    def apply(self, normalized: np.ndarray) -> np.ndarray:
        """The norm's output from its normalized input: normalized · gain (+ b)."""
        out = normalized * self.gain
        return out if self.b is None else out + self.b

    def named_parameters(self):
        yield "w", self.w
        if self.b is not None:
            yield "b", self.b


class Block:
    """One transformer block: ln1, attention, (ln1_post), ln2, MLP, (ln2_post).

    ln1 / ln2 are None in a model without norms before its sublayers (OLMo-2);
    ln1_post / ln2_post, the norms of each sublayer's output, exist only in
    Gemma and OLMo-2.
    """

    def __init__(self, cfg: ModelConfig, dtype):
        self.ln1 = Norm(cfg, dtype) if cfg.pre_norms else None
        self.attn = Attention(cfg, dtype)
        self.ln1_post = Norm(cfg, dtype) if cfg.post_norms else None
        self.ln2 = Norm(cfg, dtype) if cfg.pre_norms and not cfg.attn_only else None
        self.mlp = None if cfg.attn_only else MLP(cfg, dtype)  # attention-only toy models: no MLP
        self.ln2_post = Norm(cfg, dtype) if cfg.post_norms else None

    def named_parameters(self):
        for part in ("ln1", "attn", "ln1_post", "ln2", "mlp", "ln2_post"):
            if getattr(self, part) is not None:
                for name, value in getattr(self, part).named_parameters():
                    yield f"{part}.{name}", value


class Embed:
    """Token embedding W_E [V, d]."""

    def __init__(self, cfg: ModelConfig, dtype):
        self.W_E = np.zeros((cfg.d_vocab, cfg.d_model), dtype)


class PosEmbed:
    """Learned position embedding W_pos [n_ctx, d] (GPT-2 only)."""

    def __init__(self, cfg: ModelConfig, dtype):
        self.W_pos = np.zeros((cfg.n_ctx, cfg.d_model), dtype)


class Unembed:
    """Unembedding W_U [d, V]: a view of W_E.T when the model ties them.

    b_U [V] is None: checkpoints of these families have no unembedding bias;
    `fold_ln` creates one (a LayerNorm's bias folded into the logits).
    """

    def __init__(self, cfg: ModelConfig, dtype, embed: Embed):
        self.tied = cfg.tie_embeddings
        self._W_U = None if self.tied else np.zeros((cfg.d_model, cfg.d_vocab), dtype)
        self._embed = embed
        self.b_U: np.ndarray | None = None

    @property
    def W_U(self) -> np.ndarray:
        return self._embed.W_E.T if self.tied else self._W_U

    @W_U.setter
    def W_U(self, value: np.ndarray) -> None:
        _assign(self.W_U, value, "W_U")

    def tie_state(self) -> tuple[bool, np.ndarray | None]:
        """(tied, W_U's own array or None): what it takes to put the tie back exactly."""
        return self.tied, self._W_U

    def set_tie_state(self, state: tuple[bool, np.ndarray | None]) -> None:
        """Put back a `tie_state()`: tied again, or W_U's own array (the same object)."""
        self.tied, self._W_U = state

    def untie(self) -> None:
        """Give W_U its own storage, a copy of W_E.T, so that W_E can change alone."""
        if self.tied:
            self._W_U = np.ascontiguousarray(self._embed.W_E.T)
            self.tied = False
