"""One `ModelConfig` for every family, built from a Hugging Face `config.json`.

GPT-2, GPT-NeoX (Pythia) and the Llama-style models (Llama, Mistral, Qwen2,
Qwen3, Phi-3, OLMo-2, Gemma 2 and 3) spell the same sizes differently; this
module reads each spelling in one place and derives the rest (`d_head`,
`n_kv_heads`, the rotary settings). What differs between families is data in
the config (norm placement, gain offset, soft-caps, ...), which the forward
pass reads once. An unknown architecture or an option minillm does not
implement is an error, never silently ignored.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from minillm.errors import ConfigError

# model_type in config.json -> family
FAMILIES = {
    "gpt2": "gpt2",
    "llama": "llama",
    "mistral": "llama",
    "qwen2": "llama",
    "qwen3": "qwen3",
    "phi3": "phi3",
    "olmo2": "olmo2",
    "gemma2": "gemma",
    "gemma3_text": "gemma",
    "gpt_neox": "gpt_neox",
}
# model_types that look close to a supported one, with the reason they are refused
NOT_SUPPORTED = {
    "gemma3": "the multimodal Gemma 3 checkpoints (Gemma3ForConditionalGeneration) are not "
    "supported; use a text-only one (model_type gemma3_text, e.g. gemma-3-270m or gemma-3-1b)",
    "gemma": "Gemma 1 is not supported (Gemma 2 and 3 are)",
    "olmo": "OLMo 1 is not supported (OLMo-2 is: model_type olmo2)",
    "phi": "Phi-1/Phi-2 (model_type phi) are not supported (Phi-3 is: model_type phi3)",
}

ACT_FNS = {  # hidden_act / hidden_activation in config.json -> minillm's name
    "silu": "silu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu": "gelu_erf",  # the exact GELU, x·Φ(x) (Pythia)
}


@dataclass(frozen=True)
class RopeScaling:
    """Frequency scaling of RoPE, by `kind` (the config's `rope_type`).

    llama3:   low frequencies divided by `factor`, high ones kept, a blend between.
    linear:   every frequency divided by `factor` (Gemma 3's global layers).
    longrope: each frequency divided by its own factor, `short_factor` while the
              sequence fits in `original_max_position_embeddings`, `long_factor`
              past it; cos and sin multiplied by `attention_factor` (Phi-3).
    """

    factor: float
    low_freq_factor: float = 0.0
    high_freq_factor: float = 0.0
    original_max_position_embeddings: int = 0
    kind: str = "llama3"
    short_factor: tuple[float, ...] = ()
    long_factor: tuple[float, ...] = ()
    attention_factor: float = 1.0


@dataclass(frozen=True)
class ModelConfig:
    """Sizes and options of one model; the same fields for every family.

    The defaults are Llama's; each family's reader sets what differs.
    """

    family: str  # gpt2 | llama | gpt_neox | gemma | qwen3 | phi3 | olmo2
    model_type: str  # as in config.json: gpt2, llama, mistral, qwen2, gemma2, ...
    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    d_head: int
    d_mlp: int
    d_vocab: int
    n_ctx: int
    eps: float
    tie_embeddings: bool
    act_fn: str  # "gelu_tanh" (gpt2, gemma) | "gelu_erf" (gpt_neox) | "silu" (llama)
    qkv_bias: bool = False  # gpt2, gpt_neox, qwen2: biases on Q, K, V
    o_bias: bool = False  # gpt2, gpt_neox (and llama with attention_bias): bias on O
    mlp_bias: bool = False  # gpt2, gpt_neox: biases on W_in and W_out
    layer_norm: bool = False  # LayerNorm (centre, gain, bias) instead of RMSNorm: gpt2, gpt_neox
    gated_mlp: bool = True  # W_out·(act(W_gate·x) * W_in·x); False: W_out·act(W_in·x)
    rotary_dim: int = 0  # leading dims of each head that RoPE rotates; 0: learned positions (gpt2)
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling | None = None
    sliding_window: int | None = None  # mistral, gemma: keys this many slots back are masked
    local_layers: tuple[bool, ...] = ()  # gemma: which layers use the window (empty: all)
    local_rope_theta: float | None = None  # gemma 3: the rope base of the windowed layers
    norm_offset: float = 0.0  # gemma: RMSNorm multiplies by (1 + w), not w
    pre_norms: bool = True  # ln1 / ln2 before each sublayer (OLMo-2 has none)
    post_norms: bool = False  # ln1_post / ln2_post on each sublayer's output: gemma, olmo2
    parallel_residual: bool = False  # gpt_neox: x + attn(ln1(x)) + mlp(ln2(x))
    qk_norm: str | None = None  # RMSNorm of q and k: "head" (qwen3, gemma3) | "proj" (olmo2)
    query_pre_attn_scalar: float | None = None  # gemma: scores scaled by its -1/2, not d_head's
    attn_softcap: float | None = None  # gemma 2: scores -> c·tanh(scores / c)
    final_softcap: float | None = None  # gemma 2: logits -> c·tanh(logits / c)
    embed_scale: bool = False  # gemma: embeddings multiplied by √d_model
    attn_only: bool = False  # toy models (lesson 13): blocks are x + attn(ln1(x)), no ln2 or MLP
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def n_groups(self) -> int:
        """Query heads per key/value head (1 without grouped-query attention)."""
        return self.n_heads // self.n_kv_heads

    @property
    def rotary(self) -> bool:
        """Positions enter through RoPE on q and k (every family but GPT-2)."""
        return self.rotary_dim > 0

    @property
    def attn_scale(self) -> float:
        """What q·k is multiplied by: 1/√d_head, or 1/√query_pre_attn_scalar (Gemma)."""
        return 1.0 / math.sqrt(self.query_pre_attn_scalar or self.d_head)

    def differences(self) -> list[str]:
        """What this model does beyond a plain Llama block, one phrase each (for `minillm info`)."""
        out = []
        if self.layer_norm:
            out.append("LayerNorm with bias")
        if not self.rotary:
            out.append("learned positions")
        elif self.rotary_dim < self.d_head:
            out.append(f"rotary on {self.rotary_dim} of {self.d_head} head dims")
        if self.rope_scaling is not None:
            out.append(f"{self.rope_scaling.kind} rope scaling")
        if self.parallel_residual:
            out.append("parallel attention and MLP")
        if not self.pre_norms:
            out.append("no norms before the sublayers")
        if self.post_norms:
            out.append("norms after each sublayer (ln1_post, ln2_post)")
        if self.norm_offset:
            out.append(f"norm gain ({self.norm_offset:g} + w)")
        if self.qk_norm:
            out.append("q/k norms " + ("per head" if self.qk_norm == "head" else
                                        "over the whole projection"))
        if self.embed_scale:
            out.append("embeddings × √d_model")
        if self.query_pre_attn_scalar is not None:
            out.append(f"scores / √{self.query_pre_attn_scalar:g} (query_pre_attn_scalar)")
        if self.attn_softcap is not None:
            out.append(f"attention soft-cap {self.attn_softcap:g}")
        if self.final_softcap is not None:
            out.append(f"final soft-cap {self.final_softcap:g}")
        if self.sliding_window is not None:
            where = (f"{sum(self.local_layers)} of {self.n_layers} layers"
                     if self.local_layers else "every layer")
            out.append(f"sliding window {self.sliding_window} on {where}")
        if self.local_rope_theta is not None:
            out.append(f"local layers' rope base {self.local_rope_theta:g}")
        if self.gated_mlp and self.act_fn != "silu":
            out.append("GeGLU MLP" if self.act_fn.startswith("gelu") else f"{self.act_fn} gate")
        if not self.gated_mlp and self.act_fn == "gelu_erf":
            out.append("exact (erf) GELU")
        return out

    def window(self, layer: int) -> int | None:
        """The sliding window of one layer, or None where it attends to all earlier keys."""
        if self.local_layers and not self.local_layers[layer]:
            return None
        return self.sliding_window

    def layer_rope_theta(self, layer: int) -> float:
        """The rope base of one layer (Gemma 3's windowed layers have their own)."""
        if self.local_rope_theta is not None and self.local_layers and self.local_layers[layer]:
            return self.local_rope_theta
        return self.rope_theta

    def layer_rope_scaling(self, layer: int) -> RopeScaling | None:
        if self.local_rope_theta is not None and self.local_layers and self.local_layers[layer]:
            return None  # Gemma 3 scales only its global layers
        return self.rope_scaling

    @classmethod
    def from_json(cls, path: str | Path) -> ModelConfig:
        path = Path(path)
        if path.exists() and not path.is_file():  # a folder, or a FIFO that would block forever
            kind = "a folder" if path.is_dir() else "not a regular file"
            raise ConfigError(f"{path}: is {kind}; config.json must be a JSON file")
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"{path}: no config.json in this folder") from None
        except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError, or a 5000-digit int
            raise ConfigError(f"{path}: not valid JSON ({e})") from None
        except RecursionError:
            raise ConfigError(f"{path}: not valid JSON (nested too deeply)") from None
        except OSError as e:
            raise ConfigError(f"{path}: cannot read ({e.strerror or e})") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a JSON object, found {type(raw).__name__}")
        return cls.from_dict(raw, source=str(path))

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "config") -> ModelConfig:
        model_type = raw.get("model_type")
        if isinstance(model_type, str) and model_type in NOT_SUPPORTED:
            raise ConfigError(f"{source}: model_type {model_type!r}: {NOT_SUPPORTED[model_type]}")
        if not isinstance(model_type, str) or model_type not in FAMILIES:
            known = ", ".join(sorted(FAMILIES))
            raise ConfigError(
                f"{source}: model_type {model_type!r} is not supported (known: {known})"
            )
        reader = _Reader(raw, source)
        readers = {"gpt2": _gpt2, "gpt_neox": _gpt_neox}
        cfg = readers.get(model_type, _llama)(reader, model_type)
        _validate(cfg, source)
        return cfg


class _Reader:
    """Reads keys from a config dict with errors that name the file and the key."""

    def __init__(self, raw: dict[str, Any], source: str):
        self.raw, self.source = raw, source

    def int(self, *keys: str, default: int | None = None) -> int:
        value = self.get(*keys, default=default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{self.source}: {keys[0]} must be an integer, found {value!r}")
        return value

    def float(self, *keys: str, default: float | None = None) -> float:
        value = self.get(*keys, default=default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{self.source}: {keys[0]} must be a number, found {value!r}")
        try:
            return float(value)
        except OverflowError:  # an integer with hundreds of digits
            raise ConfigError(f"{self.source}: {keys[0]} = {value} is too large") from None

    def bool(self, key: str, default: bool) -> bool:
        value = self.raw.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise ConfigError(f"{self.source}: {key} must be true or false, found {value!r}")
        return value

    def dict(self, key: str) -> dict[str, Any]:
        value = self.raw.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ConfigError(f"{self.source}: {key} must be an object, found {value!r}")
        return value

    def token_id(self, key: str) -> int | None:
        value = self.raw.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise ConfigError(f"{self.source}: {key} must be a token id, found {value!r}")
        return value

    def get(self, *keys: str, default: Any = None) -> Any:
        for key in keys:
            if self.raw.get(key) is not None:
                return self.raw[key]
        if default is None:
            raise ConfigError(f"{self.source}: missing required key {keys[0]!r}")
        return default


def _eos_ids(r: _Reader) -> tuple[int, ...]:
    eos = r.raw.get("eos_token_id")
    if eos is None:
        return ()
    ids = tuple(eos) if isinstance(eos, list) else (eos,)
    if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids):
        raise ConfigError(f"{r.source}: eos_token_id must be a token id or a list of them, "
                          f"found {eos!r}")
    return ids


def _act_fn(r: _Reader, *keys: str, default: str) -> str:
    act = r.get(*keys, default=default)
    if not isinstance(act, str) or act not in ACT_FNS:
        raise ConfigError(f"{r.source}: {keys[0]} {act!r} is not supported "
                          f"(known: {', '.join(ACT_FNS)})")
    return ACT_FNS[act]


def _gpt2(r: _Reader, model_type: str = "gpt2") -> ModelConfig:
    act = r.get("activation_function", default="gelu_new")
    if act not in ("gelu_new", "gelu_pytorch_tanh"):
        raise ConfigError(
            f"{r.source}: activation_function {act!r} is not supported "
            "(minillm implements GPT-2's tanh-approximated GELU: gelu_new)"
        )
    d_model, n_heads = r.int("n_embd"), r.int("n_head")
    return ModelConfig(
        family="gpt2",
        model_type="gpt2",
        n_layers=r.int("n_layer"),
        d_model=d_model,
        n_heads=n_heads,
        n_kv_heads=n_heads,
        d_head=d_model // n_heads if n_heads > 0 else 0,
        d_mlp=r.int("n_inner", default=4 * d_model),
        d_vocab=r.int("vocab_size"),
        n_ctx=r.int("n_positions", "n_ctx"),
        eps=r.float("layer_norm_epsilon", default=1e-5),
        tie_embeddings=r.bool("tie_word_embeddings", True),
        act_fn="gelu_tanh",
        qkv_bias=True,
        o_bias=True,
        mlp_bias=True,
        layer_norm=True,
        gated_mlp=False,
        rotary_dim=0,
        attn_only=r.bool("attn_only", False),  # minillm's own key (TransformerLens: attn_only)
        bos_token_id=r.token_id("bos_token_id"),
        eos_token_ids=_eos_ids(r),
        extra=r.raw,
    )


GEMMA = ("gemma2", "gemma3_text")


def _llama(r: _Reader, model_type: str) -> ModelConfig:
    """Llama and its descendants: RMSNorm, RoPE, a gated MLP; each family's extras as data."""
    gemma = model_type in GEMMA
    act = _act_fn(r, "hidden_activation" if gemma else "hidden_act",
                  default="gelu_pytorch_tanh" if gemma else "silu")
    if r.bool("mlp_bias", False):
        raise ConfigError(f"{r.source}: mlp_bias=true is not supported")
    d_model, n_heads = r.int("hidden_size"), r.int("num_attention_heads")
    n_layers = r.int("num_hidden_layers")
    d_head = r.int("head_dim", default=d_model // n_heads if n_heads > 0 else 0)
    attention_bias = r.bool("attention_bias", False)
    if model_type == "phi3" and attention_bias:
        raise ConfigError(f"{r.source}: attention_bias=true is not supported for phi3")
    rope = r.dict("rope_parameters")  # transformers 5 nests rope settings here
    local_layers = _local_layers(r, model_type, n_layers)
    sliding = None
    if model_type in ("mistral", "phi3", *GEMMA) or r.bool("use_sliding_window", False):
        sliding = r.raw.get("sliding_window", 4096 if gemma else None)
    if r.bool("use_bidirectional_attention", False):
        raise ConfigError(f"{r.source}: use_bidirectional_attention=true (an encoder such as "
                          "EmbeddingGemma) is not supported: minillm runs causal language models")
    if model_type in ("qwen2", "qwen3") and r.bool("use_sliding_window", False):
        raise ConfigError(f"{r.source}: use_sliding_window=true is not supported for {model_type} "
                          "(its max_window_layers rule is not implemented)")
    local_theta = None
    if model_type == "gemma3_text":  # two rope settings: global (full) and local (sliding) layers
        if "full_attention" in rope or "sliding_attention" in rope:
            for kind in ("full_attention", "sliding_attention"):
                if not isinstance(rope.get(kind) or {}, dict):
                    raise ConfigError(f"{r.source}: rope_parameters.{kind} must be an object")
            local = _Reader(rope.get("sliding_attention") or {}, r.source)
            if local.raw.get("rope_type", "default") != "default":
                raise ConfigError(f"{r.source}: rope scaling on Gemma 3's sliding layers is not "
                                  "implemented")
            local_theta = local.float("rope_theta", default=10000.0)
            rope = rope.get("full_attention") or {}
        else:
            local_theta = r.float("rope_local_base_freq", default=10000.0)
    rotary_factor = _Reader(rope, r.source).float(
        "partial_rotary_factor", default=r.float("partial_rotary_factor", default=1.0))
    default_theta = 1000000.0 if model_type == "gemma3_text" else 10000.0
    theta = _Reader(rope, r.source).float("rope_theta", default=0.0) or r.float(
        "rope_theta", default=default_theta)
    return ModelConfig(
        family=FAMILIES[model_type],
        model_type=model_type,
        n_layers=n_layers,
        d_model=d_model,
        n_heads=n_heads,
        n_kv_heads=r.int("num_key_value_heads", default=n_heads),
        d_head=d_head,
        d_mlp=r.int("intermediate_size"),
        d_vocab=r.int("vocab_size"),
        n_ctx=r.int("max_position_embeddings"),
        eps=r.float("rms_norm_eps", default=1e-6),
        tie_embeddings=r.bool("tie_word_embeddings", model_type in ("qwen2", *GEMMA)),
        act_fn=act,
        qkv_bias=attention_bias or model_type == "qwen2",
        o_bias=attention_bias,
        rotary_dim=_rotary_dim(r, d_head, rotary_factor),
        rope_theta=theta,
        rope_scaling=_rope_scaling(r, rope, _rotary_dim(r, d_head, rotary_factor)),
        sliding_window=sliding,
        local_layers=local_layers,
        local_rope_theta=local_theta,
        norm_offset=1.0 if gemma else 0.0,
        pre_norms=model_type != "olmo2",
        post_norms=gemma or model_type == "olmo2",
        qk_norm={"qwen3": "head", "gemma3_text": "head", "olmo2": "proj"}.get(model_type),
        query_pre_attn_scalar=r.float("query_pre_attn_scalar", default=256) if gemma else None,
        attn_softcap=_softcap(r, "attn_logit_softcapping", 50.0 if model_type == "gemma2" else None),
        final_softcap=_softcap(r, "final_logit_softcapping",
                               30.0 if model_type == "gemma2" else None),
        embed_scale=gemma,
        bos_token_id=r.token_id("bos_token_id"),
        eos_token_ids=_eos_ids(r),
        extra=r.raw,
    )


def _gpt_neox(r: _Reader, model_type: str = "gpt_neox") -> ModelConfig:
    """GPT-NeoX (Pythia): LayerNorm, parallel attention and MLP, partial RoPE, exact GELU."""
    d_model, n_heads = r.int("hidden_size"), r.int("num_attention_heads")
    d_head = d_model // n_heads if n_heads > 0 else 0
    rope = r.dict("rope_parameters")
    factor = _Reader(rope, r.source).float(
        "partial_rotary_factor", default=r.float("rotary_pct", default=0.25))
    if rope.get("rope_type", "default") != "default" or r.dict("rope_scaling"):
        raise ConfigError(f"{r.source}: rope scaling is not implemented for gpt_neox")
    bias = r.bool("attention_bias", True)
    return ModelConfig(
        family="gpt_neox",
        model_type=model_type,
        n_layers=r.int("num_hidden_layers"),
        d_model=d_model,
        n_heads=n_heads,
        n_kv_heads=n_heads,
        d_head=d_head,
        d_mlp=r.int("intermediate_size"),
        d_vocab=r.int("vocab_size"),
        n_ctx=r.int("max_position_embeddings"),
        eps=r.float("layer_norm_eps", default=1e-5),
        tie_embeddings=r.bool("tie_word_embeddings", False),
        act_fn=_act_fn(r, "hidden_act", default="gelu"),
        qkv_bias=bias,
        o_bias=bias,
        mlp_bias=True,
        layer_norm=True,
        gated_mlp=False,
        rotary_dim=_rotary_dim(r, d_head, factor),
        rope_theta=_Reader(rope, r.source).float("rope_theta", default=0.0)
        or r.float("rotary_emb_base", "rope_theta", default=10000.0),
        parallel_residual=r.bool("use_parallel_residual", True),
        bos_token_id=r.token_id("bos_token_id"),
        eos_token_ids=_eos_ids(r),
        extra=r.raw,
    )


def _rotary_dim(r: _Reader, d_head: int, factor: float) -> int:
    """How many leading dims of each head RoPE rotates: int(d_head · partial_rotary_factor)."""
    if not (0 < factor <= 1):
        raise ConfigError(f"{r.source}: partial_rotary_factor {factor} must be in (0, 1]")
    dim = int(d_head * factor)
    if dim < 2 or dim % 2:
        raise ConfigError(f"{r.source}: the rotary part of each head (head_dim {d_head} × "
                          f"{factor} = {dim}) must be a positive even number of dims")
    return dim


def _softcap(r: _Reader, key: str, default: float | None) -> float | None:
    value = r.raw.get(key, default)  # an explicit null turns soft-capping off
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            math.isfinite(value) and value > 0):
        raise ConfigError(f"{r.source}: {key} must be a positive number or null, found {value!r}")
    return float(value)


def _local_layers(r: _Reader, model_type: str, n_layers: int) -> tuple[bool, ...]:
    """Which layers attend through the sliding window (Gemma alternates local and global)."""
    types = r.raw.get("layer_types")
    if types is None:
        if model_type == "gemma2":  # every other layer, starting with the first
            return tuple(l % 2 == 0 for l in range(n_layers))
        if model_type == "gemma3_text":  # five local layers, then one global
            pattern = r.int("sliding_window_pattern", default=6)
            return tuple(bool((l + 1) % pattern) for l in range(n_layers)) if pattern > 0 else ()
        return ()
    known = ("full_attention", "sliding_attention")
    if not isinstance(types, list) or len(types) != n_layers or any(t not in known for t in types):
        raise ConfigError(f"{r.source}: layer_types must list {n_layers} entries, each "
                          f"'full_attention' or 'sliding_attention'")
    return tuple(t == "sliding_attention" for t in types)


def _rope_scaling(r: _Reader, rope_parameters: dict[str, Any],
                  rotary_dim: int = 0) -> RopeScaling | None:
    """Read `rope_scaling` (transformers 4) or `rope_parameters` (transformers 5)."""
    scaling = r.dict("rope_scaling") or rope_parameters
    kind = scaling.get("rope_type", scaling.get("type", "default")) if scaling else "default"
    if kind == "default":
        return None
    s = _Reader(scaling, f"{r.source}: rope_scaling")
    if kind == "linear":
        factor = s.float("factor")
        if not (math.isfinite(factor) and factor > 0):
            raise ConfigError(f"{r.source}: rope_scaling factor must be positive, found {factor}")
        return RopeScaling(factor=factor, kind="linear")
    if kind in ("longrope", "su"):
        return _longrope(r, s, rotary_dim)
    if kind != "llama3":
        raise ConfigError(
            f"{r.source}: rope scaling type {kind!r} is not implemented "
            "(only 'llama3', 'linear' and 'longrope')"
        )
    out = RopeScaling(
        factor=s.float("factor"),
        low_freq_factor=s.float("low_freq_factor"),
        high_freq_factor=s.float("high_freq_factor"),
        original_max_position_embeddings=s.int("original_max_position_embeddings"),
    )
    finite = all(math.isfinite(x) and x > 0 for x in (out.factor, out.low_freq_factor,
                                                       out.high_freq_factor))
    if not finite or out.high_freq_factor <= out.low_freq_factor:
        raise ConfigError(f"{r.source}: rope_scaling needs positive factors with high_freq_factor "
                          f"> low_freq_factor, found {scaling}")
    if out.original_max_position_embeddings < 1:
        raise ConfigError(f"{r.source}: rope_scaling original_max_position_embeddings must be "
                          "positive")
    return out


def _longrope(r: _Reader, s: _Reader, rotary_dim: int) -> RopeScaling:
    """Phi-3's LongRoPE: one divisor per frequency, short or long, and an attention factor."""
    original = s.int("original_max_position_embeddings",
                     default=r.int("original_max_position_embeddings", default=0) or None)
    if original < 2:
        raise ConfigError(f"{r.source}: longrope needs original_max_position_embeddings >= 2")
    lists = {}
    for key in ("short_factor", "long_factor"):
        value = s.raw.get(key)
        if not isinstance(value, list) or len(value) != rotary_dim // 2 or not all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
                and x > 0 for x in value):
            raise ConfigError(f"{r.source}: rope_scaling {key} must list {rotary_dim // 2} "
                              "positive numbers (one per rotary frequency)")
        lists[key] = tuple(float(x) for x in value)
    factor = s.float("factor", default=0.0) or r.int("max_position_embeddings") / original
    if not (math.isfinite(factor) and factor > 0):
        raise ConfigError(f"{r.source}: rope_scaling factor must be positive, found {factor}")
    attention = s.float("attention_factor", default=0.0) or (
        math.sqrt(1 + math.log(factor) / math.log(original)) if factor > 1 else 1.0)
    return RopeScaling(factor=factor, original_max_position_embeddings=original, kind="longrope",
                       short_factor=lists["short_factor"], long_factor=lists["long_factor"],
                       attention_factor=attention)


def _validate(cfg: ModelConfig, source: str) -> None:
    sizes = ("n_layers", "d_model", "n_heads", "n_kv_heads", "d_head", "d_mlp", "d_vocab", "n_ctx")
    for name in sizes:
        value = getattr(cfg, name)
        if not 0 < value <= 2**24:
            raise ConfigError(f"{source}: {name} = {value} is out of range (1 .. 2^24)")
    n_params = n_params_lower_bound(cfg)
    if n_params > MAX_PARAMS:
        raise ConfigError(
            f"{source}: these sizes make a model of at least {n_params:.3g} parameters, more than "
            f"minillm can hold ({MAX_PARAMS:.3g}); check n_layers, d_model, d_mlp and d_vocab"
        )
    if cfg.n_heads % cfg.n_kv_heads:
        raise ConfigError(
            f"{source}: num_attention_heads ({cfg.n_heads}) must be a multiple of "
            f"num_key_value_heads ({cfg.n_kv_heads})"
        )
    if cfg.family in ("gpt2", "gpt_neox") and cfg.d_model % cfg.n_heads:
        raise ConfigError(f"{source}: the model width ({cfg.d_model}) must divide by the number "
                          f"of heads ({cfg.n_heads})")
    if cfg.rotary and cfg.d_head % 2:
        raise ConfigError(f"{source}: head_dim ({cfg.d_head}) must be even for RoPE")
    if cfg.local_rope_theta is not None and not (
            cfg.local_rope_theta > 0 and math.isfinite(cfg.local_rope_theta)):
        raise ConfigError(f"{source}: the local rope base {cfg.local_rope_theta} must be positive")
    if cfg.query_pre_attn_scalar is not None and not (
            cfg.query_pre_attn_scalar > 0 and math.isfinite(cfg.query_pre_attn_scalar)):
        raise ConfigError(f"{source}: query_pre_attn_scalar must be positive")
    if not (0 < cfg.eps < 1 and math.isfinite(cfg.eps)):
        raise ConfigError(f"{source}: norm epsilon {cfg.eps} must be in (0, 1)")
    if not (cfg.rope_theta > 0 and math.isfinite(cfg.rope_theta)):
        raise ConfigError(f"{source}: rope_theta {cfg.rope_theta} must be positive")
    if cfg.sliding_window is not None and (
        isinstance(cfg.sliding_window, bool)
        or not isinstance(cfg.sliding_window, int)
        or cfg.sliding_window < 1
    ):
        raise ConfigError(f"{source}: sliding_window must be a positive integer")


MAX_PARAMS = 2**36  # ~69 billion: 275 GB in float32, past anything NumPy on one machine runs


def n_params_lower_bound(cfg: ModelConfig) -> int:
    """Parameters the weight matrices of `cfg` need at least (embedding + attention + MLP).

    Used to refuse absurd sizes before anything is allocated, and to check that the
    checkpoint's files hold at least this many values.
    """
    d, e = cfg.d_model, cfg.d_head
    attn = d * (cfg.n_heads + 2 * cfg.n_kv_heads) * e + cfg.n_heads * e * d
    mlp = 0 if cfg.attn_only else (3 if cfg.gated_mlp else 2) * d * cfg.d_mlp
    return cfg.d_vocab * d + cfg.n_layers * (attn + mlp)
