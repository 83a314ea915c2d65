"""Max-activating examples: for each chosen neuron, the top-k contexts of a corpus.

    from minillm.interp import top_activations as T
    top = T.top_activations(model, corpus, layer=3, neurons=[7, 42], k=20)
    print(top.text(neuron=7))              # value, document, position, context with the token marked
    top                                    # in a notebook: the interactive view (minillm.views.html)
    top.view().save("out/top.html")        # the same view as one offline file
    top.save("out/top"); T.TopActivations.load("out/top", model)

For every neuron, a bounded buffer of the k best (value, document, token
offset) entries, with the context around each (`before` tokens, the token,
`after` tokens, cut at the window's edges) and the neuron's activation on
every context token. Memory is k entries per neuron whatever the corpus
size. Each batch contributes its own k best per neuron (np.argpartition),
which are merged with the buffer; "best" is the largest value, ties broken
by (document, offset), earliest first, so the result is a function of the
corpus alone. Two buffers merge exactly (the top k of a union is the top k
of the tops), so shards run on any engine give the same top-k as one
serial pass over the same shards.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from minillm.activation_cache import act_name
from minillm.data import shards
from minillm.data.corpus import Batch, Corpus
from minillm.errors import MinillmError
from minillm.interp.stats import collect, probe_shapes

if TYPE_CHECKING:
    from minillm.hooked_model import HookedModel


@dataclass
class TopActivations:
    """The k best contexts of each neuron of one hook (see the module docstring)."""

    hook: str
    neurons: np.ndarray  # [n] neuron indices (the hook's last axis)
    k: int
    before: int
    after: int
    values: np.ndarray  # [n, k] float32, best first; -inf = empty slot
    doc: np.ndarray  # [n, k] int64 document number; -1 = empty
    pos: np.ndarray  # [n, k] int64 token offset in the document
    tokens: np.ndarray  # [n, k, before + 1 + after] int32 context ids; -1 = outside the window
    acts: np.ndarray  # [n, k, before + 1 + after] float32 the neuron's value on each context token
    meta: dict = field(default_factory=dict)
    tokenizer: object = field(default=None, repr=False, compare=False)  # decodes ids; not saved

    @classmethod
    def empty(cls, hook: str, neurons, k: int, before: int, after: int) -> TopActivations:
        n, c = len(neurons), before + 1 + after
        return cls(
            hook,
            np.asarray(neurons, np.int64),
            k,
            before,
            after,
            np.full((n, k), -np.inf, np.float32),
            np.full((n, k), -1, np.int64),
            np.full((n, k), -1, np.int64),
            np.full((n, k, c), -1, np.int32),
            np.full((n, k, c), np.nan, np.float32),
            {},
        )

    @property
    def width(self) -> int:
        return self.before + 1 + self.after

    def update(self, batch: Batch, act: np.ndarray) -> None:
        """Fold in one batch: act [b, p, d_mlp] of this hook."""
        sel = act[..., self.neurons].astype(np.float32)  # [b, p, n]
        b, p, n = sel.shape
        flat = np.where(batch.mask.astype(bool)[..., None], sel, -np.inf).reshape(b * p, n)  # [b·p, n]
        k = min(self.k, b * p)
        idx = (
            np.argpartition(-flat, k - 1, axis=0)[:k]
            if k < b * p
            else np.broadcast_to(np.arange(b * p)[:, None], (b * p, n))
        )  # [k, n]
        vals = np.take_along_axis(flat, idx, axis=0)  # [k, n]
        row, col = idx // p, idx % p
        real = np.isfinite(vals)
        doc = np.where(real, batch.doc[row], -1)
        pos = np.where(real, batch.start[row] + col, -1)
        c = col[..., None] + np.arange(-self.before, self.after + 1)  # [k, n, C]
        ok = real[..., None] & (c >= 0) & (c < batch.length[row][..., None])
        cc = np.clip(c, 0, p - 1)
        rr = np.broadcast_to(row[..., None], c.shape)
        toks = np.where(ok, batch.tokens[rr, cc], -1).astype(np.int32)
        nn = np.broadcast_to(np.arange(n)[None, :, None], c.shape)
        a = np.where(ok, sel[rr, cc, nn], np.nan).astype(np.float32)
        self._keep(
            np.concatenate([self.values, vals.T], 1),
            np.concatenate([self.doc, doc.T], 1),
            np.concatenate([self.pos, pos.T], 1),
            np.concatenate([self.tokens, toks.transpose(1, 0, 2)], 1),
            np.concatenate([self.acts, a.transpose(1, 0, 2)], 1),
        )

    def merge(self, other: TopActivations) -> TopActivations:
        """Fold in another shard's buffer (in place): the top k of both."""
        if (
            other.hook != self.hook
            or not np.array_equal(other.neurons, self.neurons)
            or (other.k, other.before, other.after) != (self.k, self.before, self.after)
        ):
            raise MinillmError(
                f"cannot merge top activations of {other.hook} (neurons {len(other.neurons)}, "
                f"k={other.k}) into {self.hook} (neurons {len(self.neurons)}, k={self.k})"
            )
        self._keep(
            np.concatenate([self.values, other.values], 1),
            np.concatenate([self.doc, other.doc], 1),
            np.concatenate([self.pos, other.pos], 1),
            np.concatenate([self.tokens, other.tokens], 1),
            np.concatenate([self.acts, other.acts], 1),
        )
        shards.merge_counts(self.meta, other.meta)
        return self

    def _keep(self, values, doc, pos, tokens, acts) -> None:
        """Keep the k best per neuron: largest value first, then lowest (document, offset)."""
        empty = doc < 0
        order = np.lexsort(
            (
                np.where(empty, np.iinfo(np.int64).max, pos),
                np.where(empty, np.iinfo(np.int64).max, doc),
                -values.astype(np.float64),
            ),
            axis=-1,
        )[:, : self.k]  # [n, k]
        self.values = np.take_along_axis(values, order, 1)
        self.doc = np.take_along_axis(doc, order, 1)
        self.pos = np.take_along_axis(pos, order, 1)
        self.tokens = np.take_along_axis(tokens, order[..., None], 1)
        self.acts = np.take_along_axis(acts, order[..., None], 1)

    def index(self, neuron: int) -> int:
        hit = np.flatnonzero(self.neurons == neuron)
        if not hit.size:
            raise MinillmError(
                f"neuron {neuron} was not tracked; these results cover {_ranges(self.neurons)}"
            )
        return int(hit[0])

    # --- showing them ---------------------------------------------------------------------

    def examples(self, neuron: int) -> list[dict]:
        """[{value, doc, pos, tokens, acts}] for one neuron, best first (empty slots left out)."""
        i = self.index(neuron)
        out = []
        for j in range(self.k):
            if self.doc[i, j] < 0:
                continue
            keep = self.tokens[i, j] >= 0
            centre = int(keep[: self.before].sum())
            out.append(
                dict(
                    value=float(self.values[i, j]),
                    doc=int(self.doc[i, j]),
                    pos=int(self.pos[i, j]),
                    tokens=self.tokens[i, j][keep].tolist(),
                    acts=self.acts[i, j][keep].tolist(),
                    centre=centre,
                )
            )
        return out

    def text(self, model=None, neuron: int | None = None, n: int | None = None) -> str:
        """Terminal text: per neuron, its examples with the activating token in [[ ]]."""
        neurons = [neuron] if neuron is not None else self.neurons.tolist()
        decode = self.decoder(model)
        lines = []
        for nr in neurons:
            lines.append(f"{self.hook} neuron {nr}: top {self.k}")
            for r, ex in enumerate(self.examples(nr)[:n], 1):
                pieces = [decode(t) for t in ex["tokens"]]
                pieces[ex["centre"]] = f"[[{pieces[ex['centre']]}]]"
                lines.append(f"{r:3d}. {ex['value']:9.4f}  doc {ex['doc']} @ {ex['pos']}:  {''.join(pieces)}")
        return "\n".join(lines)

    def decoder(self, model=None):
        """id -> the token's text (newlines shown as ⏎): from `model`, else the tokenizer these results
        were computed with (kept in memory, or found in the model folder named in `meta`), else <id>."""
        tok = model.tokenizer if model is not None else self.tokenizer
        if tok is None:
            folder = Path(str(self.meta.get("model", "")))
            if (folder / "tokenizer.json").is_file():
                from minillm.tokenizer import Tokenizer

                tok = self.tokenizer = Tokenizer(folder / "tokenizer.json")
        if tok is None:
            return lambda t: f"<{int(t)}>"
        return lambda t: tok.decode([int(t)]).replace("\n", "⏎")

    def view(self, model=None, neurons: Sequence[int] | None = None, n: int | None = None):
        """The interactive HTML view (minillm.views.html.top_activations): `.save(path)`, or show it."""
        from minillm.views import html

        return html.top_activations(self, model, neurons, n)

    def _repr_html_(self) -> str:
        return self.view()._repr_html_()

    def __repr__(self) -> str:
        filled = int((self.doc >= 0).sum())
        return (f"TopActivations({self.hook}, {len(self.neurons)} neurons ({_ranges(self.neurons)}), "
                f"top {self.k}: {filled} examples, {self.meta.get('n_tokens', '?')} tokens)")

    def caption(self) -> str:
        """Where these examples come from, in one line."""
        m = self.meta
        corpus = m.get("corpus", {})
        where = ", ".join(corpus.get("paths", [])) or f"{corpus.get('n_texts', '?')} texts"
        return (
            f"model {m.get('model', '?')} · corpus {where} ({m.get('n_tokens', '?')} tokens) · top {self.k} "
            f"per neuron · context {self.before} before, {self.after} after · ties: earliest document first"
        )

    # --- files ----------------------------------------------------------------------------

    def to_file(self, path: str | Path) -> None:
        t = dict(neurons=self.neurons, values=self.values, doc=self.doc, pos=self.pos, tokens=self.tokens,
                 acts=self.acts)
        info = dict(hook=self.hook, k=self.k, before=self.before, after=self.after, meta=self.meta)
        shards.write_tensors(path, t, "minillm_top", info)

    @classmethod
    def from_file(cls, path: str | Path) -> TopActivations:
        info, t = shards.read_tensors(path, "minillm_top", "top-activations")
        return cls(info["hook"], t["neurons"], info["k"], info["before"], info["after"], t["values"],
                   t["doc"], t["pos"], t["tokens"], t["acts"], info["meta"])

    def save(self, folder: str | Path) -> Path:
        """folder/top.safetensors (all arrays) + folder/top.json (metadata)."""
        summary = dict(self.meta, hook=self.hook, k=self.k, neurons=_ranges(self.neurons))
        return shards.save_result(self, folder, "top", summary)

    @classmethod
    def load(cls, folder_or_file: str | Path, model=None) -> TopActivations:
        """Read `save`'s folder (or its top.safetensors); `model` decodes the tokens (see `decoder`)."""
        top = cls.from_file(shards.result_file(folder_or_file, "top", "top-activations"))
        top.tokenizer = model.tokenizer if model is not None else None
        return top


