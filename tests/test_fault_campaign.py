"""Fault campaign: real interrupts, hostile values, oversized inputs and bad arguments.

Every test here was written against a failure found by trying (issue 15) and fails on
the code before its fix. Sections:

1. Ctrl-C (a real SIGINT at a random moment, sent by another process so that it can
   arrive in the middle of a NumPy call) during edit(), revert(), revert_all() and while
   entering, inside or leaving `with model.edited(...)`: afterwards every
   parameter (hashed) is in the state before or the state after the operation, and the
   journal and the handles say which.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time
import tracemalloc
from collections import Counter

import numpy as np
import pytest

import minillm
from minillm.edit import edits
from minillm.errors import MinillmError
from minillm.kv_cache import KVCache
from tests.conftest import random_model

# --- 1. interrupts ----------------------------------------------------------------------------

# A model big enough that an edit takes ~1 ms (so random delays land inside it), small
# enough that hashing every parameter is quick.
CAMPAIGN_MODEL = dict(n_embd=128, n_layer=2, n_head=4, n_positions=32, vocab_size=2048)


def param_hashes(model) -> dict[str, str]:
    """SHA-256 of every parameter's bytes (W_U too: it may be untied)."""
    out = {n: hashlib.sha256(np.ascontiguousarray(v).tobytes()).hexdigest()
           for n, v in model.named_parameters()}
    out["unembed.W_U"] = hashlib.sha256(np.ascontiguousarray(model.unembed.W_U).tobytes()).hexdigest()
    out["tied"] = str(model.unembed.tied)
    return out


def campaign_ops(model):
    """Three overlapping edits that take a while: a whole-matrix add, an untying embedding
    edit (copies W_E.T) and a neuron scale overlapping the add."""
    delta = np.random.default_rng(0).normal(0, 0.01, model.embed.W_E.shape)
    return [edits.add_to_weight("embed.W_E", None, delta),
            edits.reduce_embedding(7, 0.5, untie=True),
            edits.scale_neuron(1, 3, 0.5, which="both")]


# A separate process sends the signals: a thread of this process would need the GIL to
# send one, and so could only send it between NumPy calls. The process reads a delay,
# sleeps, and sends SIGINT to the test process.
KILLER = """
import os, signal, sys, time
target = int(sys.argv[1])
for line in sys.stdin:
    time.sleep(float(line))
    os.kill(target, signal.SIGINT)
"""


class Interrupter:
    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, "-c", KILLER, str(os.getpid())],
                                     stdin=subprocess.PIPE, bufsize=0)

    def during(self, action, delay: float):
        """Run `action()` while SIGINT arrives `delay` s after it starts.

        Returns (result or None, where): "inside" when the KeyboardInterrupt came out of
        `action`, "after" when it arrived once `action` had returned (it is then caught here),
        so every trial gets exactly one real signal.
        """
        result, where = None, "inside"
        try:
            os.write(self.proc.stdin.fileno(), f"{delay!r}\n".encode())
            result = action()
            where = "after"
            deadline = time.monotonic() + delay + 30
            while time.monotonic() < deadline:  # wait for this trial's signal: no trial ends without its own
                time.sleep(0.001)
            raise AssertionError("the SIGINT sent to this process never arrived as KeyboardInterrupt")
        except KeyboardInterrupt:
            pass
        return result, where

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(10)


@pytest.fixture(scope="module")
def interrupter():
    # A process started in the background by a non-interactive shell (a CI runner, `cmd &`)
    # inherits SIGINT as ignored, and Python then installs no KeyboardInterrupt handler: the
    # campaign's signals would vanish. Install Python's own handler, as an interactive
    # terminal has it, for the campaign, and put the old one back afterwards.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    it = Interrupter()
    try:
        yield it
    finally:
        it.close()
        signal.signal(signal.SIGINT, previous)


def timed(action) -> float:
    t0 = time.perf_counter()
    action()
    return time.perf_counter() - t0


