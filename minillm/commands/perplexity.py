"""`minillm perplexity MODEL FILE`: sliding-window perplexity of a text file.

Progress (scored tokens, tokens/s, perplexity so far) streams to stderr; the
result goes to stdout, as text or, with --json, as one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HELP = "perplexity of a text file, with a sliding window (tokens/s shown as it runs)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help="a catalog name, a Hugging Face id or a model folder")
    parser.add_argument("file", metavar="FILE", type=Path, help="a UTF-8 text file")
    parser.add_argument("--window", type=int, default=None, metavar="N",
                        help="tokens per forward pass (default: min(context length, 1024))")
    parser.add_argument("--stride", type=int, default=None, metavar="S",
                        help="how far each window moves (default: window // 2); each token is scored "
                        "once, with at least window - stride tokens of context")
    parser.add_argument("--max-tokens", type=int, default=None, metavar="N",
                        help="score only the first N tokens of the file")
    parser.add_argument("--float64", action="store_true", help="run in float64 (reference mode)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    import minillm
    from minillm.errors import MinillmError
    from minillm.interp.perplexity import sliding_window_nll

    for name in ("window", "stride", "max_tokens"):  # checked before loading the model
        value = getattr(args, name)
        if value is not None and value < (2 if name != "stride" else 1):
            raise MinillmError(f"--{name.replace('_', '-')} must be at least {2 if name != 'stride' else 1}")
    try:
        text = args.file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise MinillmError(f"cannot read {args.file} as UTF-8 text: {exc}") from None
    if not text:
        raise MinillmError(f"{args.file} is empty")
    model = minillm.load(args.model, dtype=np.float64 if args.float64 else np.float32)
    ids = model.to_tokens(text)[0]
    if args.max_tokens is not None:
        ids = ids[: args.max_tokens]
    result = sliding_window_nll(model, ids, args.window, args.stride, progress=not args.quiet)
    summary = {"model": args.model, "file": str(args.file), **result.summary()}
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"perplexity {result.perplexity:.4f}  (mean loss {result.mean_nll:.4f} nats over "
              f"{result.n_tokens} tokens; window {result.window}, stride {result.stride})")
        print(f"{result.seconds:.1f} s, {result.tokens_per_second:.0f} tokens/s", file=sys.stderr)
    return 0
