"""Safety guarantees: no code from data, nothing half-done, limits checked before computing.

See docs/safety.md for the guarantees these tests stand behind.
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minillm
from minillm import verify
from minillm.checkpoints.hf import save_pretrained
from minillm.errors import CheckpointError, MinillmError
from minillm.interp import interventions as iv
from minillm.interp.batch import run_batch, run_variants
from minillm.verify.diagnostics import first_nonfinite, first_nonfinite_in_cache
from tests.conftest import random_model

PACKAGE = Path(minillm.__file__).parent


def weights_bytes(model) -> dict[str, bytes]:
    return {name: p.tobytes() for name, p in model.named_parameters()}


# --------------------------------------------------------------------------- no code from data


def test_no_pickle_anywhere_in_the_package():
    """No module may unpickle: no pickle/dill/joblib import, no torch.load, no allow_pickle=True.

    torch itself is imported only lazily, inside the optional `bench` comparison
    (commands/benchmark.py; never at module level), so the core never touches a torch file format.
    """
    forbidden = re.compile(
        r"allow_pickle\s*=\s*True|torch\.load|^\s*(import|from)\s+(pickle|cPickle|dill|joblib|shelve)\b"
        r"|pickle\.loads?\(|^(import\s+torch|from\s+torch\b)",
        re.MULTILINE,
    )
    lazy_torch = re.compile(r"^\s+(import\s+torch|from\s+torch\b)", re.MULTILINE)
    hits = []
    for path in PACKAGE.rglob("*.py"):
        text, rel = path.read_text(), str(path.relative_to(PACKAGE))
        hits += [f"{rel}: {m.group(0).strip()}" for m in forbidden.finditer(text)]
        if rel != "commands/benchmark.py":
            hits += [f"{rel}: {m.group(0).strip()}" for m in lazy_torch.finditer(text)]
    assert not hits, hits


class _Payload:
    """Unpickling this would create a marker file: proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("name", ["pytorch_model.bin", "model.pt", "model.safetensors"])
def test_torch_and_pickle_files_are_refused_without_running_them(tmp_path, name):
    folder = tmp_path / "ckpt"
    save_pretrained(random_model("llama"), folder)
    (folder / "model.safetensors").unlink()
    marker = tmp_path / "code-ran"
    (folder / name).write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(CheckpointError) as info:
        minillm.load(folder)
    assert not marker.exists()
    if name != "model.safetensors":
        assert "pickle" in str(info.value) and name in str(info.value)
    else:
        assert "not a valid safetensors file" in str(info.value)


def test_chat_templates_run_in_a_sandbox():
    from minillm.chat import render_chat_template

    messages = [{"role": "user", "content": "hi"}]
    for evil in ["{{ ''.__class__.__mro__[1].__subclasses__() }}",
                 "{{ messages.__class__.__init__.__globals__ }}",
                 "{% set _ = messages.append(1) %}"]:
        with pytest.raises(MinillmError, match="sandbox|failed to render"):
            render_chat_template(evil, messages)


# --------------------------------------------------------------------------- nothing half-done


def test_an_exception_inside_hooks_leaves_no_hooks(tiny):
    ids = np.array([[1, 2, 3, 4]])
    clean = tiny(ids)
    with pytest.raises(RuntimeError), tiny.hooks([(lambda n: True, lambda act, hook: act * 0)]):
        raise RuntimeError("user code fails inside the block")
    assert not tiny.hooks

    def boom(act, hook):
        raise ValueError("a hook that fails mid-forward")

    with pytest.raises(ValueError):
        tiny.run_with_hooks(ids, [("blocks.1.hook_resid_pre", boom), ("hook_embed", lambda a, h: a * 2)])
    assert not tiny.hooks
    assert (tiny(ids) == clean).all()


def test_an_exception_inside_edited_leaves_the_weights_pristine(tiny):
    before = weights_bytes(tiny)
    with pytest.raises(RuntimeError), tiny.edited(minillm.edits.scale_neuron(layer=1, neuron=3, factor=0.04),
                                                  minillm.edits.zero_head(layer=0, head=1)):
        assert weights_bytes(tiny) != before
        raise RuntimeError("user code fails inside the block")
    assert weights_bytes(tiny) == before and not tiny.edits
    with pytest.raises(MinillmError):  # an edit that fails validation changes nothing either
        with tiny.edited(minillm.edits.scale_neuron(layer=0, neuron=1, factor=2.0),
                         minillm.edits.scale_neuron(layer=99, neuron=1, factor=2.0)):
            pass
    assert weights_bytes(tiny) == before


