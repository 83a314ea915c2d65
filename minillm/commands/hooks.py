"""`minillm hooks MODEL [--json]`: the verification contract of a model.

Every hook name in forward order with its shape (symbolic and for this model) and
meaning, and the conventions (norm scale, masking, RoPE layout, GQA grouping) that
another implementation must follow; --json prints it as one JSON object, for any
language to read. Only config.json is read: no weights are loaded.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "list every hook of a model with its shape and the conventions (--json: machine-readable)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help="a catalog name, a Hugging Face id or a model folder")
    parser.add_argument("--json", action="store_true", help="print the contract as JSON")


def _dims(shape: list[str], sizes: list) -> str:
    short = {"batch": "b", "pos": "p", "key_pos": "P"}
    return "[" + ", ".join(short.get(a, str(s)) for a, s in zip(shape, sizes, strict=True)) + "]"


def config_path(model: str) -> Path:
    """The config.json of a model: a folder's, a catalog model's, or a hub id's (only that
    file is downloaded, never the weights)."""
    from minillm.checkpoints import catalog, download

    hub_id = download.parse_hub_id(model)
    if hub_id is not None and model not in catalog.load_catalog() and not Path(model).expanduser().exists():
        snap = download.hub_snapshot(*hub_id, files=[download.FileSpec("config.json")], progress=False,
                                     retry=f"`minillm hooks {model}`")
        return snap.files["config.json"]
    return catalog.resolve(model) / "config.json"


def run(args: argparse.Namespace) -> int:
    from minillm.config import ModelConfig
    from minillm.verify.contract import contract

    data = contract(ModelConfig.from_json(config_path(args.model)), model=args.model)
    if args.json:
        print(json.dumps(data, indent=1))
        return 0
    c = data["conventions"]
    gqa = c["attention"]["gqa"]
    print(f"{args.model}: {data['family']} ({data['model_type']}), {len(data['hooks'])} hooks")
    print(f"norm: {c['norm']['kind']}, eps {c['norm']['eps']:g}; hook_scale is the divisor")
    print(f"attention scale {c['attention']['scale']}; kv head of query head h: "
          f"{gqa['kv_head_of_query_head']} ({gqa['n_heads']} query heads, {gqa['n_kv_heads']} kv heads)")
    if c["rope"]:
        r = c["rope"]
        print(f"rope: rotate-half pairs (i, i + {r['rotary_dim'] // 2}), theta {r['theta']:g}")
    width = max(len(h["name"]) for h in data["hooks"])
    for h in data["hooks"]:
        shape = "[" + ", ".join(h["shape"]) + "]"
        print(f"  {h['name']:<{width}}  {shape} = {_dims(h['shape'], h['sizes'])}")
    print("details: --json, and docs/hooks.md")
    return 0
