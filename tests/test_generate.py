"""Generation: the KV cache, sampling, stopping, streaming, chat templates and the CLI.

The central claim: decoding with the cache computes the same numbers as a
full forward pass over the whole sequence. Tolerances: in float32 the
cached run multiplies [1, d] rows where the full run multiplies [p, d]
blocks, so BLAS may sum in a different order; logits of magnitude ~10 then
differ by a few 1e-6, and 1e-4 leaves room. In float64 the same reordering
gives ~1e-14, so 1e-10 is a strict check that nothing else differs.
"""

from __future__ import annotations

import types

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.numpy import load_file

import minillm
from minillm import cli
from minillm.chat import apply_chat_template, chat_template, render_chat_template
from minillm.generate import StreamDecoder, next_token_probs, run_generation, sample_next
from minillm.kv_cache import KVCache
from minillm.tokenizer import Tokenizer
from tests.conftest import FIXTURES, GOLDEN, golden_folder, random_model

ATOL = {np.float32: 1e-4, np.float64: 1e-10}


def max_diff(a, b) -> float:
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())


def cached_logits(model, ids, mask=None, chunks=None) -> np.ndarray:
    """Logits of ids [b, p] computed chunk by chunk through one KV cache.

    chunks: lengths summing to p; default: prefill all but 4 positions, then one at a time.
    """
    b, p = ids.shape
    chunks = chunks or [p - 4, 1, 1, 1, 1]
    cache = KVCache.for_model(model, batch=b)
    out, start = [], 0
    for n in chunks:
        sl = slice(start, start + n)
        out.append(model(ids[:, sl], attention_mask=None if mask is None else mask[:, sl], cache=cache))
        start += n
    assert cache.length == p
    return np.concatenate(out, axis=1)  # [b, p, V]


def assert_cached_equals_full(model, ids, mask=None, chunks=None, what=""):
    full = model(ids, attention_mask=mask)
    cached = cached_logits(model, ids, mask, chunks)
    diff = np.abs(cached.astype(np.float64) - full)
    where = np.unravel_index(np.argmax(diff), diff.shape)
    atol = ATOL[model.dtype.type]
    assert diff.max() <= atol, f"{what}: cached vs full logits differ by {diff.max():.3g} at {where}"


# --- cache == full forward ------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", GOLDEN)
def test_golden_prefill_decode_equals_full_forward(name, dtype):
    model = minillm.load(golden_folder(name), dtype=dtype)
    ref = load_file(str(golden_folder(name) / "reference.safetensors"))
    # Phi-3's LongRoPE picks its factors from the length of each call (as transformers does),
    # so a cache equals the full forward only while the sequence stays within the original
    # context (8 in the fixture); test_longrope_switches_factors_past_the_original_context
    # covers the crossing.
    scaling = model.cfg.rope_scaling
    p = scaling.original_max_position_embeddings if scaling and scaling.kind == "longrope" else None
    assert_cached_equals_full(model, ref["input_ids"][:, :p], what=f"{name} {dtype.__name__}",
                              chunks=[p - 4, 1, 1, 1, 1] if p else None)
    # a ragged, left-padded batch: the padding stays in the cache's attention mask
    assert_cached_equals_full(model, ref["ragged_input_ids"][:, :p],
                              ref["ragged_attention_mask"][:, :p],
                              what=f"{name} {dtype.__name__} ragged",
                              chunks=[p - 4, 1, 1, 1, 1] if p else None)


@settings(max_examples=20, deadline=None)
@given(family=st.sampled_from(["gpt2", "llama"]), dtype=st.sampled_from([np.float32, np.float64]),
       seed=st.integers(0, 2**16), cuts=st.lists(st.integers(1, 19), max_size=4, unique=True),
       pads=st.lists(st.integers(0, 6), min_size=2, max_size=2))
