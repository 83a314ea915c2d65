"""Small building blocks for the notebook displays (`_repr_html_`) and short reprs of results.

Every result object's `_repr_html_` is a few lines built from these: a title,
a table, a heat-coloured table. The HTML is plain (inline styles only), so it
renders the same in Jupyter, VS Code and a static HTML export.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence

import numpy as np

MAX_CELLS = 1600  # a heat table larger than this shows its top entries instead


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def tok(text: str) -> str:
    """A token string as shown in tables: quoted, with escapes visible (' Paris', '\\n')."""
    return repr(str(text))


def num(v: float, digits: int = 4) -> str:
    v = float(v)
    if np.isnan(v):
        return "nan"
    return f"{v:.{digits}g}"


def nbytes(n: int) -> str:
    """Bytes as a short human string: 512 B, 12.3 kB, 4.5 MB, 1.2 GB (powers of 1000)."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def shape(s: Sequence[int]) -> str:
    return "[" + ", ".join(str(int(x)) for x in s) + "]"


STYLE = ("font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12px; "
         "border-collapse: collapse")
CELL = "padding: 2px 6px; border: 1px solid #ddd; text-align: right"
HEAD = "padding: 2px 6px; border: 1px solid #ddd; background: #f4f4f4; text-align: left"


def table(header: Sequence[str], rows: Iterable[Sequence[object]], caption: str = "") -> str:
    """An HTML table; cells are escaped."""
    out = [f'<table style="{STYLE}">']
    if caption:
        out.append(f'<caption style="text-align: left; font-weight: bold; padding: 2px">{esc(caption)}'
                   "</caption>")
    out.append("<tr>" + "".join(f'<th style="{HEAD}">{esc(h)}</th>' for h in header) + "</tr>")
    for row in rows:
        out.append("<tr>" + "".join(f'<td style="{CELL}">{esc(c)}</td>' for c in row) + "</tr>")
    out.append("</table>")
    return "".join(out)


def colour(v: float, lim: float) -> str:
    """Red for positive, blue for negative, white at 0; |v| = lim is full colour."""
    if not np.isfinite(v) or lim <= 0:
        return "#eeeeee"
    t = max(-1.0, min(1.0, v / lim))
    a = int(round(255 * (1 - abs(t))))
    return f"rgb(255,{a},{a})" if t > 0 else f"rgb({a},{a},255)"


def heat_table(values: np.ndarray, row_labels: Sequence[str], col_labels: Sequence[str],
               corner: str = "", digits: int = 3) -> str:
    """A 2-D array as an HTML table with each cell coloured by its value (centred at 0)."""
    values = np.asarray(values, np.float64)
    finite = np.abs(values[np.isfinite(values)])
    lim = float(finite.max()) if finite.size else 0.0
    out = [f'<table style="{STYLE}">',
           f'<tr><th style="{HEAD}">{esc(corner)}</th>'
           + "".join(f'<th style="{HEAD}">{esc(c)}</th>' for c in col_labels) + "</tr>"]
    for label, row in zip(row_labels, values):
        out.append(f'<tr><th style="{HEAD}">{esc(label)}</th>' + "".join(
            f'<td style="{CELL}; background: {colour(v, lim)}" title="{esc(label)}, {esc(c)}: {num(v, 6)}">'
            f"{num(v, digits)}</td>" for c, v in zip(col_labels, row)) + "</tr>")
    out.append("</table>")
    return "".join(out)


def block(title: str, *parts: str, note: str = "") -> str:
    """A titled box holding HTML parts."""
    head = f'<div style="font-weight: bold; margin-bottom: 4px">{esc(title)}</div>' if title else ""
    tail = f'<div style="color: #666; margin-top: 4px">{esc(note)}</div>' if note else ""
    return ('<div style="font-family: sans-serif; font-size: 13px; max-width: 100%; overflow-x: auto">'
            + head + "".join(parts) + tail + "</div>")


def pre(text: str) -> str:
    """Preformatted text (an existing text table) for HTML."""
    return (f'<pre style="font-size: 12px; line-height: 1.35; margin: 0">{esc(text)}</pre>')


# --- the activation cache -------------------------------------------------------------------------


