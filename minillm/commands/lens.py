"""`minillm lens NAME "prompt"` (or `--ids 1,2,3`): the logit lens in the terminal, and its plot.

Prints, for the last position, the top-k next tokens the residual stream
would give after every layer (the final norm applied as the model applies
it), the probability and rank of `--target` tokens, and the top-1 token of
every layer × position; then saves the layer × position plot (and the
targets' curves) as PNG.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from minillm.commands._ids import IDS_HELP, prompt_or_ids

HELP = "logit lens: decode the residual stream after every layer (table and plot)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="NAME_OR_PATH", help="a catalog name or the path of a model folder")
    parser.add_argument("prompt", nargs="?", help="the text to analyse (or use --ids)")
    parser.add_argument("--ids", metavar="I,J,...", help=IDS_HELP)
    parser.add_argument("--target", action="append", default=[], metavar="TOKEN",
                        help="follow this single-token text across layers, e.g. ' Paris', or a token "
                        "id (repeatable)")
    parser.add_argument("-k", type=int, default=3, metavar="K", help="top-K tokens per layer (default 3)")
    parser.add_argument("--stream", choices=["resid", "attn_out", "mlp_out"], default="resid",
                        help="decode the residual stream (default) or each block's attention/MLP write")
    parser.add_argument("--pos", type=int, default=-1, help="position of the table (default -1, the last)")
    parser.add_argument("--out", default="out/lens.png", metavar="PNG",
                        help="where to save the plot (default out/lens.png; targets go to *_targets.png)")
    parser.add_argument("--no-grid", action="store_true", help="skip the layer × position grid")
    parser.add_argument("--float64", action="store_true", help="run in float64 (reference mode)")


def run(args: argparse.Namespace) -> int:
    import minillm
    from minillm.interp.lens import logit_lens

    if args.k < 1:
        raise minillm.MinillmError(f"-k must be at least 1, got {args.k}")
    from minillm.commands._outputs import check_output_file, writing

    prompt = prompt_or_ids(args.prompt, args.ids)  # checked before loading
    check_output_file(args.out, "the plot")
    model = minillm.load(args.model, dtype=np.float64 if args.float64 else np.float32)
    n = (model.to_tokens(prompt) if isinstance(prompt, str) else prompt).shape[1]
    if not -n <= args.pos < n:
        raise minillm.MinillmError(f"--pos {args.pos} does not exist: the prompt has {n} tokens")
    # a target that is a number is a token id (the only way without a tokenizer)
    targets = [int(t) if t.strip().lstrip("-").isdigit() and model.tokenizer is None else t
               for t in args.target]
    lens = logit_lens(model, prompt, targets=targets, k=args.k, stream=args.stream)
    print(lens.table(pos=args.pos))
    if not args.no_grid:
        print("\ntop-1 token per layer × position:")
        print(lens.grid())
    for t in targets:
        layer = lens.first_layer_top1(t, pos=args.pos)
        print(f"\n{t!r} is ranked first " + (f"from {layer} on" if layer else "at no final layer"))
    out = Path(args.out)
    with writing("the plot", out):
        lens.plot(out)
    print(f"\nplot: {out}")
    if targets:
        targets_png = out.with_name(out.stem + "_targets.png")
        lens.plot_targets(targets_png, pos=args.pos)
        print(f"plot: {targets_png}")
    return 0