def test_any_chunking_of_a_ragged_batch_equals_full_forward(family, dtype, seed, cuts, pads):
    """Prefill and decode in arbitrary chunks, rows left-padded by different amounts."""
    model = random_model(family, seed=seed % 7, dtype=dtype)
    rng = np.random.default_rng(seed)
    p = 20
    ids = rng.integers(0, model.cfg.d_vocab, (2, p))
    mask = np.ones((2, p), np.int64)
    for row, pad in enumerate(pads):
        mask[row, :pad] = 0
    bounds = [0, *sorted(cuts), p]
    chunks = [b - a for a, b in zip(bounds, bounds[1:])]
    assert_cached_equals_full(model, ids, mask, chunks, what=f"{family} chunks {chunks} pads {pads}")


def test_sliding_window_model_decodes_past_its_window():
    """Mistral's window (6 in the fixture) must also apply to cached keys."""
    model = minillm.load(golden_folder("mistral"))
    ids = np.random.default_rng(0).integers(0, model.cfg.d_vocab, (1, 20))
    assert_cached_equals_full(model, ids, chunks=[3] + [1] * 17, what="mistral sliding window")


def test_per_step_logits_are_the_full_forward_logits(tiny):
    ids = np.arange(5)[None] % tiny.cfg.d_vocab
    out, logits = tiny.generate(ids, max_new_tokens=6, stop_at_eos=False, return_logits=True)
    assert out.shape == (1, 11) and logits.shape == (6, tiny.cfg.d_vocab)
    full = tiny(out[:, :-1])[0, 4:]  # logits at positions 4 .. 9 chose tokens 5 .. 10
    assert max_diff(logits, full) <= ATOL[np.float32]
    assert (out[0, 5:] == logits.argmax(-1)).all()


# --- the cache as data ----------------------------------------------------------------------------


def test_cache_is_plain_data_that_clones_truncates_and_compares(tiny):
    cfg = tiny.cfg
    ids = np.arange(8)[None] % cfg.d_vocab
    cache = KVCache.for_model(tiny)
    tiny(ids[:, :6], cache=cache)
    assert cache.keys(1).shape == (1, cfg.n_kv_heads, 6, cfg.d_head) == cache.values(1).shape
    twin = cache.clone()
    first = tiny(ids[:, 6:], cache=cache)
    assert cache.length == 8 and twin.length == 6  # the clone did not move
    again = tiny(ids[:, 6:], cache=twin)
    assert np.array_equal(first, again) and cache.max_abs_diff(twin).max() == 0
    cache.truncate(6)
    assert np.array_equal(tiny(ids[:, 6:], cache=cache), first)  # re-run from position 6
    with pytest.raises(minillm.MinillmError, match="cannot truncate"):
        cache.truncate(9)
    twin.keys(0)[0, 0, 2] += 0.5  # keys() is a view: an edit of position 2 shows in the comparison
    diff = cache.max_abs_diff(twin)
    assert np.isclose(diff[0], 0.5, atol=1e-6) and (diff[1:] == 0).all()


def test_cache_repeat_continues_n_copies_of_the_batch(tiny):
    """repeat(n) holds the batch n times in tile order; each copy continues like the original.
    Decoding two rows from a repeated cache runs the same GEMM shapes as one row per copy only
    up to the row count, so the comparison is within float32 rounding (1e-5 on logits of ~1)."""
    cfg = tiny.cfg
    ids = (np.arange(12).reshape(2, 6) * 5) % cfg.d_vocab  # two different prompts
    cache = KVCache.for_model(tiny, batch=2)
    tiny(ids[:, :4], cache=cache)
    three = cache.repeat(3)
    assert three.batch == 6 and three.length == 4 and cache.batch == 2
    for l in range(cfg.n_layers):
        assert np.array_equal(three.keys(l), np.tile(cache.keys(l), (3, 1, 1, 1)))
        assert np.array_equal(three.values(l)[4:], cache.values(l))  # row 4 = copy 2 of row 0
    out = tiny(np.tile(ids[:, 4:], (3, 1)), cache=three)  # [6, 2, V]
    alone = tiny(ids[:, 4:], cache=cache)  # [2, 2, V]
    np.testing.assert_allclose(out, np.tile(alone, (3, 1, 1)), rtol=0, atol=1e-5)
    assert cache.length == 6 and three.length == 6  # independent arrays
    with pytest.raises(minillm.MinillmError, match="n >= 1"):
        cache.repeat(0)


