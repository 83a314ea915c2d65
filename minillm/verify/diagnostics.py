"""Finding where a forward pass goes wrong: the first hook where a NaN or Inf appears.

A model whose weights hold NaN or Inf loads (with a warning naming the tensors):
it is a legitimate thing to study. Once a non-finite value enters the residual
stream it spreads to every later position and layer, so the useful question is
where it *first* appears. Hooks fire in forward order, so the first hook whose
activation is not finite is that place:

    >>> found = first_nonfinite(model, tokens)
    >>> found.hook, found.index      # e.g. 'blocks.1.mlp.hook_post', (0, 3, 17)

`first_nonfinite_in_cache(cache)` answers the same question for a cache that a
`run_with_cache` user already holds (its keys are in forward order). The -inf
that masks future keys in `hook_attn_scores` is by design and not reported.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class NonFinite:
    """Where a non-finite value first appears.

    hook: the hook name; layer: its block (None outside blocks); index: the
    position of the first non-finite entry in the activation (for [b, p, ...]
    activations: batch, position, then the rest); value: that entry (nan, inf
    or -inf); count: how many entries of this activation are non-finite.
    """

    hook: str
    layer: int | None
    index: tuple[int, ...]
    value: float
    count: int

    def __str__(self) -> str:
        return (f"first non-finite value ({self.value}) at {self.hook}, index {self.index} "
                f"({self.count} non-finite entries in this activation)")


def _check(name: str, act: np.ndarray) -> NonFinite | None:
    bad = ~np.isfinite(act)
    if name.endswith("hook_attn_scores"):  # -inf there is the causal mask, by design
        bad &= ~np.isneginf(act)
    if not bad.any():
        return None
    index = tuple(int(i) for i in np.argwhere(bad)[0])
    from minillm.hooks import layer_of

    return NonFinite(name, layer_of(name), index, float(act[index]), int(bad.sum()))


def first_nonfinite_in_cache(cache: Mapping[str, np.ndarray]) -> NonFinite | None:
    """The first activation of a cache (in its order: forward order for run_with_cache) with NaN/Inf."""
    for name in cache:
        found = _check(name, np.asarray(cache[name]))
        if found is not None:
            return found
    return None


def first_nonfinite(model, tokens, attention_mask=None, fwd_hooks=()) -> NonFinite | None:
    """Run `model` on `tokens` and report the first hook, in forward order, with a NaN or Inf.

    None if every activation is finite. Costs one forward pass and no extra
    memory: each activation is checked as its hook fires, nothing is stored.
    `fwd_hooks` (as for run_with_hooks) run first, so an intervention that
    introduces a NaN is found too.
    """
    found: list[NonFinite] = []

    def check(act, hook):
        if not found:
            hit = _check(hook.name, act)
            if hit is not None:
                found.append(hit)

    every = [(name, check) for name in model.hook_names() if not name.endswith("hook_result")]
    with model.hooks(fwd_hooks):
        model.run_with_hooks(tokens, every, attention_mask=attention_mask)
    return found[0] if found else None
