"""minillm.views: figures that never touch pyplot's global state, and the interactive HTML views
driven in a real headless Chromium (Playwright), their numbers checked against minillm's.

The browser tests need Playwright (PyPI) and a Chromium executable: Debian's `chromium`
package, or any Chrome/Chromium named by $MINILLM_CHROMIUM. Without one they are skipped
with one line saying how to get it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from matplotlib.figure import Figure

from minillm.cli import main
from minillm.errors import MinillmError
from minillm.interp import metrics as M
from minillm.interp import patching as P
from minillm.interp import top_activations as T
from minillm.interp.lens import logit_lens
from minillm.interp.results import LabelledArray
from minillm.views import figures, html
from minillm.views.display import nbytes
from tests.conftest import random_model

IOI = "When Mary and John went to the store, John gave a drink to"
IOI_CORRUPTED = "When Mary and John went to the store, Mary gave a drink to"
EIFFEL = "The Eiffel Tower is located in the city of"
# a small corpus for the top-activations view: layer 3 of SmolLM2, 6 neurons, top 4 each
CORPUS = [EIFFEL + " Paris.", IOI + " Mary.", "The cat sat on the mat.\nIt was warm.",
          "Numbers: 1, 2, 3, 4 and 5.", "def f(x):\n    return x + 1", "Rain fell over the quiet town."]
TOP_NEURONS = [5, 17, 100, 512, 900, 1500]
# The pages hold numbers rounded to html.DIGITS decimals; a shown number is within half a unit
# of the last digit of minillm's float32/float64 value (plus float64 rounding of the comparison).
SHOWN = 0.5 * 10.0 ** -html.DIGITS + 1e-12

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]
HOW_TO_GET_CHROMIUM = ("browser tests skipped: no Chromium found; install one (Debian/Ubuntu: "
                       "apt-get install chromium) or set MINILLM_CHROMIUM=/path/to/chromium")


# --- figures --------------------------------------------------------------------------------------


def test_figures_never_touch_pyplot_or_the_backend(tmp_path):
    """In a fresh interpreter: draw every kind of figure; pyplot is never imported, the backend
    never chosen, and nothing is written unless a path is given."""
    code = f"""
import os, sys, numpy as np, matplotlib
os.chdir({str(tmp_path)!r})
from minillm.interp.results import LabelledArray
from minillm.views import figures
res = LabelledArray(np.array([[1.0, -2.0], [0.5, 3.0]]), ("layer", "head"), (["0", "1"], ["a", "b"]),
                    title="denoising heads: normalised metric")
fig = res.plot()
assert figures.png_bytes(fig)[:8] == b"\\x89PNG\\r\\n\\x1a\\n"  # renders headless
figures.save(fig, "sub/heads.png")
assert "matplotlib.pyplot" not in sys.modules, "pyplot was imported"
assert matplotlib.rcParams._get_backend_or_none() is None, "a backend was chosen"
print(sorted(os.listdir(".")))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "MPLBACKEND": ""})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "['sub']" and (tmp_path / "sub" / "heads.png").stat().st_size > 1000


def test_no_module_of_the_package_switches_the_backend_or_uses_pyplot():
    import minillm

    root = os.path.dirname(minillm.__file__)
    offenders = []
    for folder, _, files in os.walk(root):
        for name in files:
            if name.endswith(".py"):
                text = open(os.path.join(folder, name), encoding="utf-8").read()
                if re.search(r"matplotlib\.use\(|import matplotlib\.pyplot|from matplotlib import pyplot",
                             text):
                    offenders.append(os.path.relpath(os.path.join(folder, name), root))
    assert offenders == []