def test_hooks_see_absolute_positions_during_cached_decoding():
    """A hook at position p while decoding receives position p's activation."""
    model = random_model("llama", seed=1)
    ids = np.array([[3, 14, 15, 9, 26]])
    seen = []

    def record(act, hook):
        seen.append((hook.pos_offset, act.shape[1], act.copy()))

    with model.hooks([("blocks.1.attn.hook_rot_k", record)]):
        out = model.generate(ids, max_new_tokens=4, stop_at_eos=False)
    assert [(o, n) for o, n, _ in seen] == [(0, 5), (5, 1), (6, 1), (7, 1)]
    _, full = model.run_with_cache(out[:, :-1], names_filter="blocks.1.attn.hook_rot_k")
    for offset, n, act in seen:
        expected = full["blocks.1.attn.hook_rot_k"][:, offset : offset + n]
        assert max_diff(act, expected) <= 1e-5, f"position {offset}"


# --- sampling -------------------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**16), k=st.integers(1, 12), top_p=st.floats(0.05, 1.0),
       temperature=st.floats(0.3, 3.0))
def test_top_k_and_top_p_keep_the_right_tokens(seed, k, top_p, temperature):
    logits = np.random.default_rng(seed).normal(0, 3, 12)
    probs = next_token_probs(logits, temperature, top_k=k)
    order = np.argsort(-logits)
    assert set(np.flatnonzero(probs)) == set(order[:k]) and np.isclose(probs.sum(), 1)
    full = next_token_probs(logits, temperature)
    assert np.allclose(probs[order[:k]], full[order[:k]] / full[order[:k]].sum())
    nucleus = next_token_probs(logits, temperature, top_p=top_p)
    kept = np.flatnonzero(nucleus)
    n = len(kept)  # the smallest set of most likely tokens whose probability reaches top_p
    assert set(kept) == set(order[:n])
    assert full[order[:n]].sum() >= top_p * (1 - 1e-12) or n == 12
    assert n == 1 or full[order[: n - 1]].sum() < top_p


def test_draws_follow_the_distribution():
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    rng = np.random.default_rng(0)
    draws = np.bincount([sample_next(logits, rng, 1.0) for _ in range(4000)], minlength=4) / 4000
    sigma = np.sqrt(np.array([0.5, 0.3, 0.15, 0.05]) * (1 - np.array([0.5, 0.3, 0.15, 0.05])) / 4000)
    assert (np.abs(draws - [0.5, 0.3, 0.15, 0.05]) < 5 * sigma).all(), draws


def test_seeded_sampling_repeats_and_seeds_differ(tiny):
    ids = np.array([[1, 2, 3]])
    kw = dict(max_new_tokens=20, temperature=1.5, top_k=40, top_p=0.95, stop_at_eos=False)
    a = tiny.generate(ids, seed=7, **kw)
    assert np.array_equal(a, tiny.generate(ids, seed=7, **kw))
    assert not np.array_equal(a, tiny.generate(ids, seed=8, **kw))
    greedy = tiny.generate(ids, max_new_tokens=20, stop_at_eos=False)
    assert np.array_equal(tiny.generate(ids, max_new_tokens=20, temperature=2.0, top_k=1,
                                        stop_at_eos=False), greedy)


@pytest.mark.parametrize("kw, match", [
    (dict(temperature=-1.0), "temperature"), (dict(top_k=0), "top_k"), (dict(top_p=1.5), "top_p"),
    (dict(max_new_tokens=-2), "max_new_tokens"),
])
def test_bad_sampling_settings_are_refused(tiny, kw, match):
    with pytest.raises(minillm.MinillmError, match=match):
        tiny.generate(np.array([[1, 2]]), **kw)


# --- stopping -------------------------------------------------------------------------------------


def test_stops_at_eos_and_keeps_the_eos_id():
    model = random_model("llama", seed=3)
    ids = np.array([[5, 6, 7]])
    free = model.generate(ids, max_new_tokens=12, stop_at_eos=False)[0, 3:].tolist()
    step = next(i for i in range(2, 12) if free[i] not in free[:i])  # first occurrence at i >= 2
    gen = run_generation(model, ids, max_new_tokens=12, eos_token_ids=[free[step]])
    assert gen.new_ids == free[: step + 1] and gen.stop_reason == "eos"
    configured = random_model("llama", seed=3, eos_token_id=[63, free[step]])
    assert configured.generate(ids, max_new_tokens=12)[0, 3:].tolist() == free[: step + 1]


