"""The activations of one run, by hook name: a dict with TransformerLens-style helpers.

    logits, cache = model.run_with_cache(tokens)
    cache["blocks.3.hook_resid_post"]          # [b, p, d]
    cache["resid_post", 3]                     # the same (TransformerLens short names)
    cache["embed"], cache["scale"]             # hook_embed, ln_final.hook_scale (short names)
    cache.accumulated_resid(apply_ln=True)     # [L + 1, b, p, d]: the logit lens' input
    cache.stack_head_results(pos_slice=-1)     # [L·h, b, d]: per-head writes to the residual
    cache.logit_attrs(stack, " Mary", " John") # [c, ...]: each component's logit difference

Shape legend: c = components of a stack, b = batch, p = positions, d = d_model,
h = heads, e = d_head, m = d_mlp, L = n_layers. After `remove_batch_dim()` the
`b` axis is absent everywhere.

The methods do what TransformerLens's do, and give true logit contributions
whether or not the norms are folded into the weights. TransformerLens's
`apply_ln_to_stack` centres and divides by the cached scale, and leaves the
norm's gain out: by default it has folded that gain into the next weights
(`fold_ln`). minillm keeps the checkpoint's weights unless asked
(`minillm.load(..., fold_ln=True)`), so its `apply_ln_to_stack` also multiplies
by the gain `w` (all ones once folded): `apply_ln_to_stack(stack) @ W_U` is the
direct logit contribution either way. The bias `b` (GPT-2) is never added, as
in TransformerLens: it is not linear in the components (folded, it lives in
`b_U`).
"""

from __future__ import annotations

import numpy as np

from minillm import ops
from minillm.errors import MinillmError, did_you_mean
from minillm.hooks import ring_part

# TransformerLens's short names (utils.get_act_name) -> the name inside block l.
_SHORT = {
    "resid_pre": "hook_resid_pre", "resid_mid": "hook_resid_mid", "resid_post": "hook_resid_post",
    "attn_out": "hook_attn_out", "mlp_out": "hook_mlp_out",
    "q": "attn.hook_q", "k": "attn.hook_k", "v": "attn.hook_v",
    "rot_q": "attn.hook_rot_q", "rot_k": "attn.hook_rot_k",
    "attn_scores": "attn.hook_attn_scores", "scores": "attn.hook_attn_scores",
    "pattern": "attn.hook_pattern", "attn": "attn.hook_pattern",
    "z": "attn.hook_z", "result": "attn.hook_result",
    "pre": "mlp.hook_pre", "pre_linear": "mlp.hook_pre_linear", "post": "mlp.hook_post",
}
_GLOBAL = {"embed": "hook_embed", "pos_embed": "hook_pos_embed", "logits": "hook_logits"}


def act_name(name: str, layer: int | None = None, sublayer: str | None = None) -> str:
    """TransformerLens's `get_act_name`: ("resid_pre", 3) -> "blocks.3.hook_resid_pre".

    ("scale", 3, "ln1") -> "blocks.3.ln1.hook_scale"; ("scale",) -> "ln_final.hook_scale";
    ("normalized", l, "ln2") likewise. A full hook name is returned unchanged.
    """
    if name.startswith(("blocks.", "hook_", "ln_final.")):
        return name
    if name in _GLOBAL:
        return _GLOBAL[name]
    if name in ("scale", "normalized"):
        if layer is None:
            return f"ln_final.hook_{name}"
        return f"blocks.{layer}.{sublayer or 'ln1'}.hook_{name}"
    if name not in _SHORT:
        raise MinillmError(f"unknown short hook name {name!r}; use one of "
                           f"{sorted(_SHORT) + sorted(_GLOBAL) + ['normalized', 'scale']}")
    if layer is None:
        raise MinillmError(f"the short hook name {name!r} needs a layer, e.g. ({name!r}, 0)")
    return f"blocks.{layer}.{_SHORT[name]}"