def _render(fig):
    """Lay out and draw `fig` on an Agg canvas (as saving does); returns the renderer."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


def _inside(inner, outer, slack: float = 1.0) -> bool:
    return (inner.x0 >= outer.x0 - slack and inner.y0 >= outer.y0 - slack
            and inner.x1 <= outer.x1 + slack and inner.y1 <= outer.y1 + slack)


def test_heads_heatmap_title_fits_and_colourbar_is_labelled():
    """The clipped-title / unlabelled-colourbar bug: a long title on a narrow [layer, head] map."""
    res = LabelledArray(np.linspace(-1, 1, 30 * 9).reshape(30, 9), ("layer", "head"),
                        ([str(i) for i in range(30)], [str(h) for h in range(9)]),
                        title="denoising heads: normalised metric (0 = corrupted, 1 = clean)")
    fig = res.plot()
    renderer = _render(fig)
    box = fig.bbox
    ax, cbar = fig.axes
    assert cbar.get_ylabel() == "normalised metric (0 = corrupted, 1 = clean)"
    for text in (ax.title, ax.xaxis.label, ax.yaxis.label, cbar.yaxis.label):
        assert _inside(text.get_window_extent(renderer), box), f"{text.get_text()!r} is cut off"
    for label in ax.get_xticklabels() + ax.get_yticklabels():
        assert _inside(label.get_window_extent(renderer), box)


def test_ripple_legend_is_outside_the_data():
    from minillm.interp import ablation as A

    model = random_model("gpt2", seed=6)
    rates = [0.2, 0.5, 1, 2, 3, 4.5, 10, 20, 30, 40, 50, 60, 70, 80, 90]
    res = A.median_replacement(model, np.array([[5, 3, 8, 1, 9, 2]]), 7, rates, progress=False)
    fig = A.plot_ripple(res)
    renderer = _render(fig)
    assert len(fig.axes) == 2  # coarse and fine rates apart
    for ax in fig.axes:
        legend = ax.get_legend().get_window_extent(renderer)
        assert not legend.overlaps(ax.get_window_extent(renderer)), "the legend covers the data"
        assert _inside(legend, fig.bbox)
    assert sum(len(ax.get_legend().get_texts()) for ax in fig.axes) == len(rates)


def test_attention_figure_has_a_colourbar_and_every_label_fits():
    pats = [np.tril(np.full((12, 12), 1 / 12)) for _ in range(3)]
    fig = figures.attention_patterns(pats, [f" tok{i}" for i in range(12)], [(0, 0), (5, 3), (7, 8)],
                                     kv_group=3)
    renderer = _render(fig)
    assert len(fig.axes) == 4 and fig.axes[-1].get_ylabel() == "attention weight"
    for ax in fig.axes[:3]:
        assert _inside(ax.xaxis.label.get_window_extent(renderer), fig.bbox)
        assert _inside(ax.title.get_window_extent(renderer), fig.bbox)


# --- rich display -----------------------------------------------------------------------------------


def test_labelled_array_repr_html_and_tidy_csv(tmp_path):
    import csv

    res = LabelledArray(np.array([[1.5, np.nan], [-2.0, 0.25]]), ("layer", "pos"),
                        (["0", "1"], ['a, "quoted"', "line\nbreak"]), title="t: metric")
    text = repr(res)
    assert len(text) < 300 and "layer=2 × pos=2" in text and "-2" in text
    page = res._repr_html_()
    assert "&quot;quoted&quot;" in page and "<table" in page and "1.5" in page
    rows = list(csv.reader(open(res.to_csv(tmp_path / "r.csv") and tmp_path / "r.csv", newline="")))
    assert rows == [["layer", "pos", "value"], ["0", 'a, "quoted"', "1.5"], ["0", "line\nbreak", ""],
                    ["1", 'a, "quoted"', "-2.0"], ["1", "line\nbreak", "0.25"]]


def test_cache_repr_lists_hooks_shapes_and_bytes_by_layer(smollm2):
    tokens = smollm2.to_tokens(EIFFEL)
    p = tokens.shape[1]
    _, cache = smollm2.run_with_cache(tokens)
    text = repr(cache)
    total = sum(a.nbytes for a in cache.values())
    assert len(text) < 2500, len(text)  # was over a million characters: every array printed
    first = text.splitlines()[0]
    assert first.startswith(f"ActivationCache({len(cache)} activations, {nbytes(total)}, float32")
    assert "blocks.0–29 (each)" in text and f"hook_resid_pre [1, {p}, 576]" in text
    per_layer = sum(cache[n].nbytes for n in cache if n.startswith("blocks.7."))
    assert f"blocks.0–29 (each): {len([n for n in cache if n.startswith('blocks.7.')])} hooks, " \
           f"{nbytes(per_layer)}" in text
    assert "hook_logits" in text and "hook_embed" in text
    page = cache._repr_html_()
    assert page.count("<tr>") == 1 + len([n for n in cache if not n.startswith("blocks.")]) + \
        len([n for n in cache if n.startswith("blocks.0.")])  # header + one row per hook of a group
    assert f"[1, 9, {p}, {p}]" in page  # hook_pattern [b, heads, q, k]


def test_result_reprs_are_short_and_show_token_strings(smollm2):
    from minillm import edits
    from minillm.edit.drift import interference_map, measure_drift
    from minillm.interp import attribution as ap
    from minillm.interp.dla import direct_logit_attribution

    lens = logit_lens(smollm2, EIFFEL, targets=[" Paris"], k=3)
    text = repr(lens)
    assert len(text) < 300 and "' Paris'" in text and "' of'" in text  # token strings, not ids
    assert 'data-kind="lens"' in lens._repr_html_()
    dla = direct_logit_attribution(smollm2, EIFFEL, correct=" Paris", incorrect=" London")
    assert len(repr(dla)) < 300 and f"{dla.total:.4f}" in repr(dla) and "<table" in dla._repr_html_()
    model = random_model("llama", seed=3)
    ids = np.array([[5, 3, 8, 1, 9, 2]])
    report = measure_drift(model, ids, [edits.scale_neuron(layer=0, neuron=3, factor=0.04)])
    assert len(repr(report)) < 400 and "journal-reverted 0" in repr(report)
    assert "<pre" in report._repr_html_()
    imap = interference_map(model, ids, layer=0, neuron=3)
    assert len(repr(imap)) < 300 and "upstream max 0" in repr(imap)
    handle = model.edit(edits.scale_neuron(layer=1, neuron=2, factor=0.5))
    assert "[active]" in handle._repr_html_()
    handle.revert()
    assert "[reverted]" in handle._repr_html_()
    attr = ap.attribution_patching(model, ids, ids[:, ::-1].copy(), M.logit_diff(None, 7, 11), ["resid_pre"])
    attr = attr["resid_pre"]
    cmp = ap.compare(attr, attr)
    assert repr(cmp).startswith("Comparison(") and len(repr(cmp)) < 200 and "<table" in cmp._repr_html_()


# --- HTML views: offline, self-contained --------------------------------------------------------------


@pytest.fixture(scope="module")
def pages(smollm2, tmp_path_factory):
    """The four views of SmolLM2, saved as files, and the numbers they must show."""
    folder = tmp_path_factory.mktemp("views")
    metric = M.logit_diff(smollm2, " Mary", " John")
    patch = P.patching_sweep(smollm2, IOI, IOI_CORRUPTED, metric, "resid_pre", "denoising",
                             layers=[0, 9, 18, 24, 27], progress=False)
    top = T.top_activations(smollm2, CORPUS, layer=3, neurons=TOP_NEURONS, k=4, before=5, after=2,
                            window=16, docs_per_shard=2, progress=False)
    views = {
        "top-activations": top.view(),
        "attention": html.attention(smollm2, IOI, heads=[0, 6], layers=[0, 9, 18]),
        "lens": html.lens(smollm2, EIFFEL, targets=[" Paris"], k=5),
        "patching": html.patching(patch),
        "neurons": html.neurons(smollm2, EIFFEL + " Paris, France.", layer=20, n_top=8),
    }
    return {k: v.save(folder / f"{k}.html") for k, v in views.items()}, patch, top


def test_views_are_self_contained_and_offline(pages):
    paths, *_ = pages
    for kind, path in paths.items():
        text = path.read_text(encoding="utf-8")
        assert text.startswith("<!DOCTYPE html>") and f'data-kind="{kind}"' in text
        assert not re.search(r"https?://|//cdn|<script[^>]+src=|<link[^>]+href=|@import", text), kind
        assert path.stat().st_size < 1_000_000, f"{kind}: {path.stat().st_size} bytes"


def test_view_errors_name_the_problem(smollm2):
    with pytest.raises(MinillmError, match="head 9 does not exist"):
        html.attention(smollm2, "Hi there", heads=[9])
    with pytest.raises(MinillmError, match="layer 30 does not exist"):
        html.neurons(smollm2, "Hi there", layer=30)
    with pytest.raises(MinillmError, match="neuron 1536 does not exist"):
        html.neurons(smollm2, "Hi there", layer=3, neurons=[1536])
    with pytest.raises(MinillmError, match="2-D"):
        html.patching(LabelledArray(np.zeros(3), ("x",), (list("abc"),)))
    top = T.TopActivations.empty("blocks.3.mlp.hook_post", [4, 5, 6], k=2, before=1, after=1)
    with pytest.raises(MinillmError, match="neuron 7 was not tracked; these results cover 4-6"):
        html.top_activations(top, neurons=[7])


# --- in the browser --------------------------------------------------------------------------------------


def _chromium() -> str | None:
    for candidate in (os.environ.get("MINILLM_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if candidate and (shutil.which(candidate) or os.path.isfile(candidate)):
            return shutil.which(candidate) or candidate
    return None


@pytest.fixture(scope="module")
def browser():
    exe = _chromium()
    if exe is None:
        pytest.skip(HOW_TO_GET_CHROMIUM)
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the browser tests)")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=exe, args=CHROMIUM_FLAGS)
        yield b
        b.close()


@pytest.fixture
def open_page(browser, tmp_path):
    """Open a saved view; the test fails on any JavaScript error and on any network request."""
    opened = []

    def _open(path):
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors, requests = [], []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("request", lambda r: requests.append(r.url) if not r.url.startswith(("file:", "data:"))
                else None)
        page.goto(path.as_uri())
        opened.append((page, errors, requests))
        return page

    yield _open
    for page, errors, requests in opened:
        page.screenshot(path=str(tmp_path / "screenshot.png"), full_page=True)
        assert (tmp_path / "screenshot.png").stat().st_size > 5000
        assert errors == [] and requests == []
        page.close()


def _floats(texts) -> np.ndarray:
    return np.array([float(t) for t in texts])


def test_attention_view_in_chromium(pages, open_page, smollm2):
    paths, *_ = pages
    page = open_page(paths["attention"])
    _, cache = smollm2.run_with_cache(smollm2.to_tokens(IOI),
                                      names_filter=lambda n: n.endswith("hook_pattern"))
    page.select_option("select.layer", "18")
    assert page.locator(".panel").count() == 2  # heads 0 and 6 side by side
    page.locator('input.head[value="3"]').check()  # a third head joins them
    heads = page.locator(".panel").evaluate_all("ps => ps.map(p => p.dataset.head)")
    assert [int(h) for h in heads] == [0, 3, 6]
    q = 10  # " gave"
    for head in (0, 3, 6):
        panel = page.locator(f'.panel[data-head="{head}"]')
        assert panel.get_attribute("data-layer") == "18"
        panel.locator(f'.tok[data-pos="{q}"]').hover()
        shown = panel.locator(".tok").evaluate_all("ts => ts.map(t => t.dataset.weight)")
        want = cache["blocks.18.attn.hook_pattern"][0, head, q, : q + 1]
        assert np.abs(_floats(shown[: q + 1]) - want).max() <= SHOWN
        assert shown[q + 1:] == [""] * (len(shown) - q - 1)  # causal: no weight on later keys
        assert "query 10 \" gave\"" in panel.locator(".readout").text_content()
        rows = panel.locator(".heat div").evaluate_all(
            "cs => cs.map((c, i) => c.classList.contains('qrow') ? i : -1).filter(i => i >= 0)")
        n = len(shown)
        assert rows == list(range(q * n, (q + 1) * n))  # the query's row of the heatmap is marked
    page.select_option("select.layer", "0")
    page.locator('.panel[data-head="6"] .tok[data-pos="4"]').hover()
    shown = page.locator('.panel[data-head="6"] .tok').evaluate_all("ts => ts.map(t => t.dataset.weight)")
    assert np.abs(_floats(shown[:5]) - cache["blocks.0.attn.hook_pattern"][0, 6, 4, :5]).max() <= SHOWN


def test_lens_view_in_chromium(pages, open_page, smollm2):
    paths, *_ = pages
    lens = logit_lens(smollm2, EIFFEL, targets=[" Paris"], k=5)
    page = open_page(paths["lens"])
    rows, p = lens.top_ids.shape[:2]
    assert page.locator("table.grid td").count() == rows * p
    for r, c in ((rows - 1, p - 1), (20, 3)):
        page.locator(f'td[data-row="{r}"][data-pos="{c}"]').hover()
        lines = page.locator(".readout").text_content().splitlines()
        tops = [re.match(r'\s+\d+\. (".*?"|\'.*?\')\s+([\d.]+)$', line) for line in lines[1:6]]
        assert [__import__("json").loads(m.group(1)) for m in tops] == lens.tokens_at(r, c)
        assert np.abs(_floats(m.group(2) for m in tops) - lens.top_probs[r, c]).max() <= SHOWN
        target = re.search(r"p = ([\d.]+), rank (\d+)", lines[-1])
        assert abs(float(target.group(1)) - lens.target_probs[r, c, 0]) <= SHOWN
        assert int(target.group(2)) == lens.target_ranks[r, c, 0]
    # colour by p(' Paris'): the last cell is the most saturated exactly where the model is sure
    page.select_option("select.colour", "p0")
    cell = page.locator(f'td[data-row="{rows - 1}"][data-pos="{p - 1}"]')
    assert cell.text_content() == lens.tokens_at(rows - 1, p - 1)[0][:10] == " Paris"


def test_patching_view_in_chromium(pages, open_page):
    paths, res, _ = pages
    page = open_page(paths["patching"])
    col = res.shape[1] - 1  # the last position
    page.locator(f'th.col[data-col="{col}"]').click()  # sort rows by that column, descending
    order = [int(r) for r in page.locator("tr[data-row]").evaluate_all("rs => rs.map(r => r.dataset.row)")]
    assert order == list(np.argsort(-res.values[:, col], kind="stable"))
    page.locator(f'th.col[data-col="{col}"]').click()  # again: ascending
    order = [int(r) for r in page.locator("tr[data-row]").evaluate_all("rs => rs.map(r => r.dataset.row)")]
    assert order == list(np.argsort(res.values[:, col], kind="stable"))
    r = int(np.argmax(res.values[:, col]))
    page.locator(f'td[data-row="{r}"][data-col="{col}"]').hover()
    text = page.locator(".readout").text_content()
    assert text.startswith("resid_pre of the clean run patched into the corrupted run")
    assert f"layer {res.labels[0][r]}" in text and res.labels[1][col] in text
    assert abs(float(text.rsplit("= ", 1)[1]) - res.values[r, col]) <= SHOWN
    page.locator("th.corner").click()
    order = [int(r) for r in page.locator("tr[data-row]").evaluate_all("rs => rs.map(r => r.dataset.row)")]
    assert order == list(range(res.shape[0]))


def test_neurons_view_in_chromium(pages, open_page, smollm2):
    paths, *_ = pages
    text = EIFFEL + " Paris, France."
    _, cache = smollm2.run_with_cache(smollm2.to_tokens(text),
                                      names_filter=lambda n: n == "blocks.20.mlp.hook_post")
    post = cache["blocks.20.mlp.hook_post"][0]  # [p, d_mlp]
    top = np.argsort(-np.abs(post).max(axis=0), kind="stable")[:8]
    page = open_page(paths["neurons"])
    offered = page.locator("select.neuron option").all_text_contents()
    assert offered == [f"20:{i}" for i in top]
    for choice in (0, 5):
        page.select_option("select.neuron", str(choice))
        shown = page.locator(".tok").evaluate_all("ts => ts.map(t => t.dataset.value)")
        assert np.abs(_floats(shown) - post[:, top[choice]]).max() <= SHOWN
        page.locator('.tok[data-pos="3"]').hover()
        readout = page.locator(".readout").text_content()
        assert readout.startswith(f"neuron 20:{top[choice]} at position 3")
    tokens = page.locator(".tok").all_text_contents()
    assert tokens == smollm2.to_str_tokens(text)


def test_top_activations_view_in_chromium(pages, open_page, smollm2):
    """Max-activating examples: the neurons table, sorting it, choosing a neuron, the examples'
    values and tokens, corpus order, and hovering a token; every number equal to minillm's."""
    paths, _, top = pages
    page = open_page(paths["top-activations"])
    rows = lambda: [int(n) for n in page.locator("tr[data-neuron]").evaluate_all(  # noqa: E731
        "rs => rs.map(r => r.dataset.neuron)")]
    assert rows() == TOP_NEURONS
    page.locator('th[data-key="top"]').click()  # sort by top value, largest first
    assert rows() == [TOP_NEURONS[i] for i in np.argsort(-top.values[:, 0], kind="stable")]
    page.locator('th[data-key="top"]').click()  # again: smallest first
    assert rows() == [TOP_NEURONS[i] for i in np.argsort(top.values[:, 0], kind="stable")]
    shown = _floats(page.locator('tr[data-neuron] td:nth-child(2)').all_text_contents())
    assert np.abs(shown - np.sort(top.values[:, 0])).max() <= SHOWN
    decode = lambda t: smollm2.to_string([t]).replace("\n", "⏎")  # noqa: E731
    for neuron in (900, 17):
        page.locator(f'tr[data-neuron="{neuron}"]').click()
        assert page.locator(f'tr.chosen[data-neuron="{neuron}"]').count() == 1
        assert page.locator(".examples").get_attribute("data-neuron") == str(neuron)
        exs = top.examples(neuron)
        ex_rows = page.locator(".examples .ex")
        assert ex_rows.count() == len(exs) == 4
        values = _floats(ex_rows.evaluate_all("es => es.map(e => e.dataset.value)"))
        assert np.abs(values - [e["value"] for e in exs]).max() <= SHOWN
        for r, e in enumerate(exs):
            row = ex_rows.nth(r)
            where = (int(row.get_attribute("data-doc")), int(row.get_attribute("data-pos")))
            assert where == (e["doc"], e["pos"])
            assert row.locator(".tok").all_text_contents() == [decode(t) for t in e["tokens"]]
            acts = _floats(row.locator(".tok").evaluate_all("ts => ts.map(t => t.dataset.value)"))
            assert np.abs(acts - e["acts"]).max() <= SHOWN
            centre = row.locator(".tok.centre")
            assert centre.count() == 1
            assert abs(float(centre.get_attribute("data-value")) - e["value"]) <= SHOWN
        best = exs[0]  # (that these are the exact top-k: tests/test_corpus_stats.py, by brute force)
        ex_rows.nth(0).locator(".tok.centre").hover()
        readout = page.locator(".readout").text_content()
        assert readout.startswith(f"neuron {neuron}, example 1 (doc {best['doc']} @ {best['pos']}): token ")
        assert abs(float(readout.rsplit(": ", 1)[1]) - best["value"]) <= SHOWN
    page.select_option("select.order", "document")  # corpus order
    where = page.locator(".examples .ex").evaluate_all("es => es.map(e => [+e.dataset.doc, +e.dataset.pos])")
    assert where == sorted([e["doc"], e["pos"]] for e in top.examples(17))


