"""The logit lens: decode the residual stream after every layer as if it were the last.

    from minillm.interp.lens import logit_lens
    lens = logit_lens(model, "The Eiffel Tower is located in the city of", targets=[" Paris"])
    print(lens.table())                 # top-k tokens per layer at the last position
    lens.first_layer_top1(" Paris")     # the first row from which " Paris" stays rank 1
    lens.plot()                         # layer × position grid of top-1 tokens (a Figure)
    lens.plot_targets("out/targets.png")  # probability and rank of the targets across layers

The matrices, for the stream x [b, p, d] after block l (row l + 1; row 0 is
the embeddings, before any block):

    logits_l = ln_final(x) @ W_U          ln_final(x) = (x - mean) · (1/std) · w + b   (LayerNorm)
                                                      =  x · (1/rms) · w              (RMSNorm)

with the norm's scale recomputed from x itself, exactly as the model does
for its last layer, so the last row *is* the model's output.

`stream="attn_out"` or `"mlp_out"` decodes what each block's attention or
MLP wrote instead: component c goes through ln_final with the scale frozen
from the final residual stream (the direct-logit-attribution convention:
c · (1/rms_final) · w @ W_U is how much c moves the final logits), so row l
is block l's write. Probabilities there are softmax of those partial logits
(useful for ranking, not a distribution the model ever uses).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from minillm import ops
from minillm.errors import MinillmError
from minillm.interp.results import LabelledArray
from minillm.tokenizer import resolve_token

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from minillm.hooked_model import HookedModel, TokensLike

STREAMS = ("resid", "attn_out", "mlp_out")


def final_norm(model: HookedModel, x: np.ndarray, scale: np.ndarray | None = None) -> np.ndarray:
    """ln_final as the model applies it (or with a given, frozen `scale`).   [..., d] -> [..., d]

    Same operations in the same order as `Transformer.norm`, without firing
    hooks, so decoding the final stream reproduces the model's logits bit for bit.
    """
    centered, own = model.norm_parts(x, model.cfg.eps)  # [..., d], [..., 1]
    normalized = centered / (own if scale is None else scale)
    out = normalized * model.ln_final.gain
    return out if model.ln_final.b is None else out + model.ln_final.b


def unembed(model: HookedModel, normed: np.ndarray) -> np.ndarray:
    """Logits from ln_final's output, as the model computes them: @ W_U, then (Gemma 2)
    the final soft-cap.   [..., d] -> [..., V]"""
    logits = ops.linear(normed, model.unembed.W_U)
    if model.cfg.final_softcap is not None:
        logits = ops.softcap(logits, model.cfg.final_softcap)
    return logits


def token_ids(model: HookedModel, tokens: int | str | Sequence[int | str]) -> list[int]:
    """Targets given as ids or single-token texts (" Paris") -> ids (errors name the culprit)."""
    if isinstance(tokens, (int, np.integer, str)):
        tokens = [tokens]
    return [resolve_token(model, t) for t in tokens]


@dataclass
class LensResult:
    """The lens of one prompt: rows = layers, columns = positions.

    top_ids / top_probs / top_logits [rows, p, k]: the k most likely tokens per cell.
    target_ids [T]; target_probs / target_ranks [rows, p, T] (rank 1 = most likely).
    row_labels: "embed", "L0", ... ("L{l}" = after block l, or block l's write).
    """

    stream: str
    row_labels: list[str]
    str_tokens: list[str]
    top_ids: np.ndarray
    top_probs: np.ndarray
    top_logits: np.ndarray
    target_ids: list[int]
    target_probs: np.ndarray
    target_ranks: np.ndarray
    decode: object  # id -> text (the model's tokenizer)

    def tokens_at(self, row: int, pos: int = -1) -> list[str]:
        return [self.decode(int(i)) for i in self.top_ids[row, pos]]

    def __repr__(self) -> str:
        from minillm.views.display import lens_repr

        return lens_repr(self)

    def _repr_html_(self) -> str:  # the interactive lens grid
        from minillm.views import html

        return html.lens(self)._repr_html_()

    def table(self, pos: int = -1, k: int | None = None) -> str:
        """Top-k tokens per layer at one position, and the targets' prob and rank, as text.

        For stream="resid" the cells show probabilities; for attn_out / mlp_out the
        partial logits each write adds (frozen final scale).
        """
        k = self.top_ids.shape[-1] if k is None else k
        resid = self.stream == "resid"  # components: show their partial logits, not probabilities
        values = self.top_probs if resid else self.top_logits
        head = f"{'layer':>6}  " + "  ".join(f"{'top ' + str(j + 1):<22}" for j in range(k))
        head += "".join(f"  {repr(self.decode(t)):>14} p / rank" for t in self.target_ids)
        lines = [f"{self.stream} lens at position {pos} ({self.str_tokens[pos]!r})", head]
        for r, label in enumerate(self.row_labels):
            cells = [f"{repr(self.decode(int(i)))[:14]:<14} " + (f"{v:6.1%} " if resid else f"{v:+7.2f}")
                     for i, v in zip(self.top_ids[r, pos, :k], values[r, pos, :k])]
            tgt = "".join(f"  {self.target_probs[r, pos, j]:14.2%} / {self.target_ranks[r, pos, j]:<5d}"
                          for j in range(len(self.target_ids)))
            lines.append(f"{label:>6}  " + "  ".join(cells) + tgt)
        return "\n".join(lines)

    def grid(self, max_chars: int = 8) -> str:
        """The top-1 token of every layer × position, as a text grid."""
        width = max_chars + 2
        lines = [" " * 7 + "".join(f"{repr(t)[1:-1][:max_chars]:<{width}}" for t in self.str_tokens)]
        for r, label in enumerate(self.row_labels):
            cells = [repr(self.decode(int(i)))[1:-1][:max_chars] for i in self.top_ids[r, :, 0]]
            lines.append(f"{label:>6} " + "".join(f"{c:<{width}}" for c in cells))
        return "\n".join(lines)

    def first_layer_top1(self, target: int | str, pos: int = -1) -> str | None:
        """The row label from which `target` is ranked first at every later row (None if never)."""
        j = self._target_index(target)
        top1 = self.target_ranks[:, pos, j] == 1
        if not top1[-1]:
            return None
        r = len(top1) - 1
        while r > 0 and top1[r - 1]:
            r -= 1
        return self.row_labels[r]

    def _target_index(self, target) -> int:
        if isinstance(target, str):
            matches = [j for j, t in enumerate(self.target_ids) if self.decode(t) == target]
            if not matches:
                raise MinillmError(f"{target!r} is not one of this lens' targets "
                                   f"{[self.decode(t) for t in self.target_ids]}")
            return matches[0]
        if int(target) not in self.target_ids:
            raise MinillmError(f"token id {target} is not one of this lens' targets {self.target_ids}")
        return self.target_ids.index(int(target))

    def target_array(self, pos: int = -1, what: str = "prob") -> LabelledArray:
        """Target probability (or rank) per layer at one position: [rows, T]."""
        values = self.target_probs if what == "prob" else self.target_ranks
        return LabelledArray(values[:, pos], ("layer", "target"),
                             (self.row_labels, [self.decode(t) for t in self.target_ids]),
                             title=f"{self.stream} lens: target {what} at {self.str_tokens[pos]!r}")

    def plot(self, path: str | Path | None = None) -> Figure:
        """Layer × position grid, colour = top-1 probability, text = top-1 token; saved if `path`."""
        from minillm.views import figures

        return figures.saved(figures.lens_grid(self), path)

    def plot_targets(self, path: str | Path | None = None, pos: int = -1) -> Figure:
        """Each target's probability (left) and rank (right, log scale) across layers; saved if `path`."""
        from minillm.views import figures

        return figures.saved(figures.lens_targets(self, pos), path)


def _streams(model, cache, stream: str) -> tuple[list[np.ndarray], list[str], np.ndarray | None]:
    """The arrays to decode ([b, p, d] each), their row labels, and the frozen scale (or None)."""
    L = model.cfg.n_layers
    if stream == "resid":
        xs = [cache["resid_pre", l] for l in range(L)] + [cache["resid_post", L - 1]]
        return xs, ["embed"] + [f"L{l}" for l in range(L)], None
    xs = [cache[stream, l] for l in range(L)]
    return xs, [f"L{l}" for l in range(L)], cache["ln_final.hook_scale"]


def _top_k(logits: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest entries of each row, largest first.   [p, V] -> [p, k]"""
    k = min(k, logits.shape[-1])
    part = np.argpartition(-logits, k - 1, axis=-1)[:, :k]  # the top k, unordered
    order = np.argsort(-np.take_along_axis(logits, part, -1), axis=-1, kind="stable")
    return np.take_along_axis(part, order, -1)


def logit_lens(model: HookedModel, tokens: TokensLike, targets: int | str | Sequence[int | str] = (),
               k: int = 5,
               stream: str = "resid", attention_mask: np.ndarray | None = None,
               batch_row: int = 0) -> LensResult:
    """Decode every layer's residual stream (or attn/MLP writes) at every position.

    tokens: a str or ids [b, p] (one row, `batch_row`, is kept). targets:
    tokens whose probability and rank to follow across layers. Returns a
    `LensResult`; its last row (stream="resid") equals the model's logits.
    """
    if stream not in STREAMS:
        raise MinillmError(f"stream must be one of {STREAMS}, got {stream!r}")
    if k < 1:
        raise MinillmError(f"k must be at least 1, got {k}")
    target_ids = token_ids(model, targets) if targets is not None and np.size(targets) else []
    tokens = model.to_tokens(tokens) if isinstance(tokens, str) else np.asarray(tokens)
    want = ("hook_resid_pre", "hook_resid_post", "ln_final.hook_scale", f"hook_{stream}")
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith(want),
                                    attention_mask=attention_mask)
    xs, labels, frozen = _streams(model, cache, stream)
    rows = []
    for x in xs:  # one layer at a time: [b, p, V] logits would not fit for all layers at once
        logits = unembed(model, final_norm(model, x, frozen))[batch_row]  # [p, V]
        logp = ops.log_softmax(logits.astype(np.float64))  # [p, V]
        top = _top_k(logits, k)  # [p, k]
        ranks = np.stack([(logits > logits[:, [t]]).sum(-1) + 1 for t in target_ids], -1) \
            if target_ids else np.zeros((logits.shape[0], 0), np.int64)  # [p, T]
        rows.append((top, np.exp(np.take_along_axis(logp, top, -1)),
                     np.take_along_axis(logits, top, -1), np.exp(logp[:, target_ids]), ranks))
    top_ids, top_probs, top_logits, t_probs, t_ranks = (np.stack(a) for a in zip(*rows))
    str_tokens = model.to_str_tokens(tokens[batch_row]) if model.tokenizer is not None else \
        [str(int(i)) for i in tokens[batch_row]]
    decode = (lambda i: model.to_string([i])) if model.tokenizer is not None else str
    return LensResult(stream, labels, str_tokens, top_ids, top_probs, top_logits, target_ids,
                      t_probs, t_ranks, decode)


def lens_logits(model: HookedModel, tokens: TokensLike, layer: int,
                attention_mask: np.ndarray | None = None) -> np.ndarray:
    """Full logit-lens logits of one row of the lens (0 = embeddings, l + 1 = after block l).

    tokens [b, p] -> [b, p, V]. `logit_lens` keeps only top-k and targets; this keeps everything.
    """
    L = model.cfg.n_layers
    if not 0 <= layer <= L:
        raise MinillmError(f"lens row {layer} does not exist: use 0 (embeddings) .. {L} (after the "
                           f"last block)")
    name = f"blocks.{layer}.hook_resid_pre" if layer < L else f"blocks.{L - 1}.hook_resid_post"
    tokens = model.to_tokens(tokens) if isinstance(tokens, str) else np.asarray(tokens)
    _, cache = model.run_with_cache(tokens, names_filter=[name], attention_mask=attention_mask)
    return unembed(model, final_norm(model, cache[name]))  # [b, p, V]

