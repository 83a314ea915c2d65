"""Hook points: named places in the forward pass where a function can read or
replace an activation.

The forward pass calls `hooks.fire(name, act)` at every hook point. With no
hooks registered that is one dictionary check; with hooks, each registered
function is called as `fn(act, hook)` and may return a replacement (same
shape) or None (keep the activation, possibly edited in place).

Hooks live either for one block (`with model.hooks([(name, fn)]):`, or
`run_with_hooks`) or until removed (`model.add_hook(name, fn)`, as in
TransformerLens: `reset_hooks()` removes them, except permanent ones).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from minillm.errors import MinillmError

HookFn = Callable[[np.ndarray, "HookPoint"], "np.ndarray | None"]


class HookPoint:
    """What a hook function receives besides the activation: one per hook name, kept by
    the model, so that `ctx` persists between runs (as in TransformerLens).

    `name` is the hook's full name; `layer()` its block index; `pos_offset`
    the absolute position of index 0 along the activation's position axis
    (non-zero while decoding with a KV cache, so that position p always means
    the same token); `ctx` a dict a hook may keep state in (cleared by
    `model.reset_hooks()` or `clear_contexts=True`).
    """

    def __init__(self, name: str, layer: int | None = None, pos_offset: int = 0,
                 ctx: dict[str, Any] | None = None, registry: HookRegistry | None = None):
        self.name = name
        self._layer = layer if layer is not None else layer_of(name)
        self.pos_offset = pos_offset
        self.ctx = {} if ctx is None else ctx
        self._registry = registry

    @property
    def fwd_hooks(self) -> list[HookFn]:
        """The functions registered here, in the order they run."""
        return self._registry.registered(self.name) if self._registry is not None else []

    def add_hook(self, hook: HookFn, dir: str = "fwd", is_permanent: bool = False, level=None,
                 prepend: bool = False) -> None:
        """Register hook(act, hook_point) here (as `model.add_hook(self.name, hook, ...)`)."""
        if dir != "fwd":
            raise MinillmError(f"add_hook: dir={dir!r} is not supported; only forward hooks ('fwd')")
        self._need_registry().add(self.name, hook, prepend=prepend, permanent=is_permanent)

    def remove_hooks(self, dir: str = "fwd", including_permanent: bool = False, level=None) -> None:
        """Remove the hooks registered here (permanent ones too if asked)."""
        self._need_registry().reset_one(self.name, including_permanent)

    def _need_registry(self) -> HookRegistry:
        if self._registry is None:
            raise MinillmError(f"HookPoint {self.name!r} belongs to no model; use "
                               "model.hook_dict[name]")
        return self._registry

    def layer(self) -> int:
        """The block index of this hook: blocks.3.attn.hook_q -> 3 (an error outside blocks)."""
        if self._layer is None:
            raise MinillmError(f"{self.name} is not inside a block, so it has no layer")
        return self._layer

    def clear_context(self) -> None:
        self.ctx = {}

    def __repr__(self) -> str:
        return f"HookPoint({self.name!r})"


def layer_of(name: str) -> int | None:
    """blocks.3.attn.hook_q -> 3; hook_embed -> None."""
    parts = name.split(".")
    return int(parts[1]) if len(parts) > 1 and parts[0] == "blocks" else None


class HookRegistry:
    """The hooks registered on one model: hook name -> functions, in the order they run."""

    def __init__(self, valid_names: list[str]):
        self.valid_names = valid_names
        self._valid = set(valid_names)
        self._fns: dict[str, list[HookFn]] = {}
        self._permanent: dict[str, list[HookFn]] = {}  # subsets of _fns that reset() keeps
        self._points: dict[str, HookPoint] = {}
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

    def point(self, name: str) -> HookPoint:
        """The HookPoint of a name (made on first use, then kept: its ctx persists)."""
        if name not in self._points:
            self.check_name(name)
            self._points[name] = HookPoint(name, registry=self)
        return self._points[name]

    def registered(self, name: str) -> list[HookFn]:
        """The functions registered at one hook, in the order they run (a copy)."""
        return list(self._fns.get(name, []))

    def add(self, name: str, fn: HookFn, prepend: bool = False, permanent: bool = False) -> None:
        """Register fn at one hook; `prepend` runs it before those already there;
        `permanent` hooks survive `reset()`."""
        self.check_name(name)
        fns = self._fns.setdefault(name, [])
        fns.insert(0, fn) if prepend else fns.append(fn)
        if permanent:
            self._permanent.setdefault(name, []).append(fn)

    def remove(self, name: str, fn: HookFn) -> None:
        for table in (self._fns, self._permanent):
            fns = table.get(name, [])
            if fn in fns:
                fns.remove(fn)
            if not fns:
                table.pop(name, None)

    def reset(self, including_permanent: bool = False, clear_contexts: bool = True) -> None:
        """Remove every hook (permanent ones only if asked), and empty every hook's ctx."""
        for name in list(self._fns):
            self.reset_one(name, including_permanent)
        if clear_contexts:
            self.clear_contexts()

    def reset_one(self, name: str, including_permanent: bool = False) -> None:
        """Remove the functions registered at one hook (except permanent ones, unless asked)."""
        keep = [] if including_permanent else [f for f in self._fns.get(name, [])
                                                 if f in self._permanent.get(name, [])]
        for table, value in ((self._fns, keep), (self._permanent, keep)):
            if value:
                table[name] = list(value)
            else:
                table.pop(name, None)

    def clear(self) -> None:
        self.reset(including_permanent=True, clear_contexts=False)

    def clear_contexts(self) -> None:
        for point in self._points.values():
            point.clear_context()

    @contextmanager
    def __call__(
        self,
        fwd_hooks: Sequence[tuple[str | Callable[[str], bool], HookFn]] = (),
        reset_hooks_end: bool = True,
        clear_contexts: bool = False,
    ) -> Iterator[HookRegistry]:
        """`with model.hooks([(name or predicate, fn), ...]):` hooks live inside the block.

        They are removed on exit, also when the block raises (unless
        `reset_hooks_end=False`); `clear_contexts` empties the hooks' ctx dicts on exit.
        """
        added: list[tuple[str, HookFn]] = []
        try:
            for name_or_filter, fn in fwd_hooks:
                for name in self.resolve(name_or_filter):
                    self.add(name, fn)
                    added.append((name, fn))
            yield self
        finally:
            if reset_hooks_end:
                for name, fn in added:
                    self.remove(name, fn)
            if clear_contexts:
                self.clear_contexts()

    def fire(self, name: str, act: np.ndarray) -> np.ndarray:
        """Run the functions registered at `name` on `act`; return the (new) activation."""
        fns = self._fns.get(name)
        if not fns:
            return act
        point = self.point(name)
        point.pos_offset = self.pos_offset
        for fn in list(fns):
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
