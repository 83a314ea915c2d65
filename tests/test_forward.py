"""The forward pass against Hugging Face transformers' outputs, frozen in tests/fixtures/.

Tolerances: the fixtures are tiny (d_model 32 or 64, 2 layers) float32 models, so
float32 logits agree to a few 1e-6; 5e-5 leaves an order of magnitude of room
for BLAS summation order. In float64 every family agrees to ~2e-14 (measured
8e-15 .. 2e-14 under the Haswell, SkylakeX and Sandybridge kernels), checked at
1e-12. The float64 references are true float64: make_fixtures.py runs
transformers' RMSNorm, RoPE angles and softmax in float64 too (plain `.double()`
keeps them in float32).
"""

from __future__ import annotations

import numpy as np
import pytest
from safetensors.numpy import load_file

import minillm
from tests.conftest import GOLDEN, golden_folder
from tests.numerics import assert_model_close

pytestmark = pytest.mark.numerics  # every comparison here depends on float32 rounding

ATOL_F32 = 5e-5


def reference(name: str) -> dict[str, np.ndarray]:
    return load_file(str(golden_folder(name) / "reference.safetensors"))


def max_diff(a, b) -> float:
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())


def assert_close(actual, expected, atol, what):
    diff = np.abs(np.asarray(actual, np.float64) - np.asarray(expected, np.float64))
    where = np.unravel_index(np.argmax(diff), diff.shape)
    assert diff.max() <= atol, f"{what}: max abs diff {diff.max():.3g} at {where} (tolerance {atol})"


@pytest.fixture(scope="module", params=GOLDEN)
def golden(request):
    name = request.param
    return name, minillm.load(golden_folder(name)), reference(name)


def test_logits_match_transformers(golden):
    name, model, ref = golden
    assert_close(model(ref["input_ids"]), ref["logits"], ATOL_F32, f"{name} logits")


def test_greedy_ids_and_top1_match(golden):
    """Parity at three levels (minGPT): logits (above), argmax ids, greedy continuation."""
    name, model, ref = golden
    ours = model(ref["input_ids"]).argmax(-1)
    assert (ours == ref["logits"].argmax(-1)).all(), f"{name}: argmax ids differ"
    greedy = model.generate(ref["input_ids"][:1], max_new_tokens=8, stop_at_eos=False)
    assert (greedy == ref["greedy_ids"]).all(), f"{name}: greedy {greedy} vs {ref['greedy_ids']}"


def test_every_hidden_state_matches(golden):
    """HF hidden_states[0] is the embedding sum, [i] block i-1's output, and the
    last entry is after the final norm (gain and bias included)."""
    name, model, ref = golden
    L = model.cfg.n_layers
    _, cache = model.run_with_cache(ref["input_ids"])
    hs = ref["hidden_states"]
    assert hs.shape[0] == L + 1
    assert_close(cache["blocks.0.hook_resid_pre"], hs[0], ATOL_F32, f"{name} embeddings")
    for l in range(L - 1):
        assert_close(cache[f"blocks.{l}.hook_resid_post"], hs[l + 1], ATOL_F32, f"{name} layer {l}")
    assert_close(cache[f"blocks.{L - 1}.hook_resid_post"], ref["resid_post_last"], ATOL_F32,
                 f"{name} last block")
    final = model.ln_final.apply(cache["ln_final.hook_normalized"])  # · gain (+ b)
    assert_close(final, hs[L], ATOL_F32, f"{name} after final norm")


def test_float64_reference_mode(golden):
    name, model32, ref = golden
    model = minillm.load(golden_folder(name), dtype=np.float64)
    logits = model(ref["input_ids"])
    assert logits.dtype == np.float64
    assert_close(logits, ref["logits_f64"], 1e-12, f"{name} float64 logits")
    assert_close(model.run_with_cache(ref["input_ids"])[1]["blocks.0.hook_resid_pre"],
                 ref["hidden_states_f64"][0], 1e-12, f"{name} float64 embeddings")
    assert_close(model32(ref["input_ids"]), logits, ATOL_F32, f"{name} float32 vs float64")


@pytest.mark.parametrize("side", ["ragged", "rpad"])
def test_padded_batches_match_transformers(golden, side):
    """Left- (ragged) and right-padded (rpad) batches, compared at real tokens only."""
    name, model, ref = golden
    mask = ref[f"{side}_attention_mask"]
    logits = model(ref[f"{side}_input_ids"], attention_mask=mask)
    real = mask.astype(bool)
    assert_close(logits[real], ref[f"{side}_logits"][real], ATOL_F32, f"{name} {side} logits")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_left_padding_equals_unpadded_row(golden, dtype):
    """A left-padded row gives the row's own logits. The two runs have different shapes
    (a batch of 2 with padding vs a batch of 1), so float32 agrees up to the reorder
    tolerance of tests/numerics.py (u·M·√n·depth, ~6e-5 here; measured <= 1.3e-5); float64
    must agree to 1e-12 (measured <= 1e-14). A padding key left visible to attention
    moves these logits by 2.8 to 6.5 (tried by mutating the mask), far beyond either."""
    name, _, ref = golden
    model = minillm.load(golden_folder(name), dtype=dtype)
    ids, mask = ref["ragged_input_ids"], ref["ragged_attention_mask"]
    n_pad = int((mask[1] == 0).sum())
    alone = model(ids[1:, n_pad:])
    padded = model(ids, attention_mask=mask)[1:, n_pad:]
    assert_model_close(model, padded, alone, f"{name} left-padded row vs alone")


def test_tied_models_share_one_array():
    model = minillm.load(golden_folder("llama_tied"))
    assert model.cfg.tie_embeddings
    assert np.shares_memory(model.unembed.W_U, model.embed.W_E)
    untied = minillm.load(golden_folder("llama_gqa_untied"))
    assert not np.shares_memory(untied.unembed.W_U, untied.embed.W_E)


def test_parameter_views_are_live_and_local():
    """Writing head 1 of W_Q through the documented view changes only that head."""
    model = minillm.load(golden_folder("llama_gqa_untied"))
    ids = reference("llama_gqa_untied")["input_ids"]
    _, before = model.run_with_cache(ids, names_filter=lambda n: n.endswith("attn.hook_q"))
    model.blocks[1].attn.W_Q[1] = 0.0
    _, after = model.run_with_cache(ids, names_filter=lambda n: n.endswith("attn.hook_q"))
    q0b, q0a = before["blocks.0.attn.hook_q"], after["blocks.0.attn.hook_q"]
    qb, qa = before["blocks.1.attn.hook_q"], after["blocks.1.attn.hook_q"]
    assert (q0b == q0a).all()  # layer 0 untouched
    assert (qa[:, :, 1] == 0).all() and (qa[:, :, 0] == qb[:, :, 0]).all()
