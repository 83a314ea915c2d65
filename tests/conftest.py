"""Shared test fixtures: the real offline model and tiny random models of every family.

The real SmolLM2 model must have been converted (`make test` does it with
`minillm fetch smollm2-135m`); tests that need it fail with that hint if not.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import minillm
from minillm.config import ModelConfig
from minillm.hooked_model import HookedModel

FIXTURES = Path(__file__).parent / "fixtures"

# --- hypothesis profiles (issue 12) ---------------------------------------------------------
# `pytest --hypothesis-profile=fuzz` runs many more examples (tests/test_fuzz_readers.py
# raises each of its tests to at least this count); the default profile is hypothesis's own.
from hypothesis import settings as _hypothesis_settings  # noqa: E402

_hypothesis_settings.register_profile("fuzz", max_examples=5000, deadline=None)
# The default run is derandomized: CI tries the same examples every time (a failure is
# reproducible, never a coin toss); `--hypothesis-profile=fuzz` explores with fresh randomness.
_hypothesis_settings.register_profile("repeatable", derandomize=True)
_hypothesis_settings.load_profile("repeatable")
# --- end hypothesis profiles ------------------------------------------------------------------
# The families of issue 22: Pythia (GPT-NeoX), Gemma 2 and 3, Qwen3, Phi-3, OLMo-2.
NEW_FAMILIES = ["pythia", "gemma2", "gemma3", "qwen3", "phi3", "olmo2"]
GOLDEN = ["gpt2", "llama_gqa_untied", "llama_tied", "qwen2_bias", "llama3_rope", "mistral",
          *NEW_FAMILIES]

TINY_CONFIGS = {
    "gpt2": dict(model_type="gpt2", n_embd=32, n_layer=2, n_head=4, n_positions=32,
                 vocab_size=64),
    "llama": dict(model_type="llama", hidden_size=32, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, intermediate_size=48,
                  vocab_size=64, max_position_embeddings=32, tie_word_embeddings=False),
}


def random_model(family: str = "llama", seed: int = 0, dtype=np.float32, **overrides) -> HookedModel:
    """A tiny model of one family with every parameter drawn at random (no tokenizer)."""
    cfg = ModelConfig.from_dict({**TINY_CONFIGS[family], **overrides}, source="random_model")
    model = HookedModel(cfg, dtype, name=f"random-{family}")
    rng = np.random.default_rng(seed)
    for name, param in model.named_parameters():
        base = 1.0 if name.endswith((".w", "ln_final.w")) else 0.0
        param[...] = base + rng.normal(0, 0.3, param.shape)
    return model


@pytest.fixture(scope="session")
def smollm2() -> HookedModel:
    """The real offline model, float32 (converted by `minillm fetch smollm2-135m`)."""
    try:
        return minillm.load("smollm2-135m")
    except minillm.MinillmError as e:
        pytest.fail(f"the offline model is needed: run `make test` or `minillm fetch smollm2-135m` ({e})")


@pytest.fixture(params=["gpt2", "llama"])
def tiny(request) -> HookedModel:
    """A tiny random model of each family (function-scoped: safe to edit)."""
    return random_model(request.param)


def golden_folder(name: str) -> Path:
    return FIXTURES / name
