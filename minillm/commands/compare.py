"""`minillm compare A B`: the first hook where two runs disagree, and by how much.

B may also be the text printed by llama.cpp's `llama-eval-callback` (see
minillm/verify/llamacpp.py): its nodes are compared, on the elements it printed, with
a minillm dump A or with a live run (`--live NAME --prompt TEXT`).

Exit status: 0 when every common hook is within tolerance, 1 otherwise (so it
works as a CI check); errors (different token ids, shapes, unreadable files)
also exit 1 with a message.
"""

from __future__ import annotations

import argparse

import numpy as np

from minillm import verify
from minillm.errors import MinillmError

HELP = "compare two activation dumps (or a dump and a live run) hook by hook, in forward order"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("reference", metavar="A", help="the reference dump (e.g. a float64 minillm run)")
    parser.add_argument("candidate", metavar="B", nargs="?",
                        help="the dump to check (.safetensors or .npz, or the text output of "
                        "llama.cpp's llama-eval-callback; omit with --live)")
    parser.add_argument("--live", metavar="NAME_OR_PATH",
                        help="compare A against a live minillm run of this model on A's token ids")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float64",
                        help="dtype of the --live run (default float64)")
    parser.add_argument("--atol", type=float, default=None, help="absolute tolerance for every hook")
    parser.add_argument("--rtol", type=float, default=None, help="relative tolerance for every hook")
    parser.add_argument("--tol", action="append", default=[], metavar="GLOB=ATOL[,RTOL]",
                        help="per-hook tolerance, e.g. '*hook_pattern=1e-5'; repeatable, first match wins")
    parser.add_argument("--all", action="store_true", help="one row per hook (default: per layer)")
    parser.add_argument("--plot", metavar="PNG", help="write the error-vs-depth plot here")
    parser.add_argument("--strict", action="store_true",
                        help="also fail when a hook of A is missing from B")
    parser.add_argument("--json", action="store_true",
                        help="print the report as one JSON object (the exit status is the same)")
    parser.add_argument("--prompt", metavar="TEXT",
                        help="with a llama-eval-callback dump and --live: the prompt llama.cpp ran")
    parser.add_argument("--ids", metavar="I,J,...", help="... or its token ids, comma-separated")
    parser.add_argument("--run", type=int, default=0, metavar="N",
                        help="which graph evaluation of a llama-eval-callback dump (default 0, the prompt)")


def _parse_tols(items: list[str]) -> dict[str, tuple[float, float] | float]:
    out: dict[str, tuple[float, float] | float] = {}
    for item in items:
        glob, _, value = item.partition("=")
        try:
            nums = [float(v) for v in value.split(",")]
        except ValueError:
            nums = []
        if not glob or len(nums) not in (1, 2):
            raise MinillmError(f"--tol wants GLOB=ATOL or GLOB=ATOL,RTOL, got {item!r}")
        out[glob] = nums[0] if len(nums) == 1 else (nums[0], nums[1])
    return out


def _run_llamacpp(args: argparse.Namespace, text_dump: str, reference: str | None) -> int:
    """A llama-eval-callback dump against a minillm dump, or against a live run (--live)."""
    import json

    from minillm.commands._ids import prompt_or_ids
    from minillm.verify.llamacpp import compare_eval_callback

    atol = 5e-5 if args.atol is None else args.atol
    rtol = 1e-4 if args.rtol is None else args.rtol
    if args.live:
        import minillm

        tokens = prompt_or_ids(args.prompt, args.ids)
        ref = minillm.load(args.live, dtype=np.dtype(args.dtype))
        report = compare_eval_callback(ref, text_dump, tokens, run=args.run, atol=atol, rtol=rtol)
    else:
        report = compare_eval_callback(reference, text_dump, run=args.run, atol=atol, rtol=rtol)
    print(json.dumps(report.to_json()) if args.json else report.table())
    return 0 if report.passed else 1


def run(args: argparse.Namespace) -> int:
    from minillm.verify.llamacpp import is_eval_callback_dump

    texts = [x for x in (args.reference, args.candidate) if x and is_eval_callback_dump(x)]
    if texts:
        others = [x for x in (args.reference, args.candidate) if x and x not in texts]
        if bool(others) == bool(args.live):
            raise MinillmError("compare a llama-eval-callback dump with a minillm dump, or with --live "
                               "NAME --prompt TEXT (one of the two)")
        return _run_llamacpp(args, texts[0], others[0] if others else None)
    if (args.candidate is None) == (args.live is None):
        raise MinillmError("give a candidate dump B, or --live NAME (not both)")
    candidate = args.candidate
    if args.live:
        import minillm

        candidate = minillm.load(args.live, dtype=np.dtype(args.dtype))
    report = verify.compare(args.reference, candidate, atol=args.atol, rtol=args.rtol,
                             tolerances=_parse_tols(args.tol))
    if args.json:
        import json

        print(json.dumps(report.to_json()))
    else:
        print(report.table(every_hook=args.all))
    if args.plot:
        report.plot(args.plot)
        print(f"plot: {args.plot}")
    failed = not report.passed or (args.strict and report.missing_in_candidate)
    return 1 if failed else 0
