"""`minillm fetch NAME|ID [--revision R] [--verify]`: make a model available offline."""

from __future__ import annotations

import argparse

from minillm.checkpoints import catalog
from minillm.errors import format_bytes

HELP = "download a model into the Hugging Face cache (or convert the offline one)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "name", metavar="NAME",
        help="a catalog name (see `minillm list`) or a Hugging Face id such as "
        "openai-community/gpt2, optionally with @revision",
    )
    parser.add_argument(
        "--revision",
        metavar="R",
        help="a branch, tag or commit of the Hugging Face repository "
        "(default: the revision pinned in the catalog, else main)",
    )
    parser.add_argument(
        "--verify", action="store_true",
        help="hash every file again (SHA-256) and fetch or convert again what does not match",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    folder = catalog.fetch(args.name, revision=args.revision, progress=not args.quiet,
                           verify=args.verify)
    size = format_bytes(catalog.size_on_disk(folder))
    checked = "sizes and SHA-256 checked" if args.verify else "sizes checked"
    print(f"{args.name}: ready in {folder} ({size}; {checked})")
    return 0
