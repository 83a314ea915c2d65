"""Patchscopes: let the model put a hidden state into words.

    from minillm.interp import patchscopes as ps
    h = ps.hidden_state(model, "Diana, Princess of Wales", layer=8, pos=-1)     # [d]
    ps.patchscope(model, h, layer=8)            # decoded with the identity prompt
    # -> ' Diana, Princess of Wales; ...'
    sweep = ps.layer_sweep(model, "The Eiffel Tower is located in the city of", target=" Paris")
    sweep.plot()   # a Figure; sweep.plot("out/patchscope.png") also saves it

Recipe (Ghandeharioun et al. 2024): take the residual stream h of a source
prompt at `blocks.{l}.hook_resid_pre` (l = 0 is the embeddings; l = L is
the final `resid_post`), at one position; run a *target* prompt and, at
`blocks.{l'}.hook_resid_pre` and the target position, *replace* the stream
by h; then let the model continue greedily. The identity prompt

    "cat -> cat; 1135 -> 1135; hello -> hello; ?"

asks the model to repeat whatever sits at the "?" slot, so the continuation
is the model's own description of h. Injecting at the same layer and
position into the source prompt itself changes nothing (a test checks this).

Multi-hop: the target prompt can ask a question about the placeholder
("The capital of x is"), so that an entity resolved in the source
(e.g. "the country where the Eiffel Tower is") is used in a second hop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm.auto import tqdm

from minillm import ops
from minillm.errors import MinillmError
from minillm.interp import interventions as iv
from minillm.interp.batch import run_variants
from minillm.interp.lens import token_ids
from minillm.interp.results import LabelledArray

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from minillm.hooked_model import HookedModel, TokensLike

IDENTITY_PROMPT = "cat -> cat; 1135 -> 1135; hello -> hello; ?"


def _stream_name(model, layer: int) -> str:
    """Layer l in 0..L-1 -> blocks.l.hook_resid_pre; L -> the last block's hook_resid_post."""
    L = model.cfg.n_layers
    if not 0 <= layer <= L:
        raise MinillmError(f"layer {layer} does not exist: use 0 (embeddings) .. {L} (after the last "
                           f"block)")
    return f"blocks.{layer}.hook_resid_pre" if layer < L else f"blocks.{L - 1}.hook_resid_post"


def hidden_states(model: HookedModel, prompt: TokensLike, pos: int = -1) -> np.ndarray:
    """The residual stream at every layer (0..L) at one position.   -> [L + 1, d]"""
    names = [_stream_name(model, l) for l in range(model.cfg.n_layers + 1)]
    _, cache = model.run_with_cache(prompt, names_filter=names)
    return np.stack([cache[n][0, pos] for n in names])


def hidden_state(model: HookedModel, prompt: TokensLike, layer: int, pos: int = -1) -> np.ndarray:
    """The residual stream of `prompt` before block `layer` (L = final) at `pos`.   -> [d]"""
    name = _stream_name(model, layer)
    _, cache = model.run_with_cache(prompt, names_filter=[name])
    n = cache[name].shape[1]
    if not -n <= pos < n:
        raise MinillmError(f"position {pos} does not exist in the source prompt ({n} tokens)")
    return cache[name][0, pos].copy()


def placeholder_position(model: HookedModel, target_prompt: str, placeholder: str = "?") -> int:
    """The (last) position whose token is the placeholder (spaces ignored)."""
    pieces = model.to_str_tokens(target_prompt)
    hits = [i for i, t in enumerate(pieces) if t.strip() == placeholder]
    if not hits:
        raise MinillmError(f"the placeholder {placeholder!r} is not a token of the target prompt "
                           f"{target_prompt!r} (tokens: {pieces})")
    return hits[-1]


def _absolute(model, target_prompt: str, placeholder: str, pos: int | None) -> int:
    """The injection position as an absolute index (a negative one would move while decoding)."""
    if pos is None:
        return placeholder_position(model, target_prompt, placeholder)
    n = model.to_tokens(target_prompt).shape[1]
    if not -n <= pos < n:
        raise MinillmError(f"position {pos} does not exist in the target prompt ({n} tokens)")
    return pos % n


