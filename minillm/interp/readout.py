"""Reading weights through the vocabulary: what a neuron or a head writes and reads.

    from minillm.interp import readout
    r = readout.neuron_readout(model, layer=20, neuron=123)
    r.promoted, r.suppressed                 # tokens W_out[i] pushes up / down
    r.input_tokens                           # tokens whose embeddings excite the neuron
    readout.top_activating_contexts(model, texts, layer=20, neuron=123)
    ov = readout.head_ov(model, 5, 3)        # W_V W_O of head (5, 3)   [d, d]
    readout.svd_readout(model, ov, kind="ov")  # its top singular directions, as tokens

The matrices (a neuron (l, i); a head (l, h), whose W_K[h] / W_V[h] are the stored
kv-head h // (n_heads / n_kv_heads), `_W_K` / `_W_V`):

    output readout   W_out[i] (⊙ ln_final.w) @ W_U          [V]: the tokens it promotes when it fires
    input readout    W_E @ (ln2.w ⊙ W_in[:, i])            [V]: the tokens whose embedding drives it
                     (Llama: also W_gate[:, i], the gate; both are reported)
    OV circuit       W_V[h] @ W_O[h]                         [d, d]: what the head moves, x_src -> write
    QK circuit       W_Q[h] @ W_K[h]^T                       [d, d]: x_dst^T QK x_src = attention score
                                                             (before RoPE and the 1/sqrt(e) factor)

Norm gains are real parts of the computation (minillm folds them into the
weights only when asked: `minillm.load(..., fold_ln=True)`), so each readout says
whether it includes them. Scales (the rms or std a norm divides by) are
per-position and left out: readouts rank tokens, and a positive scale does
not change a ranking.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm.auto import tqdm

from minillm.errors import MinillmError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from minillm.hooked_model import HookedModel


def _check_layer(model, layer: int) -> None:
    L = model.cfg.n_layers
    if not 0 <= layer < L:
        raise MinillmError(f"layer {layer} does not exist: the model has {L} layers (0..{L - 1})")


def _check_neuron(model, layer: int, neuron: int) -> None:
    _check_layer(model, layer)
    m = model.cfg.d_mlp
    if not 0 <= neuron < m:
        raise MinillmError(f"neuron {neuron} does not exist in layer {layer}: it has {m} neurons "
                           f"(0..{m - 1})")


def _check_head(model, layer: int, head: int) -> int:
    """Validate (layer, head); return the kv-head it reads keys and values from."""
    _check_layer(model, layer)
    h, kv = model.cfg.n_heads, model.cfg.n_kv_heads
    if not 0 <= head < h:
        raise MinillmError(f"head {head} does not exist in layer {layer}: it has {h} heads (0..{h - 1})")
    return head // (h // kv)


def top_tokens(model: HookedModel, scores: np.ndarray, k: int = 10,
               largest: bool = True) -> list[tuple[str, float]]:
    """The k tokens with the largest (or smallest) score.   scores [V] -> [(text, score)]"""
    order = np.argsort(-scores if largest else scores, kind="stable")[:k]
    decode = (lambda i: model.to_string([i])) if model.tokenizer is not None else str
    return [(decode(int(i)), float(scores[i])) for i in order]


def unembed_direction(model: HookedModel, direction: np.ndarray, ln_gain: bool = True) -> np.ndarray:
    """A residual-stream direction read through the unembedding.   [d] -> [V]

    direction (⊙ ln_final.w) @ W_U: the logits it adds per unit of normalized stream.
    """
    w = model.ln_final.gain if ln_gain else 1.0
    return (direction * w) @ model.unembed.W_U  # [V]


def embed_direction(model: HookedModel, direction: np.ndarray) -> np.ndarray:
    """A direction read in the input (embedding) space.   [d] -> [V]: W_E @ direction"""
    return model.embed.W_E @ direction  # [V]


@dataclass
class NeuronReadout:
    """What neuron (layer, neuron) writes and reads, in tokens.

    promoted / suppressed: top / bottom tokens of W_out[i] through W_U (with the final
    gain if `ln_gain`). input_tokens: top tokens of W_E @ (ln2.w ⊙ W_in[:, i]);
    gate_tokens (Llama): same with W_gate. logits_out / logits_out_no_gain [V]: the raw scores.
    """

    layer: int
    neuron: int
    promoted: list[tuple[str, float]]
    suppressed: list[tuple[str, float]]
    input_tokens: list[tuple[str, float]]
    gate_tokens: list[tuple[str, float]] | None
    logits_out: np.ndarray
    logits_out_no_gain: np.ndarray

    def __str__(self) -> str:
        def fmt(pairs):
            return ", ".join(f"{t!r} {v:+.2f}" for t, v in pairs)

        lines = [f"neuron L{self.layer}N{self.neuron}",
                 f"  promotes:   {fmt(self.promoted)}", f"  suppresses: {fmt(self.suppressed)}",
                 f"  read from (W_in):   {fmt(self.input_tokens)}"]
        if self.gate_tokens is not None:
            lines.append(f"  read from (W_gate): {fmt(self.gate_tokens)}")
        return "\n".join(lines)


def neuron_readout(model: HookedModel, layer: int, neuron: int, k: int = 10,
                   ln_gain: bool = True) -> NeuronReadout:
    """Output, input (and gate) readouts of one MLP neuron; see the module docstring."""
    _check_neuron(model, layer, neuron)
    mlp, ln2 = model.blocks[layer].mlp, model.blocks[layer].ln2
    w_out = mlp.W_out[neuron]  # [d]: what the neuron adds to the stream per unit of activation
    out = unembed_direction(model, w_out, ln_gain)  # [V]
    out_other = unembed_direction(model, w_out, not ln_gain)  # [V]
    gain = ln2.gain if ln2 is not None else 1.0  # it reads ln2(x) = x · scale · w (+ b)
    inp = embed_direction(model, gain * mlp.W_in[:, neuron])  # [V]
    gate = embed_direction(model, gain * mlp.W_gate[:, neuron]) if mlp.gated else None
    return NeuronReadout(
        layer, neuron, top_tokens(model, out, k), top_tokens(model, out, k, largest=False),
        top_tokens(model, inp, k), top_tokens(model, gate, k) if gate is not None else None,
        logits_out=out if ln_gain else out_other, logits_out_no_gain=out_other if ln_gain else out,
    )


@dataclass
class Context:
    """One place a neuron fired: its activation, the text index, the position and the text around it."""

    activation: float
    text_index: int
    pos: int
    token: str
    context: str

    def __str__(self) -> str:
        return f"{self.activation:+8.3f}  [{self.text_index}:{self.pos}] ...{self.context}"


def neuron_activations(model: HookedModel, texts: Sequence[str], layer: int, neuron: int, hook: str = "post",
                       progress: bool = False) -> list[np.ndarray]:
    """The neuron's activation at every position of every text (one run per text). -> [p_j] each"""
    _check_neuron(model, layer, neuron)
    name = f"blocks.{layer}.mlp.hook_{hook}"
    model.hooks.check_name(name)
    acts = []
    for text in tqdm(texts, disable=not progress, desc=f"L{layer}N{neuron}"):
        _, cache = model.run_with_cache(text, names_filter=[name])
        acts.append(cache[name][0, :, neuron].copy())  # [p]
    return acts


