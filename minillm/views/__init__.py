"""What minillm shows: matplotlib figures (`figures`) and self-contained interactive HTML (`html`).

Figures are returned, never saved unless asked, and never switch matplotlib's
backend; HTML views are single offline files (inline JavaScript and CSS) that
also display in a notebook cell.
"""

from minillm.views import figures

__all__ = ["figures"]
