"""Checking where a command will write, before it loads a model or computes anything."""

from __future__ import annotations

import os
from pathlib import Path

from minillm.errors import MinillmError


def _writable_folder(folder: Path, what: str) -> None:
    """`folder` exists as a directory we may write into, or can be created."""
    probe = folder
    while not probe.exists():  # the nearest existing ancestor decides
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise MinillmError(f"cannot write {what}: {probe} is a file, not a folder")
    if probe.exists() and not os.access(probe, os.W_OK | os.X_OK):
        raise MinillmError(f"cannot write {what}: the folder {probe} is not writable")


def check_output_file(path: str | Path, what: str = "the output") -> Path:
    """A file path to be written: not a folder, its folder writable (or creatable)."""
    path = Path(path)
    if path.is_dir():
        raise MinillmError(f"cannot write {what} to {path}: it is a folder; give a file name")
    _writable_folder(path.parent, f"{what} {path}")
    return path


def check_output_folder(path: str | Path, what: str = "the results") -> Path:
    """A folder to write into: not a file, writable (or creatable)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise MinillmError(f"cannot write {what} into {path}: it is a file, not a folder")
    _writable_folder(path, f"{what} into {path}")
    return path


def writing(what: str, path):
    """Context for the write itself: an OSError (disk full, permissions changed) becomes one
    MinillmError naming the path."""
    return _Writing(what, path)


class _Writing:
    def __init__(self, what: str, path):
        self.what, self.path = what, path

    def __enter__(self):
        return self

    def __exit__(self, kind, error, tb):
        if isinstance(error, OSError):
            raise MinillmError(f"cannot write {self.what} {self.path}: "
                               f"{error.strerror or error}") from None
        return False
