"""Published TransformerLens code, run on minillm with only the import and loading lines changed.

Each test is one idiom taken from real HookedTransformer code, cited by repository and
path. What changed is marked:
  # LOAD:  the loading line (our offline SmolLM2, or a tiny checkpoint from tests/fixtures)
  # NUMPY: torch tensor math written with NumPy (t.randn -> rng.normal, gather -> take_along_axis, ...)
  # INPUT: token ids instead of text (the tiny checkpoints have no tokenizer), or an index
           that the original model has but ours does not (SmolLM2 has 3 key/value heads)
  # AUTOGRAD: `value.backward()` replaced by minillm's hand-written backward pass
  # DIFFERENCE: one of the deliberate differences of docs/migrating_from_transformerlens.md
Everything else is the published line. Each idiom then checks its numbers against
TransformerLens itself: tests/fixtures/tl_port.safetensors holds what the same published
code computes in TransformerLens 3.9 (tests/fixtures/make_fixtures.py --only tl_port, the
model built by TransformerLens's own weight conversion from the same checkpoint), and
where TransformerLens has no number to give, against an independent route (a float64
recomputation, the Hugging Face reference logits, an identity the numbers must satisfy).
Every tolerance is justified next to it.

Sources (abbreviated in the citations):
  TL      = github.com/TransformerLensOrg/TransformerLens
  ARENA2  = github.com/callummcdougall/ARENA_2.0
"""

from __future__ import annotations

import contextlib
import io
import re
from functools import partial

import numpy as np
import pytest
from safetensors.numpy import load_file

from minillm.tl import ActivationCache, FactoredMatrix, HookedTransformer, HookPoint, patching, utils
from tests.conftest import FIXTURES, golden_folder

# float32 logits of SmolLM2 are O(10-30); two float32 routes through the model with
# different shapes (batch vs one row, BLAS blocking) differ by a few 1e-5 there.
F32_LOGITS = 1e-3


@pytest.fixture(scope="module")
def model() -> HookedTransformer:
    # LOAD: HookedTransformer.from_pretrained("gpt2-small") -> the offline SmolLM2
    return HookedTransformer.from_pretrained_no_processing("smollm2-135m")


@pytest.fixture(scope="module")
def tiny() -> HookedTransformer:
    # LOAD: a tiny GPT-2 checkpoint (2 layers, 4 heads, d_model 64, vocab 256)
    return HookedTransformer.from_pretrained_no_processing(golden_folder("gpt2"))


@pytest.fixture(scope="module")
def tiny_gqa() -> HookedTransformer:
    # LOAD: a tiny Llama checkpoint with grouped-query attention (4 heads, 2 key/value heads)
    return HookedTransformer.from_pretrained_no_processing(golden_folder("llama_gqa_untied"))


@pytest.fixture(scope="module")
def tl() -> dict[str, np.ndarray]:
    """TransformerLens's own numbers for these idioms (see the module docstring)."""
    return load_file(FIXTURES / "tl_port.safetensors")


def scalar(a: np.ndarray) -> float:
    return float(np.asarray(a).reshape(-1)[0])


# Two float32 implementations (torch/MKL vs NumPy/OpenBLAS) of the same SmolLM2 forward pass
# agree to ~1e-5 on logits of magnitude 10-30 (measured: 6e-6 on the loss, 1e-5 on IOI logit
# differences); 2e-4 leaves an order of magnitude for other CPUs' kernels.
TL_F32 = 2e-4


