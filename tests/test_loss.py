"""model.loss: next-token cross-entropy against transformers' loss, frozen in tests/fixtures.

tests/fixtures/loss_reference.safetensors (make_fixtures.py --only loss) holds HF's loss
with labels=input_ids, its per-token cross-entropies, the loss of the padded batches with
labels -100 where the input or the target is padding, and SmolLM2's per-token and
sliding-window losses on a 174-token text.

Tolerances. A token's loss is logsumexp(logits) - logits[target], so its error is at most
twice the logits' error. Logits agree with HF to 5e-5 on the tiny fixtures (test_forward.py)
and to 1e-4 on SmolLM2 (test_smollm2.py): hence 1e-4 and 2e-4 here (measured: 5e-6 and
3e-5). HF computes its loss in float32 even for a float64 model, so the float64 check is
against log-softmax of HF's float64 logits, computed here in float64: the logits agree to
~2e-14 (test_forward.py), so 1e-12.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import load_file

import minillm
from minillm.errors import MinillmError
from tests.conftest import FIXTURES, GOLDEN, NEW_FAMILIES, golden_folder

LOSS = FIXTURES / "loss_reference.safetensors"


def loss_reference() -> tuple[dict, dict]:
    with safe_open(str(LOSS), framework="numpy") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, json.loads(f.metadata()["info"])


# loss_reference.safetensors was frozen before the issue-22 families existed (it is never
# regenerated); their loss is checked against the HF loss in their own reference.safetensors
# (test_families.py::test_loss_of_the_new_families_matches_transformers).
@pytest.fixture(scope="module", params=[n for n in GOLDEN if n not in NEW_FAMILIES])
def golden(request):
    name = request.param
    ref = load_file(str(golden_folder(name) / "reference.safetensors"))
    return name, minillm.load(golden_folder(name)), ref


def test_loss_and_per_token_loss_match_transformers(golden):
    name, model, ref = golden
    hf, _ = loss_reference()
    loss = model.loss(ref["input_ids"])
    assert isinstance(loss, float)
    assert abs(loss - float(hf[f"{name}.loss"])) <= 1e-4, f"{name}: {loss} vs HF {hf[f'{name}.loss']}"
    per_token = model.loss(ref["input_ids"], per_token=True)
    assert per_token.shape == (2, 11) and per_token.dtype == np.float32
    diff = np.abs(per_token - hf[f"{name}.per_token"]).max()
    assert diff <= 1e-4, f"{name}: per-token loss differs from HF by {diff:.3g}"
    assert abs(float(per_token.mean(dtype=np.float64)) - loss) <= 1e-6


@pytest.mark.parametrize("tag", ["ragged", "rpad"])
def test_padded_batch_loss_counts_only_real_predictions(golden, tag):
    """With attention_mask, the mean runs over predictions whose input and target are both real
    (HF with labels -100 there): padded rows give the loss of the rows alone."""
    name, model, ref = golden
    hf, _ = loss_reference()
    ids, mask = ref[f"{tag}_input_ids"], ref[f"{tag}_attention_mask"]
    loss = model.loss(ids, attention_mask=mask)
    assert abs(loss - float(hf[f"{name}.{tag}_loss"])) <= 1e-4, f"{name} {tag}: {loss} vs HF"
    per_token = model.loss(ids, per_token=True, attention_mask=mask)
    keep = (mask[:, 1:] != 0) & (mask[:, :-1] != 0)
    assert (per_token[~keep] == 0).all()
    # the same rows unpadded: 11 predictions of row 0 and 8 of row 1
    alone = np.concatenate([model.loss(ref["input_ids"][:1], per_token=True)[0],
                            model.loss(ref["input_ids"][1:, :9], per_token=True)[0]])
    assert abs(loss - float(alone.mean(dtype=np.float64))) <= 1e-4
    # an all-ones mask is the unmasked loss
    assert model.loss(ref["input_ids"], attention_mask=np.ones_like(mask)) == model.loss(ref["input_ids"])


def test_float64_loss_is_the_float64_log_softmax(golden):
    name, _, ref = golden
    model = minillm.load(golden_folder(name), dtype=np.float64)
    logits = ref["logits_f64"][:, :-1]  # [2, 11, V]
    logp = logits - logits.max(-1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
    expected = -np.take_along_axis(logp, ref["input_ids"][:, 1:, None], -1)[..., 0]
    per_token = model.loss(ref["input_ids"], per_token=True)
    assert per_token.dtype == np.float64
    assert np.abs(per_token - expected).max() <= 1e-12


def test_smollm2_loss_matches_transformers(smollm2):
    hf, info = loss_reference()
    ids = smollm2.to_tokens(info["text"])[0]
    assert ids.tolist() == hf["smollm2.input_ids"].tolist(), "tokenizer differs from the fixture's"
    per_token = smollm2.loss(ids, per_token=True)  # 1-D ids are one row
    assert per_token.shape == (1, len(ids) - 1)
    diff = np.abs(per_token[0] - hf["smollm2.per_token"]).max()
    assert diff <= 2e-4, f"SmolLM2 per-token loss differs from HF by {diff:.3g}"
    assert abs(smollm2.loss(info["text"]) - float(hf["smollm2.loss"])) <= 2e-4


def test_loss_refuses_rows_without_a_prediction():
    model = minillm.load(golden_folder("gpt2"))
    with pytest.raises(MinillmError, match="at least 2 tokens"):
        model.loss(np.array([[5]]))
    with pytest.raises(MinillmError, match="no prediction"):
        model.loss(np.array([[5, 6, 7]]), attention_mask=np.array([[1, 0, 1]]))