@pytest.fixture(scope="module")
def campaign():
    """The model, its ops, and the hashes of every state the campaign may end in."""
    model = random_model("gpt2", seed=0, **CAMPAIGN_MODEL)
    ops = campaign_ops(model)
    states = {"pristine": param_hashes(model)}
    for k in range(1, len(ops) + 1):
        with model.edited(*ops[:k]):
            states[f"first {k}"] = param_hashes(model)
    with model.edited(*ops[1:]):
        states["without the first"] = param_hashes(model)
    assert param_hashes(model) == states["pristine"]
    return model, ops, states


def state_of(model, states) -> str:
    h = param_hashes(model)
    for name, hashes in states.items():
        if h == hashes:
            return name
    changed = [n for n in h if h[n] != states["pristine"][n]]
    return f"a mixed state (differs from pristine in {changed})"


def check_journal(model, handles) -> None:
    """Handles and journal agree: a handle is active iff the journal holds its record."""
    held = {id(r.handle) for r in model.journal.records}
    for h in handles:
        assert (h.state != "reverted") == (id(h) in held), f"{h!r} vs journal {model.journal.describe()}"


MIN_TRIALS, MAX_TRIALS, MIN_INSIDE = 100, 400, 25


def run_campaign(what, interrupter, model, setup, action, check, seed: int) -> Counter:
    """Trials of: ctx = setup(); SIGINT at a random moment of action(ctx); check(ctx, result)
    names the state reached (asserting it is a consistent one); model.revert_all() resets.

    The delay is uniform over 1.2× the action's median duration. At least MIN_TRIALS trials,
    more (up to MAX_TRIALS) until MIN_INSIDE interrupts have landed inside the action.
    """
    durations = []
    for _ in range(5):
        ctx = setup()
        durations.append(timed(lambda ctx=ctx: action(ctx)))
        model.revert_all()
    duration = sorted(durations)[2]
    rng = random.Random(seed)
    outcomes: Counter = Counter()
    n = inside = 0
    while n < MIN_TRIALS or (inside < MIN_INSIDE and n < MAX_TRIALS):
        ctx = setup()
        result, where = interrupter.during(lambda ctx=ctx: action(ctx), rng.uniform(0, 1.2 * duration))
        outcomes[(where, check(ctx, result))] += 1
        model.revert_all()
        assert model.journal.pristine and not model.edits
        n, inside = n + 1, inside + (where == "inside")
    print(f"{what}: {n} trials, action {duration * 1e3:.1f} ms: {dict(outcomes)}")
    assert inside >= MIN_INSIDE, f"only {inside} of {n} interrupts landed inside {what}"
    return outcomes


def test_ctrl_c_during_edit_applies_all_or_nothing(campaign, interrupter):
    """An interrupted model.edit(op): the edit is applied and recorded, or not applied."""
    model, ops, states = campaign

    def check(_, handle) -> str:
        state = state_of(model, states)
        assert state in ("pristine", "first 1"), state
        assert model.journal.pristine == (state == "pristine")
        assert len(model.edits) == (state == "first 1"), model.journal.describe()
        if handle is not None:
            check_journal(model, [handle])
        return state

    run_campaign("edit", interrupter, model, lambda: None, lambda _: model.edit(ops[0]), check, 1)


def test_ctrl_c_during_revert_leaves_handles_and_journal_in_agreement(campaign, interrupter):
    """Reverting the oldest of three edits rewinds and re-applies the other two: an interrupt
    anywhere in that leaves the weights, the journal and every handle in agreement, and the
    other handles still revert (before: a mixed state, handles marked active that the journal
    no longer held, and then `ValueError: min() arg is an empty sequence`)."""
    model, ops, states = campaign

    def check(handles, _) -> str:
        state = state_of(model, states)
        assert state in ("first 3", "without the first"), state
        assert (handles[0].state == "reverted") == (state == "without the first")
        check_journal(model, handles)
        for h in handles[1:]:  # the others revert normally
            h.revert()
        if handles[0].state != "reverted":
            handles[0].revert()
        assert state_of(model, states) == "pristine" and model.journal.pristine
        return state

    run_campaign("revert", interrupter, model, lambda: [model.edit(op) for op in ops],
                 lambda handles: handles[0].revert(), check, 2)