def log_softmax64(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def nll64(logits: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """Independent next-token NLL in float64.   [b, p, V], [b, p] -> [b, p-1]"""
    lp = log_softmax64(logits)[:, :-1]
    return -np.take_along_axis(lp, tokens[:, 1:, None], -1)[..., 0]


# =============================================================================================
# Loading, tokens and text
# =============================================================================================

MODEL_DESCRIPTION_TEXT = """## Loading Models

HookedTransformer comes loaded with >40 open source GPT-style models. You can load any of \
them in with `HookedTransformer.from_pretrained(MODEL_NAME)`."""


def test_loss_of_a_paragraph(model, tl):
    # ARENA2 chapter1_transformers/exercises/part2_intro_to_mech_interp/solutions.py
    loss = model(MODEL_DESCRIPTION_TEXT, return_type="loss")
    print("Model loss:", loss)
    # TransformerLens: the same ids (BOS in front) and the same loss
    assert model.to_tokens(MODEL_DESCRIPTION_TEXT)[0].tolist() == tl["description_ids"].tolist()
    assert abs(loss - scalar(tl["raw.description_loss"])) < TL_F32
    # check: the mean next-token NLL of the same run, recomputed in float64 from its logits
    tokens = model.to_tokens(MODEL_DESCRIPTION_TEXT)
    expected = nll64(model(MODEL_DESCRIPTION_TEXT), tokens).mean()
    assert abs(loss.item() - expected) < 1e-4  # float32 log-softmax vs float64: ~1e-6 relative
    assert 1.0 < loss < 6.0  # an instruct model on English text: a few nats, not uniform (ln V = 10.8)


def test_to_str_tokens_to_tokens_to_string(model):
    # ARENA2 chapter1_transformers/exercises/part2_intro_to_mech_interp/solutions.py
    str_tokens = model.to_str_tokens("gpt2")
    tokens = model.to_tokens("gpt2")
    text = model.to_string(tokens[0])  # INPUT: SmolLM2's ids, not GPT-2's [50256, 70, 457, 17]
    # check: BOS first (TransformerLens's default), then the tokenizer's own ids for the text
    bos = model.tokenizer.bos_token_id
    assert tokens[0, 0] == bos and tokens[0, 1:].tolist() == model.tokenizer.encode("gpt2")
    assert str_tokens[0] == model.tokenizer.bos_token and "".join(str_tokens[1:]) == "gpt2"
    assert text == model.tokenizer.bos_token + "gpt2"


def test_model_accuracy_on_its_own_text(model):
    # ARENA2 chapter1_transformers/exercises/part2_intro_to_mech_interp/solutions.py
    logits = model(MODEL_DESCRIPTION_TEXT, return_type="logits")
    prediction = logits.argmax(axis=-1).squeeze()[:-1]  # NUMPY: dim= -> axis=
    true_tokens = model.to_tokens(MODEL_DESCRIPTION_TEXT).squeeze()[1:]
    is_correct = prediction == true_tokens
    print(f"Model accuracy: {is_correct.sum()}/{len(true_tokens)}")
    correct_words = model.to_str_tokens(prediction[is_correct])
    # check: against TransformerLens's utils.lm_accuracy and the float64 log-probs' argmax
    tokens = model.to_tokens(MODEL_DESCRIPTION_TEXT)
    assert is_correct.mean() == utils.lm_accuracy(logits, tokens)
    top64 = log_softmax64(logits)[0, :-1].argmax(-1)
    assert (top64 == prediction).mean() > 0.99  # argmax ties in float32 may break differently
    assert len(correct_words) == is_correct.sum() > 5


def test_get_token_position_with_and_without_bos(model):
    # TL demos/Main_Demo.ipynb ("Gotchas: prepend_bos")
    with_bos = model.get_token_position(" cat", "The cat sat on the mat")
    without_bos = model.get_token_position(" cat", "The cat sat on the mat", prepend_bos=False)
    first = model.get_token_position(" cat", "The cat sat on the mat. The mat sat on the cat.",
                                     mode="first")
    last = model.get_token_position(" cat", "The cat sat on the mat. The mat sat on the cat.",
                                    mode="last")
    # check: read off the token strings independently
    pieces = model.to_str_tokens("The cat sat on the mat. The mat sat on the cat.")
    assert (with_bos, without_bos) == (2, 1)
    assert (first, last) == (pieces.index(" cat"), len(pieces) - 1 - pieces[::-1].index(" cat"))


def test_prepend_bos_changes_the_number_of_positions(model):
    # TL demos/Main_Demo.ipynb ("Logits shape by default (with BOS)")
    default = model("Hello World").shape
    with_bos = model("Hello World", prepend_bos=True).shape
    without_bos = model("Hello World", prepend_bos=False).shape
    assert default == with_bos == (1, 3, model.cfg.d_vocab)
    assert without_bos == (1, 2, model.cfg.d_vocab)


def test_prepend_bos_false_matches_transformers(model):
    # TL demos/Main_Demo.ipynb (ioi_logits_without_bos = model(prompt, prepend_bos=False))
    ref = load_file(FIXTURES / "smollm2_reference.safetensors")
    prompt = "When Mary and John went to the store, John gave a drink to"  # the reference's p2
    ioi_logits_without_bos = model(prompt, prepend_bos=False)
    mary_logit_without_bos = ioi_logits_without_bos[0, -1, model.to_single_token(" Mary")].item()
    john_logit_without_bos = ioi_logits_without_bos[0, -1, model.to_single_token(" John")].item()
    # check: Hugging Face transformers' logits for the same ids (no BOS: SmolLM2's tokenizer adds none)
    assert model.to_tokens(prompt, prepend_bos=False)[0].tolist() == ref["p2.input_ids"].tolist()
    hf = ref["p2.last_logits"]
    assert np.abs(ioi_logits_without_bos[0, -1] - hf).max() < 1e-4  # as tests/test_smollm2.py
    assert mary_logit_without_bos - john_logit_without_bos > 0  # the IOI answer wins


def test_override_default_prepend_bos(model):
    # TL tests/integration/test_prepend_bos.py (test_override_prepend_bos)
    prompt = "Hello world!"
    try:
        for default_prepend_bos in [True, False]:
            model.cfg.default_prepend_bos = default_prepend_bos
            for intended_prepend_bos in [True, False]:
                logits = model(prompt, prepend_bos=intended_prepend_bos)
                str_tokens = model.to_str_tokens(prompt, prepend_bos=intended_prepend_bos)
                tokens = model.to_tokens(prompt, prepend_bos=intended_prepend_bos)
                assert (tokens[0][0] == model.tokenizer.bos_token_id) == intended_prepend_bos
                assert (str_tokens[0] == model.tokenizer.bos_token) == intended_prepend_bos
                expected = len(model.tokenizer.encode(prompt)) + int(intended_prepend_bos)
                assert logits.shape[1] == len(str_tokens) == tokens.shape[1] == expected
    finally:
        model.cfg.default_prepend_bos = True


def test_bos_position_and_its_absence(model):
    # TL tests/integration/test_prepend_bos.py (test_prepend_bos_with_get_token_position)
    prompt = "Hello world!"
    bos_position = model.get_token_position(model.tokenizer.bos_token_id, prompt)
    assert bos_position == 0
    with pytest.raises(Exception, match="does not occur"):  # TL: AssertionError
        model.get_token_position(model.tokenizer.bos_token_id, prompt, prepend_bos=False)


def test_to_tokens_of_a_batch_pads_on_the_right(model):
    # TL demos/Main_Demo.ipynb ("example_multi_text_tokens = model.to_tokens(example_multi_text)")
    example_multi_text = ["The cat sat on the mat.", "The cat sat on the mat really hard."]
    example_multi_text_tokens = model.to_tokens(example_multi_text)
    # check: each row is the row alone, then pad tokens on the right (TransformerLens's default)
    short, long = (model.to_tokens(t)[0] for t in example_multi_text)
    assert example_multi_text_tokens.shape == (2, len(long))
    assert example_multi_text_tokens[1].tolist() == long.tolist()
    assert example_multi_text_tokens[0, : len(short)].tolist() == short.tolist()
    assert (example_multi_text_tokens[0, len(short):] == model.tokenizer.pad_token_id).all()


def test_to_string_of_one_id_and_of_a_row(model):
    # TL demos/Main_Demo.ipynb ("Token 256 - the most common pair of ASCII characters")
    example_text = "The first thing you need to figure out is *how* things are tokenized."
    example_text_tokens = model.to_tokens(example_text)
    one = model.to_string(256)
    whole = model.to_string(example_text_tokens.squeeze())
    assert one == model.tokenizer.decode([256])
    assert whole == model.tokenizer.bos_token + example_text  # a lossless round trip


def test_to_str_tokens_of_a_name_with_and_without_space(model):
    # TL demos/Main_Demo.ipynb ("| Claire| -> ...")
    spaced = model.to_str_tokens(" Claire", prepend_bos=False)
    bare = model.to_str_tokens("Claire", prepend_bos=False)
    assert "".join(spaced) == " Claire" and "".join(bare) == "Claire"
    assert [model.to_single_str_token(model.to_single_token(p)) for p in spaced] == spaced


def test_generate_greedy_matches_transformers(model, tl):
    # TL demos/Main_Demo.ipynb (model.generate(prompt, max_new_tokens=50, temperature=0.7))
    ref = load_file(FIXTURES / "smollm2_reference.safetensors")
    prompt = "It was a dark and stormy"  # the reference's p1
    # INPUT: do_sample=False (greedy, comparable with the reference) and no BOS (as the reference)
    out = model.generate(prompt, max_new_tokens=8, do_sample=False, prepend_bos=False)
    hf = ref["p1.greedy_ids"][:8]
    assert out == prompt + model.to_string(hf)
    # TransformerLens's greedy generation (BOS in front, its default) gives the same ids
    ids = model.generate(model.to_tokens(prompt), max_new_tokens=8, do_sample=False)
    assert ids[0].tolist() == tl["raw.generate_greedy_ids"].tolist()
    sampled = model.generate(prompt, max_new_tokens=8, temperature=0.7, seed=0)
    assert sampled.startswith(prompt) and sampled == model.generate(
        prompt, max_new_tokens=8, temperature=0.7, seed=0)  # seeded: reproducible


# =============================================================================================
# Caches and hooks
# =============================================================================================

GPT2_TEXT = ("Natural language processing tasks, such as question answering, machine translation, "
             "reading comprehension, and summarization, are typically approached with supervised "
             "learning on taskspecific datasets.")


def test_run_with_cache_remove_batch_dim(model):
    # ARENA2 chapter1_transformers/exercises/part2_intro_to_mech_interp/solutions.py
    gpt2_tokens = model.to_tokens(GPT2_TEXT)
    gpt2_logits, gpt2_cache = model.run_with_cache(gpt2_tokens, remove_batch_dim=True)
    attn_patterns_layer_0 = gpt2_cache["pattern", 0]
    attn_patterns_layer_0_copy = gpt2_cache["blocks.0.attn.hook_pattern"]
    np.testing.assert_array_equal(attn_patterns_layer_0, attn_patterns_layer_0_copy)
    attention_pattern = gpt2_cache["pattern", 0, "attn"]
    # check: no batch axis any more; rows of a causal softmax sum to 1 and see no future
    p = gpt2_tokens.shape[1]
    assert attention_pattern.shape == (model.cfg.n_heads, p, p)
    np.testing.assert_allclose(attention_pattern.sum(-1), 1.0, atol=1e-5)  # float32 softmax sum
    assert (np.triu(attention_pattern, 1) == 0).all()
    assert isinstance(gpt2_cache, ActivationCache)


def test_layer0_pattern_from_q_and_k(tiny):
    # ARENA2 chapter1_transformers/exercises/part2_intro_to_mech_interp/solutions.py
    tokens = np.arange(3, 19)[None]  # INPUT: ids (no tokenizer in the tiny checkpoint)
    _, gpt2_cache = tiny.run_with_cache(tokens, remove_batch_dim=True)
    layer0_pattern_from_cache = gpt2_cache["pattern", 0]
    q, k = gpt2_cache["q", 0], gpt2_cache["k", 0]
    seq, nhead, headsize = q.shape
    layer0_attn_scores = np.einsum("qnh,knh->nqk", q, k)  # NUMPY: einops.einsum
    mask = np.triu(np.ones((seq, seq), dtype=bool), k=1)  # NUMPY: t.triu
    layer0_attn_scores = np.where(mask, -1e9, layer0_attn_scores)  # NUMPY: masked_fill_
    s = layer0_attn_scores / headsize**0.5
    layer0_pattern_from_q_and_k = np.exp(s - s.max(-1, keepdims=True))  # NUMPY: .softmax(-1)
    layer0_pattern_from_q_and_k /= layer0_pattern_from_q_and_k.sum(-1, keepdims=True)
    # torch.testing.assert_close's float32 tolerances (rtol 1.3e-6, atol 1e-5)
    np.testing.assert_allclose(layer0_pattern_from_cache, layer0_pattern_from_q_and_k,
                               rtol=1.3e-6, atol=1e-5)


def test_stop_at_layer_with_names_filter(model):
    # TL demos/Main_Demo.ipynb ("attn_hook_name = 'blocks.0.attn.hook_pattern'")
    gpt2_tokens = model.to_tokens(GPT2_TEXT)
    _, full_cache = model.run_with_cache(gpt2_tokens, remove_batch_dim=True)
    attention_pattern = full_cache["pattern", 0, "attn"]
    attn_hook_name = "blocks.0.attn.hook_pattern"
    attn_layer = 0
    _, gpt2_attn_cache = model.run_with_cache(
        gpt2_tokens, remove_batch_dim=True, stop_at_layer=attn_layer + 1,
        names_filter=[attn_hook_name],
    )
    gpt2_attn = gpt2_attn_cache[attn_hook_name]
    assert np.allclose(gpt2_attn, attention_pattern)  # NUMPY: torch.allclose
    assert list(gpt2_attn_cache) == [attn_hook_name]


def test_stop_at_embed_returns_resid_pre(tiny):
    # TL tests/integration/test_stop_at_layer.py (test_stop_at_embed)
    rand_input = np.random.default_rng(0).integers(0, 20, (2, 10))  # NUMPY: torch.randint
    _, normal_cache = tiny.run_with_cache(rand_input)
    output, cache = tiny.run_with_cache(rand_input, stop_at_layer=0)
    assert np.allclose(output, normal_cache["blocks.0.hook_resid_pre"])
    assert "hook_embed" in cache.keys()
    assert "hook_pos_embed" in cache.keys()
    assert "blocks.0.hook_resid_pre" not in cache.keys()
    assert "ln_final.hook_normalized" not in cache.keys()


def test_stop_at_layer_run_with_hooks(tiny):
    # TL tests/integration/test_stop_at_layer.py (test_run_with_hooks)
    rand_input = np.random.default_rng(1).integers(0, 20, (2, 10))  # NUMPY: torch.randint
    counting_list = []

    def count_hook(activation, hook):
        counting_list.append(len(counting_list))
        return None

    output = tiny.run_with_hooks(
        rand_input,
        stop_at_layer=1,
        fwd_hooks=[
            ("hook_embed", count_hook),
            ("blocks.0.attn.hook_k", count_hook),
            ("blocks.1.mlp.hook_pre", count_hook),
        ],
    )
    _, normal_cache = tiny.run_with_cache(rand_input, stop_at_layer=1)
    assert np.allclose(output, normal_cache["blocks.0.hook_resid_post"])
    assert len(counting_list) == 2


def test_start_and_stop_at_layer(tiny):
    # TL tests/integration/test_start_at_layer.py (test_start_and_stop, test_start_at_final)
    rand_input = np.random.default_rng(2).integers(0, 20, (2, 10))  # NUMPY: torch.randint
    rand_embed, _, _, _ = tiny.input_to_embed(rand_input)
    output, cache = tiny.run_with_cache(rand_embed, start_at_layer=1, stop_at_layer=2)
    assert np.allclose(output, cache["blocks.1.hook_resid_post"])
    assert "hook_embed" not in cache.keys()
    assert "blocks.0.hook_resid_pre" not in cache.keys()
    assert "blocks.1.hook_resid_pre" in cache.keys()
    output, cache = tiny.run_with_cache(rand_embed, start_at_layer=-1)
    assert "blocks.0.hook_resid_post" not in cache.keys()
    assert "blocks.1.hook_resid_pre" in cache.keys()
    assert "ln_final.hook_normalized" in cache.keys()
    # check: starting at layer 1 from the cached stream gives the full run's logits
    full, full_cache = tiny.run_with_cache(rand_input)
    resumed = tiny(full_cache["blocks.1.hook_resid_pre"], start_at_layer=1)
    np.testing.assert_array_equal(resumed, full)  # the same operations on the same shapes


def test_start_at_layer_with_tokens_for_the_loss(tiny_gqa):
    # TL HookedTransformer.forward docstring (tokens: "Only use if start_at_layer is not None
    # and return type is 'loss' or 'both'")
    tokens = np.random.default_rng(3).integers(0, 256, (2, 12))
    resid, full_cache = tiny_gqa.run_with_cache(tokens, stop_at_layer=1)
    loss = tiny_gqa(resid, start_at_layer=1, tokens=tokens, return_type="loss")
    loss_per_token = tiny_gqa(resid, start_at_layer=1, tokens=tokens, return_type="loss",
                              loss_per_token=True)
    expected = nll64(tiny_gqa(tokens), tokens)
    assert abs(loss - expected.mean()) < 1e-5  # logits O(1) here: float32 vs float64 ~1e-7
    np.testing.assert_allclose(loss_per_token, expected, atol=1e-5)
    # return_type="both": TransformerLens's Output(logits, loss), unpacked or by name
    logits, both_loss = tiny_gqa(tokens, return_type="both")
    out = tiny_gqa(tokens, return_type="both")
    assert both_loss == out.loss and (out.logits == logits).all()
    assert abs(both_loss - expected.mean()) < 1e-5


def test_head_ablation_on_values_changes_the_loss(model):
    # TL demos/Main_Demo.ipynb ("layer_to_ablate = 0; head_index_to_ablate = 8")
    gpt2_tokens = model.to_tokens(GPT2_TEXT)
    layer_to_ablate = 0
    head_index_to_ablate = 1  # INPUT: SmolLM2 has 3 key/value heads (GPT-2: 12 heads)

    def head_ablation_hook(value, hook):
        print(f"Shape of the value tensor: {value.shape}")
        value[:, :, head_index_to_ablate, :] = 0.0
        return value

    original_loss = model(gpt2_tokens, return_type="loss")
    ablated_loss = model.run_with_hooks(
        gpt2_tokens,
        return_type="loss",
        fwd_hooks=[(utils.get_act_name("v", layer_to_ablate), head_ablation_hook)],
    )
    print(f"Original Loss: {original_loss.item():.3f}")
    print(f"Ablated Loss: {ablated_loss.item():.3f}")
    # check: zeroing a key/value head's values zeroes the z of the 3 query heads that read it
    g = model.cfg.n_heads // model.cfg.n_kv_heads
    heads = slice(head_index_to_ablate * g, (head_index_to_ablate + 1) * g)

    def zero_z(z, hook):
        z[:, :, heads] = 0.0
        return z

    via_z = model.run_with_hooks(gpt2_tokens, return_type="loss",
                                 fwd_hooks=[(utils.get_act_name("z", layer_to_ablate), zero_z)])
    assert abs(via_z - ablated_loss) < 1e-5  # same numbers up to float32 rounding of 0 * pattern
    assert abs(ablated_loss - original_loss) > 1e-3  # the head matters (here it helps a little)


def test_loss_fn_per_token_on_repeated_random_tokens(model, tl):
    # TL demos/Main_Demo.ipynb ("correct_log_probs = model.loss_fn(repeated_logits, ...)")
    batch_size = 2  # INPUT: 10 in the demo; 2 keeps the test fast
    seq_len = 20
    size = (batch_size, seq_len)
    input_tensor = np.random.default_rng(0).integers(1000, 10000, size)  # NUMPY: torch.randint
    random_tokens = input_tensor
    repeated_tokens = np.concatenate([random_tokens, random_tokens], axis=1)  # NUMPY: einops.repeat
    repeated_logits = model(repeated_tokens)
    correct_log_probs = model.loss_fn(repeated_logits, repeated_tokens, per_token=True)
    loss_by_position = correct_log_probs.mean(0)  # NUMPY: einops.reduce
    # check: TransformerLens's numbers for the same tokens; induction: the repeat is far easier
    assert repeated_tokens.tolist() == tl["repeated_ids"].tolist()
    np.testing.assert_allclose(correct_log_probs, tl["raw.repeated_loss_per_token"], atol=TL_F32)
    assert loss_by_position.shape == (2 * seq_len - 1,)
    assert loss_by_position[seq_len:].mean() < loss_by_position[: seq_len - 1].mean() - 3


def test_induction_score_hook_with_hook_layer(model, tl):
    # TL demos/Main_Demo.ipynb and ARENA2 part2_intro_to_mech_interp/solutions.py
    seq_len = 20
    repeated_tokens = np.tile(np.random.default_rng(0).integers(1000, 10000, (2, seq_len)),
                              (1, 2))  # NUMPY: einops.repeat
    induction_score_store = np.zeros((model.cfg.n_layers, model.cfg.n_heads))  # NUMPY: t.zeros

    def induction_score_hook(pattern, hook: HookPoint):
        induction_stripe = np.diagonal(pattern, offset=1 - seq_len, axis1=-2, axis2=-1)  # NUMPY
        induction_score = induction_stripe.mean(axis=(0, 2))  # NUMPY: einops.reduce
        induction_score_store[hook.layer(), :] = induction_score

    pattern_hook_names_filter = lambda name: name.endswith("pattern")  # noqa: E731
    out = model.run_with_hooks(
        repeated_tokens,
        return_type=None,
        fwd_hooks=[(pattern_hook_names_filter, induction_score_hook)],
    )
    assert out is None
    # TransformerLens's scores for the same tokens (attention probabilities: ~1e-6 apart)
    assert repeated_tokens.tolist() == tl["repeated_ids"].tolist()
    np.testing.assert_allclose(induction_score_store, tl["raw.induction_scores"], atol=1e-4)
    # and from cached patterns; SmolLM2 has induction heads (score > 0.5)
    _, cache = model.run_with_cache(repeated_tokens, names_filter=pattern_hook_names_filter)
    for layer in range(model.cfg.n_layers):
        stripe = np.diagonal(cache["pattern", layer], offset=1 - seq_len, axis1=-2, axis2=-1)
        np.testing.assert_array_equal(induction_score_store[layer], stripe.mean(axis=(0, 2)))
    assert induction_score_store.max() > 0.5


def test_name_filter_fires_in_forward_order(tiny):
    # TL demos/Main_Demo.ipynb ("print_name_shape_hook_function")
    seen = []

    def print_name_shape_hook_function(activation, hook):
        seen.append((hook.name, activation.shape))

    tiny.set_use_attn_result(True)  # as in TransformerLens: without it hook_result never fires
    not_in_late_block_filter = lambda name: name.startswith("blocks.0.") or not name.startswith(  # noqa: E731
        "blocks"
    )
    tiny.run_with_hooks(
        np.arange(1, 10)[None],  # INPUT: ids
        return_type=None,
        fwd_hooks=[(not_in_late_block_filter, print_name_shape_hook_function)],
    )
    names = [n for n, _ in seen]
    # check: every hook the filter accepts fired once, in the order of model.hook_names()
    # (with use_attn_result on, the filter's hook_result fires too: per-head outputs)
    assert names == [n for n in tiny.hook_names() if not_in_late_block_filter(n)]
    shapes = dict(seen)
    assert shapes["blocks.0.attn.hook_pattern"] == (1, 4, 9, 9)
    assert shapes["blocks.0.attn.hook_result"] == (1, 9, 4, tiny.cfg.d_model)


class Counter:
    def __init__(self):
        self.count = 0

    def inc(self, *args, **kwargs):
        self.count += 1


EMBED = lambda name: name == "hook_embed"  # noqa: E731


def test_perma_hook_attaches_normally(tiny):
    # TL tests/integration/test_hooks.py (test_perma_hook_attaches_normally)
    c = Counter()
    prompt = np.array([[5, 6, 7]])  # INPUT: ids for "Hello World!"
    tiny.add_perma_hook(EMBED, c.inc)
    assert len(tiny.hook_dict["hook_embed"].fwd_hooks) == 1
    tiny.run_with_hooks(prompt, fwd_hooks=[])
    assert len(tiny.hook_dict["hook_embed"].fwd_hooks) == 1
    assert c.count == 1
    tiny.reset_hooks()  # a permanent hook survives reset_hooks ...
    tiny(prompt)
    assert c.count == 2
    tiny.remove_all_hook_fns(including_permanent=True)  # ... but not this
    tiny(prompt)
    assert c.count == 2 and len(tiny.hook_dict["hook_embed"].fwd_hooks) == 0


def test_nested_hook_context_managers(tiny):
    # TL tests/integration/test_hooks.py (test_nested_hook_context_manager)
    c = Counter()
    prompt = np.array([[5, 6, 7]])
    with tiny.hooks(fwd_hooks=[(EMBED, c.inc)]):
        assert len(tiny.hook_dict["hook_embed"].fwd_hooks) == 1
        tiny.forward(prompt)
        assert c.count == 1
        with tiny.hooks(fwd_hooks=[(EMBED, c.inc)]):
            assert len(tiny.hook_dict["hook_embed"].fwd_hooks) == 2
            tiny.forward(prompt)
            assert c.count == 3  # 2 from outer, 1 from inner
        assert len(tiny.hook_dict["hook_embed"].fwd_hooks) == 1
    assert len(tiny.hook_dict["hook_embed"].fwd_hooks) == 0
    assert c.count == 3
    tiny.remove_all_hook_fns(including_permanent=True)


def test_nested_context_manager_with_failure(tiny):
    # TL tests/integration/test_hooks.py (test_nested_context_manager_with_failure)
    def fail_hook(z, hook):
        raise ValueError("fail")

    c = Counter()
    prompt = np.array([[5, 6, 7]])
    with tiny.hooks(fwd_hooks=[(EMBED, c.inc)]):
        with pytest.raises(ValueError):
            with tiny.hooks(fwd_hooks=[(EMBED, fail_hook)]):
                assert len(tiny.hook_dict["hook_embed"].fwd_hooks) == 2
                tiny.forward(prompt)
        assert len(tiny.hook_dict["hook_embed"].fwd_hooks) == 1
        assert c.count == 1
    assert len(tiny.hook_dict["hook_embed"].fwd_hooks) == 0


def test_remove_hook_keeps_permanent_ones(tiny):
    # TL tests/integration/test_hooks.py (test_remove_hook)
    c = Counter()
    prompt = np.array([[5, 6, 7]])
    tiny.add_perma_hook(EMBED, c.inc)
    assert len(tiny.hook_dict["hook_embed"].fwd_hooks) == 1  # 1 after adding
    tiny.remove_all_hook_fns()
    assert len(tiny.hook_dict["hook_embed"].fwd_hooks) == 1  # permanent not removed without flag
    tiny.remove_all_hook_fns(including_permanent=True)
    assert len(tiny.hook_dict["hook_embed"].fwd_hooks) == 0  # removed now
    tiny.run_with_hooks(prompt, fwd_hooks=[])
    assert c.count == 0


@pytest.mark.parametrize("zero_attach_pos,prepend", [(z, p) for z in range(2) for p in [True, False]])
def test_prepending_hooks(tiny_gqa, zero_attach_pos, prepend):
    # TL tests/integration/test_hooks.py (test_prepending_hooks)
    def set_to_zero(z, hook):
        z[:] = 0.0
        return z

    rng = np.random.default_rng(0)

    def set_to_randn(z, hook):
        z = rng.normal(size=z.shape) * 0.1  # NUMPY: torch.randn_like
        return z

    tiny_gqa.reset_hooks()
    for hook_idx in range(2):
        tiny_gqa.add_hook(
            "blocks.0.hook_resid_post",
            set_to_zero if hook_idx == zero_attach_pos else set_to_randn,
            prepend=prepend,
        )
    try:
        # INPUT: a 2-layer model, so zero the last block's output (the demo's model has 1 layer)
        tiny_gqa.add_hook("blocks.1.hook_resid_post", lambda z, hook: z if z.any() else z,
                          prepend=True)
        logits = tiny_gqa(np.arange(5)[None, :])  # NUMPY: torch.arange
        resid = tiny_gqa.run_with_cache(np.arange(5)[None, :])[1]["blocks.0.hook_resid_post"]
    finally:
        tiny_gqa.reset_hooks()
    zero_last = (zero_attach_pos == 1) != prepend
    # the hook that runs last wins: exactly zero when the zero hook runs last
    assert (resid == 0).all() == zero_last
    assert np.isfinite(logits).all()


def test_hook_ctx_persists_and_reset_hooks_clears_it(tiny):
    # ARENA2 chapter1_transformers/exercises/part2_intro_to_mech_interp/solutions.py
    # (ablation_induction_score: hook.ctx[...] = ..., then read back after the run)
    seq_len = 8
    rep_tokens = np.tile(np.arange(10, 10 + seq_len), 2)[None]
    prev_head_index, ind_head_index = 2, 1

    def ablation_hook(v, hook):
        if prev_head_index is not None:
            v[:, :, prev_head_index] = 0.0
        return v

    def induction_pattern_hook(attn, hook):
        hook.ctx[prev_head_index] = np.diagonal(attn[0, ind_head_index], -(seq_len - 1)).mean()

    tiny.run_with_hooks(
        rep_tokens,
        fwd_hooks=[
            (utils.get_act_name("v", 0), ablation_hook),
            (utils.get_act_name("pattern", 1), induction_pattern_hook),
        ],
    )
    # INPUT: model.blocks[1].attn.hook_pattern.ctx -> model.hook_dict["blocks.1.attn.hook_pattern"]
    score = tiny.hook_dict["blocks.1.attn.hook_pattern"].ctx[prev_head_index]
    # check: the same score from a cache of the ablated run
    _, cache = tiny.run_with_cache(rep_tokens, fwd_hooks=[(utils.get_act_name("v", 0),
                                                           ablation_hook)])
    assert score == np.diagonal(cache["pattern", 1][0, ind_head_index], -(seq_len - 1)).mean()
    tiny.reset_hooks()
    assert tiny.hook_dict["blocks.1.attn.hook_pattern"].ctx == {}


def test_head_ablation_scores_through_hook_result(tiny):
    # ARENA2 chapter1_transformers/exercises/part2_intro_to_mech_interp/solutions.py
    # (get_ablation_scores with head_ablation_hook on utils.get_act_name("result", layer))
    tokens = np.tile(np.arange(20, 32), 2)[None]  # INPUT: ids

    def head_ablation_hook(attn_result, hook, head_index_to_ablate):
        attn_result[:, :, head_index_to_ablate, :] = 0.0
        return attn_result

    def cross_entropy_loss(logits, tokens):
        log_probs = log_softmax64(logits)  # NUMPY: F.log_softmax
        pred_log_probs = np.take_along_axis(log_probs[:, :-1], tokens[:, 1:, None], -1)[..., 0]
        return -pred_log_probs.mean()

    ablation_scores = np.zeros((tiny.cfg.n_layers, tiny.cfg.n_heads))
    tiny.reset_hooks()
    loss_no_ablation = cross_entropy_loss(tiny(tokens, return_type="logits"), tokens)
    for layer in range(tiny.cfg.n_layers):
        for head in range(tiny.cfg.n_heads):
            temp_hook_fn = partial(head_ablation_hook, head_index_to_ablate=head)
            ablated_logits = tiny.run_with_hooks(tokens, fwd_hooks=[
                (utils.get_act_name("result", layer), temp_hook_fn)
            ])
            loss = cross_entropy_loss(ablated_logits, tokens)
            ablation_scores[layer, head] = loss - loss_no_ablation
    # check: ablating a head's result is ablating its z (result = z @ W_O); the model's loss_fn
    for layer in range(tiny.cfg.n_layers):
        for head in range(tiny.cfg.n_heads):
            z_hook = partial(head_ablation_hook, head_index_to_ablate=head)
            loss = tiny.run_with_hooks(tokens, return_type="loss",
                                       fwd_hooks=[(utils.get_act_name("z", layer), z_hook)])
            assert abs(loss - loss_no_ablation - ablation_scores[layer, head]) < 1e-5
    assert np.abs(ablation_scores).max() > 1e-3  # the heads matter at all


# =============================================================================================
# utils
# =============================================================================================


def test_get_act_name_docstring_cases():
    # TL transformer_lens/utilities/components_utils.py (get_act_name's "Full Examples")
    assert utils.get_act_name("k", 6, "a") == "blocks.6.attn.hook_k"
    assert utils.get_act_name("pre", 2) == "blocks.2.mlp.hook_pre"
    assert utils.get_act_name("embed") == "hook_embed"
    assert utils.get_act_name("normalized", 27, "ln2") == "blocks.27.ln2.hook_normalized"
    assert utils.get_act_name("k6") == "blocks.6.attn.hook_k"
    assert utils.get_act_name("scale4ln1") == "blocks.4.ln1.hook_scale"
    assert utils.get_act_name("pre5") == "blocks.5.mlp.hook_pre"
    # and the aliases it documents in code
    assert utils.get_act_name("attn", 0) == "blocks.0.attn.hook_pattern"
    assert utils.get_act_name("attn_logits", 3) == "blocks.3.attn.hook_attn_scores"
    assert utils.get_act_name("key", 1) == utils.get_act_name("k", 1)
    assert utils.get_act_name("mlp_post", 4) == "blocks.4.mlp.hook_post"
    assert utils.get_act_name("resid_pre", 0, "b") == "blocks.0.hook_resid_pre"
    assert utils.get_act_name("scale") == "ln_final.hook_scale"
    assert utils.get_act_name("blocks.0.hook_resid_pre") == "blocks.0.hook_resid_pre"


def test_get_act_name_names_real_hooks(model):
    # ARENA2 part2/part3 solutions: fwd_hooks=[(utils.get_act_name("resid_pre", layer), fn)]
    names = set(model.hook_names())
    for short in ["resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "q", "k", "v",
                  "z", "pattern", "attn_scores", "pre", "post", "rot_q", "rot_k", "pre_linear"]:
        assert utils.get_act_name(short, 3) in names, short
    for short in ["embed", "logits", "scale", "normalized"]:
        assert utils.get_act_name(short) in names, short
    assert utils.get_act_name("scale", 2, "ln2") in names


def test_test_prompt_prints_rank_logit_and_prob(model, tl):
    # ARENA2 chapter1_transformers/exercises/part3_indirect_object_identification/solutions.py
    example_prompt = "After John and Mary went to the store, John gave a bottle of milk to"
    example_answer = " Mary"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        utils.test_prompt(example_prompt, example_answer, model, prepend_bos=True)
    text = out.getvalue()
    # check: the printed numbers against TransformerLens's logits for the same ids
    tokens = model.to_tokens(example_prompt, prepend_bos=True)
    assert tokens[0].tolist() == tl["test_prompt_ids"].tolist()
    logits = tl["raw.test_prompt_last_logits"].astype(np.float64)
    probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    answer = model.to_single_token(example_answer)
    rank = int((probs > probs[answer]).sum())
    found = re.search(r"Rank: (\d+)\s+Logit: ([-\d.]+) Prob:\s+([\d.]+)%", text)
    assert found and int(found[1]) == rank
    assert abs(float(found[2]) - logits[answer]) < 0.006  # printed with 2 decimals
    assert abs(float(found[3]) - 100 * probs[answer]) < 0.006
    assert f"Ranks of the answer tokens: [(' Mary', {rank})]" in text
    assert "Tokenized prompt: ['<|im_start|>', 'After', ' John'" in text


def test_lm_cross_entropy_loss_with_attention_mask():
    # TL tests/integration/test_cross_entropy_loss.py (padding masked out of the mean)
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 5, 11)).astype(np.float32)
    tokens = rng.integers(0, 11, (2, 5))
    attention_mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    loss = utils.lm_cross_entropy_loss(logits, tokens, attention_mask)
    per_token = utils.lm_cross_entropy_loss(logits, tokens, attention_mask, per_token=True)
    full = nll64(logits, tokens)
    keep = np.array([[1, 1, 1, 1], [1, 1, 0, 0]], bool)
    assert abs(loss - full[keep].mean()) < 1e-6  # float32 logsumexp over 11 logits
    np.testing.assert_allclose(per_token, np.where(keep, full, 0), atol=1e-6)