def _cache_groups(cache) -> list[tuple[str, list[tuple[str, tuple, str, int]]]]:
    """[(group label, [(hook suffix, shape, dtype, bytes)])]: runs of layers with the same hooks merged."""
    import re

    before, after, layers = [], [], {}
    for name, value in dict.items(cache):
        a = np.asarray(value)
        m = re.match(r"blocks\.(\d+)\.(.+)$", name)
        entry = (m.group(2) if m else name, tuple(a.shape), str(a.dtype), int(a.nbytes))
        if m:
            layers.setdefault(int(m.group(1)), []).append(entry)
        else:
            (after if layers else before).append(entry)
    groups = [("model input", before)] if before else []
    runs: list[list] = []  # [first layer, last layer, hooks]: consecutive layers with identical hooks
    for layer in sorted(layers):
        sig = layers[layer]
        if runs and runs[-1][2] == sig and runs[-1][1] == layer - 1:
            runs[-1][1] = layer
        else:
            runs.append([layer, layer, sig])
    for first, last, sig in runs:
        groups.append((f"blocks.{first}" if first == last else f"blocks.{first}–{last} (each)", sig))
    if after:
        groups.append(("final", after))
    return groups


def cache_repr(cache) -> str:
    """A few lines: totals, then per group of layers the hooks with their shapes."""
    total = sum(int(np.asarray(v).nbytes) for v in dict.values(cache))
    dtypes = sorted({str(np.asarray(v).dtype) for v in dict.values(cache)})
    lines = [f"ActivationCache({len(cache)} activations, {nbytes(total)}, {'/'.join(dtypes) or 'empty'}"
             + ("" if cache.has_batch_dim else ", batch dim removed") + ")"]
    for label, entries in _cache_groups(cache):
        hooks = ", ".join(f"{s} {shape(sh)}" for s, sh, _, _ in entries[:6])
        more = f", … {len(entries) - 6} more" if len(entries) > 6 else ""
        lines.append(f"  {label}: {len(entries)} hooks, {nbytes(sum(e[3] for e in entries))}: {hooks}{more}")
    return "\n".join(lines)


def cache_html(cache) -> str:
    total = sum(int(np.asarray(v).nbytes) for v in dict.values(cache))
    rows = []
    for label, entries in _cache_groups(cache):
        for j, (s, sh, dt, nb) in enumerate(entries):
            rows.append((label if j == 0 else "", s, shape(sh), dt, nbytes(nb)))
    return block(f"ActivationCache: {len(cache)} activations, {nbytes(total)}",
                 table(["layers", "hook", "shape", "dtype", "bytes"], rows),
                 note="A group of layers holds the same hooks with the same shapes in each layer; "
                      "bytes are per layer.")


# --- results ------------------------------------------------------------------------------------------


def lens_repr(res) -> str:
    rows, p, k = res.top_ids.shape
    last = f"at {res.str_tokens[-1]!r}: top-1 {res.decode(int(res.top_ids[-1, -1, 0]))!r} " \
           f"({res.top_probs[-1, -1, 0]:.3f})"
    targets = "".join(f", {res.decode(t)!r} p={res.target_probs[-1, -1, j]:.3f} rank "
                      f"{res.target_ranks[-1, -1, j]}" for j, t in enumerate(res.target_ids))
    return f"LensResult({res.stream} lens, {rows} rows × {p} positions, top-{k}; {last}{targets})"


def comparison_html(cmp) -> str:
    head = (f"{cmp.component}: r = {cmp.r:.3f} (over entries that change: {cmp.r_changed:.3f}), "
            f"slope {cmp.slope:.3f}, n = {cmp.n}")
    parts = [cmp.attribution._repr_html_(), cmp.activation._repr_html_()]
    return block("attribution patching vs activation patching — " + head,
                 '<div style="display: flex; gap: 16px; flex-wrap: wrap">' + "".join(parts) + "</div>")


def dla_html(res) -> str:
    top = res.parts.top(12)
    return block(f"direct logit attribution: total {res.total:.4f} (sum of parts "
                 f"{float(np.nansum(res.parts.values)):.4f})",
                 table(["component", "direct effect"], [(lab[0], num(v)) for lab, v in top],
                       caption="the 12 largest parts"),
                 res.heads._repr_html_())


def report_html(title: str, text: str, ok: bool | None = None) -> str:
    colour = "" if ok is None else ("color: #1a7f37" if ok else "color: #cf222e")
    word = "passed" if ok else "failed"
    status = "" if ok is None else f'<div style="{colour}; font-weight: bold">{word}</div>'
    return block(title, status + pre(text))
