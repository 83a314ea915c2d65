"""Ablations, successive median replacement, pruning, and the `patch` / `ablate` commands."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from matplotlib.figure import Figure

import minillm
from minillm import cli
from minillm.errors import MinillmError
from minillm.interp import ablation as A
from minillm.interp import metrics as M
from minillm.interp import patching as P
from minillm.interp import pruning as Pr
from tests.conftest import random_model
from tests.numerics import assert_reordered_close, metric_tolerance

PROMPT = np.array([[5, 9, 17, 23, 30, 41, 2]])
OTHER = np.array([[8, 3, 17, 40, 12, 41, 6]])
PNG = b"\x89PNG\r\n\x1a\n"


def weights(model) -> dict[str, np.ndarray]:
    return {n: v.copy() for n, v in model.named_parameters()}


def assert_pristine(model, before: dict[str, np.ndarray]) -> None:
    assert model.journal.pristine and not model.hooks, "edits or hooks were left behind"
    for n, v in model.named_parameters():
        assert np.array_equal(v, before[n]), f"{n} changed"


# --- mean / median / zero / resample ablation -------------------------------------------------------


@pytest.mark.numerics
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_mean_ablation_with_one_reference_prompt_is_patching(family, dtype):
    """Per-position statistics of a one-prompt reference set are that prompt's activations, so mean
    (and median) ablation = patching from it = resample ablation with it (other batch shapes:
    2× the reorder tolerance of tests/numerics.py on this logit difference; float64 1e-12)."""
    model = random_model(family, seed=4, dtype=dtype)
    m = M.logit_diff(None, 7, 11)
    patched = P.patching_sweep(model, PROMPT, OTHER, m, "heads", "noising", normalize=False,
                               skip_identical=False, progress=False)
    for method in ("mean", "median", "resample"):
        res = A.ablation_sweep(model, PROMPT, m, "heads", method, reference=OTHER, over=("batch",),
                               progress=False)
        assert_reordered_close(res.values, patched.values, metric_tolerance(model, PROMPT, OTHER),
                               method)
    assert np.abs(patched.values).max() > 1e-3


@pytest.mark.numerics
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_ablation_over_axes_and_prompt_sets(dtype):
    model = random_model("llama", seed=1, dtype=dtype)
    m = M.logit_diff(None, 7, 11)
    ref = np.concatenate([PROMPT, OTHER])
    pooled = A.ablation_sweep(model, PROMPT, m, "neurons", "mean", reference=ref, layers=[1], progress=False)
    per_pos = A.ablation_sweep(model, PROMPT, m, "neurons", "mean", reference=ref, over=("batch",),
                               layers=[1], progress=False)
    assert pooled.shape == per_pos.shape == (1, model.cfg.d_mlp)
    assert not np.allclose(pooled.values, per_pos.values)  # the axes named change the statistics
    zero = A.ablation_sweep(model, ref, m, "resid_pre", "zero", progress=False)  # a prompt set
    assert zero.shape == (2, 7) and zero.meta["prompts"] == 2
    # the prompt set runs many ablations per forward pass: same numbers as prompt by prompt,
    # up to the reorder tolerance of other batch shapes (tests/numerics.py; float64 1e-12)
    each = [A.ablation_sweep(model, t[None], m, "resid_pre", "zero", progress=False).values for t in ref]
    assert_reordered_close(zero.values, np.mean(each, axis=0), metric_tolerance(model, ref),
                           "prompt set vs prompt by prompt")
    # zero-ablating the residual stream at the last position of layer 0 changes the answer
    assert abs(zero.values[0, -1]) > 1e-3
    with pytest.raises(MinillmError, match="reference set"):
        A.ablation_interventions(model, "heads", "mean", [0], 7, reference=None)
    with pytest.raises(MinillmError, match="over must name"):
        A.ablation_sweep(model, PROMPT, m, "heads", "mean", over=("pos",), progress=False)
    with pytest.raises(MinillmError, match="unknown ablation"):
        A.ablation_sweep(model, PROMPT, m, "heads", "average", progress=False)


# --- successive median replacement ----------------------------------------------------------------


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_median_replacement_bookkeeping(family):
    model = random_model(family, seed=6)
    rates = [0, 5, 10, 25, 50, 90]
    res = A.median_replacement(model, PROMPT, 7, rates, progress=False)
    assert res.delta.shape == (2, 6)
    assert np.all(res.delta.values[:, 0] == 0.0), "rate 0 replaces nothing: the logit is unchanged"
    m = model.cfg.d_mlp
    assert res.counts == [A.n_replaced(r, m) for r in rates] and res.counts[0] == 0
    _, cache = model.run_with_cache(PROMPT)
    for i, l in enumerate(res.layers):
        post = cache[f"blocks.{l}.mlp.hook_post"][0, -1]
        sets = [set(res.replaced(l, r).tolist()) for r in rates]
        assert all(a <= b for a, b in zip(sets, sets[1:])), "the replaced set grows with the rate"
        top = res.replaced(l, 25)
        assert post[top].min() >= np.delete(post, top).max(), "the replaced neurons are the most active"
        assert res.medians[i] == np.median(post).astype(model.dtype)
    assert np.abs(res.delta.values[:, 1:]).max() > 1e-4


@pytest.mark.numerics
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_median_replacement_batched_equals_unbatched(family, dtype):
    """Batch rows and one-at-a-time runs agree: bit for bit only where the GEMM shapes are the
    same, so the values (a logit minus its unablated value) are compared within 2× the reorder
    tolerance of tests/numerics.py in float32, and within 1e-12 in float64."""
    model = random_model(family, seed=7, dtype=dtype)
    rates = [0, 10, 30, 60]
    together = A.median_replacement(model, PROMPT, 7, rates, batch_size=64, progress=False)
    alone = A.median_replacement(model, PROMPT, 7, rates, batch_size=1, progress=False)
    full = A.median_replacement(model, PROMPT, 7, rates, batch_size=3, cache_prefix=False, progress=False)
    tol = metric_tolerance(model, PROMPT)
    assert_reordered_close(together.delta.values, alone.delta.values, tol, "batch 64 vs 1")
    assert_reordered_close(together.delta.values, full.delta.values, tol, "cached prefix vs full")
    assert np.abs(together.delta.values).max() > 1e-3  # the comparison is not between zeros


def test_median_replacement_ctrl_c_leaves_model_pristine():
    """A KeyboardInterrupt in the middle of a sweep returns the partial result; no hook or edit remains."""
    model = random_model("llama", seed=8)
    before = weights(model)
    calls = []

    def interrupt(act, hook):  # hook_logits fires in: the activation cache run, the prefix run,
        calls.append(1)        # the base run, then each batch; Ctrl-C during the second batch
        if len(calls) == 5:
            raise KeyboardInterrupt

    rates = [0, 10, 20, 30, 40]
    with model.hooks([("hook_logits", interrupt)]):
        res = A.median_replacement(model, PROMPT, 7, rates, batch_size=2, progress=False)
    assert res.interrupted and res.delta.meta["interrupted"]
    full = A.median_replacement(model, PROMPT, 7, rates, batch_size=2, progress=False)
    done = ~np.isnan(res.delta.values)
    assert done.sum() == 4 and np.all(done[:, 0]) and np.all(done[0, 1:3])  # rate 0 + the first batch
    assert np.array_equal(res.delta.values[done], full.delta.values[done])
    assert_pristine(model, before)
    assert res.summary()["interrupted"] is True


def test_median_replacement_plots(tmp_path):
    model = random_model("gpt2", seed=6)
    res = A.median_replacement(model, PROMPT, 7, [0.5, 2, 10, 90], progress=False)
    for fig, path in ((A.plot_ripple(res, tmp_path / "ripple.png"), tmp_path / "ripple.png"),
                      (res.delta.plot(tmp_path / "heat.png"), tmp_path / "heat.png")):
        assert isinstance(fig, Figure)
        assert path.read_bytes()[:8] == PNG and path.stat().st_size > 2000
    # coarse (>= 10 %) and fine rates get a panel each, every line labelled in a legend
    ripple = A.plot_ripple(res)
    assert [len(ax.get_lines()) - 1 for ax in ripple.axes] == [2, 2]  # minus the y = 0 line
    assert [len(ax.get_legend().get_texts()) for ax in ripple.axes] == [2, 2]
    with pytest.raises(MinillmError, match="percentage"):
        A.median_replacement(model, PROMPT, 7, [150], progress=False)


def test_median_replacement_smollm2(smollm2):
    """The offline model on the classic prompt: " night" is its first prediction; rate 0 is exact."""
    res = A.median_replacement(smollm2, "It was a dark and stormy", " night", [0, 1, 10, 90],
                               layers=[0, 28], progress=False)
    assert res.counts == [0, 15, 153, 1382]  # floor(p·1536/100): the study's count
    assert res.base_logit > 15
    assert np.all(res.delta.values[:, 0] == 0)
    # Measured full sweep (30 layers): the most active 10% and 90% agree within 0.3 logit at most
    # layers; layer 28 raises the logit by ~3 at every coarse rate.
    assert res.delta.values[1, 2] > 2 and res.delta.values[1, 3] > 2
    # ... yet p(" night") falls there (0.97 -> 0.92): the replacement lifts other logits more.
    lp = A.median_replacement(smollm2, "It was a dark and stormy", " night", [10], layers=[28],
                              measure="log_prob", progress=False)
    assert -0.1 < lp.delta.values[0, 0] < 0


# --- pruning -------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_pruning_reverts_exactly(family):
    model = random_model(family, seed=9)
    before = weights(model)
    m = M.logit_diff(None, 7, 11)
    prompts = np.concatenate([PROMPT, OTHER])
    mag = Pr.importance(model, prompts, m, "heads", "magnitude")
    W_V, W_O = model.blocks[1].attn.W_V, model.blocks[1].attn.W_O  # per query head
    assert mag.values[1, 3] == pytest.approx(np.linalg.norm(W_V[3] @ W_O[3]), rel=1e-5)
    op = Pr.prune_lowest(mag, 0.5)
    assert len(op.heads) == 4 and set(op.heads) == set(Pr.lowest(mag, 0.5))
    with model.edited(op):
        for l, h in op.heads:
            assert np.all(model.blocks[l].attn.W_O[h] == 0)
    assert_pristine(model, before)
    for unit, method in (("heads", "ablation"), ("neurons", "gradient"), ("neurons", "magnitude")):
        scores = Pr.importance(model, prompts, m, unit, method, progress=False)
        curve = Pr.pruning_curve(model, prompts, m, scores, fractions=[0, 0.5, 1.0], progress=False)
        assert curve.values[0] == pytest.approx(float(np.mean(m(model(prompts)))), abs=1e-6)
        assert_pristine(model, before)
    if family == "gpt2":  # the pruned model still has biases; with every head and neuron gone
        return            # only embeddings and biases remain
    everything = Pr.mask_units(heads=tuple((l, h) for l in range(2) for h in range(4)),
                               neurons=tuple((l, i) for l in range(2) for i in range(model.cfg.d_mlp)))
    with model.edited(everything):  # llama: nothing but the embedding reaches the logits
        direct = model(PROMPT)
    x = model.embed.W_E[PROMPT]
    normed = x / np.sqrt((x * x).mean(-1, keepdims=True) + model.cfg.eps)
    ref = normed * model.ln_final.w @ model.unembed.W_U
    np.testing.assert_allclose(direct, ref, rtol=1e-4, atol=1e-4)
    assert_pristine(model, before)


@pytest.mark.numerics
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_pruning_curve_through_the_engine_equals_the_journal_edit(family, dtype):
    """A pruning-curve point (hooks zeroing hook_z / hook_post, batched) equals the metric of the
    model with the same units pruned through the journal (W_O / W_out rows zeroed): every
    product the zero removes is exactly 0 both ways, so only the batch's GEMM row count differs:
    reorder tolerance in float32 (tests/numerics.py), 1e-12 in float64."""
    model = random_model(family, seed=3, dtype=dtype)
    m = M.logit_diff(None, 7, 11)
    prompts = np.concatenate([PROMPT, OTHER])
    for unit in ("heads", "neurons"):
        scores = Pr.importance(model, prompts, m, unit, "magnitude")
        fractions = [0.0, 0.3, 0.7]
        curve = Pr.pruning_curve(model, prompts, m, scores, fractions=fractions, progress=False)
        want = []
        for f in fractions:
            with model.edited(Pr.prune_lowest(scores, f)):
                want.append(float(np.mean(m(model(prompts)))))
        assert_reordered_close(curve.values, np.array(want), metric_tolerance(model, prompts),
                               f"pruning {unit}")
        assert abs(want[2] - want[0]) > 1e-3  # pruning moved the metric: not a comparison of equals


def test_pruning_plot_and_errors(tmp_path):
    model = random_model("llama", seed=9)
    m = M.logit_diff(None, 7, 11)
    scores = Pr.importance(model, PROMPT, m, "heads", "magnitude")
    curves = {"magnitude": Pr.pruning_curve(model, PROMPT, m, scores, progress=False)}
    assert isinstance(Pr.plot_pruning_curves(curves, tmp_path / "pruning.png"), Figure)
    assert (tmp_path / "pruning.png").read_bytes()[:8] == PNG
    with pytest.raises(MinillmError, match="head 9 does not exist"):
        model.edit(Pr.mask_units(heads=((0, 9),)))
    assert model.journal.pristine
    with pytest.raises(MinillmError, match="fraction"):
        Pr.lowest(scores, 1.5)


# --- the command line ------------------------------------------------------------------------------


def test_cli_patch_and_ablate(smollm2, tmp_path, monkeypatch):
    monkeypatch.setattr(minillm, "load", lambda *a, **k: smollm2)
    out = tmp_path / "patch"
    assert cli.main(["patch", "--out", str(out), "--components", "resid_pre", "--layers", "29",
                     "--path", "--batch-size", "64"]) == 0
    for stem in ("denoising_resid_pre", "path_patching_logits"):
        assert (out / f"{stem}.png").read_bytes()[:8] == PNG
        data = json.loads((out / f"{stem}.json").read_text())
        assert np.asarray(data["values"], dtype=float).ndim == 2
    rows = list(csv.reader((out / "denoising_resid_pre.csv").open(newline="")))
    assert rows[0] == ["layer", "pos", "value"] and len(rows) == 1 + 14  # layer 29 × 14 positions
    assert rows[-1][:2] == ["29", "13: to"]
    assert json.loads((out / "summary.json").read_text())["results"]["denoising_resid_pre"]["clean"] > 4

    out = tmp_path / "ablate"
    assert cli.main(["ablate", "--out", str(out), "--layers", "0", "--rates", "0,1,50"]) == 0
    for name in ("ripple.png", "median_replacement_heatmap.png"):
        assert (out / name).read_bytes()[:8] == PNG
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"] == [0, 15, 768] and summary["target"] == " night"
    assert cli.main(["ablate", "--out", str(out), "--rates", "x"]) == 1
    assert cli.main(["patch", "--out", str(out), "--components", "nope"]) == 1


def test_n_replaced_follows_the_study_floor_with_a_minimum_of_one():
    # The study: top p% is floor(p·d_mlp/100) neurons, at least one. On SmolLM2's 1536
    # neurons 7 of the 19 standard rates differ by one neuron from rounding.
    rates = A.FINE_RATES + A.COARSE_RATES
    floor = [A.n_replaced(r, 1536) for r in rates]
    rounded = [A.n_replaced(r, 1536, count="round") for r in rates]
    assert floor == [max(1, (r * 1536) // 100) if isinstance(r, int) else max(1, int(r * 1536 / 100 + 1e-9))
                     for r in rates]
    assert sum(f != g for f, g in zip(floor, rounded)) == 7
    assert A.n_replaced(0.01, 1536) == 1 and A.n_replaced(0.01, 1536, count="round") == 0
    assert A.n_replaced(0, 1536) == 0
    assert A.n_replaced(10, 1530) == 153  # 10 % of 1530 is exactly 153: no float off-by-one
    with pytest.raises(MinillmError, match="count must be"):
        A.n_replaced(10, 1536, count="ceil")


def test_rank_neurons_value_abs_magnitude():
    a = np.array([1.0, -5.0, 3.0, 3.0, 0.5, 2.0])  # median 1.5
    assert A.rank_neurons(a, "value").tolist() == [2, 3, 5, 0, 4, 1]
    assert A.rank_neurons(a, "abs").tolist() == [1, 2, 3, 5, 0, 4]
    # |a - median| = |a - 1.5| = 0.5, 6.5, 1.5, 1.5, 1.0, 0.5
    assert A.rank_neurons(a, "magnitude").tolist() == [1, 2, 3, 4, 0, 5]
    with pytest.raises(MinillmError, match="by must be"):
        A.rank_neurons(a, "signed")


def test_median_replacement_count_and_by_options():
    model = random_model("llama", seed=3)
    m = model.cfg.d_mlp
    res = A.median_replacement(model, PROMPT, 7, [1, 10, 50], progress=False, count="round", by="abs")
    assert res.counts == [A.n_replaced(r, m, "round") for r in (1, 10, 50)]
    assert res.delta.meta["count"] == "round" and res.delta.meta["by"] == "abs"
    _, cache = model.run_with_cache(PROMPT, names_filter=lambda n: n.endswith("mlp.hook_post"))
    post0 = cache["blocks.0.mlp.hook_post"][0, -1]
    assert res.order[0].tolist() == A.rank_neurons(post0, "abs").tolist()
