"""Verify another implementation against minillm: dump activations, compare them hook by hook.

    from minillm import verify
    verify.dump("smollm2-135m", "It was a dark and stormy", "ref.safetensors", dtype="float64")
    report = verify.compare("ref.safetensors", "theirs.safetensors")
    print(report.summary())      # "first divergence at blocks.3.attn.hook_pattern, head 5, ..."

A **dump** is one safetensors file: each activation keyed by its hook name
(`blocks.3.hook_resid_post`, ...), plus `input_ids` [b, p] (int64) and
string metadata (model, revision, prompt, token ids, dtype, minillm version).
Any implementation can write one (the "plain format"; see docs/verifying.md):

    np.savez("theirs.npz", input_ids=ids, **{"blocks.0.hook_resid_post": x0, ...})

**compare(reference, candidate)** lines two dumps up in forward order and, per
hook, reports the max absolute error, the max relative error
|a - b| / max(|a|, floor) with floor = `rel_floor` x RMS(reference) (so
near-zero entries do not explode), where the worst element is (in words:
position, head, query/key, neuron), and pass/fail against
|a - b| <= atol + rtol·|a| elementwise (numpy's allclose rule). The first
failing hook is the answer to "where does my implementation go wrong?".

Name maps: `from_hf_hidden_states` (Hugging Face `output_hidden_states`,
whose last entry is *after* the final norm: we call that `ln_final.out`),
`from_transformer_lens` (same names and hook_scale; GQA k/v checked).

`ln_final.out` is the one name here that is not a hook point: the final norm's
output with gain (and bias) applied, i.e. what meets the unembedding.
"""

from __future__ import annotations

import fnmatch
import json
import math
import os
import tempfile
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from minillm import model as model_hooks
from minillm.errors import CheckpointError, MinillmError, format_bytes, suggest
from minillm.hooks import split_name
from minillm.verify import contract

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FORMAT = "minillm-dump"
FORMAT_VERSION = "1"
FINAL_OUT = "ln_final.out"  # derived: ln_final.hook_normalized * w (+ b); HF hidden_states[-1]
RESERVED = ("input_ids",)  # non-activation keys of a dump
DEFAULT_MAX_BYTES = 2**30  # dumps above 1 GiB need allow_large=True / --force

# Forward order of the hook names: the model's own lists (minillm.model), plus the derived
# ln_final.out right after the final norm's hooks.
PRE_HOOKS = model_hooks.PRE_HOOKS
BLOCK_HOOKS = model_hooks.BLOCK_HOOKS
_i = model_hooks.POST_HOOKS.index("ln_final.hook_normalized") + 1
POST_HOOKS = (*model_hooks.POST_HOOKS[:_i], FINAL_OUT, *model_hooks.POST_HOOKS[_i:])

# Default tolerances for a float32 implementation checked against a float64 reference.
# Chosen from minillm's own float32-vs-float64 profile on SmolLM2, measured on one machine
# (docs/verifying.md has the numbers): there every hook's worst error used at most ~20% of
# its tolerance, while each bug injected by minillm.verify.broken exceeded it at least
# 50-fold at the hook where it first showed. tests/test_compare.py keeps both true.
DEFAULT_ATOL = 1e-3
DEFAULT_RTOL = 1e-3
DEFAULT_TOLERANCES: dict[str, tuple[float, float]] = {
    "*hook_scale": (0.0, 1e-5),  # one rounding away from exact: float32 gives ~1.5e-6 relative
}


# --- names, order, shapes ----------------------------------------------------------------------


def is_known(name: str) -> bool:
    """Is this a minillm hook name (or the derived `ln_final.out`)?"""
    layer, rest = split_name(name)
    return rest in BLOCK_HOOKS if layer is not None else rest in PRE_HOOKS + POST_HOOKS


def forward_key(name: str) -> tuple:
    """Sort key putting hook names in the order the forward pass fires them (unknown last)."""
    layer, rest = split_name(name)
    if layer is not None and rest in BLOCK_HOOKS:
        return (1, layer, BLOCK_HOOKS.index(rest), name)
    if rest in PRE_HOOKS:
        return (0, 0, PRE_HOOKS.index(rest), name)
    if rest in POST_HOOKS:
        return (2, 0, POST_HOOKS.index(rest), name)
    return (3, 0, 0, name)


