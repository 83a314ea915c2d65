"""`minillm compare A B`: the first hook where two runs disagree, and by how much.

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
                        help="the dump to check (.safetensors or .npz; omit with --live)")
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


def run(args: argparse.Namespace) -> int:
    if (args.candidate is None) == (args.live is None):
        raise MinillmError("give a candidate dump B, or --live NAME (not both)")
    candidate = args.candidate
    if args.live:
        import minillm

        candidate = minillm.load(args.live, dtype=np.dtype(args.dtype))
    report = verify.compare(args.reference, candidate, atol=args.atol, rtol=args.rtol,
                             tolerances=_parse_tols(args.tol))
    print(report.table(every_hook=args.all))
    if args.plot:
        report.plot(args.plot)
        print(f"plot: {args.plot}")
    failed = not report.passed or (args.strict and report.missing_in_candidate)
    return 1 if failed else 0
