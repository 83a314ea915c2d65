"""Interactive HTML views: one self-contained file each, offline, plain JavaScript.

    from minillm.views import html
    view = html.attention(model, "When Mary and John went to the store, John gave a drink to")
    view                        # in a notebook: shows in the cell (`_repr_html_`)
    view.save("out/attention.html")   # a file that works from disk, with no network

Four views:
- `attention`: pick a layer and heads (side by side); hover a query token to
  see its weights over the keys; the pattern as a heatmap per head.
- `lens`: the logit-lens grid, layer × position, coloured by the top-1
  probability or a target's probability or rank; hover a cell for its top-k.
- `patching`: a 2-D patching (or any LabelledArray) heatmap; hover a cell for
  its value and what it means; click a column header to sort the rows.
- `neurons`: a text with every token coloured by one MLP neuron's value;
  choose the neuron.
- `top_activations`: max-activating examples over a corpus (a TopActivations
  result): a sortable table of neurons; click one to see its top-k contexts,
  tokens coloured by its value; hover a token for the value.

Everything the page needs is inside it: the numbers as JSON, the CSS and the
JavaScript inline (no CDN, no fonts, no network). The numbers are rounded to
the digits shown (`DIGITS`), which is what the browser tests compare against.
The HTML of a view is a fragment whose element ids are unique, so several
views can live in one notebook; `.html` wraps it in a full document.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from minillm.errors import MinillmError
from minillm.views.display import esc

DIGITS = 4  # decimals kept in the embedded numbers (and shown on hover)




_ASSETS = Path(__file__).parent / "assets"


def _asset(name: str) -> str:
    """A view's JavaScript or CSS, kept as a plain file in minillm/views/assets/."""
    return (_ASSETS / name).read_text(encoding="utf-8")


