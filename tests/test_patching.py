"""Activation patching, path patching and the metrics: known answers on tiny models, IOI on SmolLM2."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from matplotlib.figure import Figure

from minillm.errors import MinillmError
from minillm.interp import metrics as M
from minillm.interp import patching as P
from tests.conftest import random_model
from tests.numerics import assert_reordered_close, metric_tolerance

# Tiny prompts: the same except at position 3 (as the IOI pair differs at one name).
CLEAN = np.array([[5, 9, 17, 23, 30, 41, 2]])
CORRUPT = np.array([[5, 9, 17, 40, 30, 41, 2]])


def tiny_metric():
    return M.logit_diff(None, 7, 11)


# --- metrics ------------------------------------------------------------------------------------


def test_metrics_known_values():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 4, 20)).astype(np.float32)
    ld = M.logit_diff(None, [1, 2], 3)  # a token set on the correct side: mean of its logits
    np.testing.assert_allclose(ld(logits), (logits[:, -1, 1] + logits[:, -1, 2]) / 2 - logits[:, -1, 3],
                               rtol=1e-6)
    lp = M.log_prob(None, 4, pos=1)
    ref = logits[:, 1, 4] - np.log(np.exp(logits[:, 1].astype(np.float64)).sum(-1))
    np.testing.assert_allclose(lp(logits), ref, rtol=1e-6)
    assert np.all(M.kl_to(logits)(logits) == 0)  # KL of a distribution to itself
    assert np.all(M.kl_to(logits[:1])(logits[1:]) > 0)
    per_row = M.logit_diff(None, [[1], [2], [3]], [[0], [0], [0]])  # one answer per row
    expected = logits[[0, 1, 2], -1, [1, 2, 3]] - logits[:, -1, 0]
    np.testing.assert_allclose(per_row(logits), expected, rtol=1e-6)
    norm = M.normalized(ld, clean=2.0, corrupted=-1.0)
    assert norm.last_only
    with pytest.raises(MinillmError, match="both the clean and the corrupted"):
        M.normalized(ld, 1.0, 1.0)
    with pytest.raises(MinillmError, match="pass the model"):
        M.logit_diff(None, " Mary", " John")


@pytest.mark.parametrize("kind", ["logit_diff", "logit", "log_prob", "kl", "normalized", "cross_entropy"])
def test_every_metric_grad_is_the_derivative_of_its_value(kind):
    """One metric type for sweeps, backward() and attribution: `grad(logits)` is d value / d logits.
    Checked in float64 against central differences (step 1e-6: truncation ~1e-12, rounding
    ~1e-10 relative), at every logit of a [2, 3, 16] batch."""
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(2, 3, 16))
    tokens = rng.integers(0, 16, (2, 3))
    metric = {"logit_diff": M.logit_diff(None, [3, 4], [[5], [6]]), "logit": M.logit(None, 3, pos=1),
              "log_prob": M.log_prob(None, [[3], [9]]), "kl": M.kl_to(rng.normal(size=(1, 3, 16))),
              "normalized": M.normalized(M.log_prob(None, 3), 2.0, -1.0),
              "cross_entropy": M.cross_entropy(tokens, np.array([[1, 1, 1], [0, 1, 1]]))}[kind]
    grad = metric.grad(logits)
    assert grad.shape == logits.shape
    fd = np.zeros_like(logits)
    for ix in np.ndindex(logits.shape):
        up, down = logits.copy(), logits.copy()
        up[ix] += 1e-6
        down[ix] -= 1e-6
        fd[ix] = (metric.value(up) - metric.value(down)) / 2e-6
    np.testing.assert_allclose(grad, fd, atol=1e-8)
    assert np.abs(grad).max() > 1e-3
    if kind != "cross_entropy":  # value = the mean of the per-row values
        assert metric.value(logits) == pytest.approx(float(np.mean(metric(logits))), abs=1e-12)


def test_metrics_take_text(smollm2):
    ld = M.logit_diff(smollm2, " Mary", [" John"])
    assert ld.correct.tolist() == [smollm2.to_single_token(" Mary")]
    with pytest.raises(MinillmError, match="not a single token"):
        M.logit_diff(smollm2, " Maryanne-Louise", " John")


# --- activation patching: known answers ----------------------------------------------------------


@pytest.mark.numerics
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_patching_everything_or_nothing(family, dtype):
    """Patching the whole residual stream at layer 0 gives exactly 1 (denoising) / 0 (noising);
    patching positions where the prompts agree gives exactly the other end."""
    model = random_model(family, dtype=dtype)
    m = tiny_metric()
    for direction, full, none in (("denoising", 1.0, 0.0), ("noising", 0.0, 1.0)):
        every = P.patching_sweep(model, CLEAN, CORRUPT, m, "resid_pre", direction, layers=[0],
                                 per_position=False, progress=False)
        assert every.values[0, 0] == full  # a batch of 1, like the reference runs: same bits
        res = P.patching_sweep(model, CLEAN, CORRUPT, m, "resid_pre", direction, progress=False)
        assert np.all(res.values[:, :3] == none), "positions before the corruption must change nothing"
        # Run anyway (no shortcut): a batch of 14 rows against the batch of 1 that gave the
        # reference values, so float32 agrees up to rounding. The metric is a difference of
        # two logits, each within the reorder tolerance t of tests/numerics.py, divided by
        # the clean-corrupted gap: the normalised values are within 2t / |gap| (float64: 1e-12).
        ran = P.patching_sweep(model, CLEAN, CORRUPT, m, "resid_pre", direction, progress=False,
                               skip_identical=False)
        assert ran.meta["runs"] == model.cfg.n_layers * CLEAN.shape[1]
        gap = abs(ran.meta["clean"] - ran.meta["corrupted"])
        tol = metric_tolerance(model, CLEAN, CORRUPT, gap=gap)
        assert_reordered_close(ran.values[:, :3], np.full((2, 3), none), tol, "unchanged positions")
        assert_reordered_close(ran.values, res.values, tol, "full runs vs shortcut")


@pytest.mark.numerics
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_noising_matches_attribution_modules_reference(family, dtype):
    """Raw noising = attribution.activation_patching (full runs, no cached prefix), both given
    the same metric object. Other batch
    shapes: a logit difference within 2× the reorder tolerance (tests/numerics.py)."""
    from minillm.interp.attribution import activation_patching

    model = random_model(family, seed=3, dtype=dtype)
    m = tiny_metric()
    ours = P.patching_sweep(model, CLEAN, CORRUPT, m, "attn_out", "noising", normalize=False, progress=False)
    theirs = activation_patching(model, CLEAN, CORRUPT, m, "attn_out", progress=False)  # the same metric
    assert_reordered_close(ours.values, theirs.values, metric_tolerance(model, CLEAN, CORRUPT),
                           "patching_sweep vs activation_patching")
    assert np.abs(ours.values).max() > 1e-3  # the comparison is not between zeros


def test_single_head_equals_attn_out():
    """With one head, patching the head (hook_z, all positions) = patching attn_out at all positions;
    with one kv-head, v + pattern together = the head."""
    model = random_model("gpt2", seed=5, n_head=1)
    m = tiny_metric()
    head = P.patching_sweep(model, CLEAN, CORRUPT, m, "heads", progress=False)
    attn = P.patching_sweep(model, CLEAN, CORRUPT, m, "attn_out", per_position=False, progress=False)
    np.testing.assert_allclose(head.values, attn.values, atol=1e-5)
    every = P.patch_all(model, CLEAN, CORRUPT, m, progress=False)
    assert set(every) == set(P.DEFAULT_COMPONENTS)
    assert every["heads_by_pos"].labels[0] == ["0.0", "1.0"]
    assert every["k"].axes == ("layer", "kv_head")
    for res in every.values():
        assert not np.isnan(res.values).any()


def test_patching_bad_input():
    model = random_model("llama")
    with pytest.raises(MinillmError, match="same number of tokens"):
        P.patching_sweep(model, CLEAN, CORRUPT[:, :-1], tiny_metric(), progress=False)
    with pytest.raises(MinillmError, match="unknown component"):
        P.patching_sweep(model, CLEAN, CORRUPT, tiny_metric(), "resid", progress=False)
    with pytest.raises(MinillmError, match="layer 7 does not exist"):
        P.patching_sweep(model, CLEAN, CORRUPT, tiny_metric(), layers=[7], progress=False)


# --- path patching -----------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_path_patching_known_answers(family):
    model = random_model(family, seed=2)
    m = tiny_metric()
    senders = ["0.1", "mlp0", "1.2", "mlp1"]
    res = P.path_patching(model, CLEAN, CORRUPT, m, senders,
                          receivers=["logits", [], "1.0", "1.3.q", "mlp1", ["1.0.k", "mlp1"]],
                          normalize=False, progress=False)
    assert res.shape == (4, 6)
    assert np.all(res.values[:, 1] == 0), "no receivers = no patch"
    assert np.isnan(res.values[2:, 2:4]).all(), "a head does not read a sender of its own layer or later"
    assert np.isnan(res.values[3, 4]) and not np.isnan(res.values[2, 4]), "attn l feeds mlp l, mlp l not"
    # The last MLP's only path is to the logits: its edge = plain noising of hook_mlp_out.
    plain = P.patching_sweep(model, CLEAN, CORRUPT, m, "mlp_out", "noising", normalize=False,
                             layers=[1], per_position=False, progress=False)
    assert res.values[3, 0] == pytest.approx(plain.values[0, 0], abs=1e-5)
    assert np.abs(res.values[~np.isnan(res.values)]).max() > 1e-3


def test_path_patching_plot(tmp_path):
    model = random_model("llama", seed=2)
    res = P.path_patching(model, CLEAN, CORRUPT, tiny_metric(), receivers=["logits", "1.0", "mlp1"],
                          progress=False)
    assert res.shape == (2 * (model.cfg.n_heads + 1), 3)
    grid = P.senders_by_layer(res)
    assert grid.shape == (2, model.cfg.n_heads + 1)
    for res_, path in ((res, tmp_path / "edges.png"), (grid, tmp_path / "grid.png")):
        assert isinstance(res_.plot(path), Figure)
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 2000
    files = P.save(res, tmp_path / "out", "path")
    assert [f.suffix for f in files] == [".csv", ".json", ".png"]
    rows = list(csv.reader(files[0].open(newline="")))
    assert rows[0] == [*res.axes, "value"] and len(rows) == 1 + res.values.size
    assert rows[1][:2] == [res.labels[0][0], res.labels[1][0]]
    assert float(rows[1][2] or "nan") == pytest.approx(res.values[0, 0], nan_ok=True)
    with pytest.raises(MinillmError, match="cannot read component"):
        P.path_patching(model, CLEAN, CORRUPT, tiny_metric(), ["head3"], progress=False)


# --- SmolLM2: indirect object identification ------------------------------------------------------

IOI_CLEAN = "When Mary and John went to the store, John gave a drink to"
IOI_CORRUPT = "When Mary and John went to the store, Mary gave a drink to"


def test_ioi_residual_stream_map(smollm2):
    """Denoising the residual stream: early layers act at the repeated name (position 9), late
    layers at the final position (13); the handover happens in the 20s.

    Measured (full sweep, all 30 layers): layers 0-19 restore 1.00 at position 9 and ~0 at 13;
    layer 20 0.91 / 0.12; layers 21-23 ~0.6 / ~0.35; layers 24-29 ~0 / 0.92-0.98.
    """
    tokens = smollm2.to_str_tokens(IOI_CLEAN)
    assert tokens[9] == " John" and len(tokens) == 14
    ld = M.logit_diff(smollm2, " Mary", " John")
    early, late = [0, 9, 18], [25, 29]
    res = P.patching_sweep(smollm2, IOI_CLEAN, IOI_CORRUPT, ld, "resid_pre", layers=early + late,
                           batch_size=64, progress=False)
    assert res.meta["clean"] > 4 and res.meta["corrupted"] < -4  # the corruption flips the answer
    assert np.all(res.values[:, :9] == 0)  # before the corruption nothing differs
    shares = P.effect_shares(res, {"name": [9], "end": [13]})
    assert np.all(shares["name"][:3] > 0.9), shares
    assert np.all(shares["end"][3:] > 0.85), shares
    np.testing.assert_allclose(res.values[:3, 9], 1.0, atol=0.05)  # one position restores it all
    assert np.all(res.values[3:, 13] > 0.85)
