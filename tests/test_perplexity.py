"""Sliding-window perplexity (API and `minillm perplexity`) against transformers.

tests/fixtures/loss_reference.safetensors holds each token's loss under a window of 64
tokens and a stride of 32 on a 174-token text, computed by transformers on the same
SmolLM2 weights (make_fixtures.py --only loss). A token's loss agrees to 2e-4 (twice the
1e-4 logit tolerance of test_smollm2.py; measured 3e-5), and so does the mean, so the
perplexity agrees to a relative 2e-4.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from safetensors import safe_open

from minillm.cli import main
from minillm.errors import MinillmError
from minillm.interp.perplexity import perplexity, sliding_window_nll
from tests.conftest import FIXTURES, random_model


def reference():
    with safe_open(str(FIXTURES / "loss_reference.safetensors"), framework="numpy") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, json.loads(f.metadata()["info"])


def test_sliding_window_matches_transformers(smollm2):
    ref, info = reference()
    result = perplexity(smollm2, info["text"], window=info["window"], stride=info["stride"], progress=False)
    assert result.n_tokens == len(ref["smollm2.input_ids"]) - 1
    diff = np.abs(result.nll - ref["smollm2.window_nll"]).max()
    assert diff <= 2e-4, f"per-token loss differs from transformers by {diff:.3g}"
    assert abs(result.perplexity / float(ref["smollm2.window_ppl"]) - 1) <= 2e-4
    # a window as long as the text is the plain loss
    whole = sliding_window_nll(smollm2, ref["smollm2.input_ids"], window=512, progress=False)
    assert abs(whole.mean_nll - smollm2.loss(ref["smollm2.input_ids"])) <= 1e-6


def test_every_token_is_scored_once_with_the_context_the_window_allows():
    """Against a direct loop: token t is scored in the window that starts at the largest
    multiple of the stride with t - begin < window, i.e. with as much context as allowed."""
    model = random_model("llama", n_ctx=32)
    ids = np.random.default_rng(0).integers(0, 64, 50)
    window, stride = 12, 5
    got = sliding_window_nll(model, ids, window, stride, progress=False).nll
    expected = np.empty(49, np.float32)
    prev_end = 0
    for begin in range(0, 49, stride):
        end = min(begin + window, 50)
        for t in range(max(prev_end, begin + 1), end):
            expected[t - 1] = model.loss(ids[None, begin : t + 1], per_token=True)[0, -1]
        prev_end = end
        if end == 50:
            break
    # the same prefix, computed in a forward pass of another length: float32 GEMM rounding,
    # a few ulps of logits of magnitude ~10 in a 2-layer model
    assert np.abs(got - expected).max() <= 1e-5


def test_cli_prints_the_perplexity_and_streams_progress(smollm2, tmp_path, capsys):
    ref, info = reference()
    text = tmp_path / "text.txt"
    text.write_text(info["text"], encoding="utf-8")
    assert main(["perplexity", "smollm2-135m", str(text), "--window", "64", "--stride", "32", "--json"]) == 0
    out, err = capsys.readouterr()
    result = json.loads(out)
    assert abs(result["perplexity"] / float(ref["smollm2.window_ppl"]) - 1) <= 2e-4
    assert result["tokens"] == 173 and result["tokens_per_second"] > 0
    assert "tok/s" in err and "perplexity" in err  # the tqdm bar, in tokens per second
    assert main(["perplexity", "smollm2-135m", str(text), "--max-tokens", "40", "--window", "32", "-q"]) == 0
    out, err = capsys.readouterr()
    ppl = float(out.split()[1])
    assert math.isfinite(ppl) and "tokens/s" in err


@pytest.mark.parametrize("argv, message", [
    (["--window", "1"], "--window must be at least 2"),
    (["--stride", "0"], "--stride must be at least 1"),
])
def test_cli_checks_its_arguments_before_loading(tmp_path, capsys, argv, message):
    text = tmp_path / "t.txt"
    text.write_text("hello", encoding="utf-8")
    assert main(["perplexity", "no-such-model", str(text), *argv]) == 1
    assert message in capsys.readouterr().err


def test_bad_windows_are_refused():
    model = random_model("gpt2")
    with pytest.raises(MinillmError, match="window must be between 2 and the context length 32"):
        sliding_window_nll(model, np.arange(10), window=33)
    with pytest.raises(MinillmError, match="stride must be between 1 and the window"):
        sliding_window_nll(model, np.arange(10), window=8, stride=9)
    with pytest.raises(MinillmError, match="at least 2 tokens"):
        sliding_window_nll(model, np.arange(1))
