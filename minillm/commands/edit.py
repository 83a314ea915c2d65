"""`minillm edit NAME "prompt" --scale-neuron 5:123:0.04 [--revert inverse]`

Applies weight edits, runs the prompt, reverts them, and prints a table of
the clean, edited and reverted runs: how far the weights are from the clean
ones (bit-exact or in ulps), the relative residual drift, the logit change,
the KL divergence at the last position and the top tokens. `--revert all`
shows the four kinds of "revert" side by side: from the journal (exact),
by the inverse operation (rounding), with a stale KV cache (state), and with
the cache recomputed (exact).
"""

from __future__ import annotations

import argparse

import numpy as np

from minillm import edits
from minillm.errors import MinillmError

HELP = "edit weights (neurons, heads, embeddings, norms), revert, and print the drift table"

# flag -> (op builder, the fields of its SPEC, how to read each field)
OPS = {
    "scale-neuron": (edits.scale_neuron, "LAYER:NEURON:FACTOR", (int, int, float)),
    "zero-neuron": (edits.zero_neuron, "LAYER:NEURON", (int, int)),
    "scale-head": (edits.scale_head, "LAYER:HEAD:FACTOR", (int, int, float)),
    "zero-head": (edits.zero_head, "LAYER:HEAD", (int, int)),
    "reduce-embedding": (edits.reduce_embedding, "TOKEN:ALPHA", (None, float)),
    "boost-embedding": (edits.boost_embedding, "TOKEN:ALPHA", (None, float)),
    "zero-embedding": (edits.zero_embedding, "TOKEN", (None,)),
    "scale-norm": (lambda l, w, f: edits.scale_norm(None if l == "final" else int(l), w, f),
                   "LAYER:ln1|ln2:FACTOR or final:final:FACTOR", (str, str, float)),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="NAME", help="a catalog name or the path of a model folder")
    parser.add_argument("prompt", help="the text to run")
    for flag, (_, spec, _) in OPS.items():
        parser.add_argument(f"--{flag}", action="append", default=[], metavar=spec,
                            dest=flag.replace("-", "_"), help="(repeatable)")
    parser.add_argument("--revert", choices=["journal", "inverse", "all"], default="journal",
                        help="which revert to show: from the journal (bit-exact, default), by the "
                             "inverse operation, or all four kinds (incl. stale / recomputed KV cache)")
    parser.add_argument("--untie", action="store_true",
                        help="embedding edits change only the input side of tied embeddings")
    parser.add_argument("--top-k", type=int, default=5, help="top-k tokens compared (default 5)")
    parser.add_argument("--float64", action="store_true", help="run in float64")


def parse_op(flag: str, spec: str):
    """'scale-neuron', '5:123:0.04' -> edits.scale_neuron(5, 123, 0.04)."""
    build, fields, kinds = OPS[flag]
    # a token may itself contain ':'; it is always the first field, so split from the right
    parts = spec.rsplit(":", len(kinds) - 1) if kinds[0] is None else spec.split(":")
    if len(parts) != len(kinds):
        raise MinillmError(f"--{flag} {spec!r}: expected {fields}")
    values = []
    for part, kind in zip(parts, kinds):
        if kind is None:  # a token: an id if it is all digits, else text
            values.append(int(part) if part.isdigit() else part)
            continue
        try:
            values.append(kind(part))
        except ValueError:
            raise MinillmError(f"--{flag} {spec!r}: {part!r} is not a valid {kind.__name__} "
                               f"(expected {fields})") from None
    return build(*values)


def run(args: argparse.Namespace) -> int:
    import minillm
    from minillm.edit.drift import RUNS, measure_drift

    ops = []
    for flag in OPS:
        for spec in getattr(args, flag.replace("-", "_")):
            op = parse_op(flag, spec)
            if args.untie and isinstance(op, edits.scale_embedding):
                from dataclasses import replace

                op = replace(op, untie=True)
            ops.append(op)
    if not ops:
        raise MinillmError("no edit given: use e.g. --scale-neuron 5:123:0.04 (see --help)")
    from minillm.tokenizer import check_text

    check_text(args.prompt)  # before loading the model
    model = minillm.load(args.model, dtype=np.float64 if args.float64 else np.float32)
    for op in ops:
        op.plan(model)  # validate every op before running anything
        print(f"edit: {op.describe(model)}")
    runs = {"journal": ["journal-reverted"], "inverse": ["inverse-reverted"], "all": RUNS}[args.revert]
    report = measure_drift(model, args.prompt, ops, k=args.top_k, runs=runs)
    print(f"prompt: {args.prompt!r} ({model.name}, {model.dtype})")
    print(report.table())
    return 0