def inject(model: HookedModel, vector: np.ndarray, layer: int, pos: int) -> iv.Replace:
    """The intervention 'the stream before block `layer`, at absolute position `pos`, becomes vector'."""
    return iv.Replace(_stream_name(model, layer), pos=pos, values=np.asarray(vector))


def patchscope(model: HookedModel, vector: np.ndarray, layer: int, target_prompt: str = IDENTITY_PROMPT,
               pos: int | None = None, placeholder: str = "?", max_new_tokens: int = 10,
               return_logits: bool = False) -> str | tuple[str, np.ndarray]:
    """Inject `vector` [d] into `target_prompt` before block `layer` at `pos` (default: the
    placeholder's position) and generate greedily; returns the continuation (and, with
    return_logits, the next-token logits [V] right after the prompt).

    The replacement holds at that absolute position only; the generated tokens
    come after it and see the patched state through attention (and the KV cache).
    """
    pos = _absolute(model, target_prompt, placeholder, pos)
    with model.intervened([inject(model, vector, layer, pos)]):
        text, logits = model.generate(target_prompt, max_new_tokens=max_new_tokens, return_logits=True)
    return (text, logits[0]) if return_logits else text


def multi_hop(model: HookedModel, source_prompt: str, question: str, layers: Sequence[int],
              placeholder: str = "x", source_pos: int = -1, max_new_tokens: int = 6
              ) -> dict[int, str]:
    """Ask `question` (containing the placeholder word) about the source's hidden state, per layer.

    E.g. source "the country whose capital is Paris", question "The language spoken in x is":
    the first hop (which country) is resolved in the source, the second in the target.
    The same layer is used for reading and injecting.
    """
    states = hidden_states(model, source_prompt, source_pos)
    pos = placeholder_position(model, question, placeholder)
    return {l: patchscope(model, states[l], l, question, pos, max_new_tokens=max_new_tokens)
            for l in layers}


@dataclass
class SweepResult:
    """probs: LabelledArray [source layer, target layer] of p(target token) right after the
    target prompt; top: the top-1 next token per cell."""

    probs: LabelledArray
    top: list[list[str]]

    def plot(self, path: str | Path | None = None) -> Figure:
        """Heatmap of p(target), source layer × target layer; saved to `path` if given."""
        from minillm.views import figures

        return figures.saved(figures.patchscope_sweep(self), path)


def layer_sweep(model: HookedModel, source_prompt: TokensLike, target: int | str,
                target_prompt: str = IDENTITY_PROMPT,
                source_layers: Sequence[int] | None = None, target_layers: Sequence[int] | None = None,
                source_pos: int = -1, pos: int | None = None, placeholder: str = "?",
                batch_size: int = 8, progress: bool = True) -> SweepResult:
    """p(target token) after the target prompt, for every (source layer, target layer) injection.

    One forward pass of the target prompt per cell, batched `batch_size` at a
    time (minillm.interp.batch.run_variants). Layers are 0..L-1 (the stream
    before that block; the default is every block).
    """
    L = model.cfg.n_layers
    source_layers = list(range(L)) if source_layers is None else list(source_layers)
    target_layers = list(range(L)) if target_layers is None else list(target_layers)
    (t_id,) = token_ids(model, target)
    states = hidden_states(model, source_prompt, source_pos)  # [L + 1, d]
    pos = _absolute(model, target_prompt, placeholder, pos)
    tokens = model.to_tokens(target_prompt)
    probs = np.zeros((len(source_layers), len(target_layers)))
    top = []
    for i, s in enumerate(tqdm(source_layers, disable=not progress, desc="patchscope sweep")):
        variants = [[inject(model, states[s], t, pos)] for t in target_layers]
        logits = run_variants(model, tokens, variants, batch_size=batch_size, last_only=True)[:, -1]
        p = ops.softmax(logits.astype(np.float64))  # [n_targets, V]
        probs[i] = p[:, t_id]
        top.append([model.to_string([int(j)]) for j in p.argmax(-1)])
    title = f"patchscope: p({model.to_string([t_id])!r}) after {target_prompt[-20:]!r}"
    return SweepResult(LabelledArray(probs, ("source layer", "target layer"),
                                     ([str(s) for s in source_layers], [str(t) for t in target_layers]),
                                     title=title), top)
