"""`minillm generate NAME "prompt"`: continue a prompt, printing tokens as they come.

The prompt is echoed, then the continuation streams to stdout piece by
piece (whole characters only, see generate.StreamDecoder); a one-line
summary (tokens, stop reason, speed) goes to stderr so that stdout holds
the text alone. With --chat the prompt is the user's message, laid out by
the model's own chat template, and only the reply is printed.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

HELP = "generate text from a prompt, streaming it as it is produced"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="NAME_OR_PATH", help="a catalog name or the path of a model folder")
    parser.add_argument("prompt", help="the text to continue (with --chat: the user's message)")
    parser.add_argument("--max-new-tokens", type=int, default=40, metavar="N",
                        help="generate at most N tokens (default 40)")
    parser.add_argument("--temperature", type=float, default=0.0, metavar="T",
                        help="0 = greedy (default); higher = more random")
    parser.add_argument("--top-k", type=int, default=None, metavar="K",
                        help="sample only from the K most likely tokens")
    parser.add_argument("--top-p", type=float, default=None, metavar="P",
                        help="sample only from the most likely tokens whose probabilities sum to P")
    parser.add_argument("--seed", type=int, default=0, metavar="S",
                        help="random seed: the same seed repeats the same text (default 0)")
    parser.add_argument("--stop", action="append", default=[], metavar="STR",
                        help="stop when the text contains STR (may be repeated)")
    parser.add_argument("--chat", action="store_true",
                        help="treat the prompt as a user message in the model's chat template")
    parser.add_argument("--system", default=None, metavar="TEXT",
                        help="with --chat: a system message before the user's")
    parser.add_argument("--float64", action="store_true", help="run in float64 (reference mode)")


def run(args: argparse.Namespace) -> int:
    import minillm
    from minillm.generate import (
        check_length,
        check_sampling,
        check_seed,
        check_stop,
        prompt_ids,
        run_generation,
    )
    from minillm.tokenizer import check_text

    # every argument is checked before the weights are loaded
    check_sampling(args.temperature, args.top_k, args.top_p)
    check_seed(args.seed)
    check_stop(args.stop or None)
    check_text(args.prompt)
    if args.system is not None:
        check_text(args.system)
    if args.max_new_tokens < 0:
        raise minillm.MinillmError(f"--max-new-tokens must be >= 0, got {args.max_new_tokens}")
    if args.system is not None and not args.chat:
        raise minillm.MinillmError("--system only applies with --chat")
    model = minillm.load(args.model, dtype=np.float64 if args.float64 else np.float32)

    def write(piece: str) -> None:
        sys.stdout.write(piece)
        sys.stdout.flush()

    ids = prompt_ids(model, args.prompt, args.chat, args.system)  # [1, p]; errors before any output
    check_length(model, ids.shape[1], args.max_new_tokens)
    start = time.perf_counter()
    times: list[float] = []
    if not args.chat:
        write(args.prompt)
    gen = run_generation(
        model, ids, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
        top_k=args.top_k, top_p=args.top_p, seed=args.seed, stop=args.stop,
        on_text=write, on_token=lambda _: times.append(time.perf_counter()),
    )
    write("\n")
    n = len(gen.new_ids)
    if n:
        first = times[0] - start
        per_token = (times[-1] - times[0]) / (n - 1) * 1e3 if n > 1 else float("nan")
        print(f"[{n} tokens, stopped at {gen.stop_reason.replace('_', ' ')}; prompt "
              f"{gen.prompt_ids.shape[1]} tokens in {first:.2f} s, then {per_token:.0f} ms/token]",
              file=sys.stderr)
    return 0
