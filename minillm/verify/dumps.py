"""Dumps: one run's activations in one safetensors file, written and read.

    from minillm import verify
    verify.dump("smollm2-135m", "It was a dark and stormy", "ref.safetensors", dtype="float64")
    d = verify.load_dump("ref.safetensors")     # Dump: {hook name: array}, input_ids, metadata

A **dump** is one safetensors file: each activation keyed by its hook name
(`blocks.3.hook_resid_post`, ...), plus `input_ids` [b, p] (int64) and
string metadata (model, revision, prompt, token ids, dtype, minillm version).
Any implementation can write one (the "plain format"; see docs/verifying.md):

    np.savez("theirs.npz", input_ids=ids, **{"blocks.0.hook_resid_post": x0, ...})

Outputs of Hugging Face and TransformerLens become Dumps in `minillm.verify.name_maps`;
`minillm.verify.comparison` compares two of them.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from minillm.errors import CheckpointError, MinillmError, format_bytes
from minillm.verify.names import FINAL_OUT, forward_key, hook_shape, select_hooks

FORMAT = "minillm-dump"
FORMAT_VERSION = "1"
RESERVED = ("input_ids",)  # non-activation keys of a dump
DEFAULT_MAX_BYTES = 2**30  # dumps above 1 GiB need allow_large=True / --force


@dataclass
class Dump:
    """The activations of one run: {hook name: array} in forward order, plus what made them."""

    acts: dict[str, np.ndarray]
    input_ids: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def label(self) -> str:
        return str(self.path) if self.path else str(self.meta.get("source", "in-memory dump"))

    @property
    def str_tokens(self) -> list[str] | None:
        toks = self.meta.get("str_tokens")
        return toks if isinstance(toks, list) else None


def estimate_bytes(model, names: Sequence[str], b: int, p: int, dtype=None) -> dict[str, int]:
    """Bytes each named activation will take in a dump of b x p tokens."""
    itemsize = np.dtype(dtype or model.dtype).itemsize
    return {n: math.prod(hook_shape(model.cfg, n, b, p)) * itemsize for n in names}


def _tokens(model, prompt) -> np.ndarray:
    """A prompt (text, or ids [p] or [b, p]) -> int64 ids [b, p]."""
    if isinstance(prompt, str):
        return model.to_tokens(prompt)
    ids = np.asarray(prompt)
    if ids.ndim == 1:
        ids = ids[None, :]
    if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
        raise MinillmError(f"the prompt must be text or integer token ids [p] or [b, p], got {ids.shape}")
    return ids.astype(np.int64)


def _revision(model) -> str:
    try:
        from minillm.checkpoints import catalog

        entry = catalog.load_catalog().get(getattr(model, "name", ""))
    except MinillmError:
        return ""
    if entry is None:
        return ""
    return entry.revision or f"converted from {entry.source}"


def final_norm_out(model, normalized: np.ndarray) -> np.ndarray:
    """The final norm's output (gain and bias applied) from ln_final.hook_normalized."""
    out = normalized * model.ln_final.gain
    return out if model.ln_final.b is None else out + model.ln_final.b


def run_dump(model, prompt, hooks=None, fwd_hooks=(), allow_large: bool = False,
             max_bytes: int = DEFAULT_MAX_BYTES, note: str = "") -> Dump:
    """Run `model` on `prompt` and keep the selected activations, in memory (see `dump`)."""
    import minillm

    ids = _tokens(model, prompt)
    names = select_hooks([n for n in model.hook_names()  # attn.hook_result: only with the setting
                          if model.use_attn_result or not n.endswith("attn.hook_result")], hooks)
    sizes = estimate_bytes(model, names, *ids.shape)
    total = sum(sizes.values())
    if total > max_bytes:
        biggest = max(sizes, key=sizes.get)
        message = (
            f"this dump would hold about {format_bytes(total)} of activations (more than "
            f"{format_bytes(max_bytes)}; {biggest} alone is {format_bytes(sizes[biggest])})"
        )
        if not allow_large:
            raise MinillmError(
                f"{message}; narrow the hooks (e.g. hooks='blocks.*.hook_resid_post') or a "
                f"shorter prompt, or pass allow_large=True (command line: --force)"
            )
        warnings.warn(message, stacklevel=3)
    wanted = [n for n in names if n != FINAL_OUT]
    if FINAL_OUT in names and "ln_final.hook_normalized" not in wanted:
        wanted.append("ln_final.hook_normalized")
    _, cache = model.run_with_cache(ids, names_filter=wanted, fwd_hooks=list(fwd_hooks))
    acts = {}
    for n in names:
        acts[n] = final_norm_out(model, cache["ln_final.hook_normalized"]) if n == FINAL_OUT else cache[n]
    meta = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "source": "minillm",
        "model": str(getattr(model, "name", "") or ""), "revision": _revision(model),
        "prompt": prompt if isinstance(prompt, str) else "",
        "token_ids": ids.tolist(), "dtype": str(model.dtype), "minillm_version": minillm.__version__,
        "family": model.cfg.family, "n_layers": model.cfg.n_layers, "n_heads": model.cfg.n_heads,
        "n_kv_heads": model.cfg.n_kv_heads,
    }
    if getattr(model, "tokenizer", None) is not None and ids.shape[0] == 1:
        meta["str_tokens"] = model.to_str_tokens(ids[0])
    if note:
        meta["note"] = note
    return Dump(acts, ids, meta)


