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
