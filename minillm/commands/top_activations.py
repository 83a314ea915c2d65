"""`minillm top-activations MODEL CORPUS --layer L [--neurons ...]`: max-activating examples."""

from __future__ import annotations

import argparse

from minillm.errors import MinillmError

HELP = "the top-k contexts of MLP neurons over a corpus (text in the terminal, HTML, safetensors)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from minillm.commands.stats import add_corpus_arguments

    add_corpus_arguments(parser)
    parser.add_argument("--layer", type=int, required=True, help="the layer whose MLP neurons to rank")
    parser.add_argument("--neurons", default=None, metavar="I,J,A-B",
                        help="neurons to track (default: all of the layer)")
    parser.add_argument("--hook", default=None,
                        help="another hook of that layer with neurons last (default mlp.hook_post), e.g. "
                        "mlp.hook_pre or hook_resid_post")
    parser.add_argument("-k", "--top", type=int, default=20, help="examples per neuron (default 20)")
    parser.add_argument("--before", type=int, default=24, help="context tokens before (default 24)")
    parser.add_argument("--after", type=int, default=8, help="context tokens after (default 8)")
    parser.add_argument("--show", type=int, default=5, metavar="N",
                        help="print N examples of each of the first neurons (default 5; 0 = none)")


def parse_neurons(text: str | None) -> list[int] | None:
    if not text:
        return None
    out = []
    try:
        for part in text.split(","):
            if "-" in part.strip()[1:]:
                a, b = part.split("-", 1)
                out += list(range(int(a), int(b) + 1))
            elif part.strip():
                out.append(int(part))
    except ValueError:
        raise MinillmError(f"--neurons must be integers or ranges like 3,7,10-20; got {text!r}") from None
    return out


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import numpy as np

    import minillm
    from minillm.commands.stats import check_common
    from minillm.data import Corpus
    from minillm.data.shards import executor_from_args
    from minillm.interp import top_activations as T

    check_common(args)
    corpus = Corpus.open(args.corpus, field=args.field, split=args.split)
    model = minillm.load(args.model, dtype=np.dtype(args.dtype))
    hook = None
    if args.hook:
        short = args.hook if args.hook.startswith("blocks.") else f"blocks.{args.layer}.{args.hook}"
        hook = short
    with executor_from_args(args.workers, args.scheduler, args.out) as ex:
        top = T.top_activations(
            model,
            corpus,
            args.layer,
            parse_neurons(args.neurons),
            k=args.top,
            hook=hook,
            before=args.before,
            after=args.after,
            window=args.window,
            batch_size=args.batch_size,
            docs_per_shard=args.docs_per_shard,
            executor=ex,
            out=args.out,
            resume=args.resume,
        )
    top.view(model).save(Path(args.out) / "top.html")  # the interactive view (minillm.views.html)
    if args.show:
        for nr in top.neurons[: min(len(top.neurons), 8)]:
            print(top.text(model, int(nr), n=args.show))
    m = top.meta
    print(
        f"{len(top.neurons)} neuron(s) of {top.hook}: {m['n_tokens']} tokens in {m['seconds']:.1f} s "
        f"({m['engine']}); wrote top.safetensors, top.json, top.html to {args.out}/"
    )
    return 0