# --- the command line -------------------------------------------------------------------------------------


def test_cli_view_writes_each_kind(smollm2, tmp_path, monkeypatch, capsys):
    import minillm

    monkeypatch.setattr(minillm, "load", lambda *a, **k: smollm2)
    for kind, extra in (("attention", ["--layer", "18", "--heads", "6,7"]), ("lens", ["--target", " Paris"]),
                        ("neurons", ["--layer", "20"]),
                        ("patching", ["--corrupted", IOI_CORRUPTED, "--answer", " Mary", "--wrong", " John",
                                      "--layers", "0,27"])):
        out = tmp_path / f"{kind}.html"
        prompt = IOI if kind in ("attention", "patching") else EIFFEL
        assert main(["view", kind, "smollm2-135m", prompt, "-o", str(out), *extra]) == 0
        assert f'data-kind="{kind}"' in out.read_text(encoding="utf-8")
        assert str(out) in capsys.readouterr().out
    assert main(["view", "patching", "smollm2-135m", IOI, "-o", str(tmp_path / "x.html")]) == 1
    assert "--corrupted" in capsys.readouterr().err
    top = T.top_activations(smollm2, CORPUS[:2], layer=3, neurons=[5, 17], k=2, progress=False)
    top.save(tmp_path / "top")
    out = tmp_path / "top.html"
    assert main(["view", "top-activations", "smollm2-135m", str(tmp_path / "top"), "-o", str(out),
                 "--neurons", "17"]) == 0
    page = out.read_text(encoding="utf-8")
    assert 'data-kind="top-activations"' in page and '"id":17' in page and '"id":5' not in page


