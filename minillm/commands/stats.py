"""`minillm stats MODEL CORPUS --hooks PATTERN -o DIR`: activation statistics over a corpus."""

from __future__ import annotations

import argparse

from minillm.errors import MinillmError

HELP = "count, mean, variance, min, max and quantiles (median) of hooks over a corpus, in shards"


def add_corpus_arguments(parser: argparse.ArgumentParser) -> None:
    """MODEL CORPUS... and how the corpus is read (shared with top-activations)."""
    from minillm.data.shards import add_engine_arguments

    parser.add_argument("model", metavar="MODEL", help="a catalog name or a model folder")
    parser.add_argument(
        "corpus",
        nargs="+",
        metavar="CORPUS",
        help="text files (a document = a paragraph; see --split) or JSONL files (*.jsonl; text in --field)",
    )
    parser.add_argument("--field", default=None, help="JSONL: the field holding the text (default 'text')")
    parser.add_argument("--split", choices=["paragraph", "line", "file"], default="paragraph",
                        help="text files: what one document is (default: a blank-line separated paragraph)")
    parser.add_argument("--window", type=int, default=128, help="tokens per window (default 128)")
    parser.add_argument("--batch-size", type=int, default=8, help="windows per forward pass (default 8)")
    parser.add_argument("--docs-per-shard", type=int, default=64,
                        help="documents per shard, the unit of work and of --resume (default 64)")
    parser.add_argument("-o", "--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    add_engine_arguments(parser)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_corpus_arguments(parser)
    parser.add_argument("--hooks", required=True, metavar="PATTERN",
                        help="hook names or glob patterns, comma-separated, e.g. 'blocks.*.mlp.hook_post'")
    parser.add_argument("--positions", choices=["all", "last"], default="all",
                        help="every real token, or the last real token of each text")
    parser.add_argument("--by", choices=["neuron", "head", "hook"], default="neuron",
                        help="one statistic per entry (neuron / dimension), per head, or per hook")
    parser.add_argument("--no-quantiles", action="store_true",
                        help="skip the KLL quantile sketches (no median; faster)")
    parser.add_argument("--k", type=int, default=200,
                        help="KLL sketch size; rank error 1.33%% at the default 200")


def check_common(args) -> None:
    for flag in ("window", "batch_size", "docs_per_shard", "workers"):
        if getattr(args, flag) < 1:
            raise MinillmError(f"--{flag.replace('_', '-')} must be at least 1, got {getattr(args, flag)}")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    import minillm
    from minillm.data import Corpus
    from minillm.data.shards import executor_from_args
    from minillm.interp import stats as S

    check_common(args)
    corpus = Corpus.open(args.corpus, field=args.field, split=args.split)
    model = minillm.load(args.model, dtype=np.dtype(args.dtype))
    with executor_from_args(args.workers, args.scheduler, args.out) as ex:
        st = S.corpus_stats(
            model,
            corpus,
            args.hooks,
            window=args.window,
            batch_size=args.batch_size,
            positions=args.positions,
            by=args.by,
            quantiles=not args.no_quantiles,
            k=args.k,
            docs_per_shard=args.docs_per_shard,
            executor=ex,
            out=args.out,
            resume=args.resume,
        )
    m = st.meta
    print(
        f"{len(st.hooks)} hook(s), {m['n_tokens']} tokens in {m['n_texts']} texts, {m['seconds']:.1f} s "
        f"({m['tokens_per_s']} tokens/s, {m['engine']})"
    )
    for name, h in list(st.hooks.items())[:6]:
        line = f"  {name} [{', '.join(map(str, h.shape)) or 'whole hook'}]: {h.count} samples"
        if h.count:
            line += f", mean in [{h.mean.min():.3g}, {h.mean.max():.3g}]"
        print(line)
    err = f"; quantiles within ±{m['rank_error']:.4f} in rank" if m["rank_error"] else ""
    print(f"wrote {args.out}/stats.safetensors and stats.json{err}")
    return 0
