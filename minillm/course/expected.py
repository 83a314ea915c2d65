"""Grading without the solutions: the reference's answers, recorded once and replayed.

A lesson's checks call the reference (`ref.some_function(args)`) on the same
inputs as the student's function and compare. A student copy made by
`minillm lesson handout` has no `solutions.py`, so the teacher's run records
every answer the reference gives during the checks:

    record:  checks run with ref = Recorder(solutions)     -> expected.safetensors + expected.json
    replay:  checks run with ref = Replayer(those files)   -> the same answers, no solutions

Why stored values and not hashes: the checks compare with tolerances and
explain mistakes by comparing the student's array with the expected one
("you returned the transpose", "off by one position"); a hash can only say
"different". The values are what a student could also get by running the
reference, so nothing is given away that the checks did not already print.

Matching a call to its recorded answer: by the function's name, the
structure of its arguments (types, shapes, dtypes, exact ints and strings),
and the nearest numeric fingerprint (sum, sum of |x| and two entries of each
float array). Float inputs computed on the student's machine differ from the
teacher's in the last bits (BLAS kernels differ), so an exact hash would
miss; a nearest match within 1e-3 relative does not. A call whose inputs
match nothing recorded (a check that feeds the reference something derived
from the student's answer) is an error naming the function.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from minillm.errors import MinillmError

EXPECTED_JSON = "expected.json"
EXPECTED_ARRAYS = "expected.safetensors"
_MATCH_TOLERANCE = 1e-3  # relative distance between fingerprints that still counts as the same input


def _describe(value: Any) -> tuple[list, list[float]]:
    """(structure, numeric fingerprint) of a call's arguments."""
    if isinstance(value, np.ndarray) or isinstance(value, np.generic):
        a = np.asarray(value)
        if a.dtype.kind in "iub":
            digest = hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()[:16]
            return [["int", list(a.shape), str(a.dtype), digest]], []
        if a.dtype.kind == "f":
            f = a.astype(np.float64).ravel()
            finite = np.where(np.isfinite(f), f, 0.0)  # masked scores hold -inf: fingerprint the rest
            stats = ([float(finite.sum()), float(np.abs(finite).sum()), float(finite[0]), float(finite[-1]),
                      float(np.isnan(f).sum()), float(np.isinf(f).sum())] if f.size else [])
            return [["float", list(a.shape), str(a.dtype)]], stats
        return [["array", list(a.shape), str(a.dtype)]], []
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return [[type(value).__name__, value]], []
    if isinstance(value, (int, np.integer)):
        return [["int", int(value)]], []
    if isinstance(value, (float, np.floating)):
        return [["float"]], [float(value)]
    if isinstance(value, (list, tuple)):
        structure, numbers = [[type(value).__name__, len(value)]], []
        for item in value:
            s, n = _describe(item)
            structure += s
            numbers += n
        return structure, numbers
    if isinstance(value, dict):
        structure, numbers = [["dict", sorted(map(str, value))]], []
        for key in sorted(value, key=str):
            s, n = _describe(value[key])
            structure += s
            numbers += n
        return structure, numbers
    return [[type(value).__name__]], []  # models, hook points, callables: matched by type only


def _key(name: str, args: tuple, kwargs: dict) -> tuple[str, list[float]]:
    structure, numbers = _describe([list(args), dict(kwargs)])
    return f"{name}|{json.dumps(structure, sort_keys=True, default=str)}", numbers


class _Store:
    """Recorded answers: {key: [(fingerprint, encoded answer), ...]} plus their arrays."""

    def __init__(self, calls: dict | None = None, arrays: dict | None = None):
        self.calls: dict[str, list] = calls or {}
        self.arrays: dict[str, np.ndarray] = arrays or {}

    def encode(self, value: Any) -> Any:
        if isinstance(value, (np.ndarray, np.generic)) and np.ndim(value) == 0:  # a NumPy scalar
            a = np.asarray(value)
            return {"scalar": a.item(), "dtype": str(a.dtype), "ndarray": isinstance(value, np.ndarray)}
        if isinstance(value, np.ndarray):
            name = f"a{len(self.arrays)}"
            self.arrays[name] = np.ascontiguousarray(np.asarray(value))
            return {"array": name}
        if isinstance(value, tuple):
            return {"tuple": [self.encode(v) for v in value]}
        if isinstance(value, list):
            return [self.encode(v) for v in value]
        if isinstance(value, dict):
            return {"dict": [[k, self.encode(v)] for k, v in value.items()]}
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        raise MinillmError(f"cannot record a reference answer of type {type(value).__name__}")

    def decode(self, value: Any) -> Any:
        if isinstance(value, dict):
            if "array" in value:
                return self.arrays[value["array"]].copy()
            if "scalar" in value:
                scalar = np.dtype(value["dtype"]).type(value["scalar"])
                return np.asarray(scalar) if value["ndarray"] else scalar
            if "tuple" in value:
                return tuple(self.decode(v) for v in value["tuple"])
            if "dict" in value:
                return {k: self.decode(v) for k, v in value["dict"]}
            if "callable" in value:
                return _ReplayCallable(self, value["callable"])
        if isinstance(value, list):
            return [self.decode(v) for v in value]
        return value

    def save(self, folder: Path) -> None:
        from safetensors.numpy import save_file

        save_file(self.arrays or {"empty": np.zeros(0)}, str(folder / EXPECTED_ARRAYS))
        (folder / EXPECTED_JSON).write_text(json.dumps({"format": 1, "calls": self.calls}))

    @classmethod
    def load(cls, folder: Path) -> _Store:
        from safetensors.numpy import load_file

        try:
            meta = json.loads((folder / EXPECTED_JSON).read_text())
            arrays = load_file(str(folder / EXPECTED_ARRAYS))
        except (OSError, ValueError) as e:
            raise MinillmError(f"{folder}: cannot read the recorded answers ({e})") from None
        if meta.get("format") != 1:
            raise MinillmError(f"{folder / EXPECTED_JSON}: unknown format {meta.get('format')!r}")
        return cls(meta["calls"], arrays)