def dump(model, prompt, path: str | os.PathLike, hooks=None, dtype=None, fwd_hooks=(),
         allow_large: bool = False, max_bytes: int = DEFAULT_MAX_BYTES, note: str = "") -> Path:
    """Write the activations of one run to a safetensors file, atomically.   -> the path

    model: a loaded model, or a catalog name / folder (loaded in `dtype`).
    prompt: text, or token ids [p] / [b, p].
    hooks: a glob like "blocks.*.hook_resid_post", several separated by commas,
        a list, or a predicate; None = every hook except attn.hook_result.
    dtype: "float32" or "float64" (the reference mode); a loaded model must
        already have it.
    fwd_hooks: extra hooks active during the run, [(name or predicate, fn)]
        (e.g. a deliberate bug from minillm.verify.broken); `note` is stored
        in the metadata to say so.
    A dump larger than `max_bytes` (1 GiB) is refused unless allow_large=True.
    The file is written under a temporary name and renamed into place, so a
    crash never leaves a half-written dump at `path`.
    """
    if isinstance(model, (str, os.PathLike)):
        import minillm

        model = minillm.load(model, dtype=np.dtype(dtype or np.float32))
    elif dtype is not None and np.dtype(dtype) != model.dtype:
        raise MinillmError(
            f"the model is {model.dtype} but dtype={np.dtype(dtype)} was asked for; load it with "
            f"minillm.load(name, dtype=np.{np.dtype(dtype)}) or pass its name instead"
        )
    return save_dump(run_dump(model, prompt, hooks, fwd_hooks, allow_large, max_bytes, note), path)


def _umask() -> int:
    """The process's umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def save_dump(d: Dump, path: str | os.PathLike) -> Path:
    """Write a Dump as safetensors (temp file in the same folder, then os.replace)."""
    from safetensors.numpy import save_file

    path = Path(path)
    tensors = {n: np.ascontiguousarray(a) for n, a in d.acts.items()}
    if d.input_ids is not None:
        tensors["input_ids"] = np.ascontiguousarray(d.input_ids, dtype=np.int64)
    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in d.meta.items()}
    meta["hooks"] = json.dumps(list(d.acts))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=meta)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a dump gets a normal file's mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _parse_meta(raw: Mapping[str, str]) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    for k, v in raw.items():
        try:
            meta[k] = json.loads(v) if k in ("token_ids", "str_tokens", "hooks", "n_layers",
                                             "n_heads", "n_kv_heads") else v
        except (TypeError, ValueError):
            meta[k] = v
    return meta


def load_dump(path: str | os.PathLike) -> Dump:
    """Read a dump: minillm's safetensors, or the plain format (.safetensors or .npz).

    Activations come back in forward order; `input_ids` and metadata if present.
    A missing, truncated or corrupt file is a MinillmError naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise MinillmError(f"{path}: no such dump file")
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except Exception as e:  # zipfile, ValueError, OSError: all mean "not a readable .npz"
            raise MinillmError(f"{path}: not a readable .npz dump ({type(e).__name__}: {e})") from None
        raw_meta = arrays.pop("__metadata__", None)
        meta = json.loads(str(raw_meta)) if raw_meta is not None else {}
    else:
        from minillm.checkpoints.safetensors_io import SafetensorsFile

        try:
            f = SafetensorsFile(path)
            arrays = {n: np.array(f.get(n)) for n in f.names()}
        except CheckpointError as e:
            raise MinillmError(f"{e} (is {path.name} a dump written by `minillm dump` or "
                               f"safetensors' save_file?)") from None
        meta = _parse_meta(f.metadata)
    ids = arrays.pop("input_ids", None)
    acts = {n: arrays[n] for n in sorted(arrays, key=forward_key)}
    if not acts:
        raise MinillmError(f"{path}: the dump holds no activations")
    return Dump(acts, None if ids is None else np.asarray(ids, np.int64), meta, path)


def to_numpy(x) -> np.ndarray:
    """An array-like (numpy, or a torch tensor, without importing torch) -> numpy."""
    if hasattr(x, "detach"):
        x = x.detach().cpu()
        if str(x.dtype) in ("torch.bfloat16", "torch.float16"):
            x = x.float()
        x = x.numpy()
    return np.asarray(x)


def as_dump(x, other: Dump | None = None) -> Dump:
    """A Dump, a path, a {name: array} dict, or a live model (run on `other`'s token ids)."""
    if isinstance(x, Dump):
        return x
    if isinstance(x, (str, os.PathLike)):
        return load_dump(x)
    if hasattr(x, "run_with_cache"):
        if other is None or other.input_ids is None:
            raise MinillmError("a live model can only be compared with a dump that holds input_ids")
        names = [n for n in other.acts if n in x.hooks.valid_names or n == FINAL_OUT]
        d = run_dump(x, np.atleast_2d(other.input_ids), hooks=names or None)
        d.meta["source"] = f"live minillm run of {d.meta['model']} ({d.meta['dtype']})"
        return d
    if isinstance(x, Mapping):
        acts = {k: to_numpy(v) for k, v in x.items() if k not in RESERVED}
        ids = x.get("input_ids")
        acts = {n: acts[n] for n in sorted(acts, key=forward_key)}
        return Dump(acts, None if ids is None else to_numpy(ids).astype(np.int64))
    raise MinillmError(f"cannot compare a {type(x).__name__}: pass a dump path, a Dump, a dict or a model")
