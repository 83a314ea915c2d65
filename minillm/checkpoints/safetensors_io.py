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
import mmap
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
MAX_DIMS = 32  # NumPy's own limit is 32 (NumPy 1) or 64 (NumPy 2)
MAX_ELEMENTS = 2**48  # per tensor and per dimension: far beyond any real weight, far below int64


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
        except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError, or a 5000-digit int
            self._fail(f"header is not valid JSON ({e})")
        except RecursionError:
            self._fail("header is not valid JSON (nested too deeply)")
        if not isinstance(header, dict):
            self._fail("header is not a JSON object")
        self.metadata = header.pop("__metadata__", None) or {}
        if not isinstance(self.metadata, dict) or not all(
            isinstance(v, str) for v in self.metadata.values()
        ):
            self._fail("__metadata__ must be an object of strings")
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
        if not isinstance(dtype, str) or dtype not in DTYPES:
            self._fail(f"tensor {name!r} has unknown dtype {dtype!r}")
        ints = lambda xs: isinstance(xs, list) and all(  # noqa: E731
            isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in xs
        )
        if not ints(shape) or not ints(offsets) or len(offsets) != 2:
            self._fail(f"tensor {name!r} has invalid shape {shape!r} or offsets {offsets!r}")
        begin, end = offsets
        # Python ints do not overflow: check sizes here, before NumPy (int64) sees them.
        if len(shape) > MAX_DIMS:
            self._fail(f"tensor {name!r} has {len(shape)} dimensions (at most {MAX_DIMS})")
        n_elements = math.prod(shape)
        if math.prod(n for n in shape if n) > MAX_ELEMENTS:  # zeros aside: NumPy checks that too
            self._fail(
                f"tensor {name!r} declares shape {shape} ({n_elements} elements), more than "
                f"an array can hold (at most 2^48 elements)"
            )
        if begin > end:
            self._fail(f"tensor {name!r} has offsets [{begin}, {end}] that end before they begin")
        nbytes = n_elements * np.dtype(DTYPES[dtype]).itemsize
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
        if name not in self.entries:
            raise CheckpointError(f"{self.path}: has no tensor {name!r}")
        return self.entries[name][1]

    def get(self, name: str) -> np.ndarray:
        """The tensor as an array (memory-mapped copy-on-write; BF16 widened to float32)."""
        if name not in self.entries:
            raise CheckpointError(f"{self.path}: has no tensor {name!r}")
        dtype, shape, begin, end = self.entries[name]
        if end == begin:  # an empty tensor: nothing to map (and an empty file cannot be mapped)
            return np.zeros(shape, np.float32 if dtype == "BF16" else DTYPES[dtype])
        if self._mmap is None:
            try:
                with open(self.path, "rb") as f:  # copy-on-write: writes never reach the file
                    self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
                self._mmap = np.frombuffer(self._map, dtype=np.uint8)
            except (OSError, ValueError) as e:
                raise CheckpointError(f"{self.path}: cannot map the file ({e})") from None
        raw = self._mmap[self.data_start + begin : self.data_start + end]
        if raw.size != end - begin:  # the file shrank after its header was checked
            self._fail(f"tensor {name!r} is cut short: the file changed while it was read")
        arr = raw.view(np.dtype(DTYPES[dtype]).newbyteorder("<")).reshape(shape)
        if dtype == "BF16":  # bfloat16 is the top half of a float32
            return (arr.astype(np.uint32) << 16).view(np.float32)
        return arr

    def release(self, part: np.ndarray) -> None:
        """Let the OS drop the pages of `part` (a tensor from `get`, or rows of one) once it
        has been copied elsewhere: its memory then no longer counts for this process, so
        loading peaks at about the model's size instead of model + file. The data stays
        readable (it is read from the file again if touched). Only whole pages inside
        `part` are dropped; anything that is not a view of this file is ignored. Never
        call it on a part that was written to (a written page would revert to the file).
        """
        if self._mmap is None or not hasattr(mmap, "MADV_DONTNEED") or part.size == 0:
            return
        base = self._mmap.__array_interface__["data"][0]
        start = part.__array_interface__["data"][0] - base
        if not (0 <= start and start + part.nbytes <= self._mmap.size) or not part.flags.c_contiguous:
            return
        page = mmap.PAGESIZE
        first, last = -(-start // page) * page, (start + part.nbytes) // page * page
        if last > first:
            self._map.madvise(mmap.MADV_DONTNEED, first, last - first)
