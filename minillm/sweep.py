"""Long sweeps that can be stopped: Ctrl-C leaves the model pristine and keeps partial results.

A sweep (over layers, neurons, ablation rates...) runs one function per item.
If the user presses Ctrl-C half-way, they should get back the results computed
so far, and a model exactly as it was before the sweep: every weight edit made
during the sweep reverted from the journal (bit for bit), every hook removed.

    result = run_sweep(model, range(model.cfg.n_layers), lambda l: measure(model, l),
                       desc="layers")
    result.values          # {item: value} for the items that finished
    result.interrupted     # True if Ctrl-C stopped it (a warning says how far it got)
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class SweepResult:
    """The finished items' values, in order, and whether the sweep was interrupted."""

    values: dict[Any, Any] = field(default_factory=dict)
    interrupted: bool = False
    total: int | None = None


def run_sweep(model, items: Iterable, fn: Callable[[Any], Any], desc: str = "sweep",
              progress: bool = True) -> SweepResult:
    """fn(item) for each item, with a progress bar; Ctrl-C stops cleanly (see module doc).

    Edits that were in force before the sweep stay; those added during it are
    reverted when the sweep is interrupted or fails. Hooks registered during
    the sweep are removed in both cases. Any other exception propagates after
    the same clean-up.
    """
    from tqdm.auto import tqdm

    items = list(items)
    result = SweepResult(total=len(items))
    edits_before = {id(h) for h in model.edits}
    hooks_before = {name: list(fns) for name, fns in model.hooks._fns.items()}
    try:
        for item in tqdm(items, desc=desc, disable=not progress, leave=False):
            result.values[item] = fn(item)
    except BaseException as e:
        _restore(model, edits_before, hooks_before)
        if not isinstance(e, KeyboardInterrupt):
            raise
        result.interrupted = True
        warnings.warn(f"{desc} interrupted after {len(result.values)} of {len(items)} items; "
                      "the model is back as it was before the sweep", stacklevel=2)
    return result


def _restore(model, edits_before: set[int], hooks_before: dict[str, list]) -> None:
    """Revert edits made since the sweep began (newest first) and drop hooks it added."""
    for handle in reversed(model.edits):
        if id(handle) not in edits_before:
            handle.revert()
    model.hooks._fns.clear()
    model.hooks._fns.update({name: list(fns) for name, fns in hooks_before.items()})