def _interrupt(*args, **kwargs):
    raise KeyboardInterrupt


def test_interrupted_save_pretrained_leaves_no_complete_looking_file(tmp_path, monkeypatch):
    import safetensors.numpy

    def half_then_interrupt(tensors, path, metadata=None):
        Path(path).write_bytes(b"\x00" * 100)  # a partial file, then Ctrl-C
        raise KeyboardInterrupt

    monkeypatch.setattr(safetensors.numpy, "save_file", half_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        save_pretrained(random_model("gpt2"), tmp_path / "out")
    assert not (tmp_path / "out" / "model.safetensors").exists()
    assert not (tmp_path / "out" / "config.json").exists()


def test_interrupted_dump_leaves_no_file(tmp_path, monkeypatch):
    model = random_model("llama")
    import safetensors.numpy

    monkeypatch.setattr(safetensors.numpy, "save_file", _interrupt)
    with pytest.raises(KeyboardInterrupt):
        verify.dump(model, np.array([[1, 2, 3]]), tmp_path / "run.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_interrupted_gguf_conversion_leaves_no_folder(tmp_path, monkeypatch):
    from minillm.checkpoints import gguf as conv
    from tests.test_gguf_convert import tiny_weights, write_tiny_gguf

    path = write_tiny_gguf(tmp_path / "tiny.gguf", tiny_weights(False))
    monkeypatch.setattr(conv, "_write_safetensors", _interrupt)
    with pytest.raises(KeyboardInterrupt):
        conv.convert_gguf_to_hf(path, tmp_path / "hf")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.gguf"]


def test_ctrl_c_during_a_batched_run_keeps_partial_results_and_a_pristine_model(tiny):
    kept = tiny.edit(minillm.edits.scale_neuron(layer=0, neuron=0, factor=0.5))  # made before: stays
    def user_hook(act, hook):
        return None

    tiny.hooks.add("hook_embed", user_hook)  # registered before the run: stays
    before, hooks_before = weights_bytes(tiny), tiny.hooks.snapshot()
    ids = np.array([[1, 2, 3]])
    calls = []

    def metric(logits):  # the third forward pass is "interrupted"
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return logits[:, -1, 0]

    variants = [[iv.scale("resid_pre", 0.5, layer=0, pos=p % 3)] for p in range(6)]
    res = run_batch(tiny, ids, variants, metric, batch_size=2)
    assert res.interrupted and res.done == 4
    assert np.isfinite(res.values[:4]).all() and np.isnan(res.values[4:]).all()
    assert weights_bytes(tiny) == before and tiny.edits == [kept]
    assert tiny.hooks.snapshot() == hooks_before  # the run's hooks are gone, the user's is there
    with pytest.raises(KeyboardInterrupt):  # run_variants returns arrays: Ctrl-C propagates
        calls.clear()
        run_variants(tiny, ids, variants, batch_size=2, metric=metric)
    assert tiny.hooks.snapshot() == hooks_before


# --------------------------------------------------------------------------- resource limits


def test_past_the_context_fails_before_computing(tiny):
    fired = []
    n_ctx = tiny.cfg.n_ctx
    with tiny.hooks([("hook_embed", lambda act, hook: fired.append(1))]):
        with pytest.raises(MinillmError, match="context length"):
            tiny(np.zeros((1, n_ctx + 1), np.int64))
        with pytest.raises(MinillmError, match="context length"):
            tiny.generate(np.zeros((1, n_ctx - 4), np.int64), max_new_tokens=5, return_ids=True)
        with pytest.raises(MinillmError, match="context length"):
            tiny.generate(np.zeros((1, 2), np.int64), max_new_tokens=10**12, return_ids=True)
        tiny.generate(np.zeros((1, n_ctx - 4), np.int64), max_new_tokens=4, return_ids=True)  # fits
    assert len(fired) >= 1 and fired.count(1) == len(fired)
    fired.clear()
    with tiny.hooks([("hook_embed", lambda act, hook: fired.append(1))]):
        with pytest.raises(MinillmError):
            tiny.generate(np.zeros((1, n_ctx), np.int64), max_new_tokens=1, return_ids=True)
    assert fired == []


def test_a_large_dump_needs_an_explicit_flag_and_warns_with_its_size(tmp_path):
    model = random_model("llama")
    ids = np.arange(20)[None, :]
    out = tmp_path / "big.safetensors"
    need = sum(verify.estimate_bytes(model, verify.select_hooks(model.hook_names(), None), 1, 20).values())
    with pytest.raises(MinillmError, match="allow_large=True"):
        verify.dump(model, ids, out, max_bytes=need // 2)
    assert not out.exists()
    with pytest.warns(UserWarning, match=r"would hold about .*B"):
        verify.dump(model, ids, out, max_bytes=need // 2, allow_large=True)
    assert out.exists()


# --------------------------------------------------------------------------- non-finite values


def test_nonfinite_weights_load_with_a_warning_naming_the_tensors(tmp_path):
    model = random_model("llama")
    model.blocks[1].mlp.W_out[5, 2] = np.nan
    model.embed.W_E[7, 0] = np.inf
    save_pretrained(model, tmp_path / "ckpt")
    with pytest.warns(UserWarning) as record:
        loaded = minillm.load(tmp_path / "ckpt")
    message = " ".join(str(r.message) for r in record)
    assert "model.layers.1.mlp.down_proj.weight" in message and "model.embed_tokens.weight" in message
    assert "non-finite" in message
    assert np.isnan(loaded.blocks[1].mlp.W_out[5, 2])  # loaded as is: a legitimate thing to study


def test_first_nonfinite_reports_the_first_hook_and_position(tiny):
    ids = np.array([[1, 2, 3, 9, 4, 5]])
    assert first_nonfinite(tiny, ids) is None
    tiny.embed.W_E[9, 4] = np.nan  # token 9 sits at position 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        found = first_nonfinite(tiny, ids)
        _, cache = tiny.run_with_cache(ids)
    assert found.hook == "hook_embed" and found.index == (0, 3, 4) and np.isnan(found.value)
    assert found.layer is None and found.count == 1
    in_cache = first_nonfinite_in_cache(cache)
    assert (in_cache.hook, in_cache.index, in_cache.count) == (found.hook, found.index, found.count)
    assert "hook_embed" in str(found) and "(0, 3, 4)" in str(found)


def test_first_nonfinite_finds_a_nan_introduced_inside_a_layer(tiny):
    ids = np.array([[1, 2, 3, 4]])
    tiny.blocks[1].mlp.W_out[2, :] = np.inf  # MLP of layer 1: everything before stays finite
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        found = first_nonfinite(tiny, ids)
        _, cache = tiny.run_with_cache(ids)
    assert found.hook == "blocks.1.hook_mlp_out" and found.layer == 1
    assert first_nonfinite_in_cache(cache).hook == found.hook
    before = list(cache)[: list(cache).index(found.hook)]
    assert all(np.isfinite(cache[n]).all() for n in before if not n.endswith("hook_attn_scores"))

    def poison(act, hook):  # an intervention that introduces a NaN is found too
        act = act.copy()
        act[0, 2, 1] = np.nan
        return act

    tiny.blocks[1].mlp.W_out[2, :] = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        found = first_nonfinite(tiny, ids, fwd_hooks=[("blocks.0.attn.hook_z", poison)])
    assert found.hook == "blocks.0.attn.hook_z" and found.index == (0, 2, 1, 0)  # head 1 of position 2
    assert found.count == tiny.cfg.d_head


# --------------------------------------------------------------------------- paths


@settings(max_examples=300, deadline=None)
@given(name=st.one_of(st.text(max_size=20), st.sampled_from(["..", "../x", "/etc/passwd", "a/../b",
                                                             "C:\\x", "x\x00y", ".hidden", "f.part"])))
def test_accepted_file_names_stay_inside_the_folder(tmp_path_factory, name):
    from minillm.checkpoints.download import safe_filename

    folder = tmp_path_factory.getbasetemp() / "weights" / "model"
    try:
        safe_filename(name, "the index")
    except CheckpointError as e:
        assert "not a plain file name" in str(e)
        return
    target = Path(os.path.normpath(folder / name))
    assert target.parent == folder and name not in ("", ".", "..")


@pytest.mark.parametrize("template, message", [
    ("{{ 'a' * 10**9 }}", "forbids"),
    ("{{ 2 ** 100000 }}", "forbids"),
    ("{% for i in range(90000) %}{% for j in range(90000) %}{% endfor %}{% endfor %}", "took more than"),
])
def test_hostile_chat_templates_are_stopped(template, message, monkeypatch):
    """A chat template is code from a downloaded file: it may not hang or exhaust memory."""
    from minillm import chat

    monkeypatch.setattr(chat, "RENDER_SECONDS", 0.5)
    with pytest.raises(MinillmError, match=message):
        chat.render_chat_template(template, [{"role": "user", "content": "hi"}])
