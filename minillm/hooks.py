"""Hook points: named places in the forward pass where a function can read or
replace an activation.

The forward pass calls `hooks.fire(name, act)` at every hook point. With no
hooks registered that is one dictionary check; with hooks, each registered
function is called as `fn(act, hook)` and may return a replacement (same
shape) or None (keep the activation, possibly edited in place).

Backward hooks (`bwd_hooks`, as in TransformerLens) are called as
`fn(grad, hook)` with d(metric)/d(activation) at their hook point, when the
hand-written backward pass (minillm/backward.py) has computed it: by
`run_with_hooks(..., bwd_hooks=..., metric=...)`, or by any
`backward.backward(...)` run while they are registered. They observe the
gradient; they cannot replace it (there is no autograd to send a change
upstream), so returning an array is an error.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from minillm.errors import MinillmError

HookFn = Callable[[np.ndarray, "HookPoint"], "np.ndarray | None"]


@dataclass
class HookPoint:
    """What a hook function receives besides the activation.

    `name` is the hook's full name; `layer` its block index (None outside
    blocks); `pos_offset` the absolute position of index 0 along the
    activation's position axis (non-zero while decoding with a KV cache, so
    that position p always means the same token).
    """

    name: str
    layer: int | None = None
    pos_offset: int = 0
    ctx: dict[str, Any] = field(default_factory=dict)


def layer_of(name: str) -> int | None:
    """blocks.3.attn.hook_q -> 3; hook_embed -> None."""
    parts = name.split(".")
    return int(parts[1]) if len(parts) > 1 and parts[0] == "blocks" else None


class HookRegistry:
    """The hooks registered on one model: hook name -> functions, in order."""

    def __init__(self, valid_names: list[str]):
        self.valid_names = valid_names
        self._valid = set(valid_names)
        self._fns: dict[str, list[HookFn]] = {}
        self._bwd: dict[str, list[HookFn]] = {}
        self.pos_offset = 0  # set by the model for each forward call

    def __bool__(self) -> bool:
        return bool(self._fns)

    def wants(self, name: str) -> bool:
        """Is anything registered at this hook (used to skip optional ones)?"""
        return name in self._fns

    def check_name(self, name: str) -> None:
        if name not in self._valid:
            close = difflib.get_close_matches(name, self.valid_names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise MinillmError(f"unknown hook name {name!r}{hint} (see model.hook_names())")

    def resolve(self, name_or_filter: str | Callable[[str], bool]) -> list[str]:
        """A hook name, or a predicate over names -> the matching names, in forward order."""
        if callable(name_or_filter):
            return [n for n in self.valid_names if name_or_filter(n)]
        self.check_name(name_or_filter)
        return [name_or_filter]

    def _table(self, dir: str) -> dict[str, list[HookFn]]:
        if dir not in ("fwd", "bwd"):
            raise MinillmError(f"dir must be 'fwd' or 'bwd', got {dir!r}")
        return self._fns if dir == "fwd" else self._bwd

    def add(self, name: str, fn: HookFn, dir: str = "fwd") -> None:
        self.check_name(name)
        self._table(dir).setdefault(name, []).append(fn)

    def remove(self, name: str, fn: HookFn, dir: str = "fwd") -> None:
        table = self._table(dir)
        fns = table.get(name, [])
        if fn in fns:
            fns.remove(fn)
        if not fns:
            table.pop(name, None)

    def clear(self) -> None:
        self._fns.clear()
        self._bwd.clear()

    @property
    def has_backward_hooks(self) -> bool:
        return bool(self._bwd)

    @contextmanager
    def __call__(
        self, fwd_hooks: Sequence[tuple[str | Callable[[str], bool], HookFn]] = (),
        bwd_hooks: Sequence[tuple[str | Callable[[str], bool], HookFn]] = (),
    ) -> Iterator[HookRegistry]:
        """`with model.hooks([(name or predicate, fn), ...], bwd_hooks=[...]):` hooks live
        inside the block (backward hooks fire in any backward pass run there).

        They are removed on exit, also when the block raises.
        """
        added: list[tuple[str, HookFn, str]] = []
        try:
            for hooks, dir in ((fwd_hooks, "fwd"), (bwd_hooks, "bwd")):
                for name_or_filter, fn in hooks:
                    for name in self.resolve(name_or_filter):
                        self.add(name, fn, dir)
                        added.append((name, fn, dir))
            yield self
        finally:
            for name, fn, dir in added:
                self.remove(name, fn, dir)

    def fire_backward(self, grads: dict[str, np.ndarray]) -> None:
        """Call the backward hooks with d(metric)/d(activation), in backward order (last hook first)."""
        for name in reversed(self.valid_names):
            fns = self._bwd.get(name)
            if not fns:
                continue
            if name not in grads:
                raise MinillmError(f"backward hook at {name}: the backward pass computes no gradient "
                                   "there")
            point = HookPoint(name, layer_of(name), 0)
            for fn in fns:
                if fn(grads[name], point) is not None:
                    raise MinillmError(
                        f"backward hook at {name} returned a value: minillm's backward hooks observe "
                        "d(metric)/d(activation) and cannot replace it; return None")

    def fire(self, name: str, act: np.ndarray) -> np.ndarray:
        """Run the functions registered at `name` on `act`; return the (new) activation."""
        fns = self._fns.get(name)
        if not fns:
            return act
        point = HookPoint(name, layer_of(name), self.pos_offset)
        for fn in fns:
            out = fn(act, point)
            if out is not None:
                act = _checked_replacement(name, act, out)
        return act


def _checked_replacement(name: str, act: np.ndarray, out: Any) -> np.ndarray:
    out = np.asarray(out)
    if out.shape != act.shape:
        raise MinillmError(
            f"hook at {name} returned shape {out.shape}, but the activation has shape "
            f"{act.shape}; return an array of the same shape (or None to keep it)"
        )
    if not np.issubdtype(out.dtype, np.floating):
        raise MinillmError(
            f"hook at {name} returned dtype {out.dtype}; it must return floating-point "
            f"values (the activation is {act.dtype})"
        )
    return out.astype(act.dtype, copy=False)
