"""Loading Hugging Face checkpoints: one explicit mapping per family.

Each mapping lists every tensor the checkpoint must contain, its expected
shape, and where it goes in minillm's parameter tree. Loading checks that the
key sets match exactly (a missing, unexpected or mis-shaped tensor is an
error naming it), then copies each tensor into place, transposing where
Hugging Face's layout differs from ours:

  GPT-2 (Conv1D layers store [in, out], like ours):
    wte.weight [V, d] -> embed.W_E          wpe.weight [n_ctx, d] -> pos_embed.W_pos
    h.l.attn.c_attn.weight [d, 3d]  -> attn.W_QKV (Q, K, V side by side)
    h.l.attn.c_proj.weight [d, d]   -> attn.W_O   h.l.mlp.c_fc.weight [d, m] -> mlp.W_in
    h.l.mlp.c_proj.weight [m, d]    -> mlp.W_out  (+ biases, ln_1, ln_2, ln_f)
  Llama / Mistral / Qwen2 (nn.Linear layers store [out, in]: transposed):
    model.embed_tokens.weight [V, d] -> embed.W_E
    self_attn.{q,k,v}_proj.weight [heads·e, d] -> attn.W_QKV columns
    self_attn.o_proj.weight [d, h·e] -> attn.W_O
    mlp.{gate,up}_proj.weight [m, d] -> mlp.W_gate, mlp.W_in;  mlp.down_proj [d, m] -> mlp.W_out
    lm_head.weight [V, d] -> unembed.W_U (absent or ignored when tied)
  Qwen3 and Gemma 3 add self_attn.{q,k}_norm.weight [e]; OLMo-2 the same over
  the whole projection ([h·e], [kv·e]). Gemma's post_attention_layernorm is the
  norm of the attention's output (ln1_post), pre_feedforward_layernorm is ln2
  and post_feedforward_layernorm ln2_post; OLMo-2 has only the two post-norms.
  Phi-3 fuses self_attn.qkv_proj [(h + 2kv)·e, d] (Q, K, V stacked: W_QKV
  transposed) and mlp.gate_up_proj [2m, d] (gate, then up: W_gate_in transposed).
  GPT-NeoX (Pythia), prefix gpt_neox.:
    embed_in.weight -> embed.W_E;  embed_out.weight (no prefix) -> unembed.W_U
    layers.l.attention.query_key_value.weight [3d, d]: per head, its q, k and v
      rows interleaved ([h, 3, e, d]) -> regrouped into W_QKV's Q | K | V columns
    layers.l.attention.dense -> attn.W_O;  mlp.dense_h_to_4h -> mlp.W_in;
    mlp.dense_4h_to_h -> mlp.W_out;  input_layernorm -> ln1;
    post_attention_layernorm -> ln2 (in a parallel block it reads the block's input)
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from minillm.checkpoints.safetensors_io import SafetensorsFile
from minillm.config import ModelConfig
from minillm.errors import CheckpointError, format_bytes
from minillm.model import Transformer

# (checkpoint key, expected shape, destination array, layout): the layout is False (same
# layout), True (transposed), or a Regroup that rearranges the checkpoint's array.
Entry = tuple[str, tuple[int, ...], Callable[[], np.ndarray], "bool | Regroup"]


class Regroup:
    """A checkpoint layout that is not a plain transpose: to_ours(src), to_hf(ours)."""

    def __init__(self, to_ours: Callable, to_hf: Callable):
        self.to_ours, self.to_hf = to_ours, to_hf


def to_ours(src: np.ndarray, layout) -> np.ndarray:
    """A checkpoint tensor in minillm's layout."""
    if isinstance(layout, Regroup):
        return layout.to_ours(src)
    return src.T if layout else src


def to_hf(ours: np.ndarray, layout) -> np.ndarray:
    """A minillm array in the checkpoint's layout (contiguous)."""
    if isinstance(layout, Regroup):
        return np.ascontiguousarray(layout.to_hf(ours))
    return np.ascontiguousarray(ours.T if layout else ours)


def _mlp_entries(p: str, blk, fc: str, proj: str, d: int, m: int, linear: bool) -> Iterator[Entry]:
    """A two-matrix MLP with biases. GPT-2's Conv1D stores W [in, out] as we do; a Linear
    (GPT-NeoX) stores [out, in], so `linear=True` transposes."""
    w_in, w_out = ((m, d), (d, m)) if linear else ((d, m), (m, d))
    yield f"{p}{fc}.weight", w_in, lambda b=blk: b.mlp.W_in, linear
    yield f"{p}{fc}.bias", (m,), lambda b=blk: b.mlp.b_in, False
    yield f"{p}{proj}.weight", w_out, lambda b=blk: b.mlp.W_out, linear
    yield f"{p}{proj}.bias", (d,), lambda b=blk: b.mlp.b_out, False