# =============================================================================================
# FactoredMatrix and circuits
# =============================================================================================


def test_factored_matrix_norm_eigenvalues_svd():
    # TL demos/Main_Demo.ipynb and ARENA2 part2_intro_to_mech_interp/solutions.py
    rng = np.random.default_rng(50)
    A = rng.normal(size=(5, 2))  # NUMPY: torch.randn
    B = rng.normal(size=(2, 5))
    AB = A @ B
    AB_factor = FactoredMatrix(A, B)
    assert abs(np.linalg.norm(AB) - AB_factor.norm()) < 1e-12  # float64 throughout
    assert (AB_factor.rdim, AB_factor.ldim, AB_factor.mdim) == (5, 5, 2)
    full_eig = np.linalg.eigvals(AB)  # NUMPY: torch.linalg.eig
    nonzero = full_eig[np.abs(full_eig) > 1e-9]
    assert np.allclose(np.sort_complex(nonzero), np.sort_complex(AB_factor.eigenvalues),
                       atol=1e-12)
    np.testing.assert_allclose(np.linalg.svd(AB).S[:2], AB_factor.S, atol=1e-12)
    U, S, V = AB_factor.svd()
    np.testing.assert_allclose(U @ np.diag(S) @ V.T, AB, atol=1e-12)