def _ranges(ids) -> str:
    ids = sorted(int(i) for i in ids)
    out, start = [], None
    for a, b in zip(ids, ids[1:] + [None]):
        start = a if start is None else start
        if b != a + 1:
            out.append(f"{start}" if start == a else f"{start}-{a}")
            start = None
    return ",".join(out)


@dataclass(frozen=True)
class TopJob:
    """What each shard computes (a `minillm.data.shards.CorpusTask` job): picklable, small."""

    hook: str
    neurons: tuple[int, ...]
    k: int
    before: int
    after: int

    def empty(self) -> TopActivations:
        return TopActivations.empty(self.hook, self.neurons, self.k, self.before, self.after)

    def update(self, acc: TopActivations, model: HookedModel, batch: Batch) -> None:
        acc.update(batch, collect(model, batch, [self.hook])[self.hook])


def top_activations(
    model: HookedModel,
    corpus: Corpus | Sequence[str],
    layer: int | None = None,
    neurons: Sequence[int] | None = None,
    k: int = 20,
    hook: str | None = None,
    before: int = 24,
    after: int = 8,
    **engine: Any,
) -> TopActivations:
    """The top-k contexts of MLP neurons (default: `blocks.{layer}.mlp.hook_post`, every neuron).

    hook: any hook with a neuron axis last (e.g. "blocks.3.mlp.hook_pre", or
    "blocks.3.hook_resid_post" for residual dimensions). engine: window,
    batch_size, docs_per_shard, executor, out, resume, progress, as for
    `minillm.interp.stats.corpus_stats`.
    """
    corpus = corpus if isinstance(corpus, Corpus) else Corpus.from_texts(corpus)
    if hook is None:
        if layer is None:
            raise MinillmError("say which neurons: layer= (MLP neurons of that layer) or hook=")
        L = model.cfg.n_layers
        if not 0 <= int(layer) < L:
            raise MinillmError(f"layer {layer} does not exist: the model has {L} layers (0..{L - 1})")
        hook = act_name("post", int(layer))
    model.hooks.check_name(hook)
    if hook.endswith(("hook_pattern", "hook_attn_scores")) or ".attn.hook_" in hook:
        raise MinillmError(
            f"{hook}: top activations need a hook whose last axis is a neuron or a "
            "dimension (mlp hooks, resid, attn_out, mlp_out)"
        )
    width = probe_shapes(model)[hook][-1]
    neurons = list(range(width)) if neurons is None else [int(i) for i in neurons]
    if not neurons:
        raise MinillmError("an empty list of neurons: give at least one, or None for all")
    for i in neurons:
        if not 0 <= i < width:
            raise MinillmError(f"neuron {i} does not exist at {hook}: it has {width} (0..{width - 1})")
    if k < 1 or before < 0 or after < 0:
        raise MinillmError(
            f"k must be at least 1 and before/after at least 0, got k={k}, before={before}, after={after}"
        )
    job = TopJob(hook, tuple(neurons), k, before, after)
    params = dict(kind="top_activations", hook=hook, neurons=_ranges(neurons), k=k, before=before,
                  after=after)
    res = shards.run_corpus_job(model, corpus, job, params, TopActivations.from_file, "top activations",
                                **engine)
    res.tokenizer = model.tokenizer
    return res