def test_ctrl_c_during_revert_all_restores_everything_or_nothing(campaign, interrupter):
    model, ops, states = campaign

    def check(handles, _) -> str:
        state = state_of(model, states)
        assert state in ("pristine", "first 3"), state
        assert model.journal.pristine == (state == "pristine")
        check_journal(model, handles)
        return state

    run_campaign("revert_all", interrupter, model, lambda: [model.edit(op) for op in ops],
                 lambda _: model.revert_all(), check, 3)


def test_ctrl_c_anywhere_in_an_edited_block_leaves_the_weights_pristine(campaign, interrupter):
    """Entering (three edits), the block itself (a sleep), and leaving (three reverts):
    wherever the interrupt lands, the weights are pristine afterwards and the journal is
    empty (before: about half of the interrupted exits left the weights edited)."""
    model, ops, states = campaign
    body = timed(lambda: model.edited(*ops).__enter__()) / 2
    model.revert_all()

    def block(_):
        with model.edited(*ops):
            time.sleep(body)

    def check(_, __) -> str:
        state = state_of(model, states)
        assert state == "pristine" and model.journal.pristine, (state, model.journal.describe())
        return state

    run_campaign("edited", interrupter, model, lambda: None, block, check, 4)


# --- 2. edits validated in the weight's own dtype ------------------------------------------------


def weight_bytes(model) -> dict[str, bytes]:
    return {n: v.tobytes() for n, v in model.named_parameters()}


@pytest.mark.parametrize("make, message", [
    (lambda: edits.scale_neuron(1, 7, 1e39), r"would make blocks.1.mlp.W_out\[7\] non-finite in float32"),
    (lambda: edits.scale_neuron(1, 7, 1e39, which="in"), r"non-finite in float32"),
    (lambda: edits.scale_head(0, 1, -1e39), r"would make blocks.0.attn.W_O\[1\] non-finite"),
    (lambda: edits.scale_norm(None, "final", 1e39), r"ln_final.w\[:\] non-finite"),
    (lambda: edits.boost_embedding(5, 1e39), r"embed.W_E\[5\] non-finite"),
    (lambda: edits.set_weight("blocks.0.mlp.b_in", 3, 1e39), r"b_in\[3\] non-finite"),
    (lambda: edits.add_to_weight("blocks.0.ln1.w", None, 3e38), r"ln1.w\[...\] non-finite"),
    # finite now, but the inverse revert (×1e39, or ×inf for a factor that rounds to 0) is not
    (lambda: edits.scale_neuron(1, 7, 1e-39), r"its inverse revert would make .* non-finite"),
    (lambda: edits.scale_neuron(1, 7, 1e-50), r"its inverse revert would make"),
])
def test_edits_that_overflow_the_dtype_are_refused_before_writing(make, message):
    """Today `scale_neuron(3, 7, 1e39)` on float32 wrote inf (every logit NaN, one RuntimeWarning)."""
    model = random_model("gpt2", seed=0)
    model.blocks[0].ln1.w[...] = 1e38  # so that adding 3e38 overflows
    before = weight_bytes(model)
    with pytest.raises(MinillmError, match=message):
        model.edit(make())
    assert weight_bytes(model) == before and model.journal.pristine
    with pytest.raises(MinillmError, match="nothing was changed"):
        with model.edited(edits.zero_neuron(0, 1), make()):
            pass
    assert weight_bytes(model) == before and model.journal.pristine


