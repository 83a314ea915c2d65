"""`minillm list`: the catalog, and which models are present locally."""

from __future__ import annotations

import argparse

from minillm.checkpoints import catalog
from minillm.checkpoints.paths import weights_dir
from minillm.errors import format_bytes

HELP = "list the catalogued models and which of them are present locally"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    del parser  # no options


def _download(entry: catalog.CatalogEntry) -> str:
    if entry.offline:
        return "offline"
    if entry.download_size is not None:
        return format_bytes(entry.download_size)
    known = entry.known_size
    return f"{format_bytes(known)}+" if known else "?"


def _local(entry: catalog.CatalogEntry) -> str:
    try:
        state = catalog.status(entry.name)
    except catalog.CheckpointError as exc:  # e.g. a symbolic link out of the weights directory
        return f"refused ({exc})"
    folder = catalog.model_dir(entry.name)
    if state == "complete":
        folder = catalog.located(entry.name) or folder
        return f"yes ({format_bytes(catalog.size_on_disk(folder))})"
    if state == "partial":
        return f"partial ({format_bytes(catalog.size_on_disk(folder))})"
    if entry.offline and not catalog.offline_package_installed():
        return f"no ({catalog.OFFLINE} not installed)"
    return "no"


def table(entries: list[catalog.CatalogEntry]) -> str:
    """The catalog as an aligned text table."""
    header = ("NAME", "FAMILY", "PARAMS", "DOWNLOAD", "LOCAL", "DESCRIPTION")
    rows = [(e.name, e.family, e.params, _download(e), _local(e), e.description) for e in entries]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    lines = []
    for row in [header, *rows]:
        cells = [cell.ljust(w) for cell, w in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    del args
    print(table(list(catalog.load_catalog().values())))
    print(f"\nweights directory: {weights_dir()}")
    print("fetch a model with `minillm fetch NAME`; `minillm info NAME` describes it.")
    return 0