def test_a_prompt_past_the_context_length_stops_before_computing():
    model = random_model("gpt2")  # n_ctx 32
    calls = []
    with model.hooks([("hook_embed", lambda act, hook: calls.append(1))]):
        with pytest.raises(minillm.MinillmError,
                           match=r"30 tokens.*context length of 32.*at most 2 new tokens"):
            model.generate(np.zeros((1, 30), np.int64), max_new_tokens=5)
        assert model.generate(np.zeros((1, 30), np.int64), max_new_tokens=2).shape == (1, 32)
    assert len(calls) == 2  # the refused call ran nothing; the allowed one prefilled and decoded once


# --- text: incremental decoding and stop strings --------------------------------------------------


def byte_decode(ids) -> str:
    return bytes(ids).decode("utf-8", errors="replace")


# U+FFFD itself is left out of the text: a decoder cannot tell a genuine "\ufffd" from the
# replacement for a character whose bytes have not all arrived, so a genuine one is held back
# until the next token or finish() (checked in the test after this one).
_no_replacement_char = st.characters(codec="utf-8", exclude_characters="\ufffd")


@settings(max_examples=40, deadline=None)
@given(text=st.text(_no_replacement_char, min_size=1, max_size=30),
       stop=st.text(min_size=1, max_size=4))
def test_stream_pieces_are_whole_characters_and_stop_before_the_stop_string(text, stop):
    """One byte per token: multi-byte characters arrive in parts and must print whole."""
    stream = StreamDecoder(byte_decode, [stop])
    pieces = []
    for b in text.encode():
        pieces.append(stream.push(b))
        if stream.stopped:
            break
    pieces.append(stream.finish())
    expected = text[: text.find(stop)] if stop in text else text
    assert "".join(pieces) == stream.text == expected
    assert not any("\ufffd" in p for p in pieces)


def test_a_genuine_replacement_character_is_held_back_but_never_lost():
    stream = StreamDecoder(byte_decode, ["zz"])
    pieces = [stream.push(b) for b in "a\ufffdb".encode()] + [stream.finish()]
    assert "".join(pieces) == stream.text == "a\ufffdb"
    assert pieces[-2:] == ["\ufffdb", ""]  # released with the next character, not at the end


def test_a_stop_string_is_not_matched_inside_an_incomplete_character():
    # hypothesis found it: "\x80" arrives as two bytes; after the first, the text reads "\ufffd"
    stream = StreamDecoder(byte_decode, ["\ufffd"])
    pieces = [stream.push(b) for b in "\x80".encode()] + [stream.finish()]
    assert "".join(pieces) == stream.text == "\x80" and not stream.stopped


def test_stream_with_the_real_tokenizer_prints_multibyte_text_exactly(smollm2):
    text = " Café au lait, 日本語, naïve 🙂 emoji — done."
    ids = smollm2.tokenizer.encode(text, add_special_tokens=False)
    stream = StreamDecoder(smollm2.tokenizer.decode, prefix_ids=smollm2.tokenizer.encode("Hello"))
    pieces = [stream.push(i) for i in ids] + [stream.finish()]
    assert "".join(pieces) == text and not any("\ufffd" in p for p in pieces)
    assert sum(1 for p in pieces if p == "") > 0  # some characters really did span tokens


def test_stop_strings_end_generation_and_are_cut_from_the_text(smollm2):
    prompt = "Once upon a time"
    # its greedy continuation (transformers' reference): ", the city of Nova Haven was ..."
    # a stop string across token boundaries (" city", " of", " Nova"), with a second one that never comes
    pieces = []
    gen = run_generation(smollm2, prompt, max_new_tokens=8, stop=["zzz", "y of N"], on_text=pieces.append)
    assert gen.text == "".join(pieces) == ", the cit" and gen.stop_reason == "stop_string"
    assert smollm2.to_string(gen.new_ids) == ", the city of Nova"  # the ids keep the stop tokens


