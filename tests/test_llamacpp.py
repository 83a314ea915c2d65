"""llama.cpp's names and dumps, against real llama.cpp output.

tests/fixtures/llamacpp/ holds what `llama-eval-callback` printed for the prompt "It was a
dark and stormy" (6 tokens) on SmolLM2-135M-Instruct, cut to the nodes of blocks 0 and 29
and the output (see tests/fixtures/README.md): once with the Q4_1 GGUF the offline model
is converted from, once with the same tensors dequantized to an F32 GGUF and a float32 KV
cache. With float32 weights, llama.cpp and minillm agree on every printed element within
the printing's rounding (5e-5) plus float32 summation order (1e-4 of the node's scale);
the Q4_1 run differs by a few percent (llama.cpp quantizes activations to Q8 for its
matmuls), which the default tolerance catches at the first matmul.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from minillm.cli import main
from minillm.verify import llamacpp
from minillm.verify.dumps import run_dump, save_dump
from tests.conftest import FIXTURES

F32 = FIXTURES / "llamacpp" / "smollm2_f32_eval_callback.txt"
Q4_1 = FIXTURES / "llamacpp" / "smollm2_q4_1_eval_callback.txt"
PROMPT = "It was a dark and stormy"


def test_the_text_dump_is_parsed_node_by_node():
    (run,) = llamacpp.read_eval_callback(F32)
    assert [t.name for t in run[:4]] == ["inp_embd", "norm-0", "attn_norm-0", "Qcur-0"]
    embd = run[0]
    assert embd.ne == (576, 6, 1, 1) and embd.op == "GET_ROWS"
    assert embd.sources == ["token_embd.weight", "inp_tokens"]
    assert len(embd.values) == 6 * 6  # 6 rows, first and last 3 columns
    assert embd.values[(0, 0, 0, 0)] == -0.0161 and embd.total == pytest.approx(0.215981)
    assert abs(sum(embd.values.values()) - embd.total) < 1e-3  # the printed sum is of these
    qrope = next(t for t in run if t.name == "Qcur-0" and t.op == "ROPE")
    assert qrope.ne == (64, 9, 6, 1)


def test_float32_llamacpp_agrees_with_minillm_on_every_mapped_node(smollm2):
    report = llamacpp.compare_eval_callback(smollm2, F32, PROMPT)
    assert report.p == 6 and report.passed, report.table()
    hooks = {r.hook for r in report.rows}
    for hook in ("hook_embed", "blocks.0.attn.hook_q", "blocks.0.attn.hook_rot_k",
                 "blocks.0.attn.hook_pattern", "blocks.0.attn.hook_z", "blocks.0.mlp.hook_post",
                 "blocks.29.hook_resid_post", "ln_final.out", "hook_logits"):
        assert hook in hooks, hook
    assert max(r.max_abs for r in report.rows) < 1e-4
    assert sum(r.n for r in report.rows) > 3000


def test_the_quantized_run_fails_at_the_first_matmul_and_passes_at_a_quantization_tolerance(smollm2):
    report = llamacpp.compare_eval_callback(smollm2, Q4_1, PROMPT)
    assert not report.passed and report.first_failure.hook == "blocks.0.attn.hook_q"
    loose = llamacpp.compare_eval_callback(smollm2, Q4_1, PROMPT, rtol=0.1)
    assert loose.passed, loose.table()


def test_the_rotary_layout_is_what_makes_q_and_k_agree(smollm2, monkeypatch):
    """Without undoing GGUF's adjacent-pair order, q and k disagree at once."""
    monkeypatch.setattr(llamacpp, "rotary_order", lambda d: np.arange(d))
    report = llamacpp.compare_eval_callback(smollm2, F32, PROMPT)
    failing = [r.hook for r in report.rows if not r.passed]
    assert failing[0] == "blocks.0.attn.hook_q"
    assert all(".hook_q" in h or ".hook_k" in h or "rot_" in h for h in failing)


def test_compare_command_reads_llamacpp_dumps(smollm2, tmp_path, capsys):
    ref = save_dump(run_dump(smollm2, PROMPT), tmp_path / "ref.safetensors")
    assert main(["compare", str(ref), str(F32), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["passed"] and data["p"] == 6 and data["first_divergence"] is None
    assert main(["compare", str(Q4_1), "--live", "smollm2-135m", "--dtype", "float32",
                 "--prompt", PROMPT]) == 1
    assert "first divergence: Qcur-0 (blocks.0.attn.hook_q)" in capsys.readouterr().out


def test_full_tensors_under_llamacpp_names_become_hooks(smollm2):
    """from_gguf_named: arrays in ggml's order under graph names -> minillm's hooks."""
    cfg = smollm2.cfg
    ids = smollm2.to_tokens(PROMPT)
    _, cache = smollm2.run_with_cache(ids)
    p, e = ids.shape[1], cfg.d_head
    perm = llamacpp.rotary_order(e)  # minillm index of llama.cpp element j
    llama = {
        "inp_embd": cache["hook_embed"][0],  # {d, p} = numpy [p, d]
        "Qcur-0": cache["blocks.0.attn.hook_q"][0][..., perm].reshape(p, -1),  # {h·e, p}
        "Kcur-0 (rope)": cache["blocks.0.attn.hook_rot_k"][0][..., perm],  # {e, kv, p}
        "kq_soft_max_ext-0": np.pad(cache["blocks.0.attn.hook_pattern"][0], ((0, 0), (0, 0), (0, 26))),
        "kqv-0": cache["blocks.0.attn.hook_z"][0].transpose(1, 0, 2),  # {e, p, h}
        "norm-0 (ffn)": cache["blocks.0.ln2.hook_normalized"][0],
        "l_out-0": cache["blocks.0.hook_resid_post"][0],
    }
    hooks = llamacpp.from_gguf_named(llama, cfg)
    assert set(hooks) == {"hook_embed", "blocks.0.attn.hook_q", "blocks.0.attn.hook_rot_k",
                          "blocks.0.attn.hook_pattern", "blocks.0.attn.hook_z",
                          "blocks.0.ln2.hook_normalized", "blocks.0.hook_resid_post"}
    for name, value in hooks.items():
        assert np.array_equal(value, cache[name]), name


def test_every_gguf_weight_has_a_minillm_name(smollm2):
    """The GGUF the offline model comes from: every tensor maps to one of minillm's parameters,
    and the values agree once q/k rows are put back in rotate-half order."""
    from gguf import GGUFReader
    from gguf.quants import dequantize

    from minillm.checkpoints.gguf import find_offline_gguf

    reader = GGUFReader(find_offline_gguf())
    params = dict(smollm2.named_parameters())
    names = {t.name: llamacpp.weight_name(t.name) for t in reader.tensors}
    assert all(v in params for v in names.values()), {k: v for k, v in names.items() if v not in params}
    t = next(t for t in reader.tensors if t.name == "blk.3.attn_q.weight")
    w = dequantize(t.data, t.tensor_type).reshape(576, 576)  # [out = h·e (GGUF order), in = d]
    h, e = smollm2.cfg.n_heads, smollm2.cfg.d_head
    ours = params["blocks.3.attn.W_Q"]  # [h, d, e]
    back = w.reshape(h, e, 576)[:, np.argsort(llamacpp.rotary_order(e))]  # rows in minillm order
    assert np.array_equal(back.transpose(0, 2, 1), ours)