def test_factored_matrix_times_a_matrix():
    # TL demos/Main_Demo.ipynb ("C = torch.randn(5, 300); ABC_factor = AB_factor @ C")
    rng = np.random.default_rng(51)
    A, B = rng.normal(size=(5, 2)), rng.normal(size=(2, 5))
    AB, AB_factor = A @ B, FactoredMatrix(A, B)
    C = rng.normal(size=(5, 300))
    ABC = AB @ C
    ABC_factor = AB_factor @ C
    assert ABC_factor.shape == ABC.shape == (5, 300)
    assert abs(np.linalg.norm(ABC) - ABC_factor.norm()) < 1e-10
    assert (ABC_factor.rdim, ABC_factor.ldim, ABC_factor.mdim) == (300, 5, 2)
    AB_unfactored = AB_factor.AB
    assert np.isclose(AB_unfactored, AB).all()


def test_factored_matrix_indexing_and_transpose():
    # TL tests/unit/factored_matrix/test_get_item.py and test_properties.py
    rng = np.random.default_rng(52)
    A, B = rng.normal(size=(3, 4, 6, 2)), rng.normal(size=(3, 4, 2, 7))
    fm = FactoredMatrix(A, B)
    np.testing.assert_allclose(fm[0].AB, (A @ B)[0], atol=1e-12)
    np.testing.assert_allclose(fm[1, 2].AB, (A @ B)[1, 2], atol=1e-12)
    np.testing.assert_allclose(fm[1, 2, 3].AB, (A @ B)[1, 2, 3:4], atol=1e-12)  # a row stays a matrix
    np.testing.assert_allclose(fm[:, :, 1:3, -1].AB, (A @ B)[:, :, 1:3, -1:], atol=1e-12)
    np.testing.assert_allclose(fm.T.AB, np.swapaxes(A @ B, -2, -1), atol=1e-12)
    square = FactoredMatrix(A, np.swapaxes(A, -2, -1))  # [3, 4, 6, 6]: BA is [.., 2, 2]
    np.testing.assert_allclose(square.BA, np.swapaxes(A, -2, -1) @ A, atol=1e-12)
    assert fm.shape == (3, 4, 6, 7) and fm.ndim == 4
    scaled = fm * 2.5  # test_multiply_by_scalar.py
    np.testing.assert_allclose(scaled.AB, 2.5 * (A @ B), atol=1e-12)


def test_ov_circuit_eigenvalues_and_copying_score(model, tl):
    # TL demos/Main_Demo.ipynb ("OV_circuit_all_heads = model.OV")
    OV_circuit_all_heads = model.OV
    OV_circuit_all_heads_eigenvalues = OV_circuit_all_heads.eigenvalues
    assert OV_circuit_all_heads_eigenvalues.shape == (model.cfg.n_layers, model.cfg.n_heads,
                                                      model.cfg.d_head)
    assert np.iscomplexobj(OV_circuit_all_heads_eigenvalues)
    OV_copying_score = (OV_circuit_all_heads_eigenvalues.sum(axis=-1).real  # NUMPY: dim= -> axis=
                        / np.abs(OV_circuit_all_heads_eigenvalues).sum(axis=-1))
    # check: one head against the eigenvalues of its full d_model x d_model matrix, in float64
    l, h = 5, 4
    kv = h // (model.cfg.n_heads // model.cfg.n_kv_heads)  # the stored key/value head it reads
    W = model.blocks[l].attn._W_V[kv].astype(np.float64) @ model.blocks[l].attn.W_O[h].astype(np.float64)
    full = np.linalg.eigvals(W)
    top = full[np.argsort(-np.abs(full))][: model.cfg.d_head]
    mine = OV_circuit_all_heads_eigenvalues[l, h]
    mine = mine[np.argsort(-np.abs(mine))]
    scale = np.abs(top).max()
    # float32 factors: eigenvalues agree to ~1e-5 of the largest (a d_head x d_head problem)
    np.testing.assert_allclose(np.sort(np.abs(mine)), np.sort(np.abs(top)), atol=1e-4 * scale)
    assert np.all(np.abs(OV_copying_score) <= 1 + 1e-6)
    # TransformerLens's copying scores (eigenvalues of the same float32 d_head x d_head
    # matrices from another LAPACK: the ratio agrees to ~1e-5)
    np.testing.assert_allclose(OV_copying_score, tl["raw.ov_copying_score"], atol=1e-4)


