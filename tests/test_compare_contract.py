"""`minillm compare` for other languages: --json, 1-D input ids, logits named by their token,
a hint when the candidate holds the right numbers in another layout, and dumps written
with a normal file mode."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest

from minillm.cli import main
from minillm.errors import MinillmError
from minillm.verify import compare, run_dump, save_dump
from tests.conftest import random_model

PROMPT = "It was a dark and stormy"


@pytest.fixture(scope="module")
def ref(smollm2):
    return run_dump(smollm2, PROMPT, hooks="blocks.0.*,hook_logits")


def test_one_dimensional_ids_are_the_same_input(ref):
    acts = {k: v for k, v in ref.acts.items()}
    same = compare(ref, {**acts, "input_ids": ref.input_ids[0]})  # [p], as most ports write it
    assert same.passed
    with pytest.raises(MinillmError, match="different inputs"):
        compare(ref, {**acts, "input_ids": ref.input_ids[0][::-1].copy()})


def test_json_report_is_plain_data(smollm2, ref, tmp_path, capsys):
    path = save_dump(ref, tmp_path / "ref.safetensors")
    night = smollm2.to_single_token(" night")
    bad = dict(ref.acts)
    bad["hook_logits"] = bad["hook_logits"] + np.eye(1, bad["hook_logits"].shape[-1], night)[None] * 5
    np.savez(tmp_path / "bad.npz", input_ids=ref.input_ids, **bad)
    assert main(["compare", str(path), str(tmp_path / "bad.npz"), "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["passed"] is False
    first = data["first_divergence"]
    assert first["name"] == "hook_logits" and first["index"][-1] == night
    # the logit is named by its token's text (the reference dump names its model)
    assert f"token id {night} (' night')" in first["where"]
    assert {h["name"] for h in data["hooks"]} == set(ref.acts)


def test_a_transposed_candidate_gets_the_transpose_to_apply(ref):
    acts = dict(ref.acts)
    name = "blocks.0.attn.hook_z"  # [1, p, h, e]
    acts[name] = np.ascontiguousarray(acts[name].transpose(0, 2, 1, 3))  # [1, h, p, e]: heads first
    with pytest.raises(MinillmError, match=r"np.transpose\(candidate, \(0, 2, 1, 3\)\) matches"):
        compare(ref, {**acts, "input_ids": ref.input_ids})
    # a square transposition (same shape): key and query swapped in the pattern
    acts = dict(ref.acts)
    name = "blocks.0.attn.hook_pattern"
    acts[name] = np.ascontiguousarray(acts[name].transpose(0, 1, 3, 2))
    report = compare(ref, {**acts, "input_ids": ref.input_ids})
    assert report.first_failure.name == name
    assert "np.transpose(candidate, (0, 1, 3, 2)) matches" in report.first_failure.hint


def test_the_gguf_rotary_order_is_recognised(ref):
    acts = dict(ref.acts)
    e = acts["blocks.0.attn.hook_rot_q"].shape[-1]
    j = np.arange(e)
    pairs = (j % 2) * (e // 2) + j // 2
    for name in ("blocks.0.attn.hook_q", "blocks.0.attn.hook_rot_q"):
        acts[name] = np.ascontiguousarray(acts[name][..., pairs])  # as llama.cpp lays a head out
    report = compare(ref, {**acts, "input_ids": ref.input_ids})
    assert report.first_failure.name == "blocks.0.attn.hook_q"
    assert "adjacent-pair rotary order" in report.first_failure.hint
    assert "adjacent-pair rotary order" in report.summary()


def test_a_reshaped_candidate_is_named():
    model = random_model("llama")
    d = run_dump(model, np.array([[1, 2, 3]]), hooks="blocks.0.attn.hook_q")
    q = d.acts["blocks.0.attn.hook_q"]
    flat = {"blocks.0.attn.hook_q": q.reshape(1, 3, -1), "input_ids": d.input_ids}
    with pytest.raises(MinillmError, match=r"candidate.reshape\(\[1, 3, 4, 8\]\) matches"):
        compare(d, flat)


def test_dumps_have_a_normal_file_mode(ref, tmp_path):
    old = os.umask(0o022)
    try:
        path = save_dump(ref, tmp_path / "mode.safetensors")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # mkstemp alone gives 0600
