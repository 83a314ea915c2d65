"""Attribution patching, activation patching, their comparison, gradient importance, results."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.figure import Figure

from minillm.errors import MinillmError
from minillm.grad.backward import backward
from minillm.interp import attribution as ap
from minillm.interp.metrics import logit_diff
from minillm.interp.results import LabelledArray, plot_heatmap
from tests.conftest import random_model

CLEAN = np.array([[5, 9, 13, 2, 9, 30, 7]])
CORRUPTED = np.array([[5, 9, 13, 2, 13, 30, 7]])  # one token differs, at position 4
METRIC = logit_diff(None, 11, 12)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_attribution_is_the_small_patch_limit_of_activation_patching(family):
    """Patching a + α(a_corr - a) changes the metric by α × attribution as α -> 0 (float64)."""
    model = random_model(family, seed=2, dtype=np.float64)
    attr = ap.attribution_patching(model, CLEAN, CORRUPTED, METRIC)
    _, corrupt = model.run_with_cache(CORRUPTED)
    _, clean = model.run_with_cache(CLEAN)
    base = METRIC(model(CLEAN))[0]
    alpha = 1e-5
    for comp, l, i in [("resid_pre", 1, 4), ("mlp_out", 0, 6), ("heads", 1, 2), ("neurons", 0, 3)]:
        name = ap._hook(comp, l)
        sel = ap._select(comp, i)

        def patch(act, hook, name=name, sel=sel):
            act = act.copy()
            act[sel] += alpha * (corrupt[name][sel] - clean[name][sel])
            return act

        slope = (METRIC(model.run_with_hooks(CLEAN, [(name, patch)]))[0] - base) / alpha
        est = attr[comp].values[l, i]
        assert abs(slope - est) < 1e-4 * max(1.0, abs(est)), f"{comp} ({l}, {i}): {slope} vs {est}"


def test_batched_activation_patching_equals_one_run_per_entry(tiny):
    act = ap.activation_patching(tiny, CLEAN, CORRUPTED, METRIC, "resid_pre", batch_size=3,
                                 progress=False)
    assert act.axes == ("layer", "pos") and act.shape == (2, 7)
    assert np.all(act.values[:, :4] == 0)  # positions before the change: identical activations
    _, corrupt = tiny.run_with_cache(CORRUPTED)
    base = METRIC(tiny(CLEAN))[0]
    for l, p in [(0, 4), (1, 5), (1, 6)]:
        name = f"blocks.{l}.hook_resid_pre"

        def patch(a, hook, name=name, p=p):
            a = a.copy()
            a[:, p] = corrupt[name][:, p]
            return a

        expected = METRIC(tiny.run_with_hooks(CLEAN, [(name, patch)]))[0] - base
        assert act.values[l, p] == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_heads_and_neurons_sweeps_and_restrictions(tiny):
    heads = ap.activation_patching(tiny, CLEAN, CORRUPTED, METRIC, "heads", progress=False)
    assert heads.shape == (2, tiny.cfg.n_heads) and np.isfinite(heads.values).all()
    neurons = ap.activation_patching(tiny, CLEAN, CORRUPTED, METRIC, "neurons", layers=[1],
                                     indices=[0, 5], progress=False)
    assert np.isnan(neurons.values[0]).all() and np.isfinite(neurons.values[1, [0, 5]]).all()
    with pytest.raises(MinillmError, match="unknown component"):
        ap.activation_patching(tiny, CLEAN, CORRUPTED, METRIC, "heda")
    with pytest.raises(MinillmError, match="same shape"):
        ap.attribution_patching(tiny, CLEAN, CORRUPTED[:, :-1], METRIC)


def test_compare_and_plots(tiny, tmp_path):
    attr = ap.attribution_patching(tiny, CLEAN, CORRUPTED, METRIC, components=["resid_pre"])
    cmp = ap.compare(attr["resid_pre"], attr["resid_pre"])
    assert cmp.r == pytest.approx(1.0) and cmp.slope == pytest.approx(1.0)
    act = ap.activation_patching(tiny, CLEAN, CORRUPTED, METRIC, "resid_pre", progress=False)
    cmp = ap.compare(attr["resid_pre"], act)
    assert cmp.n == act.values.size and -1 <= cmp.r <= 1
    for fig, path in ((cmp.plot(tmp_path / "cmp.png"), tmp_path / "cmp.png"),
                      (attr["resid_pre"].plot(tmp_path / "heat.png"), tmp_path / "heat.png")):
        assert isinstance(fig, Figure) and path.stat().st_size > 1000
    with pytest.raises(MinillmError, match="same component"):
        ap.compare(attr["resid_pre"], LabelledArray(np.zeros(3), ("x",), (list("abc"),)))


def test_gradient_importance_is_abs_activation_times_gradient(tiny):
    imp = ap.gradient_importance(tiny, CLEAN, METRIC)
    res = backward(tiny, CLEAN, METRIC, params=False)
    z, dz = res.cache["blocks.1.attn.hook_z"], res.grad("blocks.1.attn.hook_z")
    assert imp["heads"].values[1, 3] == pytest.approx(abs((z[0, :, 3] * dz[0, :, 3]).sum()), rel=1e-5)
    assert imp["neurons"].shape == (2, tiny.cfg.d_mlp) and (imp["neurons"].values >= 0).all()


def test_labelled_array(tmp_path):
    res = LabelledArray(np.array([[1.0, -5.0], [2.0, 0.5]]), ("layer", "head"),
                        (["0", "1"], ["a", "b"]), title="t")
    assert res.top(2) == [(("0", "b"), -5.0), (("1", "a"), 2.0)]
    assert isinstance(plot_heatmap(res, tmp_path / "h.png"), Figure)
    assert (tmp_path / "h.png").stat().st_size > 1000
    LabelledArray(np.arange(3.0), ("x",), (["a", "b", "c"],)).plot(tmp_path / "b.png")
    assert (tmp_path / "b.png").exists()
    with pytest.raises(MinillmError, match="3 labels"):
        LabelledArray(np.zeros((2, 2)), ("layer", "head"), (["0", "1"], ["a", "b", "c"]))


def test_smollm2_ioi_attribution_tracks_activation_patching(smollm2, tmp_path):
    """IOI: the linear estimate of patching the residual stream correlates clearly with the
    measured effect (full 30-layer sweep, all component types: see the issue report; the
    test sweeps every fifth layer to stay fast)."""
    clean = smollm2.to_tokens("When Mary and John went to the store, John gave a drink to")
    corrupted = smollm2.to_tokens("When Mary and John went to the store, Mary gave a drink to")
    metric = logit_diff(smollm2, " Mary", " John")
    assert metric(smollm2(clean))[0] > 2 and metric(smollm2(corrupted))[0] < -2
    attr = ap.attribution_patching(smollm2, clean, corrupted, metric, components=["resid_pre"])
    layers = list(range(0, smollm2.cfg.n_layers, 5))
    act = ap.activation_patching(smollm2, clean, corrupted, metric, "resid_pre", layers=layers,
                                 batch_size=25, progress=False)
    cmp = ap.compare(attr["resid_pre"], act)
    assert cmp.r > 0.5, f"attribution vs activation patching, resid_pre: r = {cmp.r:.3f}"
    # the measured effect is largest where the name was swapped (the approximation's largest
    # entry is not: it underestimates the early, saturated layers there; see the report)
    assert act.top(1)[0][0][1] == "9: John"
    cmp.plot(tmp_path / "ioi_resid.png")