def _pos(x: np.ndarray, pos_slice, axis: int = -2) -> np.ndarray:
    """Apply a position selection (None, int, slice, or list of ints) along `axis`.

    An int drops the axis, like TransformerLens's Slice.
    """
    if pos_slice is None:
        return x
    index = [slice(None)] * x.ndim
    index[axis] = pos_slice if isinstance(pos_slice, (int, np.integer, slice)) else np.asarray(pos_slice)
    return x[tuple(index)]


class MissingActivation(MinillmError, KeyError):
    """A hook name that is not in the cache (a KeyError too, as a dict would raise)."""

    __str__ = MinillmError.__str__


class ActivationCache(dict):
    """{hook name: array}, in forward order, plus the model that made it.

    Indexing also accepts TransformerLens's short keys: `cache["pattern", 0]`,
    `cache["scale", 3, "ln2"]`, `cache["resid_post", -1]` (negative layers
    count from the end).
    """

    def __init__(self, data: dict[str, np.ndarray], model, has_batch_dim: bool = True):
        super().__init__(data)
        self.model = model
        self.has_batch_dim = has_batch_dim

    def __repr__(self) -> str:  # hook names, shapes and bytes grouped by layer (not the arrays)
        return ring_part("cache_repr")(self)  # views.display.cache_repr

    def _repr_html_(self) -> str:
        return ring_part("cache_html")(self)  # views.display.cache_html

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, tuple):
            name, layer, *sub = key
            if layer is not None and layer < 0:
                layer += self.model.cfg.n_layers
            key = act_name(name, layer, *sub)
        elif isinstance(key, str) and not dict.__contains__(self, key):
            try:
                key = act_name(key)  # "embed" -> "hook_embed", "scale" -> "ln_final.hook_scale"
            except MinillmError:
                pass
        if not dict.__contains__(self, key):

            hint = did_you_mean(key, self)
            raise MissingActivation(f"{key!r} is not in this cache{hint} (it holds {len(self)} hooks: "
                               "pass it in run_with_cache's names_filter)")
        return dict.__getitem__(self, key)

    # --- whole-cache conversions -------------------------------------------------------------

    def remove_batch_dim(self) -> ActivationCache:
        """Drop the batch axis (it must have size 1) from every activation, in place.

        As in TransformerLens, the cache itself changes (and is returned).
        """
        if not self.has_batch_dim:
            return self
        for name, act in self.items():
            if act.shape[0] != 1:
                raise MinillmError(f"remove_batch_dim: {name} has batch size {act.shape[0]}, not 1")
        for name in list(self):
            dict.__setitem__(self, name, dict.__getitem__(self, name)[0])
        self.has_batch_dim = False
        return self

    def apply_slice_to_batch_dim(self, batch_slice) -> ActivationCache:
        """A new cache holding only the batch rows `batch_slice` selects (an int drops the axis)."""
        if not self.has_batch_dim:
            raise MinillmError("apply_slice_to_batch_dim: this cache has no batch axis")
        keep = not isinstance(batch_slice, (int, np.integer))
        return ActivationCache({k: _pos(v, batch_slice, axis=0) for k, v in self.items()},
                               self.model, has_batch_dim=keep)

    def to(self, dtype) -> ActivationCache:
        """A copy with every activation converted to `dtype` (e.g. np.float64)."""
        return ActivationCache({k: v.astype(dtype) for k, v in self.items()}, self.model,
                               self.has_batch_dim)

    # --- residual stream views ---------------------------------------------------------------

    def _layer_arg(self, layer: int | None) -> int:
        L = self.model.cfg.n_layers
        if layer is None or layer == -1:
            return L
        if not 0 <= layer <= L:
            raise MinillmError(f"layer {layer} does not exist: use 0..{L} ({L} = after the last "
                               f"block), or None")
        return layer

    def accumulated_resid(self, layer: int | None = None, incl_mid: bool = False,
                          apply_ln: bool = False, pos_slice=None, mlp_input: bool = False,
                          return_labels: bool = False):
        """The residual stream as it stood before each block.   -> [c, b, p, d]

        Components: `blocks.l.hook_resid_pre` for l = 0 .. layer-1 (with
        `resid_mid` after each if `incl_mid`), then the stream at `layer`:
        `resid_pre` of that block, or the final `resid_post` if layer is None
        or n_layers. So layer=None gives L + 1 components, the input of the
        logit lens. `mlp_input=True` also appends `resid_mid` of `layer`.
        `apply_ln`: for the final stream (layer None or n_layers) each
        component goes through `ln_final` with its *own* statistics, gain and
        bias (the logit lens: `@ W_U` gives each row's logits, as TransformerLens
        3 does); for an earlier layer, through `apply_ln_to_stack` (the scale
        of the norm reading the stream there, frozen). `pos_slice` selects
        positions (an int drops the axis). Labels: "0_pre", "0_mid", ...,
        "final_post".
        """
        layer = self._layer_arg(layer)
        L = self.model.cfg.n_layers
        parts, labels = [], []
        for l in range(layer + 1):
            if l == L:
                parts.append(self["resid_post", L - 1])
                labels.append("final_post")
                continue
            parts.append(self["resid_pre", l])
            labels.append(f"{l}_pre")
            if (incl_mid and l < layer) or (mlp_input and l == layer):
                parts.append(self["resid_mid", l])
                labels.append(f"{l}_mid")
        stack = np.stack([_pos(x, pos_slice) for x in parts])
        if apply_ln:
            stack = self.apply_ln_to_stack(stack, layer, mlp_input, pos_slice,
                                           recompute_ln=layer == L)
        return (stack, labels) if return_labels else stack

    def logit_attrs(self, residual_stack: np.ndarray, tokens, incorrect_tokens=None,
                    pos_slice=None, batch_slice=None, has_batch_dim: bool = True) -> np.ndarray:
        """Each component's direct contribution to the logit of `tokens` (minus `incorrect_tokens`).

        residual_stack [c, b, p, d] (positions already selected by `pos_slice`,
        as for `apply_ln_to_stack`) -> [c, b, p]. The stack goes through the
        final norm with its frozen scale and gain, then onto the unembedding
        columns: tokens may be a single-token text, an id, or ids (one per
        batch row, [b] or [b, p]).
        """
        directions = self.model.tokens_to_residual_directions(tokens)
        if incorrect_tokens is not None:
            wrong = self.model.tokens_to_residual_directions(incorrect_tokens)
            if np.shape(np.asarray(tokens, dtype=object)) != np.shape(np.asarray(incorrect_tokens,
                                                                                  dtype=object)):
                raise MinillmError("logit_attrs: tokens and incorrect_tokens must have the same "
                                   f"shape, got {np.shape(tokens)} and {np.shape(incorrect_tokens)}")
            directions = directions - wrong
        scaled = self.apply_ln_to_stack(residual_stack, None, pos_slice=pos_slice,
                                        batch_slice=batch_slice, has_batch_dim=has_batch_dim)
        return (scaled * directions).sum(-1)

    def decompose_resid(self, layer: int | None = None, mlp_input: bool = False, mode: str = "all",
                        apply_ln: bool = False, pos_slice=None, incl_embeds: bool = True,
                        return_labels: bool = False):
        """The residual stream at `layer` split into what wrote it.   -> [c, b, p, d]

        Components, in order: `embed`, `pos_embed` (GPT-2), then for each block
        before `layer` its attention output ("{l}_attn_out") and MLP output
        ("{l}_mlp_out") — `mode` "attn" or "mlp" keeps only one kind. With
        `mlp_input`, block `layer`'s attention output is included too. With
        mode "all" and incl_embeds, the components sum to the stream at
        `layer` (up to float rounding of the order of the additions).
        """
        if mode not in ("all", "attn", "mlp"):
            raise MinillmError(f"mode must be 'all', 'attn' or 'mlp', got {mode!r}")
        layer = self._layer_arg(layer)
        parts, labels = [], []
        if incl_embeds:
            parts.append(self["hook_embed"])
            labels.append("embed")
            if "hook_pos_embed" in self.model.hooks.valid_names:
                parts.append(self["hook_pos_embed"])
                labels.append("pos_embed")
        for l in range(layer + (1 if mlp_input else 0)):
            if mode in ("all", "attn"):
                parts.append(self["attn_out", l])
                labels.append(f"{l}_attn_out")
            if mode in ("all", "mlp") and l < layer:
                parts.append(self["mlp_out", l])
                labels.append(f"{l}_mlp_out")
        stack = np.stack([_pos(x, pos_slice) for x in parts])
        if apply_ln:
            stack = self.apply_ln_to_stack(stack, layer, mlp_input, pos_slice)
        return (stack, labels) if return_labels else stack

    # --- per-head and per-neuron contributions -----------------------------------------------

    def stack_head_results(self, layer: int | None = None, return_labels: bool = False,
                           incl_remainder: bool = False, pos_slice=None, apply_ln: bool = False):
        """What each attention head of blocks 0 .. layer-1 wrote into the residual stream.

        -> [layer·h, b, p, d], labels "L{l}H{h}". Head (l, h)'s result is
        z[..., h, :] @ W_O[h] (from `hook_z` and the current weights, or
        `hook_result` if it was cached); the output bias b_O is not part of any
        head. `incl_remainder` appends "remainder" = the stream at `layer`
        minus all heads, so the stack sums to the stream. `apply_ln` as in
        `apply_ln_to_stack` (scale of the norm reading the stream at `layer`).
        """
        layer = self._layer_arg(layer)
        parts, labels = [], []
        for l in range(layer):
            result_name = f"blocks.{l}.attn.hook_result"
            if result_name in self:
                result = _pos(self[result_name], pos_slice, axis=-3)  # [b, p, h, d]
            else:
                z = _pos(self["z", l], pos_slice, axis=-3)  # [b, p, h, e]
                result = np.einsum("...he,hed->...hd", z, self.model.blocks[l].attn.W_O)
            factor = self._post_norm_factor(l, "ln1_post", pos_slice)  # [b, p, d] or None
            if factor is not None:
                result = result * factor[..., None, :]
            parts.append(np.moveaxis(result, -2, 0))  # [h, b, p, d]
            labels += [f"L{l}H{h}" for h in range(result.shape[-2])]
        return self._finish_stack(parts, labels, layer, pos_slice, return_labels, incl_remainder,
                                  apply_ln)

    def _post_norm_factor(self, l: int, which: str, pos_slice) -> np.ndarray | None:
        """gain / frozen scale of block l's ln1_post or ln2_post (Gemma, OLMo-2), or None.

        A sublayer's output there goes through its own RMSNorm before it is added; with
        that norm's cached scale frozen (as for ln_final in direct logit attribution),
        each head's or neuron's write is raw · gain / scale, and the writes still sum
        to hook_attn_out / hook_mlp_out.   -> [b, p, d]
        """
        norm = getattr(self.model.blocks[l], which)
        if norm is None:
            return None
        return norm.gain / _pos(self[f"blocks.{l}.{which}.hook_scale"], pos_slice)

    def stack_neuron_results(self, layer: int | None = None, pos_slice=None, neuron_slice=None,
                             return_labels: bool = False, incl_remainder: bool = False,
                             apply_ln: bool = False):
        """What each MLP neuron of blocks 0 .. layer-1 wrote into the residual stream.

        -> [layer·m', b, p, d], labels "L{l}N{i}": neuron (l, i)'s write is
        post[..., i] · W_out[i] (m' = neurons kept by `neuron_slice`, an int,
        slice or list). This is large (SmolLM2: 1536 neurons per layer, each a
        d-vector per position): select positions and neurons when you can.
        The MLP output bias b_out belongs to no neuron.
        """
        layer = self._layer_arg(layer)
        m = self.model.cfg.d_mlp
        keep = np.arange(m)[neuron_slice] if neuron_slice is not None else np.arange(m)
        keep = np.atleast_1d(keep)
        parts, labels = [], []
        for l in range(layer):
            post = _pos(self["post", l], pos_slice)  # [b, p, m]
            post = post[..., keep]  # [b, p, m']
            W_out = self.model.blocks[l].mlp.W_out[keep]  # [m', d]
            write = np.einsum("...m,md->m...d", post, W_out)  # [m', b, p, d]
            factor = self._post_norm_factor(l, "ln2_post", pos_slice)  # [b, p, d] or None
            parts.append(write if factor is None else write * factor)
            labels += [f"L{l}N{i}" for i in keep]
        return self._finish_stack(parts, labels, layer, pos_slice, return_labels, incl_remainder,
                                  apply_ln)

    def _finish_stack(self, parts, labels, layer, pos_slice, return_labels, incl_remainder, apply_ln):
        """Concatenate per-component writes [n_i, b, p, d]; optionally add what they leave
        unexplained of the stream at `layer` ("remainder") and apply the final norm."""
        d = self.model.cfg.d_model
        stack = np.concatenate(parts) if parts else np.zeros((0, *self._stream_shape(pos_slice), d),
                                                              self.model.dtype)
        if incl_remainder:
            stream = self.accumulated_resid(layer, pos_slice=pos_slice)[-1]
            stack = np.concatenate([stack, (stream - stack.sum(0))[None]])
            labels.append("remainder")
        if apply_ln:
            stack = self.apply_ln_to_stack(stack, layer, pos_slice=pos_slice)
        return (stack, labels) if return_labels else stack

    def _stream_shape(self, pos_slice) -> tuple[int, ...]:
        return _pos(self["resid_pre", 0], pos_slice).shape[:-1]

    # --- normalization -----------------------------------------------------------------------

    def apply_ln_to_stack(self, residual_stack: np.ndarray, layer: int | None = None,
                          mlp_input: bool = False, pos_slice=None, batch_slice=None,
                          has_batch_dim: bool = True, recompute_ln: bool = False) -> np.ndarray:
        """Normalize a stack of residual components as the model normalized their sum.

        residual_stack [c, b, p, d] (or any [..., b, p, d] matching the
        cache's positions after `pos_slice`) -> same shape. The norm is the one
        that reads the stream at `layer`: `ln_final` for None or n_layers,
        else block `layer`'s ln1 (ln2 if `mlp_input`). Its cached `hook_scale`
        (the std or rms of the *actual* stream) is frozen: each component is
        centred (LayerNorm), divided by it and multiplied by the norm's gain
        `w`, so the components of a full decomposition sum to that norm's
        output minus its bias — the linearisation direct logit attribution
        uses, true with or without `fold_ln` (folded, `w` is all ones).
        `batch_slice` selects batch rows of the scale (and of the stack, when
        `has_batch_dim`). `recompute_ln` (final norm only): each component
        goes through `ln_final` with its own statistics, gain and bias.
        """
        layer = self._layer_arg(layer)
        L = self.model.cfg.n_layers
        if has_batch_dim and batch_slice is not None and self.has_batch_dim:
            residual_stack = _pos(residual_stack, batch_slice, axis=1)
        if layer == L:
            name, norm = "ln_final.hook_scale", self.model.ln_final
        else:
            which = "ln2" if mlp_input else "ln1"
            name, norm = f"blocks.{layer}.{which}.hook_scale", getattr(self.model.blocks[layer], which)
            if norm is None:  # no norm before the sublayer (OLMo-2): it reads the raw stream
                return residual_stack
        if recompute_ln and layer == L:
            centered, own = self.model.norm_parts(residual_stack, self.model.cfg.eps)
            out = centered / own * norm.gain
            return out if norm.b is None else out + norm.b
        scale = self[name]  # [b, p, 1]
        if batch_slice is not None and self.has_batch_dim:
            scale = _pos(scale, batch_slice, axis=0)
        scale = _pos(scale, pos_slice)  # [b, p, 1] (or [b, 1] for an int pos_slice)
        if self.model.norm_parts is ops.layer_norm_parts:  # LayerNorm centres; RMSNorm does not
            residual_stack = residual_stack - residual_stack.mean(axis=-1, keepdims=True)
        return residual_stack / scale * norm.gain