def test_views_show_in_a_notebook_cell(smollm2):
    top = T.top_activations(smollm2, ["Hello world"], layer=3, neurons=[1, 2], k=2, progress=False)
    assert 'data-kind="top-activations"' in top._repr_html_() and len(repr(top)) < 200
    view = html.neurons(smollm2, "Hello world", layer=3, n_top=2)
    fragment = view._repr_html_()
    assert fragment.startswith("<style>") and view.uid in fragment and "<html" not in fragment
    assert len(repr(view)) < 120
    other = html.neurons(smollm2, "Hello world", layer=3, n_top=2)
    assert other.uid != view.uid  # two views in one notebook do not share element ids


def test_figure_is_a_figure():
    assert isinstance(LabelledArray(np.ones((2, 2)), ("a", "b"), (["0", "1"], ["x", "y"])).plot(), Figure)


def test_results_and_figures_display_in_a_real_kernel(tmp_path):
    """In an ipykernel (as in Jupyter): a returned Figure shows once as an image, a result as HTML."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    cells = [
        "import numpy as np\nfrom minillm.interp.results import LabelledArray\n"
        "res = LabelledArray(np.array([[1.0, -2.0], [0.5, 3.0]]), ('layer', 'pos'),"
        " (['0', '1'], ['a', ' b']), title='denoising resid_pre: normalised metric')",
        "res.plot()",
        "res",
        "from tests.conftest import random_model\nmodel = random_model('llama', seed=1)\n"
        "_, cache = model.run_with_cache(np.array([[1, 2, 3]]))\ncache",
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": root}}).execute()
    outputs = [c.outputs for c in nb.cells]
    assert [sum("image/png" in o.get("data", {}) for o in out) for out in outputs] == [0, 1, 0, 0]
    assert "text/html" in outputs[2][0]["data"] and "normalised metric" in outputs[2][0]["data"]["text/html"]
    cache_out = outputs[3][0]["data"]
    assert "blocks.0–1 (each)" in cache_out["text/plain"] and "<table" in cache_out["text/html"]
