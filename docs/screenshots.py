"""Make the README's screenshots: each HTML view, and a lesson's cell in a notebook.

    python docs/screenshots.py            # writes docs/images/*.png (needs the offline model)
    python docs/screenshots.py /usr/bin/chromium top-activations   # only these views' images

Needs Playwright and a Chromium (as the browser tests), and nbconvert for the
notebook cell (`pip install nbconvert`; it renders the executed notebook as
Jupyter does). Never run by the tests.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
IMAGES = HERE / "images"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]
IOI = "When Mary and John went to the store, John gave a drink to"
IOI_CORRUPTED = "When Mary and John went to the store, Mary gave a drink to"
EIFFEL = "The Eiffel Tower is located in the city of"


def main(chromium: str = "/usr/bin/chromium", *only: str) -> int:
    import numpy as np
    from playwright.sync_api import sync_playwright

    import minillm
    from minillm.data.benchmark import sentence
    from minillm.interp import metrics as M
    from minillm.interp import patching as P
    from minillm.interp.top_activations import top_activations
    from minillm.views import html

    model = minillm.load("smollm2-135m")
    patch = P.patching_sweep(model, IOI, IOI_CORRUPTED, M.logit_diff(model, " Mary", " John"), "resid_pre",
                             "denoising", layers=list(range(0, 30, 3)), progress=False)
    views = {
        "attention": (html.attention(model, IOI, heads=[3, 4], layer=23),  # 23.3 writes ' Mary' (lesson 09)
                      lambda page: page.locator('.panel[data-head="3"] .tok[data-pos="13"]').hover()),
        "lens": (html.lens(model, EIFFEL, targets=[" Paris"]),
                 lambda page: page.locator('td[data-row="28"][data-pos="9"]').hover()),
        "patching": (html.patching(patch), lambda page: (page.locator('th.col[data-col="13"]').click(),
                                                         page.locator('td[data-row="9"][data-col="13"]').hover())),
        "neurons": (html.neurons(model, EIFFEL + " Paris, France.", layer=20),
                    lambda page: page.locator('.tok[data-pos="12"]').hover()),
        "top-activations": (lambda: top_activations(model, _texts(np, sentence), layer=20, neurons=range(24),
                                                    k=6, before=10, after=3, progress=False).view(),
                            lambda page: (page.locator('th[data-key="top"]').click(),
                                          page.locator("tr[data-index]").nth(0).click(),
                                          page.locator(".examples .ex .tok.centre").nth(0).hover())),
    }
    views = {k: v for k, v in views.items() if not only or k in only}
    IMAGES.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=FLAGS)
        page = browser.new_page(viewport={"width": 1100, "height": 700})
        for kind, (view, interact) in views.items():
            view = view() if callable(view) else view
            page.goto(view.save(Path(tmp) / f"{kind}.html").as_uri())
            interact(page)
            page.locator(".mlv").screenshot(path=str(IMAGES / f"view_{kind}.png"))
        if not only:
            page.goto(_notebook_page(Path(tmp)).as_uri())
            page.locator(".jp-Cell").nth(3).screenshot(path=str(IMAGES / "notebook_cell.png"))
        browser.close()
    for p in sorted(IMAGES.glob("*.png")):
        print(f"{p.relative_to(HERE.parent)}: {p.stat().st_size / 1e3:.0f} kB")
    return 0


def _texts(np, sentence) -> list[str]:
    """A small seeded corpus for the top-activations view: 120 texts of 1-3 generated sentences."""
    rng = np.random.default_rng(0)
    return [" ".join(sentence(rng) for _ in range(int(rng.integers(1, 4)))) for _ in range(120)]


def _notebook_page(tmp: Path) -> Path:
    """Lesson 03 executed as a notebook (as the tests do), rendered to HTML by nbconvert."""
    from nbconvert import HTMLExporter

    from minillm import course

    nb = course.execute_notebook(3, tmp)
    body, _ = HTMLExporter(template_name="lab").from_notebook_node(nb)
    path = tmp / "lesson03.html"
    path.write_text(body, encoding="utf-8")
    return path


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
