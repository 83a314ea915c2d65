"""`minillm demo`: the offline model's next-token distribution, then a short continuation.

What a language model computes, in one screen: for the prompt "It was a
dark and stormy", the ten most likely next tokens with their probabilities,
then a greedy continuation streamed token by token.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

HELP = "show the offline model's top-10 next tokens for a prompt and a short continuation"

PROMPT = "It was a dark and stormy"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="smollm2-135m", metavar="NAME_OR_PATH",
                        help="the model to use (default: the offline smollm2-135m)")
    parser.add_argument("--prompt", default=PROMPT, help=f"the prompt (default {PROMPT!r})")
    parser.add_argument("--max-new-tokens", type=int, default=24, metavar="N",
                        help="length of the greedy continuation (default 24)")


def top_tokens_table(model, logits: np.ndarray, k: int = 10) -> str:
    """The k most likely next tokens as an aligned table.   logits [V] -> text"""
    from minillm import ops

    probs = ops.softmax(np.asarray(logits, np.float64))  # [V]
    top = np.argsort(-probs, kind="stable")[:k]
    tokens = [repr(model.to_string([int(i)])) for i in top]
    width = max(len("token"), *(len(t) for t in tokens))
    lines = [f"{'rank':>4}  {'token':<{width}}  {'id':>6}  {'prob':>7}  {'logit':>7}",
             f"{'-' * 4}  {'-' * width}  {'-' * 6}  {'-' * 7}  {'-' * 7}"]
    for rank, (i, tok) in enumerate(zip(top, tokens), 1):
        lines.append(f"{rank:>4}  {tok:<{width}}  {int(i):>6}  {probs[i]:>7.2%}  {logits[i]:>7.2f}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    import minillm

    model = minillm.load(args.model)
    print(f"{model}\n")
    logits = model(args.prompt, last_only=True)[0, -1]  # [V]
    print(f"Prompt: {args.prompt!r}\nMost likely next tokens:\n")
    print(top_tokens_table(model, logits))
    print("\nGreedy continuation:\n")

    def write(piece: str) -> None:
        sys.stdout.write(piece)
        sys.stdout.flush()

    write(args.prompt)
    model.generate(args.prompt, max_new_tokens=args.max_new_tokens, on_text=write)
    write("\n")
    return 0