def depth(name: str, n_layers: int) -> float:
    """Where a hook sits along the model, in layers (x axis of the error-vs-depth plot)."""
    group, layer, i, _ = forward_key(name)
    if group == 0:
        return -1 + (i + 1) / (len(PRE_HOOKS) + 1)
    if group == 1:
        return layer + i / len(BLOCK_HOOKS)
    return n_layers + i / len(POST_HOOKS)


def hook_shape(cfg, name: str, b: int, p: int) -> tuple[int, ...]:
    """The shape a hook's activation (or the derived ln_final.out) has for b sequences of p tokens."""
    return (b, p, cfg.d_model) if name == FINAL_OUT else contract.hook_shape(cfg, name, b, p)


def select_hooks(names: Sequence[str], pattern: str | Sequence[str] | Callable | None) -> list[str]:
    """The names (plus the derived ln_final.out) matching a pattern, in forward order.

    pattern: None (everything except the large attn.hook_result), a glob
    ("blocks.*.hook_resid_post"), several globs separated by commas or in a
    list, or a predicate over names. A glob that matches nothing is an error.
    """
    pool = list(names) + ([FINAL_OUT] if "ln_final.hook_normalized" in names else [])
    if pattern is None:
        return [n for n in pool if not n.endswith("hook_result")]
    if callable(pattern):
        chosen = {n for n in pool if pattern(n)}
    else:
        globs = [g.strip() for g in pattern.split(",")] if isinstance(pattern, str) else list(pattern)
        chosen = set()
        for glob in globs:
            hits = fnmatch.filter(pool, glob)
            if not hits:
                if glob.endswith("hook_result"):
                    raise MinillmError(f"hook pattern {glob!r}: attn.hook_result is recorded only "
                                       "with the model setting use_attn_result "
                                       "(model.set_use_attn_result(True))")
                raise MinillmError(
                    f"hook pattern {glob!r} matches no hook of this model; hook names look like "
                    f"'blocks.0.hook_resid_post' or 'blocks.*.attn.hook_pattern' "
                    f"(see model.hook_names())"
                )
            chosen.update(hits)
    if not chosen:
        raise MinillmError("the hook selection is empty")
    return [n for n in pool if n in chosen]


# --- dumps ---------------------------------------------------------------------------------------


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


def _as_dump(x, other: Dump | None = None) -> Dump:
    """A Dump, a path, a {name: array} dict, or a live model (run on `other`'s token ids)."""
    if isinstance(x, Dump):
        return x
    if isinstance(x, (str, os.PathLike)):
        return load_dump(x)
    if hasattr(x, "run_with_cache"):
        if other is None or other.input_ids is None:
            raise MinillmError("a live model can only be compared with a dump that holds input_ids")
        names = [n for n in other.acts if n in x.hooks.valid_names or n == FINAL_OUT]
        d = run_dump(x, _ids_2d(other.input_ids), hooks=names or None)
        d.meta["source"] = f"live minillm run of {d.meta['model']} ({d.meta['dtype']})"
        return d
    if isinstance(x, Mapping):
        acts = {k: _to_numpy(v) for k, v in x.items() if k not in RESERVED}
        ids = x.get("input_ids")
        acts = {n: acts[n] for n in sorted(acts, key=forward_key)}
        return Dump(acts, None if ids is None else _to_numpy(ids).astype(np.int64))
    raise MinillmError(f"cannot compare a {type(x).__name__}: pass a dump path, a Dump, a dict or a model")


# --- name maps ------------------------------------------------------------------------------------


def _to_numpy(x) -> np.ndarray:
    """An array-like (numpy, or a torch tensor, without importing torch) -> numpy."""
    if hasattr(x, "detach"):
        x = x.detach().cpu()
        if str(x.dtype) in ("torch.bfloat16", "torch.float16"):
            x = x.float()
        x = x.numpy()
    return np.asarray(x)


