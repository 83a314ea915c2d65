"""The result of a comparison: one HookResult per hook, a Report over all of them.

A Report renders itself as one sentence (`summary`), a text table (`table`), plain data
(`to_json`), HTML in a notebook, and an error-vs-depth figure (`plot`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from minillm.errors import suggest
from minillm.hooks import split_name
from minillm.verify.names import BLOCK_HOOKS, POST_HOOKS, PRE_HOOKS, depth, is_known

if TYPE_CHECKING:
    from matplotlib.figure import Figure


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


class Verdict:
    """Pass/fail of a report whose `rows` each say `passed` (shared by every report of verify/)."""

    rows: list

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.rows)

    @property
    def first_failure(self):
        """The first row (in forward order) that failed, or None."""
        return next((r for r in self.rows if not r.passed), None)


@dataclass
class Report(Verdict):
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
                         + short_list(self.missing_in_candidate))
        if self.missing_in_reference:
            lines.append(f"only in the candidate, not compared ({len(self.missing_in_reference)}): "
                         + short_list(self.missing_in_reference))
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

        return figures.saved(figures.compare_profile(self, depth, split_name, _plottable), path, dpi=110)


def _plottable(y: np.ndarray) -> np.ndarray:
    """Zeros drawn just below the smallest error, infinities just above the largest (log axis)."""
    finite = y[np.isfinite(y) & (y > 0)]
    lo, hi = (finite.min() / 10, finite.max() * 10) if finite.size else (1e-12, 1.0)
    return np.where(y <= 0, lo, np.where(np.isfinite(y), y, hi))


def short_list(names: list[str], n: int = 8) -> str:
    """Up to n hook names joined by commas, each unknown one with a 'did you mean'."""
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
