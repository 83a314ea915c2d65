"""Hook points: named places in the forward pass where a function can read or
replace an activation.

The forward pass calls `hooks.fire(name, act)` at every hook point. With no
hooks registered that is one dictionary check; with hooks, each registered
function is called as `fn(act, hook)` and may return a replacement (same
shape) or None (keep the activation, possibly edited in place).

Hooks live either for one block (`with model.hooks([(name, fn)]):`, or
`run_with_hooks`) or until removed (`model.add_hook(name, fn)`, as in
TransformerLens: `reset_hooks()` removes them, except permanent ones).

Backward hooks (`bwd_hooks`, `dir="bwd"`, as in TransformerLens) are called as
`fn(grad, hook)` with d(metric)/d(activation) at their hook point, when the
hand-written backward pass (minillm/grad/backward.py) has computed it: by
`run_with_hooks(..., bwd_hooks=..., metric=...)`, or by any
`backward.backward(...)` run while they are registered. They observe the
gradient; they cannot replace it (there is no autograd to send a change
upstream), so returning an array is an error.

`RING_PARTS` (at the end) is where the outer rings lend the core the few things it must
not import itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from minillm.errors import MinillmError, did_you_mean

ATTN_RESULT = "attn.hook_result"  # the hook that needs the setting use_attn_result

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

    @property
    def bwd_hooks(self) -> list[HookFn]:
        """The backward hooks registered here, in the order they run."""
        return self._registry.registered(self.name, "bwd") if self._registry is not None else []

    def add_hook(self, hook: HookFn, dir: str = "fwd", is_permanent: bool = False, level=None,
                 prepend: bool = False) -> None:
        """Register hook(act, hook_point) here (as `model.add_hook(self.name, hook, ...)`);
        dir="bwd" registers a backward hook, hook(grad, hook_point)."""
        self._need_registry().add(self.name, hook, prepend=prepend, permanent=is_permanent, dir=dir)

    def remove_hooks(self, dir: str = "fwd", including_permanent: bool = False, level=None) -> None:
        """Remove the hooks registered here (dir "fwd", "bwd" or "both"; permanent ones too if asked)."""
        for d in (("fwd", "bwd") if dir == "both" else (dir,)):
            self._need_registry().reset_one(self.name, including_permanent, d)

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


def split_name(name: str) -> tuple[int | None, str]:
    """blocks.3.attn.hook_q -> (3, "attn.hook_q"); hook_embed -> (None, "hook_embed")."""
    parts = name.split(".", 2)
    if len(parts) == 3 and parts[0] == "blocks" and parts[1].isdigit():
        return int(parts[1]), parts[2]
    return None, name


def layer_of(name: str) -> int | None:
    """blocks.3.attn.hook_q -> 3; hook_embed -> None."""
    return split_name(name)[0]


class HookRegistry:
    """The hooks registered on one model: hook name -> functions, in the order they run."""

    def __init__(self, valid_names: list[str]):
        self.valid_names = valid_names
        self._valid = set(valid_names)
        self._fns: dict[str, list[HookFn]] = {}
        self._bwd: dict[str, list[HookFn]] = {}  # backward hooks, fired by backward.backward
        self._permanent: dict[str, list[HookFn]] = {}  # subsets of _fns / _bwd that reset() keeps
        self._points: dict[str, HookPoint] = {}
        self.pos_offset = 0  # set by the model for each forward call
        # The model setting `use_attn_result` (TransformerLens's name): attention computes
        # each head's output separately and fires attn.hook_result. Off by default: the
        # per-head outputs are large [b, p, h, d] and their sum rounds differently.
        self.use_attn_result = False

    def __bool__(self) -> bool:
        return bool(self._fns)

    def wants(self, name: str) -> bool:
        """Is anything registered at this hook (used to skip optional ones)?"""
        return name in self._fns

    def check_name(self, name: str) -> None:
        if name not in self._valid:
            hint = did_you_mean(name, self.valid_names)
            raise MinillmError(f"unknown hook name {name!r}{hint} (see model.hook_names())")
        if name.endswith(ATTN_RESULT) and not self.use_attn_result:
            raise MinillmError(
                f"{name} fires only with the model setting use_attn_result: call "
                "model.set_use_attn_result(True) first (attention then computes every head's "
                "output [b, p, h, d_model] separately, which is large and sums in another order)")

    def resolve(self, name_or_filter: str | Callable[[str], bool]) -> list[str]:
        """A hook name, or a predicate over names -> the matching names, in forward order."""
        if callable(name_or_filter):  # attn.hook_result only when use_attn_result is on
            names = [n for n in self.valid_names if name_or_filter(n)
                     and (self.use_attn_result or not n.endswith(ATTN_RESULT))]
            if not names:
                what = getattr(name_or_filter, "__name__", repr(name_or_filter))
                raise MinillmError(f"the hook predicate {what} matches no hook name of this model "
                                   "(see model.hook_names())")
            return names
        self.check_name(name_or_filter)
        return [name_or_filter]

    def point(self, name: str) -> HookPoint:
        """The HookPoint of a name (made on first use, then kept: its ctx persists)."""
        if name not in self._points:
            if name not in self._valid:  # (a HookPoint of attn.hook_result may exist unused)
                self.check_name(name)
            self._points[name] = HookPoint(name, registry=self)
        return self._points[name]

    def _table(self, dir: str) -> dict[str, list[HookFn]]:
        if dir not in ("fwd", "bwd"):
            raise MinillmError(f"dir must be 'fwd' or 'bwd', got {dir!r}")
        return self._fns if dir == "fwd" else self._bwd

    def registered(self, name: str, dir: str = "fwd") -> list[HookFn]:
        """The functions registered at one hook, in the order they run (a copy)."""
        return list(self._table(dir).get(name, []))

    def add(self, name: str, fn: HookFn, prepend: bool = False, permanent: bool = False,
            dir: str = "fwd") -> None:
        """Register fn at one hook; `prepend` runs it before those already there;
        `permanent` hooks survive `reset()`; dir="bwd" makes it a backward hook."""
        self.check_name(name)
        fns = self._table(dir).setdefault(name, [])
        fns.insert(0, fn) if prepend else fns.append(fn)
        if permanent:
            self._permanent.setdefault(name, []).append(fn)

    def remove(self, name: str, fn: HookFn, dir: str = "fwd") -> None:
        for table in (self._table(dir), self._permanent):
            fns = table.get(name, [])
            if fn in fns:
                fns.remove(fn)
            if not fns:
                table.pop(name, None)

    def reset(self, including_permanent: bool = False, clear_contexts: bool = True) -> None:
        """Remove every hook, forward and backward (permanent ones only if asked), and empty
        every hook's ctx."""
        for dir in ("fwd", "bwd"):
            for name in list(self._table(dir)):
                self.reset_one(name, including_permanent, dir)
        if clear_contexts:
            self.clear_contexts()

    def reset_one(self, name: str, including_permanent: bool = False, dir: str = "fwd") -> None:
        """Remove the functions registered at one hook (except permanent ones, unless asked)."""
        table = self._table(dir)
        permanent = self._permanent.get(name, [])
        keep = [] if including_permanent else [f for f in table.get(name, []) if f in permanent]
        gone = [f for f in table.get(name, []) if f not in keep]
        if keep:
            table[name] = list(keep)
        else:
            table.pop(name, None)
        rest = [f for f in permanent if f not in gone]
        if rest:
            self._permanent[name] = rest
        else:
            self._permanent.pop(name, None)

    @property
    def has_backward_hooks(self) -> bool:
        return bool(self._bwd)

    def clear(self) -> None:
        self.reset(including_permanent=True, clear_contexts=False)

    def snapshot(self) -> dict[str, tuple[tuple[HookFn, ...], tuple[HookFn, ...]]]:
        """What is registered now (functions and which are permanent), for `restore`."""
        return {name: (tuple(fns), tuple(self._permanent.get(name, ()))) for name, fns in self._fns.items()}

    def restore(self, snapshot: dict[str, tuple[tuple[HookFn, ...], tuple[HookFn, ...]]]) -> None:
        """Register exactly what `snapshot` held: hooks added since are dropped, removed ones return."""
        self._fns = {name: list(fns) for name, (fns, _) in snapshot.items() if fns}
        self._permanent = {name: list(perm) for name, (_, perm) in snapshot.items() if perm}

    def clear_contexts(self) -> None:
        for point in self._points.values():
            point.clear_context()

    @contextmanager
    def __call__(
        self,
        fwd_hooks: Sequence[tuple[str | Callable[[str], bool], HookFn]] = (),
        bwd_hooks: Sequence[tuple[str | Callable[[str], bool], HookFn]] = (),
        reset_hooks_end: bool = True,
        clear_contexts: bool = False,
    ) -> Iterator[HookRegistry]:
        """`with model.hooks([(name or predicate, fn), ...], bwd_hooks=[...]):` hooks live
        inside the block (backward hooks fire in any backward pass run there).

        They are removed on exit, also when the block raises (unless
        `reset_hooks_end=False`); `clear_contexts` empties the hooks' ctx dicts on exit.
        """
        if isinstance(bwd_hooks, bool):
            raise MinillmError("hooks(fwd_hooks, bwd_hooks, reset_hooks_end, clear_contexts): pass "
                               "reset_hooks_end= by name")
        added: list[tuple[str, HookFn, str]] = []
        try:
            for hooks, dir in ((fwd_hooks, "fwd"), (bwd_hooks, "bwd")):
                for name_or_filter, fn in hooks:
                    for name in self.resolve(name_or_filter):
                        self.add(name, fn, dir=dir)
                        added.append((name, fn, dir))
            yield self
        finally:
            if reset_hooks_end:
                for name, fn, dir in added:
                    self.remove(name, fn, dir)
            if clear_contexts:
                self.clear_contexts()

    def fire_backward(self, grads: dict[str, np.ndarray]) -> None:
        """Call the backward hooks with d(metric)/d(activation), in backward order (last hook first)."""
        for name in reversed(self.valid_names):
            fns = self._bwd.get(name)
            if not fns:
                continue
            if name not in grads:
                raise MinillmError(f"backward hook at {name}: the backward pass computes no gradient "
                                   "there")
            point = self.point(name)
            point.pos_offset = 0
            for fn in list(fns):
                if fn(grads[name], point) is not None:
                    raise MinillmError(
                        f"backward hook at {name} returned a value: minillm's backward hooks observe "
                        "d(metric)/d(activation) and cannot replace it; return None")

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


# --- what the outer rings lend the core -----------------------------------------------------------
# The core never imports grad/, edit/, interp/ or views/ (docs/architecture.md). A few methods
# of the model and its cache need one of them: the backward pass for `bwd_hooks`, the loss
# metric, interventions, the edit journal, weight processing at load, the cache's display.
# minillm/__init__.py hands each of them to the core here, once, when the package is imported
# (and any `import minillm.…` imports the package first).
RING_PARTS: dict[str, Callable[..., Any]] = {}


def ring_part(name: str) -> Callable[..., Any]:
    """The outer ring's implementation registered under `name` in RING_PARTS."""
    try:
        return RING_PARTS[name]
    except KeyError:
        raise MinillmError(f"{name!r} is lent to the core by minillm's outer rings when the package "
                           f"is imported; `import minillm` first") from None