def _final_entries(model: Transformer, norm: str, unembed: str, bias: bool = True) -> Iterator[Entry]:
    """The final norm's gain (and bias), and the unembedding [V, d] (a Linear: transposed)
    unless it is tied to the embedding."""
    cfg = model.cfg
    yield f"{norm}.weight", (cfg.d_model,), lambda: model.ln_final.w, False
    if bias:
        yield f"{norm}.bias", (cfg.d_model,), lambda: model.ln_final.b, False
    if not cfg.tie_embeddings:
        yield f"{unembed}.weight", (cfg.d_vocab, cfg.d_model), lambda: model.unembed.W_U, True


def gpt2_entries(model: Transformer, prefix: str) -> Iterator[Entry]:
    cfg = model.cfg
    d, m, V = cfg.d_model, cfg.d_mlp, cfg.d_vocab
    yield f"{prefix}wte.weight", (V, d), lambda: model.embed.W_E, False
    yield f"{prefix}wpe.weight", (cfg.n_ctx, d), lambda: model.pos_embed.W_pos, False
    for l, blk in enumerate(model.blocks):
        p = f"{prefix}h.{l}."
        yield f"{p}ln_1.weight", (d,), lambda b=blk: b.ln1.w, False
        yield f"{p}ln_1.bias", (d,), lambda b=blk: b.ln1.b, False
        yield f"{p}attn.c_attn.weight", (d, 3 * d), lambda b=blk: b.attn.W_QKV, False
        yield f"{p}attn.c_attn.bias", (3 * d,), lambda b=blk: b.attn.b_QKV, False
        yield f"{p}attn.c_proj.weight", (d, d), lambda b=blk: b.attn.W_O_flat, False
        yield f"{p}attn.c_proj.bias", (d,), lambda b=blk: b.attn.b_O, False
        if blk.mlp is None:  # attention-only (minillm's attn_only key): no ln_2, no mlp
            continue
        yield f"{p}ln_2.weight", (d,), lambda b=blk: b.ln2.w, False
        yield f"{p}ln_2.bias", (d,), lambda b=blk: b.ln2.b, False
        yield from _mlp_entries(p, blk, "mlp.c_fc", "mlp.c_proj", d, m, linear=False)
    yield from _final_entries(model, f"{prefix}ln_f", "lm_head")


def llama_entries(model: Transformer, prefix: str = "model.") -> Iterator[Entry]:
    """Llama and the families that kept its names (Mistral, Qwen2/3, Phi-3, OLMo-2, Gemma 2/3)."""
    cfg = model.cfg
    d, m, V, e = cfg.d_model, cfg.d_mlp, cfg.d_vocab, cfg.d_head
    h, kv = cfg.n_heads, cfg.n_kv_heads
    gemma = cfg.family == "gemma"
    fused = cfg.family == "phi3"  # Phi-3: one qkv_proj and one gate_up_proj
    # which HF norm is which of ours (Gemma and OLMo-2 name them by position)
    norms = {"ln1": "input_layernorm", "ln2": "post_attention_layernorm"}
    if gemma:
        norms = {"ln1": "input_layernorm", "ln1_post": "post_attention_layernorm",
                 "ln2": "pre_feedforward_layernorm", "ln2_post": "post_feedforward_layernorm"}
    elif not cfg.pre_norms:  # OLMo-2
        norms = {"ln1_post": "post_attention_layernorm", "ln2_post": "post_feedforward_layernorm"}
    yield f"{prefix}embed_tokens.weight", (V, d), lambda: model.embed.W_E, False
    for l, blk in enumerate(model.blocks):
        p = f"{prefix}layers.{l}."
        a = blk.attn
        for ours, theirs in norms.items():
            yield f"{p}{theirs}.weight", (d,), lambda b=blk, n=ours: getattr(b, n).w, False
        if fused:
            yield (f"{p}self_attn.qkv_proj.weight", ((h + 2 * kv) * e, d), lambda a=a: a.W_QKV,
                   True)
        for proj, which, n in (("q_proj", "Q", h), ("k_proj", "K", kv), ("v_proj", "V", kv)):
            cols = a.columns(which)
            if not fused:
                yield (f"{p}self_attn.{proj}.weight", (n * e, d),
                       lambda a=a, c=cols: a.W_QKV[:, c], True)
            if cfg.qkv_bias:
                yield f"{p}self_attn.{proj}.bias", (n * e,), lambda a=a, c=cols: a.b_QKV[c], False
        if a.q_norm is not None:
            yield f"{p}self_attn.q_norm.weight", a.q_norm.w.shape, lambda a=a: a.q_norm.w, False
            yield f"{p}self_attn.k_norm.weight", a.k_norm.w.shape, lambda a=a: a.k_norm.w, False
        yield f"{p}self_attn.o_proj.weight", (d, h * e), lambda a=a: a.W_O_flat, True
        if cfg.o_bias:
            yield f"{p}self_attn.o_proj.bias", (d,), lambda a=a: a.b_O, False
        if fused:
            yield f"{p}mlp.gate_up_proj.weight", (2 * m, d), lambda b=blk: b.mlp.W_gate_in, True
        else:
            yield f"{p}mlp.gate_proj.weight", (m, d), lambda b=blk: b.mlp.W_gate, True
            yield f"{p}mlp.up_proj.weight", (m, d), lambda b=blk: b.mlp.W_in, True
        yield f"{p}mlp.down_proj.weight", (d, m), lambda b=blk: b.mlp.W_out, True
    yield from _final_entries(model, f"{prefix}norm", "lm_head", bias=False)


