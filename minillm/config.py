"""One `ModelConfig` for both families, built from a Hugging Face `config.json`.

GPT-2 and Llama-style models (Llama, Mistral, Qwen2) spell the same sizes
differently; this module reads each spelling in one place and derives the rest
(`d_head`, `n_kv_heads`, the rotary settings). An unknown architecture or an
option minillm does not implement is an error, never silently ignored.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from minillm.errors import ConfigError

# model_type in config.json -> family
FAMILIES = {"gpt2": "gpt2", "llama": "llama", "mistral": "llama", "qwen2": "llama"}


@dataclass(frozen=True)
class RopeScaling:
    """Llama-3 style frequency scaling of RoPE (`rope_type: llama3`)."""

    factor: float
    low_freq_factor: float
    high_freq_factor: float
    original_max_position_embeddings: int


@dataclass(frozen=True)
class ModelConfig:
    """Sizes and options of one model; the same fields for both families."""

    family: str  # "gpt2" | "llama"
    model_type: str  # as in config.json: gpt2, llama, mistral, qwen2
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
    act_fn: str  # "gelu_tanh" (gpt2) | "silu" (llama)
    qkv_bias: bool = False  # gpt2, qwen2: biases on Q, K, V
    o_bias: bool = False  # gpt2 (and llama with attention_bias): bias on O
    mlp_bias: bool = False  # gpt2: biases on W_in and W_out
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling | None = None
    sliding_window: int | None = None  # mistral: keys older than this are masked
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def n_groups(self) -> int:
        """Query heads per key/value head (1 without grouped-query attention)."""
        return self.n_heads // self.n_kv_heads

    @classmethod
    def from_json(cls, path: str | Path) -> ModelConfig:
        path = Path(path)
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"{path}: no config.json in this folder") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: not valid JSON ({e})") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a JSON object, found {type(raw).__name__}")
        return cls.from_dict(raw, source=str(path))

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "config") -> ModelConfig:
        model_type = raw.get("model_type")
        if model_type not in FAMILIES:
            known = ", ".join(sorted(FAMILIES))
            raise ConfigError(
                f"{source}: model_type {model_type!r} is not supported (known: {known})"
            )
        reader = _Reader(raw, source)
        cfg = _gpt2(reader) if FAMILIES[model_type] == "gpt2" else _llama(reader, model_type)
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
        return float(value)

    def get(self, *keys: str, default: Any = None) -> Any:
        for key in keys:
            if self.raw.get(key) is not None:
                return self.raw[key]
        if default is None:
            raise ConfigError(f"{self.source}: missing required key {keys[0]!r}")
        return default


def _eos_ids(raw: dict[str, Any]) -> tuple[int, ...]:
    eos = raw.get("eos_token_id")
    if eos is None:
        return ()
    return tuple(eos) if isinstance(eos, list) else (eos,)


def _gpt2(r: _Reader) -> ModelConfig:
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
        tie_embeddings=bool(r.raw.get("tie_word_embeddings", True)),
        act_fn="gelu_tanh",
        qkv_bias=True,
        o_bias=True,
        mlp_bias=True,
        bos_token_id=r.raw.get("bos_token_id"),
        eos_token_ids=_eos_ids(r.raw),
        extra=r.raw,
    )


def _llama(r: _Reader, model_type: str) -> ModelConfig:
    act = r.get("hidden_act", default="silu")
    if act != "silu":
        raise ConfigError(f"{r.source}: hidden_act {act!r} is not supported (only silu)")
    if r.raw.get("mlp_bias"):
        raise ConfigError(f"{r.source}: mlp_bias=true is not supported")
    d_model, n_heads = r.int("hidden_size"), r.int("num_attention_heads")
    attention_bias = bool(r.raw.get("attention_bias", False))
    sliding = None
    if model_type == "mistral" or r.raw.get("use_sliding_window"):
        sliding = r.raw.get("sliding_window")
    rope = r.raw.get("rope_parameters") or {}  # transformers 5 nests rope settings here
    return ModelConfig(
        family="llama",
        model_type=model_type,
        n_layers=r.int("num_hidden_layers"),
        d_model=d_model,
        n_heads=n_heads,
        n_kv_heads=r.int("num_key_value_heads", default=n_heads),
        d_head=r.int("head_dim", default=d_model // n_heads if n_heads > 0 else 0),
        d_mlp=r.int("intermediate_size"),
        d_vocab=r.int("vocab_size"),
        n_ctx=r.int("max_position_embeddings"),
        eps=r.float("rms_norm_eps", default=1e-6),
        tie_embeddings=bool(r.raw.get("tie_word_embeddings", model_type == "qwen2")),
        act_fn="silu",
        qkv_bias=attention_bias or model_type == "qwen2",
        o_bias=attention_bias,
        rope_theta=float(rope.get("rope_theta") or r.float("rope_theta", default=10000.0)),
        rope_scaling=_rope_scaling(r, rope),
        sliding_window=sliding,
        bos_token_id=r.raw.get("bos_token_id"),
        eos_token_ids=_eos_ids(r.raw),
        extra=r.raw,
    )


def _rope_scaling(r: _Reader, rope_parameters: dict[str, Any]) -> RopeScaling | None:
    """Read `rope_scaling` (transformers 4) or `rope_parameters` (transformers 5)."""
    scaling = r.raw.get("rope_scaling") or rope_parameters
    kind = scaling.get("rope_type", scaling.get("type", "default")) if scaling else "default"
    if kind == "default":
        return None
    if kind != "llama3":
        raise ConfigError(
            f"{r.source}: rope scaling type {kind!r} is not implemented (only 'llama3')"
        )
    try:
        return RopeScaling(
            factor=float(scaling["factor"]),
            low_freq_factor=float(scaling["low_freq_factor"]),
            high_freq_factor=float(scaling["high_freq_factor"]),
            original_max_position_embeddings=int(scaling["original_max_position_embeddings"]),
        )
    except KeyError as e:
        raise ConfigError(f"{r.source}: rope_scaling of type llama3 is missing {e}") from None


def _validate(cfg: ModelConfig, source: str) -> None:
    sizes = ("n_layers", "d_model", "n_heads", "n_kv_heads", "d_head", "d_mlp", "d_vocab", "n_ctx")
    for name in sizes:
        value = getattr(cfg, name)
        if not 0 < value <= 2**24:
            raise ConfigError(f"{source}: {name} = {value} is out of range (1 .. 2^24)")
    if cfg.n_heads % cfg.n_kv_heads:
        raise ConfigError(
            f"{source}: num_attention_heads ({cfg.n_heads}) must be a multiple of "
            f"num_key_value_heads ({cfg.n_kv_heads})"
        )
    if cfg.family == "gpt2" and cfg.d_model % cfg.n_heads:
        raise ConfigError(f"{source}: n_embd ({cfg.d_model}) must divide by n_head")
    if cfg.family == "llama" and cfg.d_head % 2:
        raise ConfigError(f"{source}: head_dim ({cfg.d_head}) must be even for RoPE")
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