def test_full_ov_circuit_through_the_vocabulary(tiny):
    # TL demos/Main_Demo.ipynb ("full_OV_circuit = model.embed.W_E @ OV_circuit_all_heads @
    # model.unembed.W_U") and ARENA2 part2 ("full_OV_circuit[indices, indices].AB")
    OV_circuit_all_heads = tiny.OV
    full_OV_circuit = tiny.embed.W_E @ OV_circuit_all_heads @ tiny.unembed.W_U
    full_OV_circuit_eigenvalues = full_OV_circuit.eigenvalues
    assert full_OV_circuit.shape == (2, 4, 256, 256)
    assert full_OV_circuit_eigenvalues.shape == (2, 4, tiny.cfg.d_head)
    rng = np.random.default_rng(0)
    indices = rng.integers(0, tiny.cfg.d_vocab, (20,))  # NUMPY: t.randint
    sample = full_OV_circuit[1, 3][indices, indices].AB
    # check: the product formed in float64, then indexed
    dense = (tiny.W_E.astype(np.float64) @ tiny.W_V[1, 3] @ tiny.W_O[1, 3] @ tiny.W_U)
    np.testing.assert_allclose(sample, dense[np.ix_(indices, indices)], rtol=1e-4, atol=1e-4)


def test_batched_composition_scores_match_the_loop(tiny):
    # ARENA2 chapter1_transformers/exercises/part2_intro_to_mech_interp/solutions.py
    # (get_comp_score in a loop vs get_batched_comp_scores on FactoredMatrix objects)
    def get_comp_score(W_A, W_B) -> float:
        W_A_norm = np.sqrt((W_A**2).sum())  # NUMPY: .pow(2).sum().sqrt()
        W_B_norm = np.sqrt((W_B**2).sum())
        W_AB_norm = np.sqrt(((W_A @ W_B) ** 2).sum())
        return (W_AB_norm / (W_A_norm * W_B_norm)).item()

    def get_batched_comp_scores(W_As: FactoredMatrix, W_Bs: FactoredMatrix):
        W_As = FactoredMatrix(W_As.A.reshape(-1, 1, *W_As.A.shape[-2:]),
                              W_As.B.reshape(-1, 1, *W_As.B.shape[-2:]))
        W_Bs = FactoredMatrix(W_Bs.A.reshape(1, -1, *W_Bs.A.shape[-2:]),
                              W_Bs.B.reshape(1, -1, *W_Bs.B.shape[-2:]))
        W_ABs = W_As @ W_Bs
        return W_ABs.norm() / (W_As.norm() * W_Bs.norm())

    model = tiny
    W_QK = model.W_Q @ np.swapaxes(model.W_K, -1, -2)  # NUMPY: .transpose(-1, -2)
    W_OV = model.W_V @ model.W_O
    composition_scores = {k: np.zeros((model.cfg.n_heads, model.cfg.n_heads)) for k in "QKV"}
    for i in range(model.cfg.n_heads):
        for j in range(model.cfg.n_heads):
            composition_scores["Q"][i, j] = get_comp_score(W_OV[0, i], W_QK[1, j])
            composition_scores["K"][i, j] = get_comp_score(W_OV[0, i], W_QK[1, j].T)
            composition_scores["V"][i, j] = get_comp_score(W_OV[0, i], W_OV[1, j])
    W_QK = FactoredMatrix(model.W_Q, np.swapaxes(model.W_K, -1, -2))
    W_OV = FactoredMatrix(model.W_V, model.W_O)
    batched = {"Q": get_batched_comp_scores(W_OV[0], W_QK[1]),
               "K": get_batched_comp_scores(W_OV[0], W_QK[1].T),
               "V": get_batched_comp_scores(W_OV[0], W_OV[1])}
    for k in "QKV":
        # torch.testing.assert_close's float32 tolerances, as in the exercise
        np.testing.assert_allclose(batched[k], composition_scores[k], rtol=1.3e-6, atol=1e-5)
    # and TransformerLens's own utils.composition_scores
    np.testing.assert_allclose(utils.composition_scores(W_OV[0], W_QK[1]), batched["Q"],
                               rtol=1e-5)


def test_all_composition_scores(tiny, tl):
    # TL tests/integration/model_bridge/test_analysis_methods.py (TestAllCompositionScores,
    # against HookedTransformer.all_composition_scores)
    scores = tiny.all_composition_scores("Q")
    cfg = tiny.cfg
    assert scores.shape == (cfg.n_layers, cfg.n_heads, cfg.n_layers, cfg.n_heads)
    for l1 in range(cfg.n_layers):
        for l2 in range(l1 + 1):  # l2 <= l1
            assert (scores[l1, :, l2, :] == 0).all()
    assert np.abs(scores[0, :, 1, :]).sum() > 0
    with pytest.raises(Exception, match="mode must be one of"):  # TL: ValueError
        tiny.all_composition_scores("X")
    for mode in "QKV":  # TransformerLens's scores for the same checkpoint (ratios of norms ~1e-7)
        np.testing.assert_allclose(tiny.all_composition_scores(mode),
                                   tl[f"gpt2.all_composition_scores_{mode}"], atol=1e-5)
    # check: the L0 -> L1 block against ARENA's plain definition, in float64
    W_OV = tiny.W_V.astype(np.float64) @ tiny.W_O
    W_QK = tiny.W_Q.astype(np.float64) @ np.swapaxes(tiny.W_K, -1, -2)
    rights = {"Q": W_QK[1], "K": np.swapaxes(W_QK[1], -1, -2), "V": W_OV[1]}
    for mode, right in rights.items():
        got = tiny.all_composition_scores(mode)[0, :, 1, :]
        for i in range(cfg.n_heads):
            for j in range(cfg.n_heads):
                A, B = W_OV[0, i], right[j]
                want = np.linalg.norm(A @ B) / (np.linalg.norm(A) * np.linalg.norm(B))
                assert abs(got[i, j] - want) < 1e-5, (mode, i, j)  # float32 factors, float64 here


def test_accumulated_bias(tiny, tl):
    # TL tests/integration/model_bridge/test_analysis_methods.py (TestAccumulatedBias) and
    # tests/acceptance/test_activation_cache.py ("model.accumulated_bias(model.cfg.n_layers,
    # mlp_input=False, include_mlp_biases=False)")
    ab = tiny.accumulated_bias(0)
    assert ab.shape == (tiny.cfg.d_model,) and np.allclose(ab, 0)
    assert np.linalg.norm(tiny.accumulated_bias(1)) > 0  # GPT-2 has output biases
    b_O = [b.attn.b_O.astype(np.float64) for b in tiny.blocks]
    b_out = [b.mlp.b_out.astype(np.float64) for b in tiny.blocks]
    np.testing.assert_allclose(tiny.accumulated_bias(2), sum(b_O) + sum(b_out), atol=1e-6)
    np.testing.assert_allclose(tiny.accumulated_bias(1, mlp_input=True), b_O[0] + b_out[0] + b_O[1],
                               atol=1e-6)
    np.testing.assert_allclose(tiny.accumulated_bias(2, include_mlp_biases=False), sum(b_O),
                               atol=1e-6)
    np.testing.assert_allclose(tiny.accumulated_bias(2), tl["gpt2.accumulated_bias_2"], atol=1e-6)
    np.testing.assert_allclose(tiny.accumulated_bias(1, mlp_input=True),
                               tl["gpt2.accumulated_bias_1_mlp_input"], atol=1e-6)


def fingerprint(name: str, w: np.ndarray) -> np.ndarray:
    """tests/fixtures/README.md: [sum, sum of squares, projection onto a fixed N(0, 1) vector]."""
    import zlib

    w = np.asarray(w, np.float64).ravel()
    r = np.random.default_rng(zlib.crc32(name.encode())).standard_normal(w.size)
    return np.array([w.sum(), (w * w).sum(), (w * r).sum()])


def test_stacked_weights_of_the_processed_model():
    # TL demos/Main_Demo.ipynb and ARENA2 part2 (model.W_E, model.W_Q[layer, head], model.W_O,
    # model.W_U, ... on a model loaded with from_pretrained's default processing)
    model = HookedTransformer.from_pretrained(golden_folder("gpt2"))  # LOAD: the tiny GPT-2
    ref = load_file(FIXTURES / "tl_gpt2.safetensors")  # TransformerLens's processed weights
    stacked = {"attn.W_Q": model.W_Q, "attn.W_K": model.W_K, "attn.W_V": model.W_V,
               "attn.W_O": model.W_O, "attn.b_Q": model.b_Q, "attn.b_K": model.b_K,
               "attn.b_V": model.b_V, "attn.b_O": model.b_O, "mlp.W_in": model.W_in,
               "mlp.W_out": model.W_out, "mlp.b_in": model.b_in, "mlp.b_out": model.b_out}
    whole = {"embed.W_E": model.W_E, "pos_embed.W_pos": model.W_pos, "unembed.W_U": model.W_U,
             "unembed.b_U": model.b_U}
    names = [(f"blocks.{l}.{k}", v[l]) for k, v in stacked.items() for l in range(2)]
    for name, w in names + list(whole.items()):
        want = ref[f"proc.w_fingerprint.{name}"]
        got = fingerprint(name, w)
        # float32 weights processed in two orders of operations: sums agree to ~1e-6 relative
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4, err_msg=name)
    assert model.W_Q.shape == (2, 4, 64, 16) and model.W_in.shape == (2, 64, 256)
    # TransformerLens's config names: the folded norm is "LNPre", positions are learned
    assert (model.cfg.normalization_type, model.cfg.positional_embedding_type) == ("LNPre", "standard")
    assert model.cfg.n_key_value_heads is None and model.cfg.device == "cpu"
    model.revert_all()
    assert model.cfg.normalization_type == "LN"


def test_model_qk_is_per_query_head_for_gqa(tiny_gqa):
    # ARENA2 part2 ("W_QK = model.W_Q[layer, head_index] @ model.W_K[layer, head_index].T")
    layer, head_index = 1, 3
    W_QK = tiny_gqa.W_Q[layer, head_index] @ tiny_gqa.W_K[layer, head_index].T
    # check: head 3 reads key/value head 3 // 2 = 1 of the stored ones; and model.QK agrees
    kv = head_index // (tiny_gqa.cfg.n_heads // tiny_gqa.cfg.n_kv_heads)
    k = tiny_gqa.blocks[layer].attn._W_K[kv]
    np.testing.assert_array_equal(W_QK, tiny_gqa.blocks[layer].attn.W_Q[head_index] @ k.T)
    np.testing.assert_allclose(tiny_gqa.QK[layer, head_index].AB, W_QK, atol=1e-6)
    assert tiny_gqa.W_K.shape == (2, 4, 64, 16) and tiny_gqa.b_K.shape == (2, 4, 16)
    assert tiny_gqa.cfg.n_key_value_heads == 2 and tiny_gqa.cfg.normalization_type == "RMS"
    assert tiny_gqa.cfg.positional_embedding_type == "rotary"