def test_the_same_factor_is_fine_in_float64_and_reverts():
    model = random_model("gpt2", seed=0, dtype=np.float64)
    before = weight_bytes(model)
    h = model.edit(edits.scale_neuron(1, 7, 1e39))
    assert np.isfinite(model.blocks[1].mlp.W_out[7]).all()
    h.revert()
    assert weight_bytes(model) == before


def test_smollm2_scale_neuron_1e39_is_refused(smollm2):
    before = smollm2.blocks[3].mlp.W_out[7].copy()
    with pytest.raises(MinillmError, match=r"scale neuron 3:7 ×1e\+39 .*non-finite in float32"):
        smollm2.edit(edits.scale_neuron(3, 7, 1e39))
    assert smollm2.journal.pristine and (smollm2.blocks[3].mlp.W_out[7] == before).all()


def test_a_revert_whose_re_applied_edits_would_overflow_changes_nothing():
    """Reverting A re-applies the newer B on the weights without A; if B's result is then not
    finite the revert is refused and weights, journal and handles stay as they were."""
    model = random_model("gpt2", seed=0)
    model.blocks[0].mlp.W_out[3] = 10.0  # pristine: B (×1e38) on these overflows
    a = model.edit(edits.set_weight("blocks.0.mlp.W_out", 3, 1.0))
    b = model.edit(edits.scale_neuron(0, 3, 1e38))  # on 1.0: 1e38, finite
    before = weight_bytes(model)
    with pytest.raises(MinillmError, match="non-finite"):
        a.revert()
    assert weight_bytes(model) == before
    assert a.active and b.active and model.edits == [a, b]
    b.revert()
    a.revert()
    assert model.journal.pristine and (model.blocks[0].mlp.W_out[3] == 10.0).all()


# --- 3. bounded memory -----------------------------------------------------------------------------


def blocked(model, block_bytes: int):
    """The same model with attention in blocks of at most `block_bytes` of scores."""
    model.attention_block_bytes = block_bytes
    return model


@pytest.mark.numerics
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["gpt2", "llama_gqa_untied", "mistral", "qwen2_bias"])
def test_attention_in_query_blocks_equals_all_at_once(name, dtype):
    """Blocks of 1 and of 3 queries (only the keys each block can see) against all queries at
    once, on a left-padded batch (mistral: sliding window) and in cached decoding. Other GEMM
    shapes: the reorder tolerance of tests/numerics.py in float32, 1e-12 in float64."""
    from safetensors.numpy import load_file

    from tests.conftest import golden_folder
    from tests.numerics import assert_model_close

    ref = load_file(str(golden_folder(name) / "reference.safetensors"))
    ids, mask = ref["ragged_input_ids"], ref["ragged_attention_mask"]
    full = minillm.load(golden_folder(name), dtype=dtype)
    want = full(ids, attention_mask=mask)
    for rows in (1, 3):
        model = blocked(minillm.load(golden_folder(name), dtype=dtype),
                        rows * ids.shape[0] * full.cfg.n_heads * ids.shape[1] * full.dtype.itemsize)
        got = model(ids, attention_mask=mask)
        assert_model_close(model, got[mask == 1], want[mask == 1], f"{name}, blocks of {rows}")
        cache = KVCache.for_model(model, batch=ids.shape[0])  # a prefix, then the rest in blocks
        first = model(ids[:, :4], attention_mask=mask[:, :4], cache=cache)
        rest = model(ids[:, 4:], attention_mask=mask[:, 4:], cache=cache)
        steps = np.concatenate([first, rest], axis=1)
        assert_model_close(model, steps[mask == 1], want[mask == 1], f"{name}, cached, blocks of {rows}")