def _neox_qkv(h: int, e: int, d: int) -> Regroup:
    """GPT-NeoX's query_key_value [3d, d] holds, per head, q, k and v rows: [h, 3, e, d].
    W_QKV [d, 3d] holds all q columns, then all k, then all v: [3, h, e] columns."""
    return Regroup(
        lambda w: w.reshape(h, 3, e, d).transpose(1, 0, 2, 3).reshape(3 * h * e, d).T,
        lambda w: w.T.reshape(3, h, e, d).transpose(1, 0, 2, 3).reshape(3 * h * e, d),
    )


def _neox_qkv_bias(h: int, e: int) -> Regroup:
    return Regroup(lambda b: b.reshape(h, 3, e).transpose(1, 0, 2).reshape(-1),
                   lambda b: b.reshape(3, h, e).transpose(1, 0, 2).reshape(-1))


def gpt_neox_entries(model: Transformer, prefix: str = "gpt_neox.") -> Iterator[Entry]:
    cfg = model.cfg
    d, m, V, h, e = cfg.d_model, cfg.d_mlp, cfg.d_vocab, cfg.n_heads, cfg.d_head
    yield f"{prefix}embed_in.weight", (V, d), lambda: model.embed.W_E, False
    for l, blk in enumerate(model.blocks):
        p = f"{prefix}layers.{l}."
        for ours, theirs in (("ln1", "input_layernorm"), ("ln2", "post_attention_layernorm")):
            yield f"{p}{theirs}.weight", (d,), lambda b=blk, n=ours: getattr(b, n).w, False
            yield f"{p}{theirs}.bias", (d,), lambda b=blk, n=ours: getattr(b, n).b, False
        yield (f"{p}attention.query_key_value.weight", (3 * d, d), lambda b=blk: b.attn.W_QKV,
               _neox_qkv(h, e, d))
        if cfg.qkv_bias:
            yield (f"{p}attention.query_key_value.bias", (3 * d,), lambda b=blk: b.attn.b_QKV,
                   _neox_qkv_bias(h, e))
        yield f"{p}attention.dense.weight", (d, d), lambda b=blk: b.attn.W_O_flat, True
        if cfg.o_bias:
            yield f"{p}attention.dense.bias", (d,), lambda b=blk: b.attn.b_O, False
        yield from _mlp_entries(p, blk, "mlp.dense_h_to_4h", "mlp.dense_4h_to_h", d, m, linear=True)
    yield from _final_entries(model, f"{prefix}final_layer_norm", "embed_out")


def model_entries(model: Transformer, gpt2_prefix: str = "transformer.") -> list[Entry]:
    """The checkpoint mapping of `model`'s family (GPT-2's keys with `gpt2_prefix`)."""
    if model.cfg.family == "gpt2":
        return list(gpt2_entries(model, gpt2_prefix))
    if model.cfg.family == "gpt_neox":
        return list(gpt_neox_entries(model))
    return list(llama_entries(model))


