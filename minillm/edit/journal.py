"""The edit journal: every weight edit with the exact bytes it overwrote, so any edit can be undone.

The journal is a stack of records, oldest first. Each record holds an edit and
a copy of what the edit's slices held *just before* it was applied. So:

* Undoing the newest record is writing its saved copy back: bit-exact.
* Undoing records newest-first, down to record k, gives back exactly the
  weights that were there before record k.
* To revert record k in the middle, the journal rewinds to just before k (undo
  the newer records newest-first), drops k, and re-applies the newer records
  in their original order (saving fresh copies). The weights are then, bit for
  bit, "pristine weights with the remaining edits applied in their original
  order", even when edits overlap, because the arithmetic is deterministic.

An inverse revert (`handle.revert(mode="inverse")`) is different: it applies
the inverse operation (×25 after ×0.04) as a new record. Floating-point
rounding leaves the weights a few ulps away from where they were, so the
model is no longer pristine; a later `handle.revert()` or `revert_all()` still
restores it bit for bit from the saved bytes.

Ctrl-C. Each journal operation (`apply`, `revert`, `revert_all`) is atomic with
respect to SIGINT: an interrupt that arrives while it runs is held until the
weights, the records and the handles agree again, and raised then. So after
Ctrl-C an edit is either applied and recorded or not applied at all (when
`model.edit(op)` was interrupted after the edit was done, the edit stays in
force: `model.edits` lists it and `revert_all()` undoes it). Leaving
`with model.edited(...)` always restores the weights; an interrupt during that
restore is raised once it is done.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from minillm.edit.edits import Edit, check_result
from minillm.errors import MinillmError


@contextmanager
def held_interrupts() -> Iterator[None]:
    """Hold SIGINT (Ctrl-C) until the block is done, then deliver it (KeyboardInterrupt).

    Signals reach Python only in the main thread; elsewhere this does nothing. Nested
    blocks pass a held interrupt outwards, so it is raised when the outermost one ends.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(frame))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            _deliver(previous, received[0])


def _deliver(handler, frame) -> None:
    """Do what `handler` (a previous SIGINT disposition) would have done with a Ctrl-C."""
    if callable(handler):
        handler(signal.SIGINT, frame)
    elif handler != signal.SIG_IGN:  # SIG_DFL, or None (installed outside Python)
        raise KeyboardInterrupt


@dataclass(eq=False)
class Record:
    """One applied op and the bytes its slices held just before it."""

    op: Edit
    handle: EditHandle
    saved: list = field(default_factory=list)  # [(slice, copy of what it held)]
    inverse_of: EditHandle | None = None  # set on records made by an inverse revert


class EditHandle:
    """What `model.edit(op)` returns: describes the edit and reverts it."""

    def __init__(self, journal: Journal, op: Edit, description: str):
        self.journal, self.op, self.description = journal, op, description
        self.state = "active"  # -> "reverted" or "inverse-reverted"

    def revert(self, mode: str = "journal") -> None:
        """Undo this edit: "journal" restores saved bytes (exact), "inverse" applies the inverse op."""
        self.journal.revert(self, mode)

    @property
    def active(self) -> bool:
        return self.state == "active"

    def __repr__(self) -> str:
        return f"<edit: {self.description}{'' if self.active else f' [{self.state}]'}>"

    def _repr_html_(self) -> str:
        from minillm.views.display import esc

        colour = "#1a7f37" if self.active else "#666"
        return (f'<code style="color: {colour}">edit: {esc(self.description)} '
                f"[{esc(self.state)}]</code>")

    __str__ = __repr__