def attention_peak(model, p: int) -> int:
    """Peak bytes NumPy allocates during one forward pass of p tokens (last logits only)."""
    ids = np.arange(p)[None] % model.cfg.d_vocab
    tracemalloc.start()
    try:
        model(ids, last_only=True)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_grows_linearly_with_the_prompt_when_no_hook_reads_the_pattern():
    """Quadrupling the prompt quadruples the memory of a forward pass (plus the fixed size of
    one block of scores), instead of multiplying it by 16 as the [b, h, p, P] pattern did:
    then an 8192-token prompt needed 10 GB on SmolLM2."""
    model = blocked(random_model("gpt2", n_positions=4096, n_embd=32, n_head=4), 2**20)
    small, large = attention_peak(model, 512), attention_peak(model, 2048)
    assert large < 5.5 * small, f"{large / 2**20:.1f} MiB at 2048 tokens vs {small / 2**20:.1f} at 512"
    with model.hooks([("blocks.0.attn.hook_pattern", lambda a, h: None)]):  # a reader: full pattern
        assert attention_peak(model, 2048) > 4 * 2048 * 2048 * 4


def test_a_pattern_too_large_for_the_limit_is_refused_before_computing(smollm2):
    """run_with_cache of an 8192-token prompt would hold 60 patterns of 2.25 GiB: refused at
    once, naming the size and the setting that raises the limit; nothing runs."""
    ids = np.full((1, 8192), 42)

    def computing(act, hook):  # the first hook point: reaching it means the check came too late
        raise AssertionError("the forward pass started before the pattern size was checked")

    with smollm2.hooks([("hook_embed", computing)]):
        with pytest.raises(MinillmError, match=r"\[1, 9, 8192, 8192\] float32 .*2.4 GB apiece.*"
                                               r"model.pattern_memory_limit = "):
            smollm2.run_with_cache(ids)
    assert not smollm2.hooks


def test_the_pattern_limit_can_be_raised():
    model = random_model("llama")
    ids = np.array([[1, 2, 3, 4, 5, 6]])
    model.pattern_memory_limit = 1000  # bytes
    with pytest.raises(MinillmError, match="pattern_memory_limit"):
        model.run_with_cache(ids, names_filter=lambda n: n.endswith("hook_pattern"))
    model(ids)  # no pattern hook: no limit
    model.pattern_memory_limit = 10**6
    _, cache = model.run_with_cache(ids, names_filter=lambda n: n.endswith("hook_pattern"))
    assert cache["pattern", 1].shape == (1, 4, 6, 6)


