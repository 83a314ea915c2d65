"""The one exception type minillm raises for a user's mistake or a bad file.

Every message names what is at fault (file, tensor, layer, index) and, where
possible, what to do about it. The helpers at the end write the parts messages
share: the "did you mean" hint and sizes in bytes.
"""

import difflib
from collections.abc import Iterable

import numpy as np


class MinillmError(Exception):
    """A clear, actionable error: bad input, a bad file, a missing model."""


class CheckpointError(MinillmError):
    """A weights, config or tokenizer file is missing, malformed or inconsistent."""


class ConfigError(CheckpointError):
    """A config.json names an unknown architecture or an unsupported option."""


class NetworkError(MinillmError):
    """A download failed (no network, HTTP error, checksum mismatch)."""


def suggest(name: str, choices: Iterable[str], n: int = 1, cutoff: float = 0.6) -> list[str]:
    """The choices closest to a mistyped name (best first; empty when nothing is close)."""
    return difflib.get_close_matches(name, list(choices), n=n, cutoff=cutoff)


def did_you_mean(name: str, choices: Iterable[str], n: int = 1, cutoff: float = 0.6) -> str:
    """"; did you mean 'x'?" for a mistyped name, or "": the one hint every error message uses."""
    close = suggest(name, choices, n, cutoff)
    return f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def check_index(value: object, name: str, size: int, what: str, where: str = "") -> int:
    """An integer index in 0..size-1, or a MinillmError that says what exists:
    "layer 40 does not exist: the model has 30 layers (0–29)"."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise MinillmError(f"{name} must be an integer, got {value!r}")
    if not 0 <= value < size:
        raise MinillmError(
            f"{name} {value} does not exist{where}: the model has {size} {what} (0–{size - 1})"
        )
    return int(value)


def format_bytes(n: int | None) -> str:
    """A size for people: 548.1 MB, 2.2 GB; '?' when unknown."""
    if n is None:
        return "?"
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")