# =============================================================================================
# Indirect object identification: logit differences and activation patching
# =============================================================================================

PROMPT_FORMAT = [
    "When John and Mary went to the shops,{} gave the bag to",
    "When Tom and James went to the park,{} gave the ball to",
    "When Dan and Sid went to the shops,{} gave an apple to",
    "After Martin and Amy went to the park,{} gave a drink to",
]
NAME_PAIRS = [(" Mary", " John"), (" Tom", " James"), (" Dan", " Sid"), (" Martin", " Amy")]


@pytest.fixture(scope="module")
def ioi(model):
    # ARENA2 chapter1_transformers/exercises/part3_indirect_object_identification/solutions.py
    prompts = [prompt.format(name) for (prompt, names) in zip(PROMPT_FORMAT, NAME_PAIRS)
               for name in names[::-1]]
    answers = [names[::i] for names in NAME_PAIRS for i in (1, -1)]
    answer_tokens = np.concatenate([  # NUMPY: t.concat
        model.to_tokens(names, prepend_bos=False).T for names in answers
    ])
    tokens = model.to_tokens(prompts, prepend_bos=True)
    original_logits, cache = model.run_with_cache(tokens)
    return prompts, answers, answer_tokens, tokens, original_logits, cache


def logits_to_ave_logit_diff(logits, answer_tokens, per_prompt=False):
    # ARENA2 part3_indirect_object_identification/solutions.py
    final_logits = logits[:, -1, :]
    answer_logits = np.take_along_axis(final_logits, answer_tokens, -1)  # NUMPY: gather
    correct_logits, incorrect_logits = answer_logits[:, 0], answer_logits[:, 1]  # NUMPY: unbind
    answer_logit_diff = correct_logits - incorrect_logits
    return answer_logit_diff if per_prompt else answer_logit_diff.mean()


def test_ioi_prompts_and_logit_differences(model, ioi, tl):
    prompts, answers, answer_tokens, tokens, original_logits, _ = ioi
    # ARENA2 part3: every prompt the same length, answer tokens [8, 2]
    assert answer_tokens.shape == (8, 2) and tokens.shape[0] == 8
    assert len({len(model.to_str_tokens(p)) for p in prompts}) == 1
    original_per_prompt_diff = logits_to_ave_logit_diff(original_logits, answer_tokens,
                                                         per_prompt=True)
    original_average_logit_diff = logits_to_ave_logit_diff(original_logits, answer_tokens)
    # TransformerLens: the same ids and the same logit differences
    assert tokens.tolist() == tl["ioi_ids"].tolist()
    assert answer_tokens.tolist() == tl["ioi_answer_ids"].tolist()
    np.testing.assert_allclose(original_per_prompt_diff, tl["raw.ioi_logit_diffs"], atol=TL_F32)
    # check: each prompt alone (a different batch shape) gives the same differences
    for i, prompt in enumerate(prompts):
        alone = model(prompt)[0, -1]
        a, b = (model.to_single_token(n) for n in answers[i])
        assert abs(alone[a] - alone[b] - original_per_prompt_diff[i]) < F32_LOGITS
    assert original_average_logit_diff > 1.0  # SmolLM2 does IOI


def test_tokens_to_residual_directions(model, ioi):
    # ARENA2 part3 ("answer_residual_directions = model.tokens_to_residual_directions(answer_tokens)")
    # and TL demos/Exploratory_Analysis_Demo.ipynb (W_U[:, answer_tokens] rearranged)
    _, _, answer_tokens, _, _, _ = ioi
    answer_residual_directions = model.tokens_to_residual_directions(answer_tokens)
    assert answer_residual_directions.shape == (8, 2, model.cfg.d_model)
    correct_residual_directions, incorrect_residual_directions = (
        answer_residual_directions[:, 0], answer_residual_directions[:, 1])  # NUMPY: unbind(dim=1)
    logit_diff_directions = correct_residual_directions - incorrect_residual_directions
    W_U = model.unembed.W_U
    expected = np.moveaxis(W_U[:, answer_tokens], 0, -1)  # NUMPY: einops.rearrange
    np.testing.assert_array_equal(answer_residual_directions, expected)
    assert logit_diff_directions.shape == (8, model.cfg.d_model)
    assert model.tokens_to_residual_directions(" Mary").shape == (model.cfg.d_model,)


TL_PORT_TINY_CLEAN = [5, 17, 33, 8, 41, 9, 17, 60]  # the pairs make_fixtures.py patches too
TL_PORT_GQA_CLEAN = [3, 9, 27, 81, 11, 33]


@pytest.fixture(scope="module")
def tiny_pair(tiny):
    """A clean / corrupted pair of prompts that differ at one position, and a metric."""
    clean_tokens = np.array([TL_PORT_TINY_CLEAN])  # INPUT: ids on the tiny model
    corrupted_tokens = clean_tokens.copy()
    corrupted_tokens[0, 2] = 34  # the corrupted prompt swaps one token
    correct, wrong = 33, 34
    clean_logits, clean_cache = tiny.run_with_cache(clean_tokens)
    corrupted_logits = tiny(corrupted_tokens)

    def logit_diff(logits):
        return logits[0, -1, correct] - logits[0, -1, wrong]

    clean_logit_diff, corrupted_logit_diff = logit_diff(clean_logits), logit_diff(corrupted_logits)

    def ioi_metric(logits):
        # ARENA2 part3 ("Linear function of logit diff, calibrated so that it equals 0 when
        # performance is same as on corrupted input, and 1 when performance is same as on clean")
        patched_logit_diff = logit_diff(logits)
        return (patched_logit_diff - corrupted_logit_diff) / (clean_logit_diff - corrupted_logit_diff)

    return clean_tokens, corrupted_tokens, clean_cache, ioi_metric


def tl_normalized(tl, key: str) -> np.ndarray:
    """TransformerLens's patching result (raw logit difference) in ioi_metric's units."""
    clean, corrupted = scalar(tl["gpt2.clean_metric"]), scalar(tl["gpt2.corrupted_metric"])
    return (tl[f"gpt2.{key}"] - corrupted) / (clean - corrupted)


# The tiny checkpoints' logits are O(1-10); torch and NumPy float32 runs agree to ~1e-6 and
# the normalisation divides by a logit difference of order 1.
TL_TINY = 1e-4


def test_get_act_patch_resid_pre(tiny, tiny_pair, tl):
    # ARENA2 part3 ("act_patch_resid_pre = patching.get_act_patch_resid_pre(model=model,
    # corrupted_tokens=..., clean_cache=..., patching_metric=ioi_metric)")
    clean_tokens, corrupted_tokens, clean_cache, ioi_metric = tiny_pair
    act_patch_resid_pre = patching.get_act_patch_resid_pre(
        model=tiny, corrupted_tokens=corrupted_tokens, clean_cache=clean_cache,
        patching_metric=ioi_metric,
    )
    assert act_patch_resid_pre.shape == (tiny.cfg.n_layers, clean_tokens.shape[1])
    assert clean_tokens[0].tolist() == TL_PORT_TINY_CLEAN
    np.testing.assert_allclose(act_patch_resid_pre, tl_normalized(tl, "get_act_patch_resid_pre"),
                               atol=TL_TINY)
    # check: at layer 0 only the position where the prompts differ carries anything, and
    # patching it there makes the run the clean run (metric 1); elsewhere nothing changes (0)
    row = act_patch_resid_pre[0]
    assert abs(row[2] - 1) < 1e-5 and np.abs(np.delete(row, 2)).max() < 1e-5
    # positions before the corruption hold the same stream in both runs at every layer (causal)
    assert np.abs(act_patch_resid_pre[:, :2]).max() < 1e-5


def test_own_patching_loop_matches_the_patching_module(tiny, tiny_pair):
    # ARENA2 part3 (patch_residual_component + own get_act_patch_resid_pre, compared with
    # patching.get_act_patch_resid_pre by t.testing.assert_close) and TL demos/Main_Demo.ipynb
    clean_tokens, corrupted_tokens, clean_cache, ioi_metric = tiny_pair

    def patch_residual_component(corrupted_residual_component, hook: HookPoint, pos: int,
                                 clean_cache: ActivationCache):
        corrupted_residual_component[:, pos, :] = clean_cache[hook.name][:, pos, :]
        return corrupted_residual_component

    model = tiny
    model.reset_hooks()
    seq_len = corrupted_tokens.shape[1]  # NUMPY: .size(1)
    results = np.zeros((model.cfg.n_layers, seq_len), dtype=np.float32)
    for layer in range(model.cfg.n_layers):
        for position in range(seq_len):
            hook_fn = partial(patch_residual_component, pos=position, clean_cache=clean_cache)
            patched_logits = model.run_with_hooks(
                corrupted_tokens,
                fwd_hooks=[(utils.get_act_name("resid_pre", layer), hook_fn)],
            )
            results[layer, position] = patching_metric = ioi_metric(patched_logits)
            del patching_metric
    act_patch_resid_pre = patching.get_act_patch_resid_pre(model, corrupted_tokens, clean_cache,
                                                           ioi_metric)
    np.testing.assert_allclose(act_patch_resid_pre, results, rtol=1.3e-6, atol=1e-5)


def test_batched_patching_keeps_each_patch_on_its_own_prompt_rows(tiny):
    # DIFFERENCE: minillm runs the patches in batches (each patch on its own copy of the b
    # corrupted prompts); TransformerLens runs one forward pass per patch, like this loop.
    clean = np.array([TL_PORT_TINY_CLEAN, TL_PORT_TINY_CLEAN[::-1]])  # b = 2 prompts
    corrupted = clean.copy()
    corrupted[:, 2] = 34
    _, clean_cache = tiny.run_with_cache(clean)
    shapes = []

    def metric(logits):  # reads both prompts of one patch, so a row mix-up changes the number
        shapes.append(logits.shape[0])
        return logits[0, -1, 33] - logits[1, -1, 5]

    def patch_head(z, hook, head):
        z[:, :, head] = clean_cache[hook.name][:, :, head]
        return z

    loop = np.array([[metric(tiny.run_with_hooks(corrupted, fwd_hooks=[(
        utils.get_act_name("z", layer), partial(patch_head, head=head))]))
        for head in range(tiny.cfg.n_heads)] for layer in range(tiny.cfg.n_layers)])
    shapes.clear()
    hooks_before = tiny.hooks.snapshot()
    batched = patching.get_act_patch_attn_head_out_all_pos(tiny, corrupted, clean_cache, metric,
                                                           batch_size=6)
    assert set(shapes) == {2} and len(shapes) == tiny.cfg.n_layers * tiny.cfg.n_heads
    assert tiny.hooks.snapshot() == hooks_before
    # the tiny model's logits are O(1-10); a float32 GEMM over 6 rows instead of 2 may round
    # differently in the last bits (~1e-6 of a logit), far below any patch's effect
    np.testing.assert_allclose(batched, loop, atol=1e-5)
    assert np.abs(loop).max() > 1e-2  # the comparison is not between zeros


