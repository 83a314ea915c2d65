"""Direct logit attribution: how much each component writes the logit difference directly.

    from minillm.interp.dla import direct_logit_attribution
    dla = direct_logit_attribution(model, "The Eiffel Tower is located in the city of",
                                   correct=" Paris", incorrect=" London")
    dla.total, dla.parts.values.sum()     # equal (up to float rounding)
    dla.heads.plot()                      # [layer, head] heatmap (a Figure)
    dla.parts.top(10)

The final residual stream at the chosen position is a sum of writes:

    x = embed (+ pos_embed) + Σ_l [ Σ_h z_{l,h} W_O[l, h] + b_O[l] ]
                            + Σ_l [ Σ_i post_{l,i} W_out[l, i] + b_out[l] ]

and the logit difference is linear in ln_final's output:

    logit[c] - logit[i] = (centre(x) · s · w + b) @ (W_U[:, c] - W_U[:, i])

where s is ln_final's 1/std (1/rms) of the actual final stream. Freezing s
at its clean-run value (the standard convention) makes the whole expression
linear in x, so each write c gets

    DLA(c) = centre(c) · s · (w ⊙ (W_U[:, c] - W_U[:, i]))

and the parts (plus the constant b @ (W_U[:, c] - W_U[:, i]) for GPT-2's
LayerNorm bias, labelled "ln_final.b") sum to the model's logit difference.

Where a sublayer's output passes through its own norm before it is added
(ln1_post / ln2_post: Gemma, OLMo-2), that norm's scale is frozen the same
way, so each head's and neuron's write is its raw output · gain / scale and
the parts still sum. With Gemma 2's final soft-cap, they sum to the logit
difference before the cap (c · artanh(logit / c)).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from minillm.errors import MinillmError
from minillm.interp.lens import token_ids
from minillm.interp.results import LabelledArray

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from minillm.hooked_model import HookedModel, TokensLike, TokenSpec


@dataclass
class DLAResult:
    """Direct logit attribution of one position (averaged over the batch's prompts).

    parts: 1-D over components (embed, [pos_embed], L{l}H{h}, [L{l}.b_O], L{l}.mlp or
    L{l}N{i} + [L{l}.b_out], [ln_final.b]); parts.values.sum() == total (float rounding).
    heads: [layer, head]; layers: [layer, ("attn", "mlp")].
    per_prompt: [b, components]; total: the mean logit difference the model computed.
    """

    parts: LabelledArray
    heads: LabelledArray
    layers: LabelledArray
    per_prompt: np.ndarray
    total: float
    per_prompt_total: np.ndarray

    def __repr__(self) -> str:
        top = ", ".join(f"{lab[0]} {v:+.3f}" for lab, v in self.parts.top(3))
        return f"DLAResult(total {self.total:.4f}, {self.parts.shape[0]} components; largest: {top})"

    def _repr_html_(self) -> str:
        from minillm.views.display import dla_html

        return dla_html(self)

    def plot(self, path: str | Path | None = None) -> Figure:
        """Per-layer attention and MLP contributions (bars) and the [layer, head] heatmap; saved if `path`."""
        from minillm.views import figures

        return figures.saved(figures.dla(self), path)


def logit_diff_direction(model: HookedModel, correct: TokenSpec, incorrect: TokenSpec | None = None
                         ) -> np.ndarray:
    """W_U[:, correct] - W_U[:, incorrect] (or just W_U[:, correct]).   -> [d] or [b, d]

    correct / incorrect: a token (id or single-token text) or one per prompt.
    """
    W_U = model.unembed.W_U  # [d, V]
    c = token_ids(model, correct)
    direction = W_U[:, c].T  # [n, d]
    if incorrect is not None:
        i = token_ids(model, incorrect)
        if len(i) != len(c) and 1 not in (len(i), len(c)):
            raise MinillmError(f"{len(c)} correct tokens but {len(i)} incorrect ones: give one "
                               "each, or one for all")
        direction = direction - W_U[:, i].T
    return direction  # [n, d]


def direct_logit_attribution(model: HookedModel, tokens: TokensLike, correct: TokenSpec,
                             incorrect: TokenSpec | None = None, pos: int = -1,
                             neurons: bool = False, attention_mask: np.ndarray | None = None
                             ) -> DLAResult:
    """Each component's direct contribution to logit[correct] - logit[incorrect] at `pos`.

    tokens: a str or ids [b, p]; correct / incorrect: one token or one per
    prompt (incorrect=None attributes the correct token's logit itself).
    neurons=True splits each MLP into its d_mlp neurons (post_i · W_out[i]).
    """
    tokens = model.to_tokens(tokens) if isinstance(tokens, str) else np.asarray(tokens)
    b, L, H = tokens.shape[0], model.cfg.n_layers, model.cfg.n_heads
    direction = logit_diff_direction(model, correct, incorrect)  # [n, d]
    if direction.shape[0] not in (1, b):
        raise MinillmError(f"{direction.shape[0]} target tokens for {b} prompts: give 1 or {b}")
    want = ("hook_embed", "hook_pos_embed", "hook_z", "hook_post", "hook_mlp_out",
            "ln_final.hook_scale", "ln1_post.hook_scale", "ln2_post.hook_scale")
    logits, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith(want),
                                         attention_mask=attention_mask)
    scale = cache["ln_final.hook_scale"][:, pos]  # [b, 1]: frozen std or rms (the divisor)
    # The readout vector: what one unit of residual (after centring) adds to the logit difference.
    u = direction * model.ln_final.gain  # [b or 1, d]   w ⊙ (W_U[:, c] - W_U[:, i])
    if model.ln_final.b is not None:  # LayerNorm: centre(c) · u = c · (u - mean(u))
        u = u - u.mean(-1, keepdims=True)

    r = np.broadcast_to(u, (b, u.shape[1])) / scale  # [b, d]: per prompt, frozen scale folded in

    def read(write, readout=r):  # a write [b, ..., d] at pos -> its direct effect [b, ...]
        return np.einsum("b...d,bd->b...", write, readout)

    def through(l, which):  # the readout of a sublayer's raw output through its post-norm
        norm = getattr(model.blocks[l], which)  # ln1_post / ln2_post (Gemma, OLMo-2), or None
        if norm is None:
            return r
        return r * norm.gain / cache[f"blocks.{l}.{which}.hook_scale"][:, pos]  # frozen scale

    parts, labels = [read(cache["hook_embed"][:, pos])[:, None]], ["embed"]
    if "hook_pos_embed" in cache:
        parts.append(read(cache["hook_pos_embed"][:, pos])[:, None])
        labels.append("pos_embed")
    heads, layers = np.zeros((b, L, H)), np.zeros((b, L, 2))
    for l, block in enumerate(model.blocks):
        attn, mlp = block.attn, block.mlp
        r_attn, r_mlp = through(l, "ln1_post"), through(l, "ln2_post")
        result = np.einsum("bhe,hed->bhd", cache["z", l][:, pos], attn.W_O)  # [b, h, d] per-head writes
        heads[:, l] = read(result, r_attn)
        parts.append(heads[:, l])
        labels += [f"L{l}H{h}" for h in range(H)]
        attn_total = heads[:, l].sum(-1)
        if attn.b_O is not None:
            bias = read(np.broadcast_to(attn.b_O, (b, attn.b_O.shape[0])), r_attn)[:, None]
            parts.append(bias)
            labels.append(f"L{l}.b_O")
            attn_total = attn_total + bias[:, 0]
        if neurons:
            post = cache["post", l][:, pos]  # [b, m]
            per_neuron = post * (r_mlp @ mlp.W_out.T)  # [b, m]: post_i · (W_out[i] · r)
            parts.append(per_neuron)
            labels += [f"L{l}N{i}" for i in range(per_neuron.shape[1])]
            mlp_total = per_neuron.sum(-1)
            if mlp.b_out is not None:
                bias = read(np.broadcast_to(mlp.b_out, (b, mlp.b_out.shape[0])), r_mlp)[:, None]
                parts.append(bias)
                labels.append(f"L{l}.b_out")
                mlp_total = mlp_total + bias[:, 0]
        else:
            mlp_total = read(cache["mlp_out", l][:, pos])  # [b]
            parts.append(mlp_total[:, None])
            labels.append(f"L{l}.mlp")
        layers[:, l] = np.stack([attn_total, mlp_total], -1)
    if model.ln_final.b is not None:  # the norm's bias is no component's write: a constant
        parts.append(np.broadcast_to(direction @ model.ln_final.b, (b,))[:, None])
        labels.append("ln_final.b")
    per_prompt = np.concatenate(parts, axis=1)  # [b, components]
    rows = np.arange(b)
    if model.cfg.final_softcap is not None:  # Gemma 2: the parts add up to the logits before
        c = model.cfg.final_softcap  # the soft-cap, c · artanh(capped / c)
        logits = c * np.arctanh(logits.astype(np.float64) / c)
    total = logits[rows, pos, np.broadcast_to(token_ids(model, correct), (b,))]  # [b]
    if incorrect is not None:
        total = total - logits[rows, pos, np.broadcast_to(token_ids(model, incorrect), (b,))]
    title = "direct logit attribution" + (" (logit difference)" if incorrect is not None else "")
    return DLAResult(
        parts=LabelledArray(per_prompt.mean(0), ("component",), (labels,), title=title),
        heads=LabelledArray(heads.mean(0), ("layer", "head"),
                            ([str(l) for l in range(L)], [str(h) for h in range(H)]), title=title),
        layers=LabelledArray(layers.mean(0), ("layer", "sublayer"),
                             ([str(l) for l in range(L)], ["attn", "mlp"]), title=title),
        per_prompt=per_prompt, total=float(np.mean(total)), per_prompt_total=np.asarray(total),
    )