def sparse_checkpoint(folder, d: int, vocab: int, m: int, heads: int):
    """A one-layer tied llama checkpoint whose tensors are holes in a sparse file: the header
    is real, the data takes no disk (and would take its full size in memory)."""
    import json
    import struct

    e = d // heads
    shapes = {"model.embed_tokens.weight": [vocab, d], "model.norm.weight": [d],
              "model.layers.0.input_layernorm.weight": [d],
              "model.layers.0.post_attention_layernorm.weight": [d]}
    for proj in ("q", "k", "v"):
        shapes[f"model.layers.0.self_attn.{proj}_proj.weight"] = [d, d]
    shapes["model.layers.0.self_attn.o_proj.weight"] = [d, d]
    shapes["model.layers.0.mlp.gate_proj.weight"] = [m, d]
    shapes["model.layers.0.mlp.up_proj.weight"] = [m, d]
    shapes["model.layers.0.mlp.down_proj.weight"] = [d, m]
    header, offset = {}, 0
    for name, shape in shapes.items():
        n = int(np.prod(shape)) * 4
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header).encode()
    folder.mkdir()
    with open(folder / "model.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        f.truncate(8 + len(raw) + offset)  # a hole: no data written
    (folder / "config.json").write_text(json.dumps(dict(
        model_type="llama", hidden_size=d, intermediate_size=m, num_hidden_layers=1,
        num_attention_heads=heads, num_key_value_heads=heads, head_dim=e, vocab_size=vocab,
        max_position_embeddings=64, tie_word_embeddings=True)))
    return offset


def test_a_sparse_checkpoint_larger_than_memory_is_refused_naming_the_tensor(tmp_path):
    """128 GiB of float32 in a sparse file. Before: NumPy's MemoryError (or, with memory
    overcommit, the OOM killer while copying); now a MinillmError before allocating."""
    try:
        size = sparse_checkpoint(tmp_path / "huge", d=2048, vocab=2**24, m=2048, heads=16)
    except OSError as e:
        pytest.skip(f"this filesystem cannot hold a sparse 128 GiB file ({e})")
    assert size > 2**37
    with pytest.raises(MinillmError, match=r"model.embed_tokens.weight \[16777216, 2048\], alone "
                                           r"needs 137.4 GB"):
        minillm.load(tmp_path / "huge")
    with pytest.raises(MinillmError, match=r"need 27\d.\d GB as float64"):
        minillm.load(tmp_path / "huge", dtype=np.float64)


def test_loading_peaks_near_the_model_size_not_model_plus_file():
    """Peak RSS of a fresh process loading SmolLM2, over the weight file's size. Before: 2.1x
    (the memory-mapped file's pages and the model's copy both resident); now <= 1.3x."""
    import json

    script = """
import json, os, sys
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
import minillm
from pathlib import Path
model = minillm.load("smollm2-135m")
size = sum(f.stat().st_size for f in Path(model.path).glob("*.safetensors"))
print(json.dumps(dict(file=size, after=status("VmRSS"), peak=status("VmHWM"))))
"""
    if not os.path.exists("/proc/self/status"):
        pytest.skip("needs Linux's /proc/self/status for the peak RSS")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"load: file {r['file'] / 2**20:.0f} MiB, peak RSS {r['peak'] / r['file']:.2f}x, "
          f"after {r['after'] / r['file']:.2f}x")
    assert r["peak"] <= 1.3 * r["file"], f"peak RSS {r['peak'] / r['file']:.2f}x the file"


# --- 4. bad input: one clear MinillmError, never a raw traceback -----------------------------------


@pytest.mark.parametrize("call, message", [
    (lambda m: m.to_tokens("hi \ud800"), r"lone surrogate '\\ud800' \(U\+D800\) at index 3"),
    (lambda m: m.generate("hi \udcff", max_new_tokens=1), r"lone surrogate"),
    (lambda m: m(m.to_tokens("hello there"), attention_mask=np.array([[1.0, np.nan]])),
     r"attention_mask must hold only 0 \(padding\) and 1 \(token\); it has nan at index \(0, 1\)"),
    (lambda m: m(m.to_tokens("hello there"), attention_mask=np.array([[2, 1]])),
     r"it has 2 at index \(0, 0\)"),
    (lambda m: m.to_tokens([]), r"non-empty list of texts"),
    (lambda m: m.to_string([-1]),
     r"token id -1 at index 0 is outside the vocabulary of .*tokenizer.json \(0 .. 49151\)"),
    (lambda m: m.to_string([5, 10**6]), r"token id 1000000 at index 1 is outside the vocabulary"),
    (lambda m: m.generate("hi", max_new_tokens=2, temperature=5e-324),
     r"temperature 4.94066e-324 is too small"),
    (lambda m: m.generate("hi", max_new_tokens=2, temperature="1"), r"temperature must be a number"),
    (lambda m: m.generate("hi", max_new_tokens=2, temperature=1.0, seed=-1), r"seed must be a non-negative"),
    (lambda m: m.generate("hi", max_new_tokens=2, temperature=1.0, seed="abc"), r"got 'abc'"),
    (lambda m: m.generate("hi", max_new_tokens=2, stop=[1]), r"stop must be a non-empty string"),
    (lambda m: m.run_with_hooks(m.to_tokens("hi"), [(lambda n: n.endswith("nothing"), lambda a, h: None)]),
     r"the hook predicate <lambda> matches no hook name"),
    (lambda m: m.run_with_cache(m.to_tokens("hi"), names_filter=lambda n: "hook_nothing" in n),
     r"matches no hook name"),
])
def test_bad_api_input_is_one_clear_error(smollm2, call, message):
    """Before: TypeError, ValueError, OverflowError, NumPy's 'Probabilities contain NaN', or
    silently: '' for an unknown id, NaN masks used as weights, an empty cache."""
    with pytest.raises(MinillmError, match=message):
        call(smollm2)
    assert not smollm2.hooks and smollm2.journal.pristine