def test_get_act_patch_block_every(tiny, tiny_pair, tl):
    # ARENA2 part3 ("act_patch_block_every = patching.get_act_patch_block_every(model,
    # corrupted_tokens, clean_cache, ioi_metric)")
    clean_tokens, corrupted_tokens, clean_cache, ioi_metric = tiny_pair
    act_patch_block_every = patching.get_act_patch_block_every(tiny, corrupted_tokens, clean_cache,
                                                               ioi_metric)
    assert act_patch_block_every.shape == (3, tiny.cfg.n_layers, clean_tokens.shape[1])
    np.testing.assert_allclose(act_patch_block_every, tl_normalized(tl, "get_act_patch_block_every"),
                               atol=TL_TINY)
    np.testing.assert_array_equal(
        act_patch_block_every[1],
        patching.get_act_patch_attn_out(tiny, corrupted_tokens, clean_cache, ioi_metric))
    # check: patching both outputs of the last block at the last position restores the
    # clean stream there; the attention and MLP effects are each between 0 and ~1 + overshoot
    assert np.isfinite(act_patch_block_every).all()
    assert abs(act_patch_block_every[0, 0, 2] - 1) < 1e-5


def test_other_patching_functions_and_index_df(tiny, tiny_pair, tl):
    # TL transformer_lens/patching.py (get_act_patch_resid_mid, get_act_patch_attn_head_pattern_
    # dest_src_pos, generic_activation_patch with an index_df of chosen (layer, pos) rows)
    clean_tokens, corrupted_tokens, clean_cache, ioi_metric = tiny_pair
    resid_mid = patching.get_act_patch_resid_mid(tiny, corrupted_tokens, clean_cache, ioi_metric)
    np.testing.assert_allclose(resid_mid, tl_normalized(tl, "get_act_patch_resid_mid"), atol=TL_TINY)
    dest_src = patching.get_act_patch_attn_head_pattern_dest_src_pos(tiny, corrupted_tokens,
                                                                     clean_cache, ioi_metric)
    assert dest_src.shape == (2, 4, 8, 8)
    np.testing.assert_allclose(dest_src,
                               tl_normalized(tl, "get_act_patch_attn_head_pattern_dest_src_pos"),
                               atol=TL_TINY)
    # DIFFERENCE: index_df is an int array [n, axes] (TransformerLens: a pandas DataFrame)
    index_df = patching.make_index_array([2, 8])[::3]
    out, rows = patching.generic_activation_patch(
        tiny, corrupted_tokens, clean_cache, ioi_metric, patching.layer_pos_patch_setter,
        "mlp_out", index_df=index_df, return_index_df=True)
    assert (rows == index_df).all() and out.shape == (len(index_df),)
    np.testing.assert_allclose(out, tl_normalized(tl, "generic_mlp_out_index_df"), atol=TL_TINY)
    # and it is the flattened full sweep at those rows
    full = patching.get_act_patch_mlp_out(tiny, corrupted_tokens, clean_cache, ioi_metric)
    np.testing.assert_array_equal(out, full[index_df[:, 0], index_df[:, 1]])


def test_get_act_patch_attn_head_out_by_pos(tiny, tiny_pair, tl):
    # ARENA2 part3 / TL demos/Activation_Patching_in_TL_Demo.ipynb
    # ("patching.get_act_patch_attn_head_out_by_pos(model, corrupted_tokens, clean_cache, metric)")
    clean_tokens, corrupted_tokens, clean_cache, ioi_metric = tiny_pair
    out = patching.get_act_patch_attn_head_out_by_pos(tiny, corrupted_tokens, clean_cache,
                                                      ioi_metric)
    assert out.shape == (tiny.cfg.n_layers, clean_tokens.shape[1], tiny.cfg.n_heads)
    np.testing.assert_allclose(out, tl_normalized(tl, "get_act_patch_attn_head_out_by_pos"),
                               atol=TL_TINY)
    every = patching.get_act_patch_attn_head_all_pos_every(tiny, corrupted_tokens, clean_cache,
                                                           ioi_metric)
    np.testing.assert_allclose(every, tl_normalized(tl, "get_act_patch_attn_head_all_pos_every"),
                               atol=TL_TINY)
    # check: layer 0 heads at positions before the corruption see identical inputs: effect 0
    assert np.abs(out[0, :2]).max() < 1e-6
    # and a manual patch of z for one (layer, pos, head) gives the same number
    def patch_head_vector(z, hook, pos, head):
        z[:, pos, head] = clean_cache[hook.name][:, pos, head]
        return z

    manual = ioi_metric(tiny.run_with_hooks(corrupted_tokens, fwd_hooks=[
        (utils.get_act_name("z", 1), partial(patch_head_vector, pos=7, head=2))]))
    assert out[1, 7, 2] == manual


def test_attn_head_every_and_gqa_heads(tiny_gqa, tl):
    # TL demos/Activation_Patching_in_TL_Demo.ipynb ("get_act_patch_attn_head_all_pos_every",
    # "get_act_patch_attn_head_by_pos_every") and TL patching.py (k, v count key/value heads)
    clean_tokens = np.array([TL_PORT_GQA_CLEAN])
    corrupted_tokens = clean_tokens.copy()
    corrupted_tokens[0, 1] = 10
    _, clean_cache = tiny_gqa.run_with_cache(clean_tokens)

    def metric(logits):
        return logits[0, -1, 27] - logits[0, -1, 28]

    every = patching.get_act_patch_attn_head_all_pos_every(tiny_gqa, corrupted_tokens,
                                                           clean_cache, metric)
    by_pos = patching.get_act_patch_attn_head_by_pos_every(tiny_gqa, corrupted_tokens,
                                                           clean_cache, metric)
    k = patching.get_act_patch_attn_head_k_all_pos(tiny_gqa, corrupted_tokens, clean_cache, metric)
    assert every.shape == (5, 2, 4) and by_pos.shape == (5, 2, 6, 4) and k.shape == (2, 2)
    # TransformerLens's numbers for the same pair (raw logit difference, O(1))
    np.testing.assert_allclose(every, tl["llama_gqa.get_act_patch_attn_head_all_pos_every"],
                               atol=TL_TINY)
    np.testing.assert_allclose(by_pos, tl["llama_gqa.get_act_patch_attn_head_by_pos_every"],
                               atol=TL_TINY)
    resid = patching.get_act_patch_resid_pre(tiny_gqa, corrupted_tokens, clean_cache, metric)
    np.testing.assert_allclose(resid, tl["llama_gqa.get_act_patch_resid_pre"], atol=TL_TINY)
    np.testing.assert_array_equal(every[2, :, :2], k)  # keys: 2 kv heads, padded with zeros
    assert (every[2, :, 2:] == 0).all()
    # check: the all-positions pattern patch of head (1, 3) equals a manual patch
    def patch_pattern(pattern, hook, head):
        pattern[:, head] = clean_cache[hook.name][:, head]
        return pattern

    manual = metric(tiny_gqa.run_with_hooks(corrupted_tokens, fwd_hooks=[
        (utils.get_act_name("pattern", 1), partial(patch_pattern, head=3))]))
    assert every[4, 1, 3] == manual
    # position 0 is before the corruption: patching any head there leaves the corrupted run
    corrupted_metric = metric(tiny_gqa(corrupted_tokens))
    assert np.abs(by_pos[0, :, 0] - corrupted_metric).max() < 1e-5


# =============================================================================================
# Direct logit attribution on the IOI batch. Unprocessed, minillm's cache methods give the true
# contributions, which are what TransformerLens gives once its default processing has folded
# the norm gains into the weights ("proc." numbers). TransformerLens on unprocessed weights
# leaves the gains out ("raw." numbers: its final entry, 2.72, is not the logit difference,
# 4.72); see docs/migrating_from_transformerlens.md.
# =============================================================================================

# A float32 logit difference of SmolLM2 is O(1-10); rebuilding it from a normalised stack
# (a different summation order over 576 dims and up to 61 components) moves it by ~1e-5.
DLA_TOL = 1e-4


@pytest.fixture(scope="module")
def dla(model, ioi):
    _, _, answer_tokens, tokens, original_logits, cache = ioi
    answer_residual_directions = model.tokens_to_residual_directions(answer_tokens)
    logit_diff_directions = answer_residual_directions[:, 0] - answer_residual_directions[:, 1]
    original_average_logit_diff = logits_to_ave_logit_diff(original_logits, answer_tokens)

    def residual_stack_to_logit_diff(residual_stack, cache, logit_diff_directions=logit_diff_directions):
        # ARENA2 part3_indirect_object_identification/solutions.py
        batch_size = residual_stack.shape[-2]  # NUMPY: .size(-2)
        scaled_residual_stack = cache.apply_ln_to_stack(residual_stack, layer=-1, pos_slice=-1)
        return np.einsum("...bd,bd->...", scaled_residual_stack,
                         logit_diff_directions) / batch_size  # NUMPY: einops.einsum

    return cache, logit_diff_directions, original_average_logit_diff, residual_stack_to_logit_diff


def test_apply_ln_to_stack_rebuilds_the_logit_difference(model, ioi, dla):
    # ARENA2 part3 and TL demos/Exploratory_Analysis_Demo.ipynb ("scaled_final_token_residual_stream
    # = cache.apply_ln_to_stack(final_token_residual_stream, layer=-1, pos_slice=-1)")
    prompts = ioi[0]
    cache, logit_diff_directions, original_average_logit_diff, residual_stack_to_logit_diff = dla
    final_residual_stream = cache["resid_post", -1]
    final_token_residual_stream = final_residual_stream[:, -1, :]
    scaled_final_token_residual_stream = cache.apply_ln_to_stack(final_token_residual_stream,
                                                                 layer=-1, pos_slice=-1)
    average_logit_diff = np.einsum("bd,bd->", scaled_final_token_residual_stream,
                                   logit_diff_directions) / len(prompts)  # NUMPY: einops.einsum
    assert abs(average_logit_diff - original_average_logit_diff) < DLA_TOL
    assert abs(residual_stack_to_logit_diff(final_token_residual_stream, cache)
               - original_average_logit_diff) < DLA_TOL


def test_accumulated_resid_logit_lens(model, dla, tl):
    # ARENA2 part3 / TL demos/Exploratory_Analysis_Demo.ipynb ("accumulated_residual, labels =
    # cache.accumulated_resid(layer=-1, incl_mid=True, pos_slice=-1, return_labels=True)")
    cache, _, original_average_logit_diff, residual_stack_to_logit_diff = dla
    accumulated_residual, labels = cache.accumulated_resid(layer=-1, incl_mid=True, pos_slice=-1,
                                                           return_labels=True)
    logit_lens_logit_diffs = residual_stack_to_logit_diff(accumulated_residual, cache)
    L = model.cfg.n_layers
    assert accumulated_residual.shape == (2 * L + 1, 8, model.cfg.d_model)
    assert labels[0] == "0_pre" and labels[1] == "0_mid" and labels[-1] == "final_post"
    # check: the last entry is the whole stream, so it is the model's logit difference
    assert abs(logit_lens_logit_diffs[-1] - original_average_logit_diff) < DLA_TOL
    # TransformerLens (processed weights) gives the same lens, entry by entry
    np.testing.assert_allclose(logit_lens_logit_diffs, tl["proc.ioi_accumulated_logit_diffs"],
                               atol=TL_F32)
    assert abs(tl["raw.ioi_accumulated_logit_diffs"][-1] - original_average_logit_diff) > 1
    # TL tests/acceptance/test_activation_cache.py (test_logit_accumulated_resid_on_last_layer_variants)
    np.testing.assert_array_equal(
        accumulated_residual, cache.accumulated_resid(layer=L, incl_mid=True, pos_slice=-1))
    np.testing.assert_array_equal(
        accumulated_residual, cache.accumulated_resid(layer=None, incl_mid=True, pos_slice=-1))