# Keys real checkpoints carry that are not parameters (buffers saved by old versions),
# and the untied-only lm_head when a model ties its embeddings.
def _ignorable(key: str, cfg: ModelConfig) -> bool:
    buffers = (".attn.bias", ".attn.masked_bias", ".rotary_emb.inv_freq")
    if cfg.family == "gpt_neox":  # old Pythia files keep their causal-mask buffers
        buffers += (".attention.bias", ".attention.masked_bias")
    untied = "embed_out.weight" if cfg.family == "gpt_neox" else "lm_head.weight"
    return key.endswith(buffers) or (cfg.tie_embeddings and key == untied)


class TensorSource:
    """All tensors of a checkpoint folder: one file, or shards listed in an index."""

    def __init__(self, folder: Path):
        self.folder = folder
        index = folder / "model.safetensors.index.json"
        if (folder / "model.safetensors").is_file():
            single = SafetensorsFile(folder / "model.safetensors")
            self.files = {name: single for name in single.names()}
        elif index.is_file():
            self.files = self._from_index(index)
        else:
            found = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
            hint = ""
            if any(n.endswith((".bin", ".pt", ".pth", ".ckpt")) for n in found):
                hint = (" (minillm reads only safetensors: pickle-based .bin/.pt files can run "
                        "code when loaded)")
            raise CheckpointError(
                f"{folder}: no model.safetensors or model.safetensors.index.json{hint}; "
                f"found: {', '.join(found) or 'nothing'}"
            )

    def _from_index(self, index: Path) -> dict[str, SafetensorsFile]:
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
            if not isinstance(weight_map, dict):
                raise TypeError
        except (ValueError, KeyError, TypeError, UnicodeDecodeError, RecursionError, OSError):
            raise CheckpointError(f"{index}: not a valid index (needs a 'weight_map')") from None
        shards: dict[str, SafetensorsFile] = {}
        files = {}
        for name, shard in weight_map.items():
            if not isinstance(shard, str) or Path(shard).name != shard or shard in ("..", "."):
                raise CheckpointError(f"{index}: shard name {shard!r} is not a plain file name")
            if shard not in shards:
                if not (self.folder / shard).is_file():
                    raise CheckpointError(f"{index}: lists shard {shard}, which is missing")
                shards[shard] = SafetensorsFile(self.folder / shard)
            if name not in shards[shard].entries:
                raise CheckpointError(f"{index}: {name} is not in {shard}")
            files[name] = shards[shard]
        return files

    def get(self, name: str) -> np.ndarray:
        return self.files[name].get(name)

    def release(self, name: str, part: np.ndarray) -> None:
        """Drop the file pages of `part` (rows of tensor `name`) from memory: it was copied."""
        self.files[name].release(part)

    def shape(self, name: str) -> tuple[int, ...]:
        return self.files[name].shape(name)


def check_checkpoint_size(cfg: ModelConfig, folder: Path) -> None:
    """Refuse, before anything is allocated, a config.json whose sizes the weight files cannot fill.

    A hostile or broken config could ask for a model of hundreds of gigabytes next to a
    1 MB checkpoint; the files' headers say how many values they hold, so compare first.
    """
    from minillm.config import n_params_lower_bound

    source = TensorSource(folder)
    held = sum(math.prod(f.entries[name][1]) for name, f in source.files.items())
    needed = n_params_lower_bound(cfg)
    if held < needed:
        raise CheckpointError(
            f"{folder}: config.json describes a model of at least {needed:,} parameters, but the "
            f"safetensors files hold only {held:,} values: config.json does not match the weights"
        )