class Journal:
    """The edits applied to one model, newest last."""

    def __init__(self, model):
        self.model = model
        self.records: list[Record] = []

    # --- applying ---------------------------------------------------------------------------

    def apply(self, op: Edit) -> EditHandle:
        """Validate `op` (nothing is written if that fails), save what it will touch, apply it."""
        if not isinstance(op, Edit):
            raise MinillmError(f"model.edit takes an op from minillm.edits, got {op!r}")
        handle = EditHandle(self, op, op.describe(self.model))
        with held_interrupts():
            self._push(Record(op, handle))
        return handle

    def _push(self, record: Record) -> None:
        """Apply a record's op on top of the current weights and keep it on the stack."""
        slices = record.op.plan(self.model)  # validates; raises before any write
        check_result(record.op, self.model, slices)  # finite in the model's dtype, also its inverse
        record.saved = [(s, s.save(self.model)) for s in slices]
        try:
            record.op.write(self.model)
        except BaseException:
            self._undo(record)  # a write that failed half-way leaves nothing behind
            raise
        self.records.append(record)

    def _undo(self, record: Record) -> None:
        for s, saved in reversed(record.saved):
            s.restore(self.model, saved)

    # --- reverting --------------------------------------------------------------------------

    def revert(self, handle: EditHandle, mode: str = "journal") -> None:
        with held_interrupts():
            self._revert(handle, mode)

    def _revert(self, handle: EditHandle, mode: str) -> None:
        if mode not in ("journal", "inverse"):
            raise MinillmError(f"revert mode must be 'journal' or 'inverse', got {mode!r}")
        if handle.journal is not self or handle.state == "reverted":
            raise MinillmError(f"{handle!r} is not applied to this model: nothing to revert")
        if mode == "inverse":
            if handle.state != "active":
                raise MinillmError(f"{handle!r} was already undone by its inverse")
            inverse = handle.op.inverse()  # raises for ops without one (zeroing, set)
            self._push(Record(inverse, handle, inverse_of=handle))
            handle.state = "inverse-reverted"
            return
        self._remove({r for r in self.records if r.handle is handle})
        handle.state = "reverted"

    def _remove(self, dropped: set[Record]) -> None:
        """Rewind to before the oldest dropped record, then re-apply the others in order.

        If a re-applied edit is refused (its result, on weights without the dropped edit,
        would not be finite), everything is put back as it was and the error raised.
        """
        first = min(i for i, r in enumerate(self.records) if r in dropped)
        newer = self.records[first:]
        saved_lists = [list(r.saved) for r in newer]
        now = [(s, s.save(self.model)) for r in newer for s, _ in r.saved]  # current values
        try:
            for record in reversed(newer):
                self._undo(record)
            del self.records[first:]
            for record in newer:
                if record not in dropped:
                    self._push(record)
        except BaseException:
            for record in reversed(self.records[first:]):
                self._undo(record)
            for s, value in now:  # oldest record's slices first, as they were applied
                s.restore(self.model, value)
            self.records[first:] = newer
            for record, saved in zip(newer, saved_lists):
                record.saved = saved
            raise

    def revert_all(self) -> None:
        """Restore every byte any edit touched: the model is pristine again."""
        with held_interrupts():
            for record in reversed(self.records):
                self._undo(record)
                record.handle.state = "reverted"
            self.records.clear()

    def edited(self, *ops: Edit) -> Edited:
        """Apply ops for the duration of a `with` block; revert them on exit, also on exceptions
        and on Ctrl-C (see `Edited`)."""
        return Edited(self, ops)

    # --- reading ----------------------------------------------------------------------------

    @property
    def active(self) -> list[EditHandle]:
        """The edits in force, oldest first."""
        return [r.handle for r in self.records if r.inverse_of is None and r.handle.active]

    @property
    def pristine(self) -> bool:
        """True when every weight holds its original bytes (no record on the stack)."""
        return not self.records

    def describe(self) -> str:
        """Every record, oldest first, one line each."""
        if not self.records:
            return "no edits: the weights are pristine"
        lines = []
        for r in self.records:
            if r.inverse_of is not None:
                lines.append(f"inverse of [{r.inverse_of.description}]: {r.op.describe(self.model)}"
                             " (rounding: not bit-exact)")
            else:
                lines.append(f"{r.handle.description}" + ("" if r.handle.active else f" [{r.handle.state}]"))
            lines[-1] += "; touched " + ", ".join(s.describe() for s, _ in r.saved)
        return "\n".join(lines)


class Edited:
    """`with model.edited(op, ...) as handles:` the edits hold inside the block only.

    Ctrl-C inside the block raises KeyboardInterrupt as usual, and the edits are reverted
    on the way out. While entering and while leaving, Ctrl-C is held: entering applies
    every op or (interrupted, or an op refused) none; leaving always restores the weights,
    and an interrupt that arrived meanwhile is raised once they are restored. For that,
    the block installs a SIGINT handler of its own (main thread only) that raises
    KeyboardInterrupt like Python's own except while the block is entering or leaving.
    """

    def __init__(self, journal: Journal, ops):
        self.journal, self.ops = journal, tuple(ops)
        self.handles: list[EditHandle] = []
        self._busy = False  # entering or leaving: hold Ctrl-C
        self._held = False
        self._previous = None
        self._installed = False

    def _on_sigint(self, signum, frame) -> None:
        if self._previous == signal.SIG_IGN:
            return
        if self._busy or (frame is not None and frame.f_code in _LEAVING_CODE):
            self._held = True  # delivered once the weights are consistent again
            return
        _deliver(self._previous, frame)

    def __enter__(self) -> list[EditHandle]:
        self._busy = True
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)
            self._installed = True
        try:
            for op in self.ops:
                self.handles.append(self.journal.apply(op))
        except BaseException:
            self._leave()  # raises a held interrupt, if any
            raise
        if self._held:
            self._leave()  # interrupted while entering: undo, then raise it
        self._busy = False
        return self.handles

    def __exit__(self, *exc) -> None:
        self._leave()

    def _leave(self) -> None:
        """Revert this block's edits, uninstall the handler, then deliver a held interrupt."""
        self._busy = True
        try:
            for h in reversed(self.handles):
                if h.state != "reverted":
                    h.revert()
        finally:
            if self._installed:
                signal.signal(signal.SIGINT, self._previous)
                self._installed = False
            if self._held:
                self._held = False
                _deliver(self._previous, None)


# A SIGINT seen at the very start of __exit__ or _leave (before `_busy` is set) is held too.
_LEAVING_CODE = {Edited.__exit__.__code__, Edited._leave.__code__}
