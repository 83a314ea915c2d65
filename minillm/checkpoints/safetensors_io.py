"""Reading safetensors files: a validated header, then memory-mapped tensors.

The format: 8 bytes (little-endian u64) header length N, N bytes of JSON
{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}},
then the raw little-endian data. Nothing in the file can run code.

We parse the header ourselves so that every malformed file (truncated,
offsets outside the file, overlapping tensors, unknown dtypes, absurd shapes)
is a `CheckpointError` naming the file and the tensor, checked before any
tensor is touched, and so that tensors are memory-mapped copy-on-write: a
float32 tensor costs no copy, and writing to it never changes the file.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from minillm.errors import CheckpointError

DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.uint16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8,
    "U8": np.uint8, "BOOL": np.bool_,
}
MAX_HEADER = 100 * 2**20  # the reference implementation's limit too


class SafetensorsFile:
    """One .safetensors file: `names()`, `shape(name)`, `get(name)` (float arrays)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.file_size = os.path.getsize(self.path)
            with open(self.path, "rb") as f:
                head = f.read(8)
                if len(head) < 8:
                    self._fail("file is shorter than the 8-byte header length")
                n = int.from_bytes(head, "little")
                if n > MAX_HEADER or 8 + n > self.file_size:
                    self._fail(f"header length {n} does not fit in a file of {self.file_size} bytes")
                raw = f.read(n)
        except OSError as e:
            raise CheckpointError(f"{self.path}: cannot read ({e.strerror})") from None
        try:
            header = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            self._fail(f"header is not valid JSON ({e})")
        if not isinstance(header, dict):
            self._fail("header is not a JSON object")
        self.metadata = header.pop("__metadata__", None) or {}
        self.data_start = 8 + n
        self.entries = {name: self._check_entry(name, entry) for name, entry in header.items()}
        self._check_overlaps()
        self._mmap = None

    def _fail(self, message: str):
        raise CheckpointError(f"{self.path}: not a valid safetensors file: {message}")

    def _check_entry(self, name: str, entry) -> tuple[str, tuple[int, ...], int, int]:
        if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= entry.keys():
            self._fail(f"tensor {name!r} has a malformed entry {entry!r}")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if dtype not in DTYPES:
            self._fail(f"tensor {name!r} has unknown dtype {dtype!r}")
        ints = lambda xs: isinstance(xs, list) and all(  # noqa: E731
            isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in xs
        )
        if not ints(shape) or not ints(offsets) or len(offsets) != 2:
            self._fail(f"tensor {name!r} has invalid shape {shape!r} or offsets {offsets!r}")
        begin, end = offsets
        nbytes = math.prod(shape) * np.dtype(DTYPES[dtype]).itemsize
        if end - begin != nbytes:
            self._fail(
                f"tensor {name!r} of shape {shape} and dtype {dtype} needs {nbytes} bytes, "
                f"but its offsets [{begin}, {end}] give {end - begin}"
            )
        if self.data_start + end > self.file_size:
            self._fail(
                f"tensor {name!r} ends at byte {self.data_start + end}, past the end of "
                f"the file ({self.file_size} bytes): the file is truncated"
            )
        return dtype, tuple(shape), begin, end

    def _check_overlaps(self) -> None:
        spans = sorted((b, e, name) for name, (_, _, b, e) in self.entries.items() if e > b)
        for (_, end1, name1), (begin2, _, name2) in zip(spans, spans[1:]):
            if begin2 < end1:
                self._fail(f"tensors {name1!r} and {name2!r} overlap")

    def names(self) -> list[str]:
        return list(self.entries)

    def shape(self, name: str) -> tuple[int, ...]:
        return self.entries[name][1]

    def get(self, name: str) -> np.ndarray:
        """The tensor as an array (memory-mapped copy-on-write; BF16 widened to float32)."""
        dtype, shape, begin, end = self.entries[name]
        if self._mmap is None:
            self._mmap = np.memmap(self.path, dtype=np.uint8, mode="c")
        raw = self._mmap[self.data_start + begin : self.data_start + end]
        arr = raw.view(np.dtype(DTYPES[dtype]).newbyteorder("<")).reshape(shape)
        if dtype == "BF16":  # bfloat16 is the top half of a float32
            return (arr.astype(np.uint32) << 16).view(np.float32)
        return arr