def test_decompose_resid_per_layer(model, dla, tl):
    # ARENA2 part3 / TL demos/Exploratory_Analysis_Demo.ipynb ("per_layer_residual, labels =
    # cache.decompose_resid(layer=-1, pos_slice=-1, return_labels=True)")
    cache, _, original_average_logit_diff, residual_stack_to_logit_diff = dla
    per_layer_residual, labels = cache.decompose_resid(layer=-1, pos_slice=-1, return_labels=True)
    per_layer_logit_diffs = residual_stack_to_logit_diff(per_layer_residual, cache)
    assert labels[0] == "embed" and labels[-1] == f"{model.cfg.n_layers - 1}_mlp_out"
    # check: the components sum to the stream, so their contributions sum to the total
    assert abs(per_layer_logit_diffs.sum() - original_average_logit_diff) < DLA_TOL
    np.testing.assert_allclose(per_layer_logit_diffs, tl["proc.ioi_decomposed_logit_diffs"],
                               atol=TL_F32)


def test_stack_head_results_per_head(model, dla, tl):
    # ARENA2 part3 ("per_head_residual, labels = cache.stack_head_results(layer=-1, pos_slice=-1,
    # return_labels=True)"; "(layer head) ... -> layer head ...")
    cache, _, original_average_logit_diff, residual_stack_to_logit_diff = dla
    per_head_residual, labels = cache.stack_head_results(layer=-1, pos_slice=-1, return_labels=True)
    per_head_residual = per_head_residual.reshape(model.cfg.n_layers, -1,
                                                  *per_head_residual.shape[1:])  # NUMPY: einops
    per_head_logit_diffs = residual_stack_to_logit_diff(per_head_residual, cache)
    assert per_head_logit_diffs.shape == (model.cfg.n_layers, model.cfg.n_heads)
    assert labels[:2] == ["L0H0", "L0H1"]
    np.testing.assert_allclose(per_head_logit_diffs, tl["proc.ioi_head_logit_diffs"], atol=TL_F32)
    # check: heads + what is not a head (embeddings, MLPs, output biases) = the total
    with_rest = cache.stack_head_results(layer=-1, pos_slice=-1, incl_remainder=True)
    total = residual_stack_to_logit_diff(with_rest, cache).sum()
    assert abs(total - original_average_logit_diff) < DLA_TOL
    # and one head's row is its z times its W_O
    z = cache["z", 20][:, -1, 4]  # [batch, d_head]
    np.testing.assert_allclose(per_head_residual[20, 4], z @ model.W_O[20, 4], atol=1e-5)


def test_logit_attrs_matches_the_reference_code(model, ioi, dla, tl):
    # TL tests/acceptance/test_activation_cache.py (test_logit_attrs_matches_reference_code)
    _, _, answer_tokens, tokens, _, _ = ioi
    cache, _, _, _ = dla
    accumulated_residual = cache.accumulated_resid(layer=-1, incl_mid=True, pos_slice=-1)
    answer_residual_directions = model.tokens_to_residual_directions(answer_tokens)
    logit_diff_directions = answer_residual_directions[:, 0] - answer_residual_directions[:, 1]
    scaled_residual_stack = cache.apply_ln_to_stack(accumulated_residual, layer=-1, pos_slice=-1)
    ref_ave_logit_diffs = np.einsum("...bd,bd->...", scaled_residual_stack,
                                    logit_diff_directions) / len(tokens)  # NUMPY: einsum
    logit_diffs = cache.logit_attrs(
        accumulated_residual,
        pos_slice=-1,
        tokens=answer_tokens[:, 0],
        incorrect_tokens=answer_tokens[:, 1],
    )
    ave_logit_diffs = logit_diffs.mean(axis=-1)  # NUMPY: dim= -> axis=
    # TL: atol 1.1e-7 on solu-2l (d_model 512); the same two float32 reductions in another order
    np.testing.assert_allclose(ref_ave_logit_diffs, ave_logit_diffs, atol=1e-5)
    np.testing.assert_allclose(logit_diffs, tl["proc.ioi_logit_attrs"], atol=TL_F32)


def test_ioi_on_the_processed_model_and_revert(tl):
    # ARENA2 part3_indirect_object_identification/solutions.py, with its loading line:
    # LOAD: "gpt2-small" -> SmolLM2; refactor_factored_attn_matrices dropped (not implemented,
    # and TransformerLens itself refuses it for rotary models)
    model = HookedTransformer.from_pretrained(
        "smollm2-135m",
        center_unembed=True,
        center_writing_weights=True,
        fold_ln=True,
    )
    prompts = [prompt.format(name) for (prompt, names) in zip(PROMPT_FORMAT, NAME_PAIRS)
               for name in names[::-1]]
    answers = [names[::i] for names in NAME_PAIRS for i in (1, -1)]
    answer_tokens = np.concatenate([model.to_tokens(names, prepend_bos=False).T for names in answers])
    tokens = model.to_tokens(prompts, prepend_bos=True)
    original_logits, cache = model.run_with_cache(tokens)
    per_prompt = logits_to_ave_logit_diff(original_logits, answer_tokens, per_prompt=True)
    answer_residual_directions = model.tokens_to_residual_directions(answer_tokens)
    logit_diff_directions = answer_residual_directions[:, 0] - answer_residual_directions[:, 1]

    def residual_stack_to_logit_diff(residual_stack, cache):
        scaled_residual_stack = cache.apply_ln_to_stack(residual_stack, layer=-1, pos_slice=-1)
        return np.einsum("...bd,bd->...", scaled_residual_stack,
                         logit_diff_directions) / residual_stack.shape[-2]  # NUMPY: einops

    accumulated_residual = cache.accumulated_resid(layer=-1, incl_mid=True, pos_slice=-1)
    per_head_residual = cache.stack_head_results(layer=-1, pos_slice=-1)
    # TransformerLens's numbers on its processed weights
    np.testing.assert_allclose(per_prompt, tl["proc.ioi_logit_diffs"], atol=TL_F32)
    np.testing.assert_allclose(residual_stack_to_logit_diff(accumulated_residual, cache),
                               tl["proc.ioi_accumulated_logit_diffs"], atol=TL_F32)
    np.testing.assert_allclose(residual_stack_to_logit_diff(per_head_residual, cache).reshape(30, 9),
                               tl["proc.ioi_head_logit_diffs"], atol=TL_F32)
    OV = model.OV.eigenvalues
    np.testing.assert_allclose(OV.sum(-1).real / np.abs(OV).sum(-1), tl["proc.ov_copying_score"],
                               atol=1e-4)  # as for the unprocessed scores
    # the processing is a journalled edit: reverting gives the checkpoint's weights and numbers
    assert [str(e) for e in model.edits] == [  # fold_value_biases: TransformerLens's default too
        "<edit: process weights (fold_ln, center_writing_weights, center_unembed, fold_value_biases)>"]
    model.revert_all()
    raw_logits = model(tokens)
    raw_per_prompt = logits_to_ave_logit_diff(raw_logits, answer_tokens, per_prompt=True)
    np.testing.assert_allclose(raw_per_prompt, tl["raw.ioi_logit_diffs"], atol=TL_F32)


def test_forward_and_backward_caches_with_add_hook(tiny):
    # TL demos/Attribution_Patching_Demo.ipynb (get_cache_fwd_and_bwd: add_hook(..., "fwd"),
    # add_hook(..., "bwd"), value = metric(model(tokens)); value.backward(); reset_hooks())
    from minillm.grad import backward as minillm_backward
    from minillm.interp import metrics

    ref = load_file(FIXTURES / "tl_gpt2.safetensors")  # TransformerLens 3.9 on the same checkpoint
    tokens = ref["clean_ids"]
    correct, wrong = (int(i) for i in ref["answer_ids"])
    filter_not_qkv_input = lambda name: "_input" not in name  # noqa: E731

    def get_cache_fwd_and_bwd(model, tokens, metric):
        model.reset_hooks()
        cache = {}

        def forward_cache_hook(act, hook):
            cache[hook.name] = act.copy()  # NUMPY: .detach()

        model.add_hook(filter_not_qkv_input, forward_cache_hook, "fwd")
        grad_cache = {}

        def backward_cache_hook(act, hook):
            grad_cache[hook.name] = act.copy()  # NUMPY: .detach()

        model.add_hook(filter_not_qkv_input, backward_cache_hook, "bwd")
        # AUTOGRAD: `value = metric(model(tokens)); value.backward()` -> minillm's hand-written
        # backward pass, with a metric that knows its gradient w.r.t. the logits
        value = minillm_backward.backward(model, tokens, metric, params=False).value
        model.reset_hooks()
        return value, ActivationCache(cache, model), ActivationCache(grad_cache, model)

    value, cache, grad_cache = get_cache_fwd_and_bwd(tiny, tokens,
                                                     metrics.logit_diff(tiny, correct, wrong))
    assert not tiny.hook_dict["hook_embed"].bwd_hooks  # reset_hooks removed them
    # TransformerLens: the metric, and the gradients its backward hooks saw
    assert abs(value - scalar(ref["grad.metric"])) < 1e-5  # a logit difference O(1)
    for name in ("hook_embed", "blocks.0.hook_resid_pre", "blocks.1.attn.hook_pattern",
                 "blocks.1.attn.hook_z", "blocks.1.mlp.hook_post", "ln_final.hook_scale"):
        want = ref[f"grad.{name}"]
        got = grad_cache[name][0]
        # float32 gradients of O(0.1-1): torch and NumPy sum in different orders (~1e-6)
        np.testing.assert_allclose(got, want, atol=2e-5 * max(1.0, np.abs(want).max()), err_msg=name)
    assert np.allclose(cache["blocks.0.hook_resid_pre"][0, 0], tiny.W_E[tokens[0, 0]]
                       + tiny.W_pos[0])  # the forward cache holds the run's activations


def test_loading_options_minillm_cannot_honour_are_refused():
    # TL HookedTransformer.from_pretrained's signature: options that would change the model
    # are refused by name, not silently ignored; device options are accepted (CPU only)
    from minillm import MinillmError

    folder = golden_folder("gpt2")
    model = HookedTransformer.from_pretrained(folder, device="cpu", n_devices=1)
    assert model.to("cpu") is model and model.eval() is model
    for bad in (dict(checkpoint_index=3), dict(first_n_layers=1), dict(dtype="bfloat16")):
        with pytest.raises(MinillmError):
            HookedTransformer.from_pretrained(folder, **bad)
    # refactor_factored_attn_matrices: learned positions only, as in TransformerLens (its
    # numbers are checked against TransformerLens in test_tl_reference.py)
    assert HookedTransformer.from_pretrained(folder, refactor_factored_attn_matrices=True) is not None
    with pytest.raises(MinillmError, match="rotary"):
        HookedTransformer.from_pretrained(golden_folder("llama_gqa_untied"),
                                          refactor_factored_attn_matrices=True)
    with pytest.raises(MinillmError, match="CUDA"):
        model.cuda()
