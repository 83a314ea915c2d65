"""`minillm fetch NAME [--revision R]`: make a catalogued model available offline."""

from __future__ import annotations

import argparse

from minillm.checkpoints import catalog
from minillm.checkpoints.download import format_bytes

HELP = "download a catalogued model into the weights directory (or convert the offline one)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME", help="a catalog name (see `minillm list`)")
    parser.add_argument(
        "--revision",
        metavar="R",
        help="a branch, tag or commit of the Hugging Face repository "
        "(default: the revision pinned in the catalog)",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    entry = catalog.get(args.name)
    folder = catalog.fetch(entry.name, revision=args.revision, progress=not args.quiet)
    size = format_bytes(catalog.size_on_disk(folder))
    print(f"{entry.name}: ready in {folder} ({size})")
    return 0
