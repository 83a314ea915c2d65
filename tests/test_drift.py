"""Drift measurements: the four kinds of "revert" are told apart by numbers.

journal revert: exactly 0 everywhere; inverse revert: a few ulps of weights,
small logit drift; stale KV cache: non-zero drift from the first layer whose
K/V the edit changed, gone (bit-exact) when the cache is recomputed;
interference: only downstream neurons move.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minillm import cli, edits
from minillm.edit.drift import RUNS, interference_map, measure_drift, ulp_distance
from tests.test_edits import SMALL, op_strategy, small_model, state


def test_ulp_distance_counts_representable_floats():
    one = np.float32(1.0)
    assert ulp_distance(one, np.nextafter(one, np.float32(2))) == 1
    assert ulp_distance(np.float32(0.0), np.float32(-0.0)) == 0
    tiny = np.nextafter(np.float32(0), np.float32(1))
    assert ulp_distance(-tiny, tiny) == 2
    assert ulp_distance(np.float64(1.0), np.nextafter(1.0, 0.0)) == 1


@settings(max_examples=40, deadline=None)
@given(data=st.data(), name=st.sampled_from(SMALL))
def test_journal_and_recomputed_cache_are_exact_and_stale_cache_is_not(data, name):
    model = small_model(name)
    ops = data.draw(st.lists(op_strategy(model.cfg), min_size=1, max_size=3), label="ops")
    ids = np.array([data.draw(st.lists(st.integers(0, model.cfg.d_vocab - 1), min_size=3, max_size=8))])
    before = state(model)
    r = measure_drift(model, ids, ops, n_new=data.draw(st.integers(1, ids.shape[1] - 1)))
    assert state(model) == before and model.journal.pristine
    for name_ in ("journal-reverted", "recomputed-cache"):
        run = r.runs[name_]
        assert run.resid_abs.max() == 0 and run.logit_abs.max() == 0 and run.kl.max() == 0, name_
        assert run.weight_ulps == 0
    stale = r.runs["stale-kv-cache"]
    if not r.cache_drift.any():  # the edit did not reach the prefix's K/V: the stale cache is harmless
        assert stale.logit_abs.max() == 0
    inv = r.runs["inverse-reverted"]
    # The bound is for scaling; a chain of scalings of Gemma's (1 + w) gains compounds each
    # one's 1/f loss (edits.inverse_ulp_bound; test_edits checks it one edit at a time).
    simple = all(edits.inverse_ulp_bound(op, model) == edits.INVERSE_ULP_BOUND for op in ops)
    if all(isinstance(op, edits._Scale) for op in ops) and simple and inv.resid_abs.size:
        assert inv.weight_ulps <= edits.INVERSE_ULP_BOUND


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-llama", "gpt2", "llama_gqa_untied"])
def test_stale_cache_carries_an_edit_that_matters(name):
    model = small_model(name)
    ids = np.array([[3, 1, 4, 1, 5, 9, 2]])
    r = measure_drift(model, ids, [edits.scale_neuron(0, 0, 0.0, which="both")], n_new=2)
    assert r.runs["edited"].logit_abs.max() > 0
    assert r.cache_drift[0] == 0 and (r.cache_drift[1:] > 0).all()  # K/V of layer 0 precede the MLP
    stale = r.runs["stale-kv-cache"]
    assert stale.logit_abs.max() > 0 and stale.kl[-1] > 0
    assert (stale.resid_abs[:2] == 0).all()  # embeddings and block 0's attention input: not stale
    assert r.runs["recomputed-cache"].logit_abs.max() == 0


def test_smollm2_drift_table_and_plot(smollm2, tmp_path, capsys):
    ops = [edits.scale_neuron(layer=5, neuron=123, factor=0.04)]
    r = measure_drift(smollm2, "It was a dark and stormy", ops)
    table = r.table()
    with capsys.disabled():
        print("\n" + table)
        print("stale-cache relative drift per layer (0 = embeddings):",
              np.array2string(r.layer_profile("stale-kv-cache"), precision=2))
        print("stale-cache max |dK|,|dV| per layer:", np.array2string(r.cache_drift, precision=3))
    assert smollm2.journal.pristine
    assert r.runs["journal-reverted"].logit_abs.max() == 0
    assert r.runs["recomputed-cache"].logit_abs.max() == 0
    inv = r.runs["inverse-reverted"]
    assert 0 < inv.weight_ulps <= edits.INVERSE_ULP_BOUND and 0 < inv.logit_abs.max() < 1e-3
    stale = r.runs["stale-kv-cache"]
    assert (r.cache_drift[:6] == 0).all() and (r.cache_drift[6:] > 0).all()  # K/V after block 5 only
    assert (stale.resid_abs[:7] == 0).all() and (stale.resid_abs[7:] > 0).all()
    assert [line.split()[0] for line in table.splitlines()[2:]] == ["clean", *RUNS, "stale"]
    assert "' night'" in table and "bit-exact" in table
    r.plot(tmp_path / "drift.png")
    assert (tmp_path / "drift.png").stat().st_size > 1000


@pytest.mark.parametrize("name", ["tiny-llama", "gpt2", "llama_tied"])
def test_interference_only_downstream(name, tmp_path):
    model = small_model(name)
    ids = np.array([[5, 3, 8, 1, 9, 2]])
    m = interference_map(model, ids, layer=0, neuron=3, factor=0.0)
    assert m.upstream_max == 0 and m.same_layer_max == 0
    assert m.per_layer()[1:].min() > 0  # every later layer's neurons move
    at = interference_map(model, ids, layer=0, neuron=3, factor=0.0, position=3)
    assert at.earlier_max == 0 and at.upstream_max == 0
    assert at.delta[1, 3:].max() > 0
    m.plot(tmp_path / "interference.png")
    assert (tmp_path / "interference.png").stat().st_size > 1000
    assert model.journal.pristine


def test_smollm2_interference(smollm2, capsys):
    """(The position variant, an activation edit, is checked on the small models above.)"""
    m = interference_map(smollm2, "It was a dark and stormy", layer=5, neuron=123, factor=0.0)
    with capsys.disabled():
        print("\n" + m.table(5))
        print("max |Δ hook_post| per layer:", np.array2string(m.per_layer(), precision=3))
    assert m.upstream_max == 0 and m.same_layer_max == 0 and (m.per_layer()[6:] > 0).all()


def test_cli_edit_prints_before_edited_reverted(capsys):
    """(`--revert all` adds the stale and recomputed cache rows: the table of test_smollm2_drift_table.)"""
    code = cli.main(["edit", "smollm2-135m", "It was a dark and stormy", "--scale-neuron", "5:123:0.04",
                     "--reduce-embedding", " dark:0.3", "--revert", "inverse"])
    out = capsys.readouterr().out
    assert code == 0
    rows = [line.split()[0] for line in out.splitlines()[-3:]]
    assert rows == ["clean", "edited", "inverse-reverted"]
    assert "<= 1 ulps" in out.splitlines()[-1]
    assert "reduce (α=0.3) embedding of token 3605 ' dark' ×0.7 (tied: also changes W_U[:, 3605]" in out


def test_cli_edit_bad_input(capsys):
    assert cli.main(["edit", "smollm2-135m", "x", "--scale-neuron", "5:123"]) == 1
    assert "expected LAYER:NEURON:FACTOR" in capsys.readouterr().err
    assert cli.main(["edit", "smollm2-135m", "x", "--scale-neuron", "50:1:2"]) == 1
    assert "layer 50 does not exist" in capsys.readouterr().err
    assert cli.main(["edit", "smollm2-135m", "x"]) == 1
    assert "no edit given" in capsys.readouterr().err