class HTMLView:
    """A self-contained interactive page: `.html` (a full document), `.save(path)`, `_repr_html_`."""

    def __init__(self, kind: str, title: str, data: dict, body: str, script: str, height: int = 500):
        self.kind, self.title, self.data, self.height = kind, title, data, height
        self.uid = f"mlv-{kind}-{uuid.uuid4().hex[:8]}"
        self._body, self._script = body, script

    def fragment(self) -> str:
        """The view as an HTML fragment (style, markup, data, script), ids unique to this view."""
        data = json.dumps(self.data, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
        return (f"<style>{_asset('views.css')}</style>"
                f'<div class="mlv" id="{self.uid}" data-kind="{self.kind}">'
                f"<h3>{esc(self.title)}</h3>{self._body}</div>"
                f'<script type="application/json" id="{self.uid}-data">{data}</script>'
                f"<script>(function () {{ const DIGITS = {DIGITS};\n{_asset('common.js')}\n"
                f"const root = document.getElementById('{self.uid}');\n"
                f"const D = JSON.parse(document.getElementById('{self.uid}-data').textContent);\n"
                f"{self._script}\n}})();</script>")

    @property
    def html(self) -> str:
        return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
                f"<title>{esc(self.title)}</title></head><body>{self.fragment()}</body></html>\n")

    def save(self, path: str | os.PathLike) -> Path:
        """Write the page (UTF-8, one file) to `path`; parent folders are created."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".part")
        tmp.write_text(self.html, encoding="utf-8")
        os.replace(tmp, path)
        return path

    def _repr_html_(self) -> str:
        return self.fragment()

    def __repr__(self) -> str:
        size = len(self.html.encode("utf-8")) / 1e3
        return f"HTMLView({self.kind!r}, {self.title!r}, {size:.0f} kB; .save(path) writes it)"


def _view(kind: str, title: str, data: dict, controls: str | None, content: str, legend: str) -> HTMLView:
    """A view in the common layout: a controls bar (if any), the content, a legend; its script is
    assets/<kind>.js."""
    bar = "" if controls is None else f'<div class="controls">{controls}</div>'
    body = f'{bar}{content}<div class="legend">{legend}</div>'
    return HTMLView(kind, title, data, body, _asset(f"{kind}.js"))


def _round(a, digits: int = DIGITS) -> list:
    """Nested lists of floats rounded to `digits` decimals (NaN -> None: JSON has no NaN)."""
    a = np.round(np.asarray(a, np.float64), digits)
    return np.where(np.isnan(a), None, a).tolist()


def _tokens(model, prompt) -> np.ndarray:
    return model.to_tokens(prompt) if isinstance(prompt, str) else np.asarray(prompt).reshape(1, -1)


def _check_layer(model, layer: int) -> int:
    L = model.cfg.n_layers
    if not -L <= int(layer) < L:
        raise MinillmError(f"layer {layer} does not exist: the model has {L} layers (0-{L - 1})")
    return int(layer) % L


# --- attention ----------------------------------------------------------------------------------------


def attention(model, prompt: str | Sequence[int], layers: Sequence[int] | None = None,
              heads: Sequence[int] | None = None, layer: int | None = None) -> HTMLView:
    """Attention patterns of `prompt`: choose a layer and heads; hover a query token.

    layers: the layers embedded in the page (default all); heads: the heads
    shown side by side at first (default 0, 1, 2); layer: the layer shown first.
    The page holds hook_pattern [layer, head, q, k] of those layers.
    """
    tokens = _tokens(model, prompt)
    L, H = model.cfg.n_layers, model.cfg.n_heads
    layers = list(range(L)) if layers is None else [_check_layer(model, l) for l in layers]
    heads = list(range(min(3, H))) if heads is None else [int(h) for h in heads]
    bad = [h for h in heads if not 0 <= h < H]
    if bad:
        raise MinillmError(f"head {bad[0]} does not exist: the model has {H} heads per layer (0-{H - 1})")
    first = layers[0] if layer is None else _check_layer(model, layer)
    if first not in layers:
        raise MinillmError(f"layer {first} is not among the embedded layers {layers}")
    names = {f"blocks.{l}.attn.hook_pattern" for l in layers}
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names)
    patterns = [_round(cache[f"blocks.{l}.attn.hook_pattern"][0]) for l in layers]  # each [h, q, k]
    str_tokens = model.to_str_tokens(tokens[0])
    g = H // model.cfg.n_kv_heads
    data = dict(tokens=str_tokens, layers=layers, n_heads=H, group=g, patterns=patterns,
                layer=first, heads=heads)
    head_boxes = "".join(f'<label><input type="checkbox" class="head" value="{h}"'
                         f'{" checked" if h in heads else ""}>{h}</label>' for h in range(H))
    controls = ('<label>layer <select class="layer">'
                + "".join(f'<option value="{l}"{" selected" if l == first else ""}>{l}</option>'
                          for l in layers)
                + f'</select></label><span>heads: {head_boxes}</span>')
    title = f"attention patterns: {len(str_tokens)} tokens, {len(layers)} layers × {H} heads"
    return _view("attention", title, data, controls, '<div class="panels"></div>',
                 "Hover a token to make it the query: the tokens are coloured by how much that query "
                 "attends to each of them (the keys); the numbers are listed under each head.")


# --- logit lens ---------------------------------------------------------------------------------------


def lens(model_or_result, prompt: str | Sequence[int] | None = None,
         targets: int | str | Sequence[int | str] = (), k: int = 5, stream: str = "resid") -> HTMLView:
    """The logit-lens grid (layer × position) of `prompt`, or of a LensResult passed directly.

    Colour by the top-1 probability, or by a target's probability or rank;
    hover a cell for its top-k tokens and the targets' probability and rank.
    """
    from minillm.interp.lens import LensResult, logit_lens

    if isinstance(model_or_result, LensResult):
        res = model_or_result
    else:
        if prompt is None:
            raise MinillmError("lens view: give a prompt (or a LensResult instead of the model)")
        res = logit_lens(model_or_result, prompt, targets=targets, k=k, stream=stream)
    decode = res.decode
    top_tokens = [[[decode(int(i)) for i in cell] for cell in row] for row in res.top_ids]
    data = dict(rows=res.row_labels, tokens=res.str_tokens, stream=res.stream,
                top_tokens=top_tokens, top_probs=_round(res.top_probs),
                targets=[decode(int(t)) for t in res.target_ids],
                target_probs=_round(res.target_probs), target_ranks=np.asarray(res.target_ranks).tolist())
    options = ['<option value="top1">top-1 probability</option>']
    for j, t in enumerate(data["targets"]):
        options.append(f'<option value="p{j}">p({esc(repr(t))})</option>')
        options.append(f'<option value="r{j}">rank of {esc(repr(t))}</option>')
    controls = '<label>colour by <select class="colour">' + "".join(options) + "</select></label>"
    title = f"logit lens ({res.stream}): {len(res.row_labels)} rows × {len(res.str_tokens)} positions"
    return _view("lens", title, data, controls, '<table class="grid"></table><div class="readout"></div>',
                 "Rows: the residual stream after each layer (embed = before block 0), decoded with "
                 "the final norm and the unembedding; cells show the top-1 token. Hover a cell for "
                 "its top-k tokens.")


# --- patching -----------------------------------------------------------------------------------------


def patching(res) -> HTMLView:
    """A 2-D LabelledArray (activation patching, attribution, DLA heads ...) as a sortable heatmap.

    Hover a cell for its value and what it means; click a column header to sort
    the rows by that column (again to reverse; the row header column restores).
    """
    values = np.asarray(res.values, np.float64)
    if values.ndim != 2:
        raise MinillmError(f"patching view draws 2-D results; {res.title!r} has axes {res.axes}")
    meta = res.meta
    component, direction = meta.get("component"), meta.get("direction")
    what = res.title.split(": ", 1)[1] if ": " in res.title else "value"
    if component and direction:
        source, target = ("clean", "corrupted") if direction == "denoising" else ("corrupted", "clean")
        meaning = (f"{component} of the {source} run patched into the {target} run, at {res.axes[0]} "
                   f"{{row}} and {res.axes[1]} {{col}}: {what} = {{value}}")
    else:
        meaning = f"{res.axes[0]} {{row}}, {res.axes[1]} {{col}}: {what} = {{value}}"
    data = dict(values=_round(values), rows=list(res.labels[0]), cols=list(res.labels[1]),
                axes=list(res.axes), meaning=meaning)
    return _view("patching", res.title or "patching", data, None,
                 '<table class="grid"></table><div class="readout"></div>',
                 f"Red: positive, blue: negative ({esc(what)}). Hover a cell for its value; click a "
                 "column header to sort the rows by it (click again to reverse); click the corner to "
                 "restore the order.")


# --- neurons ------------------------------------------------------------------------------------------


def neurons(model, text: str | Sequence[int], layer: int, neurons: Sequence[int] | None = None,
            n_top: int = 20, hook: str = "mlp.hook_post") -> HTMLView:
    """Tokens of `text` coloured by one MLP neuron's value at `layer`; choose the neuron.

    neurons: the neurons offered (default: the `n_top` with the largest
    |value| anywhere in the text). hook: "mlp.hook_post" (default) or "mlp.hook_pre".
    """
    layer = _check_layer(model, layer)
    if hook not in ("mlp.hook_post", "mlp.hook_pre"):
        raise MinillmError(f"neurons view reads mlp.hook_post or mlp.hook_pre, not {hook!r}")
    tokens = _tokens(model, text)
    name = f"blocks.{layer}.{hook}"
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n == name)
    acts = np.asarray(cache[name][0], np.float64)  # [p, d_mlp]
    m = acts.shape[1]
    if neurons is None:
        neurons = [int(i) for i in np.argsort(-np.abs(acts).max(axis=0), kind="stable")[:n_top]]
    else:
        neurons = [int(i) for i in neurons]
        bad = [i for i in neurons if not 0 <= i < m]
        if bad:
            raise MinillmError(f"neuron {bad[0]} does not exist: layer {layer} has {m} neurons (0-{m - 1})")
    data = dict(tokens=model.to_str_tokens(tokens[0]), layer=layer, hook=name, neurons=neurons,
                values=_round(acts[:, neurons].T))  # [n_neurons, p]
    controls = ('<label>neuron <select class="neuron">'
                + "".join(f'<option value="{i}">{layer}:{n}</option>' for i, n in enumerate(neurons))
                + '</select></label><span class="range"></span>')
    title = f"neuron activations: {name}, {len(neurons)} neurons, {len(data['tokens'])} tokens"
    return _view("neurons", title, data, controls, '<div class="tokens"></div><div class="readout"></div>',
                 f"Each token coloured by the chosen neuron's {esc(name)} at that position (red: "
                 "positive, blue: negative; full colour = the neuron's largest |value| here). Hover a "
                 "token for its value.")


# --- max-activating examples ----------------------------------------------------------------------------

MAX_NEURONS = 256  # neurons embedded when none are named (a page of every neuron of a layer is ~10 MB)


def top_activations(top, model=None, neurons: Sequence[int] | None = None, n: int | None = None,
                    max_neurons: int = MAX_NEURONS) -> HTMLView:
    """Max-activating examples (a `minillm.interp.top_activations.TopActivations`) as a page.

    A table of neurons (click a header to sort by it, click a row to choose
    the neuron) and the chosen neuron's examples, best first or in corpus
    order: each context's tokens coloured by the neuron's value (red +,
    blue -), the activating token outlined; hover a token for its value.
    model: decodes the token ids (default: the result's own tokenizer, if it
    has one). neurons: those embedded (default all tracked, or the
    `max_neurons` with the largest top value when there are more). n: at
    most n examples per neuron (default all k).
    """
    decode = top.decoder(model)
    tracked = [int(i) for i in top.neurons]
    if neurons is None:
        neurons = tracked
        if len(neurons) > max_neurons:
            best = np.argsort(-top.values[:, 0].astype(np.float64), kind="stable")[:max_neurons]
            neurons = [tracked[i] for i in sorted(best)]
    else:
        neurons = [int(i) for i in neurons]
        for i in neurons:
            top.index(i)  # raises, naming the neurons tracked
    vocab: dict[int, int] = {}  # token id -> index into data["vocab"]
    rows = []
    for nr in neurons:
        exs = top.examples(nr)[:n]
        rows.append(dict(id=nr, n=len(exs),
                         top=_round(exs[0]["value"]) if exs else None,
                         kth=_round(exs[-1]["value"]) if exs else None,
                         ex=[dict(v=_round(e["value"]), doc=e["doc"], pos=e["pos"], c=e["centre"],
                                  t=[vocab.setdefault(t, len(vocab)) for t in e["tokens"]],
                                  a=_round(e["acts"])) for e in exs]))
    data = dict(hook=top.hook, k=top.k, neurons=rows, vocab=[decode(t) for t in vocab])
    shown = f"{len(neurons)} of {len(tracked)} neurons" if len(neurons) < len(tracked) else \
        f"{len(neurons)} neuron{'s' * (len(neurons) != 1)}"
    body = ('<div class="controls"><label>examples in <select class="order">'
            '<option value="value">order of value (best first)</option>'
            '<option value="document">corpus order (document, position)</option></select></label></div>'
            '<div class="topact"><div class="side"><table class="grid neurons"></table></div>'
            '<div><div class="examples"></div><div class="readout"></div></div></div>'
            f'<div class="legend">{esc(top.caption())}. Click a column header to sort the neurons '
            "(again to reverse), a row to show that neuron's examples. Each context's tokens are "
            "coloured by the neuron's value (red: positive, blue: negative; full colour = the largest "
            "|value| among its examples); the activating token is outlined. Hover a token for its "
            "value.</div>")
    title = f"max-activating examples: {top.hook}, {shown}, top {top.k}"
    return HTMLView("top-activations", title, data, body, _asset("top_activations.js"), height=600)


VIEWS = {"attention": attention, "lens": lens, "patching": patching, "neurons": neurons,
         "top-activations": top_activations}
