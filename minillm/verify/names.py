"""Hook names as dumps use them: forward order, shapes, selection by glob.

The order is the model's own (`minillm.model.PRE_HOOKS`, `BLOCK_HOOKS`, `POST_HOOKS`), plus
one derived name that is not a hook point: `ln_final.out`, the final norm's output with
gain (and bias) applied, i.e. what meets the unembedding (Hugging Face's last
`hidden_states` entry). It sits right after the final norm's hooks.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Sequence

from minillm import model as model_hooks
from minillm.errors import MinillmError
from minillm.hooks import split_name
from minillm.verify import contract

FINAL_OUT = "ln_final.out"  # derived: ln_final.hook_normalized * w (+ b); HF hidden_states[-1]

# Forward order of the hook names: the model's own lists (minillm.model), plus the derived
# ln_final.out right after the final norm's hooks.
PRE_HOOKS = model_hooks.PRE_HOOKS
BLOCK_HOOKS = model_hooks.BLOCK_HOOKS
_i = model_hooks.POST_HOOKS.index("ln_final.hook_normalized") + 1
POST_HOOKS = (*model_hooks.POST_HOOKS[:_i], FINAL_OUT, *model_hooks.POST_HOOKS[_i:])

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
