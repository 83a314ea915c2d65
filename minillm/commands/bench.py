"""`minillm bench NAME [--vs torch] [--json out.json]`: time load, prefill, decode, hooks and a sweep."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HELP = "time load, prefill, decoding, hooks and a patching sweep (optionally against torch)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from minillm.commands.benchmark import PHASES, Settings

    d = Settings()
    parser.add_argument("model", metavar="NAME_OR_PATH", help="a catalog name or a model folder")
    parser.add_argument("--vs", choices=["torch"], default=None,
                        help="also run the same work with transformers + torch (optional extra: "
                        "pip install torch==2.13.0 transformers) and print ratios minillm/torch")
    parser.add_argument("--json", metavar="FILE", help="write every measurement to this JSON file")
    parser.add_argument("--runs", type=int, default=d.runs, help=f"timed runs per phase (default {d.runs})")
    parser.add_argument("--warmup", type=int, default=d.warmup, help="untimed runs first (default 1)")
    parser.add_argument("--sweep-runs", type=int, default=d.sweep_runs,
                        help="timed runs of the slow one-run-per-cell sweep (default 1)")
    parser.add_argument("--sweep-sample", type=int, default=d.sweep_sample,
                        help="separate-run sweep: time this many cells and scale to all (0 = all; "
                        f"default {d.sweep_sample})")
    parser.add_argument("--threads", type=int, default=0,
                        help="BLAS/OpenMP threads (default: $OPENBLAS_NUM_THREADS, else all CPUs)")
    parser.add_argument("--prefill-tokens", type=int, default=d.prefill_tokens)
    parser.add_argument("--prompt-tokens", type=int, default=d.prompt_tokens,
                        help="prompt length before decoding")
    parser.add_argument("--new-tokens", type=int, default=d.new_tokens, help="tokens to decode")
    parser.add_argument("--sweep-positions", type=int, default=d.sweep_positions)
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 1 timed run, no warm-up, short machine measurements")
    parser.add_argument("--corpus", action="store_true",
                        help="instead of the phases: corpus statistics tokens/s with 1 process and with "
                        "--corpus-workers Dask workers (1 thread each), peak memory per worker, and a paper "
                        "estimate for 100M tokens (needs pip install 'minillm[corpus]')")
    parser.add_argument("--corpus-tokens", default="10000,100000,1000000", metavar="N1,N2,...",
                        help="generated corpus sizes in tokens (default 10000,100000,1000000)")
    parser.add_argument("--corpus-workers", type=int, default=2, help="Dask workers (default 2)")
    parser.add_argument("--corpus-hooks", default=None, metavar="PATTERN",
                        help="hooks to summarise (default blocks.3.mlp.hook_post: the forward pass stops "
                        "after block 3, so 1M tokens take minutes)")
    parser.add_argument("--corpus-memory", action="store_true",
                        help="a memory run: hook blocks.0.hook_resid_pre, so the forward pass stops at the "
                        "embedding and 1M tokens take about a minute per engine; read the peak RSS")
    parser.add_argument("--corpus-docs-per-shard", type=int, default=None, metavar="N",
                        help="documents per shard (default: about 8 shards per worker, 4 to 64 documents)")
    parser.add_argument("--phases", default=",".join(PHASES),
                        help=f"comma-separated subset of {','.join(PHASES)}")


def run(args: argparse.Namespace) -> int:
    from minillm.commands.benchmark import Settings, format_report, run_bench
    from minillm.errors import MinillmError

    for flag in ("runs", "prefill_tokens", "prompt_tokens", "new_tokens", "sweep_positions",
                 "sweep_runs"):
        if getattr(args, flag) < 1:
            raise MinillmError(f"--{flag.replace('_', '-')} must be at least 1")
    if args.corpus:
        return run_corpus(args)
    if args.warmup < 0 or args.threads < 0:
        raise MinillmError("--warmup and --threads must not be negative")
    settings = Settings(runs=args.runs, warmup=args.warmup, sweep_runs=args.sweep_runs,
                        sweep_sample=args.sweep_sample,
                        threads=args.threads, prefill_tokens=args.prefill_tokens,
                        prompt_tokens=args.prompt_tokens, new_tokens=args.new_tokens,
                        sweep_positions=args.sweep_positions)
    if args.quick:
        settings.runs, settings.warmup, settings.sweep_runs = 1, 0, 1
        settings.machine_seconds, settings.machine_mb = 0.02, 16
    phases = tuple(p.strip() for p in args.phases.split(",") if p.strip())
    report = run_bench(args.model, settings, vs_torch=args.vs == "torch", phases=phases,
                       progress=lambda msg: print(msg, file=sys.stderr, flush=True))
    print(format_report(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
        print(f"wrote {args.json}")
    return 0


def run_corpus(args: argparse.Namespace) -> int:
    """`minillm bench MODEL --corpus` (minillm.data.benchmark)."""
    from minillm.data.benchmark import MEMORY_HOOKS, format_report, run_corpus_bench
    from minillm.errors import MinillmError

    try:
        sizes = [int(x) for x in args.corpus_tokens.split(",") if x.strip()]
    except ValueError:
        raise MinillmError(f"--corpus-tokens must be comma-separated integers, got "
                           f"{args.corpus_tokens!r}") from None
    if not sizes or min(sizes) < 1 or args.corpus_workers < 2:
        raise MinillmError("--corpus-tokens needs positive sizes and --corpus-workers at least 2")
    if args.corpus_docs_per_shard is not None and args.corpus_docs_per_shard < 1:
        raise MinillmError("--corpus-docs-per-shard must be at least 1")
    hooks = args.corpus_hooks or (MEMORY_HOOKS if args.corpus_memory else None)
    report = run_corpus_bench(args.model, sizes, args.corpus_workers, hooks,
                              docs_per_shard=args.corpus_docs_per_shard,
                              progress=lambda msg: print(msg, file=sys.stderr, flush=True),
                              json_path=args.json)
    print(format_report(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
        print(f"wrote {args.json}")
    return 0