def available_memory() -> int | None:
    """Bytes of memory this machine can still give (Linux: MemAvailable), else its physical
    memory, or None when neither can be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def check_memory(folder: Path, dtype) -> None:
    """Refuse, before anything is allocated, weights that cannot fit in memory: a checkpoint
    (sparse, or just huge) whose tensors in `dtype` need more bytes than the machine has
    available. The error names the largest tensor."""
    source = TensorSource(folder)
    itemsize = np.dtype(dtype).itemsize
    sizes = {name: math.prod(f.entries[name][1]) * itemsize for name, f in source.files.items()}
    need, available = sum(sizes.values()), available_memory()
    if available is None or need <= available:
        return
    largest = max(sizes, key=sizes.get)
    raise CheckpointError(
        f"{folder}: the weights need {format_bytes(need)} as {np.dtype(dtype)} but this machine "
        f"has {format_bytes(available)} of memory available; the largest tensor, {largest} "
        f"{list(source.shape(largest))}, alone needs {format_bytes(sizes[largest])}"
    )


def load_weights(model: Transformer, folder: Path) -> None:
    """Fill `model`'s parameters from the safetensors in `folder`, checking every tensor."""
    source = TensorSource(folder)
    prefix = "transformer." if "transformer.wte.weight" in source.files else ""
    entries = model_entries(model, prefix)
    _check_keys(entries, source, model.cfg, folder)
    nonfinite = []
    for key, _, dest, layout in entries:
        try:
            _copy(source, key, dest(), layout)
        except MemoryError:
            raise CheckpointError(f"{folder}: out of memory while copying tensor {key} of shape "
                                  f"{list(source.shape(key))}") from None
        if not np.isfinite(dest()).all():
            nonfinite.append(key)
    if nonfinite:
        warnings.warn(
            f"{folder}: non-finite values (NaN or Inf) in {', '.join(nonfinite[:10])}"
            + (f" and {len(nonfinite) - 10} more" if len(nonfinite) > 10 else ""),
            stacklevel=3,
        )


COPY_CHUNK = 16 * 2**20  # bytes of a tensor copied (then released) at a time


def _copy(source: TensorSource, key: str, target: np.ndarray, layout) -> None:
    """target[...] = the tensor in minillm's layout, COPY_CHUNK bytes of rows at a time, each
    chunk's file pages released once copied: loading holds about the model, not model + file."""
    src = source.get(key)
    if isinstance(layout, Regroup) or src.ndim != 2 or src.nbytes <= COPY_CHUNK:
        target[...] = to_ours(src, layout)
        source.release(key, src)
        return
    rows = max(1, COPY_CHUNK // max(1, src[0].nbytes))
    for i in range(0, src.shape[0], rows):
        part = src[i : i + rows]  # [rows, n] of the checkpoint's [out, in] or [in, out]
        if layout:
            target[:, i : i + rows] = part.T
        else:
            target[i : i + rows] = part
        source.release(key, part)


def _check_keys(entries: list[Entry], source: TensorSource, cfg: ModelConfig, folder) -> None:
    expected = {key: shape for key, shape, _, _ in entries}
    missing = [k for k in expected if k not in source.files]
    if missing:
        raise CheckpointError(
            f"{folder}: missing tensor {missing[0]} (expected shape {expected[missing[0]]})"
            + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
        )
    unexpected = [k for k in source.files if k not in expected and not _ignorable(k, cfg)]
    if unexpected:
        raise CheckpointError(
            f"{folder}: unexpected tensor {unexpected[0]}"
            + (f" and {len(unexpected) - 1} more" if len(unexpected) > 1 else "")
            + f" for a {cfg.model_type} model with this config.json"
        )
    for key, shape in expected.items():
        dtype = source.files[key].entries[key][0]
        if dtype not in ("F16", "BF16", "F32", "F64"):
            raise CheckpointError(f"{folder}: tensor {key} has dtype {dtype}; weights must be "
                                  "floating point (F16, BF16, F32 or F64)")
        found = source.shape(key)
        if found != shape:
            raise CheckpointError(
                f"{folder}: tensor {key} has shape {list(found)}, expected {list(shape)} "
                "(from config.json)"
            )
    for key in source.files:
        if _ignorable(key, cfg) and key in ("lm_head.weight", "embed_out.weight") and source.shape(
            key
        ) != (cfg.d_vocab, cfg.d_model):
            raise CheckpointError(f"{folder}: tensor {key} has shape "
                                  f"{list(source.shape(key))}, expected {[cfg.d_vocab, cfg.d_model]}")


def save_pretrained(model: Transformer, folder: str | Path) -> Path:
    """Write `model` as a Hugging Face folder (config.json + model.safetensors).

    The exact inverse of loading, through the same mapping: an edited model
    can be exported and loaded by transformers or by minillm again. Written
    to temporary names first, then renamed, so a crash leaves no half file.
    """

    from safetensors.numpy import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {key: to_hf(dest(), layout) for key, _, dest, layout in model_entries(model)}
    _write_atomically(folder / "model.safetensors",
                      lambda tmp: save_file(tensors, str(tmp), metadata={"format": "pt"}))
    _write_atomically(folder / "config.json",
                      lambda tmp: tmp.write_text(json.dumps(model.cfg.extra, indent=2)))
    return folder


def _write_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """write(tmp) then rename tmp -> path; on any failure (or Ctrl-C) remove tmp."""
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