def top_activating_contexts(model: HookedModel, texts: Sequence[str], layer: int, neuron: int, k: int = 10,
                            window: int = 8, hook: str = "post", progress: bool = False) -> list[Context]:
    """The k (text, position) pairs where the neuron's activation is largest, with `window`
    tokens of context before each (the firing token last, marked with [[...]])."""
    acts = neuron_activations(model, texts, layer, neuron, hook, progress)
    flat = [(float(a[p]), j, p) for j, a in enumerate(acts) for p in range(a.shape[0])]
    flat.sort(key=lambda t: -t[0])
    out = []
    for value, j, p in flat[:k]:
        pieces = model.to_str_tokens(texts[j])
        ctx = "".join(pieces[max(0, p - window):p]) + f"[[{pieces[p]}]]"
        out.append(Context(value, j, p, pieces[p], ctx))
    return out


# --- attention heads: OV and QK circuits ---------------------------------------------------------


def head_ov(model: HookedModel, layer: int, head: int) -> np.ndarray:
    """The OV circuit W_V[h] @ W_O[h].   -> [d, d]: source stream (after ln1) -> write."""
    kv = _check_head(model, layer, head)
    attn = model.blocks[layer].attn
    return attn._W_V[kv] @ attn.W_O[head]  # [d, e] @ [e, d]  (_W_V[kv] is W_V[head])