def from_hf_hidden_states(hidden_states, input_ids=None, attentions=None, logits=None,
                          meta: dict | None = None) -> Dump:
    """Hugging Face outputs (output_hidden_states=True) -> a Dump under minillm's names.

    hidden_states: the tuple of L+1 arrays [b, p, d] (or one stacked [L+1, b, p, d]):
      [0]   -> blocks.0.hook_resid_pre   (embeddings; GPT-2: token + position)
      [i]   -> blocks.{i-1}.hook_resid_post, for 1 <= i < L
      [L]   -> ln_final.out              (HF applies the final norm to the last entry)
    attentions (output_attentions=True, eager attention): [b, h, q, k] per layer
      -> blocks.{l}.attn.hook_pattern;  logits [b, p, V] -> hook_logits.
    """
    hs = [_to_numpy(h) for h in hidden_states]
    if len(hs) < 2:
        raise MinillmError(f"hidden_states has {len(hs)} entries; expected n_layers + 1 >= 2")
    L = len(hs) - 1
    acts = {"blocks.0.hook_resid_pre": hs[0]}
    for i in range(1, L):
        acts[f"blocks.{i - 1}.hook_resid_post"] = hs[i]
    acts[FINAL_OUT] = hs[L]
    for l, a in enumerate(attentions or ()):
        acts[f"blocks.{l}.attn.hook_pattern"] = _to_numpy(a)
    if logits is not None:
        acts["hook_logits"] = _to_numpy(logits)
    ids = None if input_ids is None else _to_numpy(input_ids).astype(np.int64).reshape(-1, hs[0].shape[-2])
    acts = {n: acts[n] for n in sorted(acts, key=forward_key)}
    return Dump(acts, ids, {"source": "Hugging Face output_hidden_states", **(meta or {})})


def from_transformer_lens(cache, input_ids=None, n_kv_heads: int | None = None,
                          layernorm: bool | None = None, meta: dict | None = None) -> Dump:
    """A TransformerLens ActivationCache (or its dict) -> a Dump under minillm's names.

    The names and the `hook_scale` convention (the divisor: std or rms) are
    already ours; two conventions may differ and are converted:
    * Some TransformerLens releases' LayerNorm `hook_normalized` includes the gain and bias
      (its RMSNorm's does not); for LayerNorm models (`layernorm=True`, or
      detected from a `hook_pos_embed` entry) those entries are dropped.
    * Grouped-query k/v: if `n_kv_heads` is given and hook_k / hook_v /
      hook_rot_k carry n_heads (repeated) heads, each group must be identical
      and is collapsed to one kv-head; otherwise it is an error naming the hook.
    Load the model with `HookedTransformer.from_pretrained_no_processing` (or
    fold_ln=False, center_writing_weights=False, center_unembed=False): the
    default weight processing changes the residual stream itself.
    Hooks minillm does not have (hook_attn_in, hook_mlp_in, ...) are dropped
    and listed in meta["dropped"].
    """
    items = cache.items() if hasattr(cache, "items") else dict(cache).items()
    raw = {k: _to_numpy(v) for k, v in items}
    if layernorm is None:
        layernorm = "hook_pos_embed" in raw
    acts, dropped = {}, []
    for name, a in raw.items():
        _, rest = split_name(name)
        if not is_known(name) or (layernorm and rest.endswith("hook_normalized")):
            dropped.append(name)
            continue
        if n_kv_heads and rest in ("attn.hook_k", "attn.hook_v", "attn.hook_rot_k"):
            a = _collapse_repeated_heads(name, a, n_kv_heads)
        acts[name] = a
    ids = None if input_ids is None else _to_numpy(input_ids).astype(np.int64)
    acts = {n: acts[n] for n in sorted(acts, key=forward_key)}
    return Dump(acts, ids, {"source": "TransformerLens cache", "dropped": dropped, **(meta or {})})


