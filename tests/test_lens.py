"""Logit lens, direct logit attribution, and the `minillm lens` command."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.figure import Figure

from minillm.cli import main
from minillm.errors import MinillmError
from minillm.interp.dla import direct_logit_attribution
from minillm.interp.lens import lens_logits, logit_lens
from tests.conftest import random_model

EIFFEL = "The Eiffel Tower is located in the city of"


@pytest.fixture(scope="module")
def eiffel_lens(smollm2):
    return logit_lens(smollm2, EIFFEL, targets=[" Paris", " London"], k=3)


# --- logit lens ------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_lens_last_row_is_the_models_logits(family):
    """Decoding the final residual stream with ln_final and W_U is what the model does: bit-exact."""
    model = random_model(family)
    tokens = np.random.default_rng(1).integers(0, 64, (2, 9))
    logits = model(tokens)  # [2, 9, V]
    np.testing.assert_array_equal(lens_logits(model, tokens, model.cfg.n_layers), logits)
    lens = logit_lens(model, tokens, targets=[5, 7], k=4, batch_row=1)
    np.testing.assert_array_equal(lens.top_ids[-1, :, 0], logits[1].argmax(-1))
    np.testing.assert_array_equal(lens.top_logits[-1, :, 0], logits[1].max(-1))
    ranks = (logits[1] > logits[1][:, [5]]).sum(-1) + 1
    np.testing.assert_array_equal(lens.target_ranks[-1, :, 0], ranks)
    assert lens.top_ids.shape == (model.cfg.n_layers + 1, 9, 4)
    assert np.allclose(lens.top_probs.sum(-1), lens.top_probs.sum(-1).clip(max=1))


def test_lens_on_smollm2_matches_logits_and_finds_paris(smollm2, eiffel_lens, tmp_path):
    """Last row = the model's own prediction (within 1e-6 in float32); ' Paris' wins from L27 on."""
    logits = smollm2(EIFFEL)[0]  # [p, V]
    assert np.abs(eiffel_lens.top_logits[-1, :, 0] - logits.max(-1)).max() <= 1e-6
    assert smollm2.to_string([int(eiffel_lens.top_ids[-1, -1, 0])]) == " Paris"
    first = eiffel_lens.first_layer_top1(" Paris")
    print(f"' Paris' is the lens' top-1 token from {first} on")
    assert first is not None and int(first[1:]) >= 20  # a late-layer fact: L27 when measured
    assert eiffel_lens.target_ranks[0, -1, 0] > 100  # not readable from the embedding of ' of'
    assert eiffel_lens.row_labels[0] == "embed" and len(eiffel_lens.row_labels) == 31
    assert "' Paris'" in eiffel_lens.table()
    for fig, path in ((eiffel_lens.plot(tmp_path / "lens.png"), tmp_path / "lens.png"),
                      (eiffel_lens.plot_targets(tmp_path / "targets.png"), tmp_path / "targets.png"),
                      (eiffel_lens.target_array().plot(tmp_path / "tp.png"), tmp_path / "tp.png")):
        assert isinstance(fig, Figure) and path.stat().st_size > 1000


@pytest.mark.parametrize("stream", ["attn_out", "mlp_out"])
def test_component_lens_sums_to_resid_logits(stream):
    """Component writes with the frozen final scale are linear: attn + mlp + embed = the final logits."""
    model = random_model("llama", dtype=np.float64)
    tokens = np.arange(6)[None]
    _, cache = model.run_with_cache(tokens)
    lens = logit_lens(model, tokens, k=3, stream=stream)
    from minillm.interp.lens import final_norm

    x = cache[stream, 1]
    expected = final_norm(model, x, cache["ln_final.hook_scale"]) @ model.unembed.W_U
    np.testing.assert_allclose(lens.top_logits[1, :, 0], expected[0].max(-1), rtol=1e-12)
    assert lens.row_labels == ["L0", "L1"]


def test_lens_errors(tiny):
    with pytest.raises(MinillmError, match="stream must be"):
        logit_lens(tiny, np.arange(4)[None], stream="mlp")
    with pytest.raises(MinillmError, match="outside the vocabulary"):
        logit_lens(tiny, np.arange(4)[None], targets=[10**6])
    with pytest.raises(MinillmError, match="lens row 3 does not exist"):
        lens_logits(tiny, np.arange(4)[None], 3)


# --- direct logit attribution ------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["gpt2", "llama"])
@pytest.mark.parametrize("dtype,tol", [(np.float32, 1e-4), (np.float64, 1e-10)])
@pytest.mark.parametrize("neurons", [False, True])
def test_dla_parts_sum_to_the_logit_difference(family, dtype, tol, neurons):
    """embed (+ pos) + heads (+ b_O) + MLPs or neurons (+ b_out) (+ ln_final.b) = logit diff."""
    model = random_model(family, seed=3, dtype=dtype)
    tokens = np.random.default_rng(2).integers(0, 64, (3, 8))
    dla = direct_logit_attribution(model, tokens, correct=[1, 2, 3], incorrect=9, neurons=neurons)
    logits = model(tokens)[:, -1]
    expected = logits[np.arange(3), [1, 2, 3]] - logits[:, 9]
    np.testing.assert_allclose(dla.per_prompt_total, expected, rtol=0, atol=0)
    np.testing.assert_allclose(dla.per_prompt.sum(1), expected, rtol=0, atol=tol)
    assert abs(dla.parts.values.sum() - dla.total) <= tol
    # the per-layer view regroups the same numbers
    outside = sum(v for lab, v in zip(dla.parts.labels[0], dla.parts.values)
                  if lab in ("embed", "pos_embed", "ln_final.b"))
    assert abs(dla.layers.values.sum() + outside - dla.total) <= tol
    n_mlp = model.cfg.d_mlp if neurons else 1
    assert len(dla.parts.labels[0]) >= 1 + model.cfg.n_layers * (model.cfg.n_heads + n_mlp)


def test_dla_on_smollm2_paris_vs_london(smollm2, tmp_path):
    dla = direct_logit_attribution(smollm2, EIFFEL, " Paris", " London")
    assert abs(dla.parts.values.sum() - dla.total) <= 1e-4
    assert dla.total > 3  # the model prefers Paris
    late = dla.layers.values[20:].sum()
    assert late > 0.5 * dla.total  # most of the direct effect is written in the last third
    assert isinstance(dla.plot(tmp_path / "dla.png"), Figure)
    assert isinstance(dla.heads.plot(tmp_path / "heads.png"), Figure)
    assert (tmp_path / "dla.png").stat().st_size > 1000 and (tmp_path / "heads.png").stat().st_size > 1000


# --- the command -------------------------------------------------------------------------------------


@pytest.fixture
def loaded(smollm2, monkeypatch):
    """The command's `minillm.load` returns the session's model (loading it again costs seconds)."""
    import minillm

    monkeypatch.setattr(minillm, "load", lambda name, dtype=np.float32: smollm2)
    return smollm2


def test_lens_command(loaded, tmp_path, capsys):
    out = tmp_path / "lens.png"
    assert main(["lens", "smollm2-135m", "The capital of France is", "--target", " Paris",
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "' Paris' is ranked first from L" in text and "top-1 token per layer" in text
    assert out.stat().st_size > 1000 and (tmp_path / "lens_targets.png").stat().st_size > 1000


def test_lens_command_errors(loaded, capsys):
    assert main(["lens", "smollm2-135m", "Hello", "--target", " Parisian city"]) == 1
    assert "not a single token" in capsys.readouterr().err
