"""Compare two runs hook by hook and find the first divergence.

    from minillm import verify
    report = verify.compare("ref.safetensors", "theirs.safetensors")
    print(report.summary())      # "first divergence at blocks.3.attn.hook_pattern, head 5, ..."

**compare(reference, candidate)** lines two dumps (`minillm.verify.dumps`) up in forward
order and, per hook, reports the max absolute error, the max relative error
|a - b| / max(|a|, floor) with floor = `rel_floor` x RMS(reference) (so
near-zero entries do not explode), where the worst element is (in words:
position, head, query/key, neuron), and pass/fail against
|a - b| <= atol + rtol·|a| elementwise (numpy's allclose rule). The first
failing hook is the answer to "where does my implementation go wrong?".
A failing hook whose elements match in another layout (transposed axes, a reshape,
the GGUF rotary order) says so (`layout_hint`). The result is a `report.Report`.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import numpy as np

from minillm.errors import MinillmError
from minillm.hooks import split_name
from minillm.verify.dumps import Dump, as_dump
from minillm.verify.names import forward_key
from minillm.verify.report import HookResult, Report, describe_index, short_list

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


def check_token_ids(ref: Dump, cand: Dump) -> str | None:
    """Raise if both dumps have token ids and they differ; a note if they cannot be checked."""
    if ref.input_ids is None or cand.input_ids is None:
        which = "reference" if ref.input_ids is None else "candidate"
        prompts = ref.meta.get("prompt"), cand.meta.get("prompt")
        if all(prompts) and prompts[0] != prompts[1]:
            raise MinillmError(f"the dumps are of different prompts: {prompts[0]!r} vs {prompts[1]!r}")
        return f"the {which} has no input_ids, so the token ids were not checked"
    a, b = np.atleast_2d(ref.input_ids), np.atleast_2d(cand.input_ids)  # [p] is one row: [1, p]
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
    ref = as_dump(reference) if not hasattr(reference, "run_with_cache") else None
    cand = as_dump(candidate, ref)
    if ref is None:
        ref = as_dump(reference, cand)
    notes = [n for n in [check_token_ids(ref, cand)] if n]
    common = [n for n in ref.acts if n in cand.acts]
    if not common:
        raise MinillmError(
            f"the dumps have no hook name in common: reference has {short_list(list(ref.acts), 4)}; "
            f"candidate has {short_list(list(cand.acts), 4)}"
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