def _collapse_repeated_heads(name: str, a: np.ndarray, kv: int) -> np.ndarray:
    """[b, p, h, e] with each kv-head repeated h/kv times (repeat_interleave) -> [b, p, kv, e]."""
    if a.ndim != 4 or a.shape[2] == kv:
        return a
    h = a.shape[2]
    if h % kv:
        raise MinillmError(f"{name}: {h} heads on axis 2 cannot be {kv} grouped kv-heads")
    grouped = a.reshape(a.shape[0], a.shape[1], kv, h // kv, a.shape[3])
    if not np.array_equal(grouped, np.repeat(grouped[:, :, :, :1], h // kv, axis=3)):
        raise MinillmError(
            f"{name} has {h} heads where the model has {kv} kv-heads, and the repeated heads "
            f"differ, so they are not a grouped-query expansion (repeat_interleave) of {kv} kv-heads"
        )
    return grouped[:, :, :, 0]


# --- comparing ------------------------------------------------------------------------------------


@dataclass
class HookResult:
    """The comparison of one hook: errors, where the worst one is, pass/fail."""

    name: str
    shape: tuple[int, ...]
    max_abs: float
    max_rel: float
    index: tuple[int, ...]  # of the largest absolute error
    where: str  # the index in words
    ref_value: float
    cand_value: float
    atol: float
    rtol: float
    n_bad: int  # elements with |a - b| > atol + rtol·|a|
    usage: float  # max |a - b| / (atol + rtol·|a|): < 1 passes; how close to failing
    hint: str = ""  # for a failing hook whose elements match in another layout: which one

    def to_json(self) -> dict[str, Any]:
        """Plain data (JSON-ready; an infinite error is the string "inf")."""
        def num(x: float) -> float | str:
            return x if math.isfinite(x) else str(x)

        return {"name": self.name, "passed": self.passed, "shape": list(self.shape),
                "max_abs": num(self.max_abs), "max_rel": num(self.max_rel), "index": list(self.index),
                "where": self.where, "reference": num(self.ref_value), "candidate": num(self.cand_value),
                "atol": self.atol, "rtol": self.rtol, "n_bad": self.n_bad, "usage": num(self.usage),
                "hint": self.hint or None}

    @property
    def passed(self) -> bool:
        return self.n_bad == 0

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def sentence(self) -> str:
        return (
            f"{self.name}, {self.where}: max abs {self.max_abs:.3g} (reference "
            f"{self.ref_value:.6g}, candidate {self.cand_value:.6g}; {self.n_bad} of {self.size} "
            f"elements exceed {self.atol:g} + {self.rtol:g}·|reference|)"
            + (f"; {self.hint}" if self.hint else "")
        )


@dataclass
class Report:
    """Per-hook results in forward order, and what could not be compared."""

    rows: list[HookResult]
    reference: str
    candidate: str
    missing_in_candidate: list[str] = field(default_factory=list)
    missing_in_reference: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    n_layers: int = 0

    def __repr__(self) -> str:
        return f"Report({self.reference} vs {self.candidate}: {self.summary()})"

    def _repr_html_(self) -> str:
        from minillm.views.display import report_html

        return report_html(f"{self.reference} vs {self.candidate}", self.table(), ok=self.passed)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.rows)

    @property
    def first_failure(self) -> HookResult | None:
        return next((r for r in self.rows if not r.passed), None)

    def __getitem__(self, name: str) -> HookResult:
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(name)

    def to_json(self) -> dict[str, Any]:
        """The report as plain data, for `minillm compare --json` and other languages."""
        first = self.first_failure
        return {"passed": self.passed, "reference": self.reference, "candidate": self.candidate,
                "first_divergence": None if first is None else first.to_json(),
                "summary": self.summary(), "notes": self.notes,
                "missing_in_candidate": self.missing_in_candidate,
                "missing_in_reference": self.missing_in_reference,
                "hooks": [r.to_json() for r in self.rows]}

    def summary(self) -> str:
        """One sentence: the first divergence, or that everything agrees."""
        first = self.first_failure
        if first is not None:
            return f"first divergence at {first.sentence()}"
        worst = max(self.rows, key=lambda r: r.max_abs)
        return (f"all {len(self.rows)} hooks agree within tolerance (largest error: max abs "
                f"{worst.max_abs:.3g} at {worst.name})")

    def table(self, every_hook: bool = False) -> str:
        """A text table: one row per hook, or (default) per layer with its worst hook."""
        lines = [f"reference: {self.reference}", f"candidate: {self.candidate}"]
        lines += [f"note: {n}" for n in self.notes]
        if self.missing_in_candidate:
            lines.append(f"missing in the candidate ({len(self.missing_in_candidate)}): "
                         + _short_list(self.missing_in_candidate))
        if self.missing_in_reference:
            lines.append(f"only in the candidate, not compared ({len(self.missing_in_reference)}): "
                         + _short_list(self.missing_in_reference))
        lines.append(f"{'hook':<34} {'max abs':>10} {'max rel':>10}  {'status':<6} worst element")
        groups: dict[str, list[HookResult]] = {}
        for r in self.rows:
            layer, _ = split_name(r.name)
            key = r.name if every_hook or layer is None else f"blocks.{layer}.*"
            groups.setdefault(key, []).append(r)
        for key, rs in groups.items():
            worst = max(rs, key=lambda r: (not r.passed, r.max_abs / (r.atol + r.rtol) if r.atol + r.rtol
                                           else r.max_abs))
            label = key if len(rs) == 1 else f"{key} ({split_name(worst.name)[1]})"
            status = "ok" if all(r.passed for r in rs) else "FAIL"
            lines.append(f"{label:<34} {worst.max_abs:>10.3g} {worst.max_rel:>10.3g}  {status:<6} "
                         f"{worst.where}")
        lines.append(self.summary())
        return "\n".join(lines)

    __str__ = table

    def plot(self, path: str | os.PathLike | None = None) -> Figure:
        """Max abs error, and error / tolerance, of every hook against depth (layers), log scale.

        Failing hooks are red; the first failure is marked. Returns the Figure;
        writes it to `path` if given.
        """
        from minillm.views import figures

        fig = figures.compare_profile(self, depth, split_name, _plottable)
        if path is not None:
            figures.save(fig, path, dpi=110)
        return fig


def _plottable(y: np.ndarray) -> np.ndarray:
    """Zeros drawn just below the smallest error, infinities just above the largest (log axis)."""
    finite = y[np.isfinite(y) & (y > 0)]
    lo, hi = (finite.min() / 10, finite.max() * 10) if finite.size else (1e-12, 1.0)
    return np.where(y <= 0, lo, np.where(np.isfinite(y), y, hi))


def _short_list(names: list[str], n: int = 8) -> str:
    shown = []
    for name in names[:n]:
        hint = ""
        if not is_known(name):

            layer, _ = split_name(name)
            pool = [f"blocks.{layer}.{s}" for s in BLOCK_HOOKS] if layer is not None else list(
                PRE_HOOKS + POST_HOOKS)
            close = suggest(name, pool)
            hint = f" (not a minillm hook name; did you mean {close[0]}?)" if close else \
                " (not a minillm hook name)"
        shown.append(name + hint)
    return ", ".join(shown) + (f", ... ({len(names) - n} more)" if len(names) > n else "")


def describe_index(name: str, shape: tuple[int, ...], index: tuple[int, ...],
                   str_tokens: list[str] | None = None,
                   token_text: Callable[[int], str] | None = None) -> str:
    """An activation index in words: 'position 3 (' dark'), head 5, dim 12'; a logit is named by
    its token's text when `token_text` (id -> text) is given: 'token id 3273 (' night')'."""
    _, rest = split_name(name)

    def pos(i: int, word: str = "position") -> str:
        tok = f" ({str_tokens[i]!r})" if str_tokens and i < len(str_tokens) else ""
        return f"{word} {i}{tok}"

    if len(index) != len(shape) or not index:
        return f"index {index}"
    parts = [f"batch {index[0]}"] if shape[0] > 1 else []
    i = index[1:]
    if rest in ("attn.hook_attn_scores", "attn.hook_pattern") and len(i) == 3:
        parts += [f"head {i[0]}", pos(i[1], "query"), pos(i[2], "key")]
    elif rest.startswith("attn.") and len(i) == 3:
        head = "kv-head" if rest in ("attn.hook_k", "attn.hook_v", "attn.hook_rot_k") else "head"
        parts += [pos(i[0]), f"{head} {i[1]}", f"dim {i[2]}"]
    elif rest.startswith("mlp.") and len(i) == 2:
        parts += [pos(i[0]), f"neuron {i[1]}"]
    elif rest.endswith("hook_scale") and len(i) == 2:
        parts += [pos(i[0])]
    elif rest == "hook_logits" and len(i) == 2:
        text = ""
        if token_text is not None:
            try:
                text = f" ({token_text(int(i[1]))!r})"
            except Exception:  # noqa: BLE001 - a name is a nicety; never fail the comparison on it
                text = ""
        parts += [pos(i[0]), f"token id {i[1]}{text}"]
    elif len(i) == 2:
        parts += [pos(i[0]), f"dim {i[1]}"]
    else:
        parts += [f"index {tuple(index)}"]
    return ", ".join(parts)


def tolerance_for(name: str, atol: float | None, rtol: float | None,
                  tolerances: Mapping[str, float | tuple[float, float]] | None) -> tuple[float, float]:
    """(atol, rtol) for one hook: the first matching glob in `tolerances` (a float is an
    atol with the default rtol), else the explicit atol/rtol, else the float32 defaults."""
    for glob, tol in {**(tolerances or {})}.items():
        if fnmatch.fnmatchcase(name, glob):
            if isinstance(tol, (tuple, list)):
                return float(tol[0]), float(tol[1])
            return float(tol), DEFAULT_RTOL if rtol is None else rtol
    if atol is None and rtol is None:
        for glob, tol in DEFAULT_TOLERANCES.items():
            if fnmatch.fnmatchcase(name, glob):
                return tol
    return (DEFAULT_ATOL if atol is None else atol), (DEFAULT_RTOL if rtol is None else rtol)


def compare_arrays(name: str, a, b, atol: float, rtol: float, rel_floor: float = 1e-3,
                   str_tokens: list[str] | None = None,
                   token_text: Callable[[int], str] | None = None) -> HookResult:
    """Compare one activation: reference a, candidate b (same shape).

    Equal infinities (masked attention scores, -inf in both) count as equal;
    an infinity or NaN on one side only is an infinite error.
    """
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.abs(a - b)
    diff[a == b] = 0.0
    diff[np.isnan(diff)] = np.inf
    finite = np.isfinite(a)
    mag = np.where(finite, np.abs(a), 0.0)
    rms = float(np.sqrt(np.mean(mag[finite] ** 2))) if finite.any() else 0.0
    floor = max(rel_floor * rms, np.finfo(np.float64).tiny)
    rel = diff / np.maximum(mag, floor)
    limit = atol + rtol * mag
    n_bad = int(np.count_nonzero(diff > limit))
    with np.errstate(divide="ignore", invalid="ignore"):
        usage = float(np.max(np.where(diff == 0, 0.0, diff / limit), initial=0.0))
    index = tuple(int(i) for i in np.unravel_index(int(np.argmax(diff)), diff.shape)) if diff.size else ()
    return HookResult(
        name, tuple(a.shape), float(diff.max(initial=0.0)), float(rel.max(initial=0.0)), index,
        describe_index(name, a.shape, index, str_tokens, token_text),
        float(a[index]) if diff.size else 0.0, float(b[index]) if diff.size else 0.0,
        atol, rtol, n_bad, usage, layout_hint(name, a, b, atol, rtol) if n_bad else "",
    )


# --- layout hints ---------------------------------------------------------------------------------


def _close(a: np.ndarray, b: np.ndarray, atol: float, rtol: float) -> bool:
    with np.errstate(invalid="ignore"):
        return bool(np.all((a == b) | (np.abs(a - b) <= atol + rtol * np.abs(a))))


def layout_hint(name: str, a, b, atol: float, rtol: float) -> str:
    """When the candidate b holds the reference a's elements in another layout, say which.

    Tried: every transpose of b's axes (shapes may differ by the order of their axes),
    a reshape of the same elements, and, on the last axis of q and k, the rotary pair
    order of GGUF / llama.cpp (adjacent pairs (2i, 2i+1) instead of (i, i + d/2)).
    Returns "" when nothing matches within the same tolerance.
    """
    import itertools

    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.size != b.size or a.size == 0:
        return ""
    if a.ndim == b.ndim and a.ndim <= 6:
        for axes in itertools.permutations(range(b.ndim)):
            if axes == tuple(range(b.ndim)) or tuple(b.shape[i] for i in axes) != a.shape:
                continue
            if _close(a, b.transpose(axes), atol, rtol):
                return (f"the candidate holds these values with its axes in another order: "
                        f"np.transpose(candidate, {axes}) matches the reference")
    if b.shape != a.shape and _close(a, b.reshape(a.shape), atol, rtol):
        return (f"the candidate holds the same elements in shape {list(b.shape)}: "
                f"candidate.reshape({list(a.shape)}) matches the reference")
    _, rest = split_name(name)
    d = a.shape[-1]
    if b.shape == a.shape and d % 2 == 0 and d > 2 and any(k in rest for k in ("hook_q", "hook_k", "rot_q",
                                                                             "rot_k", "q_norm", "k_norm")):
        j = np.arange(d)
        pairs = (j % 2) * (d // 2) + j // 2  # element j of an adjacent-pair layout
        if _close(a[..., pairs], b, atol, rtol):
            return ("the candidate's last axis is in the adjacent-pair rotary order of GGUF/llama.cpp: "
                    f"element j is the reference's (j % 2)·{d // 2} + j // 2 (un-permute q/k rows, see "
                    "docs/hooks.md, RoPE layout)")
        if _close(a, b[..., pairs], atol, rtol):
            return ("the reference's last axis is in the adjacent-pair rotary order relative to the "
                    f"candidate: element j of the reference is the candidate's (j % 2)·{d // 2} + j // 2")
    if np.allclose(np.sort(a, axis=None), np.sort(b, axis=None), atol=atol, rtol=rtol):
        return "the candidate holds the same values in a different order (a permutation not recognised)"
    return ""


def _ids_2d(ids: np.ndarray) -> np.ndarray:
    ids = np.asarray(ids)
    return ids[None, :] if ids.ndim == 1 else ids


def check_token_ids(ref: Dump, cand: Dump) -> str | None:
    """Raise if both dumps have token ids and they differ; a note if they cannot be checked."""
    if ref.input_ids is None or cand.input_ids is None:
        which = "reference" if ref.input_ids is None else "candidate"
        prompts = ref.meta.get("prompt"), cand.meta.get("prompt")
        if all(prompts) and prompts[0] != prompts[1]:
            raise MinillmError(f"the dumps are of different prompts: {prompts[0]!r} vs {prompts[1]!r}")
        return f"the {which} has no input_ids, so the token ids were not checked"
    a, b = _ids_2d(ref.input_ids), _ids_2d(cand.input_ids)  # [p] is one row: [1, p]
    if a.shape != b.shape:
        raise MinillmError(
            f"the dumps are of different inputs: token ids of shape {list(a.shape)} (reference "
            f"{a.tolist()}) vs {list(b.shape)} (candidate {b.tolist()}); dump the same prompt, "
            f"tokenized the same way"
        )
    if not np.array_equal(a, b):
        i = tuple(int(j) for j in np.argwhere(a != b)[0])
        raise MinillmError(
            f"the dumps are of different inputs: token ids first differ at index {i} "
            f"(reference {int(a[i])}, candidate {int(b[i])}); reference {a.tolist()}, "
            f"candidate {b.tolist()}"
        )
    return None


def _align_shapes(names: Iterable[str], ref: Dump, cand: Dump) -> dict[str, np.ndarray]:
    """Candidate arrays shaped like the reference's (a missing batch axis of 1 is added);
    every mismatch is collected into one error naming the hooks."""
    out, bad = {}, []
    for n in names:
        a, b = ref.acts[n], cand.acts[n]
        if b.shape != a.shape and a.shape[:1] == (1,) and b.shape == a.shape[1:]:
            b = b[None]
        if b.shape != a.shape:
            hint = ""
            _, rest = split_name(n)
            if rest in ("attn.hook_k", "attn.hook_v", "attn.hook_rot_k") and b.ndim == 4 and a.ndim == 4 \
                    and b.shape[2] > a.shape[2] and b.shape[2] % a.shape[2] == 0:
                hint = (f" (the candidate has {b.shape[2]} heads where the model has {a.shape[2]} "
                        f"kv-heads: store grouped k/v unrepeated, or use from_transformer_lens("
                        f"..., n_kv_heads={a.shape[2]}))")
            if not hint and a.size == b.size:
                found = layout_hint(n, a, b, *tolerance_for(n, None, None, None))
                hint = f" ({found})" if found else ""
            bad.append(f"{n}: reference {list(a.shape)}, candidate {list(b.shape)}{hint}")
        out[n] = b
    if bad:
        raise MinillmError(f"{len(bad)} hook(s) have different shapes: " + "; ".join(bad[:10])
                           + (f"; ... ({len(bad) - 10} more)" if len(bad) > 10 else ""))
    return out


def _token_text(reference, candidate, ref: Dump, cand: Dump) -> Callable[[int], str] | None:
    """id -> text from a live model's tokenizer, else from the tokenizer.json of the model a
    dump names (a folder, or a catalog model already on disk; nothing is downloaded)."""
    for x in (reference, candidate):
        tok = getattr(x, "tokenizer", None)
        if tok is not None:
            return lambda i, tok=tok: tok.decode([i])
    for d in (ref, cand):
        name = d.meta.get("model")
        if not isinstance(name, str) or not name:
            continue
        try:
            from minillm.checkpoints import catalog
            from minillm.tokenizer import Tokenizer

            folder = catalog.located(name) if name in catalog.load_catalog() else Path(name)
            if folder is not None and (Path(folder) / "tokenizer.json").is_file():
                tok = Tokenizer(Path(folder) / "tokenizer.json")
                return lambda i, tok=tok: tok.decode([i])
        except (MinillmError, OSError, ValueError):
            continue
    return None


def compare(reference, candidate, atol: float | None = None, rtol: float | None = None,
            tolerances: Mapping[str, float | tuple[float, float]] | None = None,
            rel_floor: float = 1e-3, token_text: Callable[[int], str] | None = None) -> Report:
    """Compare a candidate run against a reference, hook by hook, in forward order.

    reference, candidate: dump paths, Dumps, {name: array} dicts, or a live
        minillm model (run on the other side's input_ids).
    atol, rtol: the pass rule |a - b| <= atol + rtol·|a| for every hook (a =
        reference). Without them, float32-vs-float64 defaults apply
        (DEFAULT_ATOL / DEFAULT_RTOL, looser for attention scores and logits).
    tolerances: per-hook overrides, {glob: atol or (atol, rtol)}, first match wins.
    rel_floor: max rel divides by max(|a|, rel_floor·RMS(a)).
    token_text: id -> text, to name a logit by its token (default: a live model's tokenizer,
        else the tokenizer of the model named in the reference dump, when it is on disk).
    Input ids [p] and [1, p] are the same input. A failing hook whose elements match in
    another layout (transposed axes, a reshape, the GGUF rotary order) says so.
    Raises before comparing anything if the token ids differ or shapes disagree;
    hooks present on only one side are listed in the report.
    """
    ref = _as_dump(reference) if not hasattr(reference, "run_with_cache") else None
    cand = _as_dump(candidate, ref)
    if ref is None:
        ref = _as_dump(reference, cand)
    notes = [n for n in [check_token_ids(ref, cand)] if n]
    common = [n for n in ref.acts if n in cand.acts]
    if not common:
        raise MinillmError(
            f"the dumps have no hook name in common: reference has {_short_list(list(ref.acts), 4)}; "
            f"candidate has {_short_list(list(cand.acts), 4)}"
        )
    aligned = _align_shapes(common, ref, cand)
    str_tokens = ref.str_tokens or cand.str_tokens
    if token_text is None and "hook_logits" in common:
        token_text = _token_text(reference, candidate, ref, cand)
    rows = [
        compare_arrays(n, ref.acts[n], aligned[n], *tolerance_for(n, atol, rtol, tolerances),
                       rel_floor=rel_floor, str_tokens=str_tokens, token_text=token_text)
        for n in sorted(common, key=forward_key)
    ]
    layers = [split_name(n)[0] for n in list(ref.acts) + list(cand.acts)]
    n_layers = ref.meta.get("n_layers") or cand.meta.get("n_layers") or \
        1 + max((x for x in layers if x is not None), default=0)
    return Report(
        rows, ref.label, cand.label,
        missing_in_candidate=[n for n in ref.acts if n not in cand.acts],
        missing_in_reference=[n for n in cand.acts if n not in ref.acts],
        notes=notes, n_layers=int(n_layers),
    )