# --- SmolLM2 against transformers -----------------------------------------------------------------


def smollm2_reference() -> dict[str, np.ndarray]:
    return load_file(str(FIXTURES / "smollm2_reference.safetensors"))


def test_smollm2_generate_matches_transformers_token_for_token(smollm2):
    ref = smollm2_reference()
    prompt = ref["p3.input_ids"][None]  # "Once upon a time": [1, 4]
    out, logits = smollm2.generate(prompt, max_new_tokens=8, stop_at_eos=False, return_logits=True)
    new = out[0, 4:]  # (8 of the 16 reference tokens: the batched test below checks all 16)
    assert np.array_equal(new, ref["p3.greedy_ids"][:8]), (
        f"{smollm2.to_string(new)!r} vs {smollm2.to_string(ref['p3.greedy_ids'])!r}")
    # The real model too: cached logits = full forward logits. 30 float32 layers and logits up to
    # ~25 give ~6e-5 (measured) from the different BLAS summation order; 3e-4 leaves room.
    full = smollm2(out[:, :-1])[0, 3:]
    assert max_diff(logits, full) <= 3e-4


def test_smollm2_batched_greedy_matches_transformers_for_every_prompt(smollm2):
    """All reference prompts at once, left-padded into one batch, decoded through one cache.

    (One batched step costs about as much as a single one: decoding reads every
    weight once per step whatever the batch.)
    """
    ref = smollm2_reference()
    keys = sorted(k for k in ref if k.endswith(".input_ids"))  # p0.input_ids, p1.input_ids, ...
    prompts = [ref[k] for k in keys]
    width = max(len(p) for p in prompts)
    ids = np.zeros((len(prompts), width), np.int64)
    mask = np.zeros_like(ids)
    for row, p in enumerate(prompts):
        ids[row, width - len(p) :], mask[row, width - len(p) :] = p, 1
    cache = KVCache.for_model(smollm2, batch=len(prompts))
    logits = smollm2(ids, attention_mask=mask, cache=cache, last_only=True)  # [b, 1, V]
    new = []
    for _ in range(16):
        new.append(logits[:, -1].argmax(-1))  # [b]
        logits = smollm2(new[-1][:, None], attention_mask=np.ones((len(prompts), 1)), cache=cache)
    new = np.stack(new, axis=1)  # [b, 16]
    for row, key in enumerate(keys):
        expected = ref[key.replace("input_ids", "greedy_ids")]
        assert np.array_equal(new[row], expected), (
            f"{key}: {smollm2.to_string(new[row])!r} vs {smollm2.to_string(expected)!r}")


# --- chat templates -------------------------------------------------------------------------------

CHATML = ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
          "<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n")


def test_smollm2_chat_template_renders_chatml(smollm2):
    messages = [{"role": "user", "content": "What is 2+2?"}]
    assert apply_chat_template(smollm2, messages) == CHATML
    assert apply_chat_template(smollm2, messages, add_generation_prompt=False) == CHATML[: -len(
        "<|im_start|>assistant\n")]
    own = apply_chat_template(smollm2, [{"role": "system", "content": "Be brief."}, *messages])
    assert own.startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n")
    ids = smollm2.tokenizer.encode(CHATML, add_special_tokens=False)
    assert ids[0] == smollm2.tokenizer.token_to_id("<|im_start|>")  # special tokens stay single tokens


def test_chat_generation_answers_and_stops_at_im_end(smollm2):
    gen = run_generation(smollm2, "What is the capital of France?", max_new_tokens=30, chat=True)
    assert gen.stop_reason == "eos" and gen.new_ids[-1] == smollm2.tokenizer.token_to_id("<|im_end|>")
    assert "Paris" in gen.text and "<|im_end|>" not in gen.text