def test_config_json_that_is_a_folder_or_a_fifo_is_refused(tmp_path):
    """A FIFO named config.json made loading hang forever; a folder gave a raw error."""
    import shutil

    from tests.conftest import golden_folder

    for kind in ("folder", "fifo"):
        folder = tmp_path / kind
        shutil.copytree(golden_folder("llama_tied"), folder)
        (folder / "config.json").unlink()
        if kind == "folder":
            (folder / "config.json").mkdir()
        else:
            if not hasattr(os, "mkfifo"):
                continue
            os.mkfifo(folder / "config.json")
        with pytest.raises(MinillmError, match=r"config.json: is (a folder|not a regular file)"):
            minillm.load(folder)


def cli_error(argv, capsys, monkeypatch) -> str:
    """Run the CLI; it must fail with one line 'minillm CMD: error: ...' without loading a model."""
    from minillm import cli

    def no_loading(*a, **k):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(minillm, "load", no_loading)
    assert cli.main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"minillm {argv[0]}: error: ") and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("argv, message", [
    (["generate", "smollm2-135m", "hi", "--seed", "-1"], "seed must be a non-negative integer"),
    (["generate", "smollm2-135m", "hi", "--max-new-tokens", "-5"], "--max-new-tokens must be >= 0"),
    (["generate", "smollm2-135m", "hi \udcff"], "lone surrogate"),
    (["generate", "smollm2-135m", "hi", "--stop", ""], "stop must be a non-empty string"),
    (["lens", "smollm2-135m", "hi \ud800"], "lone surrogate"),
    (["edit", "smollm2-135m", "\ud800", "--scale-neuron", "5:1:0.5"], "lone surrogate"),
    (["lesson", "run", "abc"], "a lesson number is an integer"),
])
def test_bad_cli_arguments_fail_before_loading(argv, message, capsys, monkeypatch):
    assert message in cli_error(argv, capsys, monkeypatch)


def test_cli_outputs_that_cannot_be_written_fail_before_loading(tmp_path, capsys, monkeypatch):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    cases = [
        (["dump", "smollm2-135m", "hi", "-o", str(tmp_path)], "it is a folder"),
        (["dump", "smollm2-135m", "hi", "-o", str(a_file / "x.safetensors")], "is a file, not a folder"),
        (["lens", "smollm2-135m", "hi", "--out", str(a_file / "l.png")], "is a file, not a folder"),
        (["patch", "smollm2-135m", "--out", str(a_file)], "is a file, not a folder"),
    ]
    read_only = tmp_path / "read_only"
    read_only.mkdir()
    read_only.chmod(0o555)
    if not os.access(read_only, os.W_OK):  # (root may write anyway: then it is not refused)
        cases += [(["dump", "smollm2-135m", "hi", "-o", str(read_only / "d.safetensors")], "not writable"),
                  (["lens", "smollm2-135m", "hi", "--out", str(read_only / "l.png")], "not writable"),
                  (["patch", "smollm2-135m", "--out", str(read_only / "p")], "not writable")]
    for argv, message in cases:
        assert message in cli_error(argv, capsys, monkeypatch), argv
    read_only.chmod(0o755)


def test_edit_of_a_one_token_prompt_says_why(smollm2):
    """Before: 'n_new must be between 1 and 0'."""
    from minillm.edit.drift import measure_drift

    with pytest.raises(MinillmError, match=r"the prompt is 1 token long: measuring drift needs at least 2"):
        measure_drift(smollm2, "hi", [edits.scale_neuron(5, 1, 0.5)])
    assert smollm2.journal.pristine
