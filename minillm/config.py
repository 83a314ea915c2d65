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
    attn_only: bool = False  # blocks without MLP (and ln2): x + attn(ln1(x)); toy models, lesson 13
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
        if not isinstance(model_type, str) or model_type not in FAMILIES:
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
        tie_embeddings=r.bool("tie_word_embeddings", True),
        act_fn="gelu_tanh",
        qkv_bias=True,
        o_bias=True,
        mlp_bias=True,
        attn_only=r.bool("attn_only", False),  # minillm's own key (TransformerLens: attn_only)
        bos_token_id=r.token_id("bos_token_id"),
        eos_token_ids=_eos_ids(r),
        extra=r.raw,
    )


def _llama(r: _Reader, model_type: str) -> ModelConfig:
    act = r.get("hidden_act", default="silu")
    if act != "silu":
        raise ConfigError(f"{r.source}: hidden_act {act!r} is not supported (only silu)")
    if r.bool("mlp_bias", False):
        raise ConfigError(f"{r.source}: mlp_bias=true is not supported")
    d_model, n_heads = r.int("hidden_size"), r.int("num_attention_heads")
    attention_bias = r.bool("attention_bias", False)
    sliding = None
    if model_type == "mistral" or r.bool("use_sliding_window", False):
        sliding = r.raw.get("sliding_window")
    rope = r.dict("rope_parameters")  # transformers 5 nests rope settings here
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
        tie_embeddings=r.bool("tie_word_embeddings", model_type == "qwen2"),
        act_fn="silu",
        qkv_bias=attention_bias or model_type == "qwen2",
        o_bias=attention_bias,
        rope_theta=_Reader(rope, r.source).float("rope_theta", default=0.0)
        or r.float("rope_theta", default=10000.0),
        rope_scaling=_rope_scaling(r, rope),
        sliding_window=sliding,
        bos_token_id=r.token_id("bos_token_id"),
        eos_token_ids=_eos_ids(r),
        extra=r.raw,
    )


def _rope_scaling(r: _Reader, rope_parameters: dict[str, Any]) -> RopeScaling | None:
    """Read `rope_scaling` (transformers 4) or `rope_parameters` (transformers 5)."""
    scaling = r.dict("rope_scaling") or rope_parameters
    kind = scaling.get("rope_type", scaling.get("type", "default")) if scaling else "default"
    if kind == "default":
        return None
    if kind != "llama3":
        raise ConfigError(
            f"{r.source}: rope scaling type {kind!r} is not implemented (only 'llama3')"
        )
    s = _Reader(scaling, f"{r.source}: rope_scaling")
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


def _validate(cfg: ModelConfig, source: str) -> None:
    sizes = ("n_layers", "d_model", "n_heads", "n_kv_heads", "d_head", "d_mlp", "d_vocab", "n_ctx")
    for name in sizes:
        value = getattr(cfg, name)
        if not 0 < value <= 2**24:
            raise ConfigError(f"{source}: {name} = {value} is out of range (1 .. 2^24)")
    n_params = _n_params_lower_bound(cfg)
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


MAX_PARAMS = 2**36  # ~69 billion: 275 GB in float32, past anything NumPy on one machine runs


def _n_params_lower_bound(cfg: ModelConfig) -> int:
    """Parameters the weight matrices of `cfg` need at least (embedding + attention + MLP).

    Used to refuse absurd sizes before anything is allocated, and to check that the
    checkpoint's files hold at least this many values.
    """
    d, e = cfg.d_model, cfg.d_head
    attn = d * (cfg.n_heads + 2 * cfg.n_kv_heads) * e + cfg.n_heads * e * d
    mlp = 0 if cfg.attn_only else (3 if cfg.family == "llama" else 2) * d * cfg.d_mlp
    return cfg.d_vocab * d + cfg.n_layers * (attn + mlp)