def head_qk(model: HookedModel, layer: int, head: int) -> np.ndarray:
    """The QK circuit W_Q[h] @ W_K[h]^T.   -> [d, d]: x_dst^T QK x_src (no RoPE, no 1/sqrt(e))."""
    kv = _check_head(model, layer, head)
    attn = model.blocks[layer].attn
    return attn.W_Q[head] @ attn._W_K[kv].T  # [d, e] @ [e, d]  (_W_K[kv] is W_K[head])


@dataclass
class SVDReadout:
    """The top singular directions of a circuit matrix M = U S V^T, each read as tokens.

    singular_values [r]; for each direction j, `inputs[j]` are the tokens whose
    embedding best matches U[:, j] (what M reads) and `outputs[j]` the tokens
    V[j] reads as (through W_U for an OV circuit: what it writes; through W_E for
    QK: what the key side looks for).
    """

    kind: str
    singular_values: np.ndarray
    inputs: list[list[tuple[str, float]]]
    outputs: list[list[tuple[str, float]]]

    def __str__(self) -> str:
        lines = [f"{self.kind} circuit, top singular directions:"]
        for j, s in enumerate(self.singular_values[: len(self.inputs)]):
            lines.append(f"  σ{j} = {s:.3f}:  reads {[t for t, _ in self.inputs[j]]}\n"
                         f"            -> {[t for t, _ in self.outputs[j]]}")
        return "\n".join(lines)


def svd_readout(model: HookedModel, M: np.ndarray, kind: str = "ov", layer: int | None = None, rank: int = 3,
                k: int = 8) -> SVDReadout:
    """Low-rank readout of a [d, d] circuit: M = U S V^T, then each U[:, j] through W_E
    (times ln1.w of `layer`, when given: the head reads ln1(x)) and each V[j] through
    W_U (kind "ov", with ln_final.w) or W_E (kind "qk"). A singular pair (u, v) is only
    defined up to a joint sign (-u, -v); each direction is read at its + end as NumPy returns it."""
    if kind not in ("ov", "qk"):
        raise MinillmError(f"kind must be 'ov' or 'qk', got {kind!r}")
    U, S, Vt = np.linalg.svd(M.astype(np.float64))  # U [d, d], S [d], Vt [d, d]
    ln1 = model.blocks[layer].ln1 if layer is not None else None
    gain = ln1.gain if ln1 is not None else 1.0  # no ln1: OLMo-2 reads the raw stream
    inputs, outputs = [], []
    for j in range(min(rank, S.shape[0])):
        inputs.append(top_tokens(model, embed_direction(model, gain * U[:, j]), k))
        v = Vt[j]
        read = unembed_direction(model, v) if kind == "ov" else embed_direction(model, gain * v)
        outputs.append(top_tokens(model, read, k))
    return SVDReadout(kind, S, inputs, outputs)


def ov_token_table(model: HookedModel, layer: int, head: int, tokens: Sequence[int | str], k: int = 5
                   ) -> dict[str, list[tuple[str, float]]]:
    """For each source token t: the tokens head (layer, head) writes most when attending to t.

    W_E[t] · ln1.w @ W_V W_O · ln_final.w @ W_U  ->  [V] per token (the full OV circuit, per row).
    A copying head maps each token to itself.
    """
    from minillm.interp.lens import token_ids

    ids = token_ids(model, list(tokens))
    ln1 = model.blocks[layer].ln1
    gain = ln1.gain if ln1 is not None else 1.0  # no ln1: OLMo-2 reads the raw stream
    rows = (model.embed.W_E[ids] * gain) @ head_ov(model, layer, head)  # [n, d]
    decode = (lambda i: model.to_string([i])) if model.tokenizer is not None else str
    return {decode(t): top_tokens(model, unembed_direction(model, r), k) for t, r in zip(ids, rows)}


def plot_neuron_readout(r: NeuronReadout, path: str | Path | None = None) -> Figure:
    """Bars of the promoted and suppressed tokens' logit contributions; saved to `path` if given."""
    from minillm.views import figures

    return figures.saved(figures.neuron_readout(r), path)
