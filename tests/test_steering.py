"""Steering vectors, function vectors, analogies, and patchscopes."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.figure import Figure

from minillm import ops
from minillm.errors import MinillmError
from minillm.interp import patchscopes as ps
from minillm.interp import steering as st
from minillm.interp.results import LabelledArray
from tests.conftest import random_model
from tests.numerics import assert_model_close

EIFFEL = "The Eiffel Tower is located in the city of"


# --- steering ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_zero_steering_vector_changes_nothing_bit_for_bit(family):
    model = random_model(family)
    tokens = np.array([[3, 1, 4, 1, 5, 9]])
    zero = np.zeros(model.cfg.d_model, model.dtype)
    plain = model(tokens)
    for layer in range(model.cfg.n_layers):
        np.testing.assert_array_equal(
            model.run_with_interventions(tokens, [st.steer(zero, layer, alpha=3.0)]), plain)
    ids, logits = model.generate(tokens, max_new_tokens=6, return_logits=True)
    with model.intervened([st.steer(zero, 1, alpha=5.0)]):
        ids2, logits2 = model.generate(tokens, max_new_tokens=6, return_logits=True)
    np.testing.assert_array_equal(ids2, ids)
    np.testing.assert_array_equal(logits2, logits)


def test_steering_vector_is_a_mean_difference_and_moves_generation(smollm2):
    love = ["I love this", "What a wonderful day", "I am so happy"]
    hate = ["I hate this", "What an awful day", "I am so sad"]
    v = st.steering_vector(smollm2, love, hate, layer=8)
    a = st.mean_activation(smollm2, love, 8)
    b = st.mean_activation(smollm2, hate, 8)
    np.testing.assert_array_equal(v, a - b)
    single = smollm2.run_with_cache(love[0], names_filter=["blocks.8.hook_resid_pre"])[1]
    # other batch shapes: the reorder tolerance of tests/numerics.py over the 8 blocks before
    assert_model_close(smollm2, st.mean_activation(smollm2, love[:1], 8),
                       single["blocks.8.hook_resid_pre"][0, -1], "one-prompt mean", depth=6 * 8)
    out = st.generate_steered(smollm2, "I think the movie was", v, 8, alphas=(0.0, 4.0), max_new_tokens=4)
    assert out[0.0] == smollm2.generate("I think the movie was", max_new_tokens=4)  # α = 0: unchanged
    assert out[4.0] != out[0.0]
    print(out)


# --- function vectors --------------------------------------------------------------------------------


def test_fewshot_prompts_layout():
    prompts, answers = st.fewshot_prompts(st.COUNTRY_CAPITAL[:8], 3, n_shots=2, seed=1)
    assert prompts[0].endswith("\nFrance:") and answers == [" Paris", " Tokyo", " Rome"]
    assert prompts[0].count("\n") == 2 and "France" not in prompts[0][:-7]
    shuffled, _ = st.fewshot_prompts(st.COUNTRY_CAPITAL[:8], 3, n_shots=2, seed=1, shuffled=True)
    assert [p.split("\n")[-1] for p in shuffled] == [p.split("\n")[-1] for p in prompts]
    with pytest.raises(MinillmError, match="too few"):
        st.fewshot_prompts(st.COUNTRY_CAPITAL[:3], 2, n_shots=3)


FV_LAYER = 15  # half depth: among layers 9, 12, 15 the largest gain on held-out prompts


def test_country_capital_function_vector_helps_zero_shot(smollm2, tmp_path):
    """Few-shot 'Country: Capital' prompts on 12 countries -> a function vector of the top 5
    heads; added (unscaled) at layer 15 to held-out zero-shot prompts 'Poland:' it raises
    p(capital) on every one of 8 held-out countries, and the mean many-fold."""
    fv = st.function_vector(smollm2, st.COUNTRY_CAPITAL[:12], n_prompts=12, n_heads=5)
    assert len(fv.heads) == 5 and fv.vector.shape == (576,)
    np.testing.assert_allclose(fv.vector, sum(fv.mean_out[l, h] for l, h in fv.heads))
    held_out = st.COUNTRY_CAPITAL[12:]
    prompts = [f"{c}:" for c, _ in held_out]
    answers = [f" {a}" for _, a in held_out]
    base = st.answer_probs(smollm2, prompts, answers)
    steered = st.answer_probs(smollm2, prompts, answers, [st.steer(fv.vector, FV_LAYER, pos=-1)])
    print(f"function vector heads {fv.heads}; p(capital) zero-shot {base.mean():.2e} -> "
          f"{steered.mean():.2e} with the vector at layer {FV_LAYER}")
    assert (steered > base).all()
    assert steered.mean() > 5 * base.mean()
    L, H = fv.effects.shape
    labels = ([str(l) for l in range(L)], [str(h) for h in range(H)])
    res = LabelledArray(fv.effects, ("layer", "head"), labels,
                        title="function-vector heads: indirect effect (attribution estimate)")
    assert isinstance(res.plot(tmp_path / "fv_heads.png"), Figure)
    assert (tmp_path / "fv_heads.png").stat().st_size > 1000


# --- analogies ---------------------------------------------------------------------------------------


def test_king_minus_man_plus_woman(smollm2):
    emb = st.embedding_analogy(smollm2, " king", " man", " woman", k=5)
    assert emb[0][0] == " queen"
    candidates = [" queen", " prince", " princess", " girl", " boy", " castle", " car"]
    res = st.residual_analogy(smollm2, " king", " man", " woman", candidates, layer=10,
                              template="The word{w}")
    assert res[0][0] == " queen" and len(res) == len(candidates)
    with pytest.raises(MinillmError, match="not a single token"):
        st.embedding_analogy(smollm2, " kingdoms of old", " man", " woman")


# --- patchscopes -------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_patchscope_into_its_own_source_changes_nothing(family):
    model = random_model(family)
    tokens = np.array([[2, 7, 1, 8, 2, 8]])
    _, cache = model.run_with_cache(tokens)
    plain = model(tokens)
    for layer in range(model.cfg.n_layers):
        for pos in (0, 3, 5):
            h = cache["resid_pre", layer][0, pos]
            np.testing.assert_array_equal(
                model.run_with_interventions(tokens, [ps.inject(model, h, layer, pos)]), plain)


def test_patchscope_on_smollm2(smollm2, tmp_path):
    # injecting the source's own state at the same layer and position reproduces the source run
    h = ps.hidden_state(smollm2, EIFFEL, layer=12, pos=-1)
    n = smollm2.to_tokens(EIFFEL).shape[1]
    text, logits = ps.patchscope(smollm2, h, 12, target_prompt=EIFFEL, pos=n - 1, max_new_tokens=3,
                                 return_logits=True)
    ref_text, ref_logits = smollm2.generate(EIFFEL, max_new_tokens=3, return_logits=True)
    np.testing.assert_array_equal(logits, ref_logits[0])
    assert text == ref_text
    # the identity prompt: the placeholder '?' is the last token; the model continues after it
    last = smollm2.to_tokens(ps.IDENTITY_PROMPT).shape[1] - 1
    assert ps.placeholder_position(smollm2, ps.IDENTITY_PROMPT) == last
    described = ps.patchscope(smollm2, ps.hidden_state(smollm2, "Diana, Princess of Wales", 2), 2,
                              max_new_tokens=4)
    assert "Wales" in described
    # a sweep cell is the same injection as a single patchscope (batched runs agree)
    sweep = ps.layer_sweep(smollm2, EIFFEL, " Paris", source_layers=[4, 20], target_layers=[2, 20],
                           progress=False)
    assert sweep.probs.shape == (2, 2)
    _, one = ps.patchscope(smollm2, ps.hidden_state(smollm2, EIFFEL, 20), 2, max_new_tokens=1,
                           return_logits=True)
    p = ops.softmax(one.astype(np.float64))[smollm2.to_single_token(" Paris")]
    assert sweep.probs.values[1, 0] == pytest.approx(p, rel=1e-4, abs=1e-7)
    assert isinstance(sweep.plot(tmp_path / "sweep.png"), Figure)
    assert (tmp_path / "sweep.png").stat().st_size > 1000
    print("sweep p(' Paris'):", sweep.probs.values, sweep.top)
    with pytest.raises(MinillmError, match="placeholder 'x' is not a token"):
        ps.placeholder_position(smollm2, "no placeholder here", "x")


def test_multi_hop_patchscope(smollm2):
    """Source 'the country whose capital is Paris' -> target 'The official language of x is':
    the first hop is resolved in the source, the second in the target."""
    question = "The official language of x is"
    unpatched = smollm2.generate(question, max_new_tokens=4)
    answers = ps.multi_hop(smollm2, "the country whose capital is Paris", question, layers=[8],
                           max_new_tokens=4)
    print("unpatched:", repr(unpatched), "patched:", answers)
    assert "French" in answers[8] and "French" not in unpatched