def test_template_is_taken_from_the_model_files(tmp_path):
    assert chat_template({}, tmp_path) is None
    (tmp_path / "chat_template.jinja").write_text("{% for m in messages %}[{{ m.role }}] {{ m.content }}"
                                                  "{% endfor %}{{ eos_token }}")
    template = chat_template({}, tmp_path)
    assert render_chat_template(template, [{"role": "user", "content": "hi"}], eos_token="</s>") == \
        "[user] hi</s>"
    named = [{"name": "default", "template": "A"}, {"name": "tool_use", "template": "B"}]
    assert chat_template({"chat_template": named}) == "A"


def test_model_without_a_template_gets_a_clear_error(tmp_path, smollm2):
    (tmp_path / "tokenizer.json").write_bytes(smollm2.tokenizer.path.read_bytes())
    (tmp_path / "tokenizer_config.json").write_text("{}")
    tokenizer = Tokenizer(tmp_path / "tokenizer.json")
    fake = types.SimpleNamespace(name="no-template", need_tokenizer=lambda: tokenizer)
    with pytest.raises(minillm.MinillmError, match="no chat template"):
        apply_chat_template(fake, [{"role": "user", "content": "hi"}])


@pytest.mark.parametrize("template", [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__.os.system('echo pwned') }}",
    "{{ messages.append({'role': 'user', 'content': 'injected'}) }}",
    "{% set x = messages[0].update({'content': 'changed'}) %}",
])
def test_the_sandbox_refuses_unsafe_template_code(template):
    messages = [{"role": "user", "content": "hi"}]
    with pytest.raises(minillm.MinillmError, match="sandbox forbids"):
        render_chat_template(template, messages)
    assert messages == [{"role": "user", "content": "hi"}]


def test_bad_messages_and_broken_templates_get_clear_errors():
    with pytest.raises(minillm.MinillmError, match="message 0"):
        render_chat_template("{{ messages }}", [{"role": "user"}])
    with pytest.raises(minillm.MinillmError, match="refused these messages: no system role"):
        render_chat_template("{{ raise_exception('no system role') }}", [{"role": "user", "content": ""}])
    with pytest.raises(minillm.MinillmError, match="TemplateSyntaxError"):
        render_chat_template("{% for %}", [{"role": "user", "content": ""}])


# --- the command line -----------------------------------------------------------------------------


@pytest.fixture
def cli_uses(monkeypatch, smollm2):
    """Let the CLI 'load' the session's SmolLM2 instead of reading it again."""
    monkeypatch.setattr(minillm, "load", lambda name, dtype=np.float32: smollm2)
    return smollm2


def test_cli_generate_streams_the_greedy_continuation(cli_uses, capsys):
    assert cli.main(["generate", "smollm2-135m", "Once upon a time", "--max-new-tokens", "5"]) == 0
    out, err = capsys.readouterr()
    expected = cli_uses.to_string(smollm2_reference()["p3.greedy_ids"][:5])  # transformers' greedy
    assert out == "Once upon a time" + expected + "\n"
    assert "5 tokens" in err and "ms/token" in err


def test_cli_generate_past_the_context_is_one_clear_error(cli_uses, capsys):
    assert cli.main(["generate", "smollm2-135m", "Hi", "--max-new-tokens", "9000"]) == 1
    out, err = capsys.readouterr()
    assert "context length of 8192" in err and "Traceback" not in err and out == ""


def test_cli_generate_without_a_tokenizer_is_one_clear_error(capsys):
    assert cli.main(["generate", str(golden_folder("gpt2")), "Hi"]) == 1
    out, err = capsys.readouterr()
    assert "no tokenizer.json" in err and out == ""


def test_cli_refuses_bad_sampling_before_loading(capsys):
    assert cli.main(["generate", "smollm2-135m", "Hi", "--top-p", "2"]) == 1
    assert "top_p" in capsys.readouterr().err


def test_demo_prints_the_top_tokens_and_a_continuation(cli_uses, capsys):
    assert cli.main(["demo", "--max-new-tokens", "3"]) == 0
    out = capsys.readouterr().out
    table = out.split("Most likely next tokens:")[1].split("Greedy continuation:")[0]
    first = [line for line in table.splitlines() if line.strip().startswith("1 ")][0]
    assert "' night'" in first and "%" in first
    assert len([line for line in table.splitlines() if line.strip()[:2].strip().isdigit()]) == 10
    assert "It was a dark and stormy night" in out