class Recorder:
    """Stands in for the reference module during the teacher's run and records every answer."""

    def __init__(self, module, store: _Store | None = None, prefix: str = ""):
        self._module, self._store, self._prefix = module, store or _Store(), prefix

    def __getattr__(self, name: str):
        value = getattr(self._module, name)
        if not callable(value):  # a constant of the reference module
            self._store.calls[f"attr|{name}"] = [[[], self._store.encode(value)]]
            return value
        return self._wrap(value, self._prefix + name)

    def _wrap(self, fn: Callable, name: str) -> Callable:
        store = self._store

        def recorded(*args, **kwargs):
            key, fingerprint = _key(name, args, kwargs)
            arrays = _array_args(args, kwargs)
            before = {k: a.copy() for k, a in arrays.items()}
            answer = fn(*args, **kwargs)
            # An answer can also be a change the reference made to its inputs in place
            # (an edit of a weight array): recorded too, and replayed onto the same argument.
            changed = {k: store.encode(a) for k, a in arrays.items() if not np.array_equal(a, before[k])}
            entries = store.calls.setdefault(key, [])
            if callable(answer) and not isinstance(answer, np.ndarray):
                sub = f"{key}#{len(entries)}"
                entries.append([fingerprint, {"callable": sub}, changed])
                return self._wrap(answer, sub)
            entries.append([fingerprint, store.encode(answer), changed])
            return answer

        return recorded

    def save(self, folder: str | Path) -> None:
        self._store.save(Path(folder))


def _array_args(args: tuple, kwargs: dict) -> dict[str, np.ndarray]:
    """The writable array arguments of a call, by position ("0", "1", ...) or keyword."""
    found = {str(i): a for i, a in enumerate(args) if isinstance(a, np.ndarray)}
    found.update({k: a for k, a in kwargs.items() if isinstance(a, np.ndarray)})
    return {k: a for k, a in found.items() if a.flags.writeable}


def _find(store: _Store, name: str, args: tuple, kwargs: dict) -> Any:
    key, fingerprint = _key(name, args, kwargs)
    entries = store.calls.get(key)
    if not entries:
        raise MinillmError(
            f"the reference answer for {name.split('|')[0].split('#')[0]}(...) with these inputs was not "
            "recorded: this case needs the lesson's solutions.py (ask your teacher)")
    best, best_distance = None, np.inf
    x = np.asarray(fingerprint, np.float64)
    for recorded_fp, *answer in entries:
        y = np.asarray(recorded_fp, np.float64)
        distance = 0.0 if x.size == 0 else float(np.max(np.abs(x - y) / (np.abs(y) + 1e-6)))
        if distance < best_distance:
            best, best_distance = answer, distance
    if best_distance > _MATCH_TOLERANCE:
        raise MinillmError(
            f"the reference answer for {name.split('#')[0]}(...) was recorded for other inputs (closest "
            f"differs by {best_distance:.1e} relative): this case needs the lesson's solutions.py")
    answer, changed = best[0], (best[1] if len(best) > 1 else {})
    arrays = _array_args(args, kwargs)
    for k, value in changed.items():  # the reference's in-place changes to its inputs
        arrays[k][...] = store.decode(value)
    return store.decode(answer)


class _ReplayCallable:
    def __init__(self, store: _Store, name: str):
        self._store, self._name = store, name

    def __call__(self, *args, **kwargs):
        return _find(self._store, self._name, args, kwargs)


class Replayer:
    """Stands in for the reference module in a student copy: answers from the recording."""

    def __init__(self, folder: str | Path):
        self._store = _Store.load(Path(folder))

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        constant = self._store.calls.get(f"attr|{name}")
        if constant:
            return self._store.decode(constant[0][1])
        return _ReplayCallable(self._store, name)
