"""The verification contract (`minillm hooks MODEL --json`, docs/hooks.md) says what the model
does: every hook it fires is listed, with the shape its array really has."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

import minillm
from minillm.cli import main
from minillm.verify.contract import HOOKS, contract, hook_shape, symbolic_shape
from tests.conftest import FIXTURES

ROOT = Path(__file__).resolve().parents[1]
FAMILY_FOLDERS = sorted(p.name for p in FIXTURES.iterdir() if (p / "config.json").is_file())


@pytest.mark.parametrize("folder", FAMILY_FOLDERS)
def test_every_hook_is_in_the_contract_with_its_real_shape(folder):
    model = minillm.load(FIXTURES / folder)
    model.set_use_attn_result(True)  # every hook fires, attn.hook_result too
    data = contract(model.cfg)
    assert [h["name"] for h in data["hooks"]] == model.hook_names()  # the model's own list, in order
    for b, p in ((1, 3), (2, 5)):
        ids = np.random.default_rng(0).integers(0, model.cfg.d_vocab, (b, p))
        _, cache = model.run_with_cache(ids, names_filter=lambda n: True)
        assert sorted(cache.keys()) == sorted(model.hook_names())
        for name in model.hook_names():
            assert cache[name].shape == hook_shape(model.cfg, name, b, p), (folder, name)
    # the JSON is plain data, and the sizes are the config's
    back = json.loads(json.dumps(data))
    q = next(h for h in back["hooks"] if h["name"] == "blocks.0.attn.hook_q")
    assert q["shape"] == ["batch", "pos", "n_heads", "d_head"]
    assert q["sizes"] == [None, None, model.cfg.n_heads, model.cfg.d_head]


def test_a_kv_cache_makes_key_pos_longer_than_pos():
    model = minillm.load(FIXTURES / "llama_gqa_untied")
    cache = minillm.KVCache.for_model(model)
    model(np.array([[1, 2, 3]]), cache=cache)
    name = "blocks.0.attn.hook_pattern"
    _, acts = model.run_with_cache(np.array([[4, 5]]), names_filter=name, cache=cache)
    assert acts[name].shape == hook_shape(model.cfg, name, 1, 2, 5) == (1, 4, 2, 5)


def test_the_docs_list_every_hook_with_the_same_shape():
    text = (ROOT / "docs" / "hooks.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| `(?:blocks\.l\.)?([\w.]+)` \| `\[([\w, ]+)\]`", text, re.M))
    for suffix, (shape, _) in HOOKS.items():
        assert suffix in rows, f"docs/hooks.md does not list {suffix}"
        assert rows[suffix].replace(" ", "") == ",".join(shape), (suffix, rows[suffix])


def test_hooks_command_prints_the_contract_as_json(capsys):
    assert main(["hooks", str(FIXTURES / "gpt2"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["family"] == "gpt2" and data["conventions"]["rope"] is None
    assert data["conventions"]["norm"]["kind"] == "layernorm"
    assert len(data["hooks"]) == len(minillm.load(FIXTURES / "gpt2").hook_names())
    assert main(["hooks", str(FIXTURES / "llama_gqa_untied")]) == 0
    out = capsys.readouterr().out
    assert "blocks.0.attn.hook_k" in out and "[batch, pos, n_kv_heads, d_head] = [b, p, 2, 16]" in out
    assert "kv head of query head h: h // 2" in out


def test_unknown_names_are_refused():
    with pytest.raises(KeyError, match="not in the verification contract"):
        symbolic_shape("blocks.0.attn.hook_nothing")
