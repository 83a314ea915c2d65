"""`minillm bench` end to end on a tiny model, and the numbers it derives.

Benchmarks never assert on time: these tests check that the bench runs and
that what it reports is complete and consistent (FLOP counts, ratios, memory).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from minillm import ops
from minillm.checkpoints.hf import save_pretrained
from minillm.cli import main
from minillm.commands import benchmark as bench
from minillm.errors import MinillmError
from tests.conftest import random_model

# --- the command, end to end ------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return save_pretrained(random_model("llama", seed=3), tmp_path_factory.mktemp("tiny") / "llama")


def test_bench_runs_every_phase_and_writes_json(tiny_folder, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", str(tiny_folder), "--quick", "--threads", "1", "--prefill-tokens", "12",
                 "--prompt-tokens", "4", "--new-tokens", "5", "--sweep-positions", "6",
                 "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    mine = report["results"]["minillm"]
    assert set(mine) == set(bench.PHASES)
    for phase, r in mine.items():
        assert 0 < r["wall_min"] <= r["wall_median"] <= r["wall_max"], phase
        assert r["cpu_median"] > 0 and r["runs"] == 1, phase
        assert r["peak_rss"] > 0, phase
        assert phase in printed
    assert mine["load"]["finite"]
    # the work counted is the work asked for
    cfg = random_model("llama").cfg
    assert mine["prefill_all"]["flops"] == bench.forward_flops(cfg, 12)
    assert mine["prefill_last"]["flops"] == bench.forward_flops(cfg, 12, logits_positions=1)
    assert mine["sweep_separate"]["forward_rows"] == cfg.n_layers * 6
    assert 0 < mine["sweep"]["forward_rows"] <= cfg.n_layers * 6
    d = report["derived"]
    assert d["sweep"]["speedup_vs_separate"] > 0
    assert d["decode"]["gbps"] > 0 and d["prefill_all"]["gflops"] > 0
    assert report["machine"]["gemm_peak_gflops"] > 0 and report["machine"]["bandwidth_gbps"] > 0
    assert report["settings"]["prefill_tokens"] == 12 and report["threads"] == 1
    assert "GFLOP/s" in printed and "GB/s" in printed


def test_bench_fits_sizes_to_a_small_context():
    s = bench._fit_to_context(bench.Settings(), n_ctx=32)
    assert s.prefill_tokens == 32 and s.prompt_tokens + s.new_tokens <= 32 and s.sweep_positions <= 32


def test_bench_rejects_unknown_phases_and_bad_counts(tiny_folder, capsys):
    with pytest.raises(MinillmError, match="unknown phase 'prefil'"):
        bench.run_bench(str(tiny_folder), phases=("prefil",))
    assert main(["bench", str(tiny_folder), "--runs", "0"]) == 1
    assert "--runs must be at least 1" in capsys.readouterr().err


def test_vs_torch_without_torch_says_what_to_install(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "torch" else real(name, *a))
    with pytest.raises(MinillmError, match="pip install torch"):
        bench.check_torch()


def test_report_prints_ratios_to_torch():
    """The table with a torch column, from a made-up report (no torch needed)."""
    cfg = random_model("llama").cfg
    r = lambda w, cpu: dict(wall_median=w, wall_min=w, wall_max=w, cpu_median=cpu, runs=1,  # noqa: E731
                            peak_rss=2**20, rss_method="VmHWM after clear_refs=5", weight_bytes=2**19)
    mine = {"prefill_all": {**r(0.2, 0.3), "flops": 4e9}, "decode": {**r(0.64, 0.7),
                                                                    "bytes_per_token": 10**8}}
    torch_ = {"prefill_all": r(0.25, 0.5), "decode": r(1.28, 1.3)}
    report = dict(model="m", settings=vars(bench.Settings(new_tokens=64)), threads=2,
                  load_average_start=[1.0], load_average_end=[1.0], numpy="x", python="y",
                  machine=dict(gemm_peak_gflops=40.0, bandwidth_gbps=20.0),
                  results={"minillm": mine, "torch": torch_})
    report["derived"] = bench.derived(report, cfg)
    d = report["derived"]
    assert d["prefill_all"]["ratio_wall"] == pytest.approx(0.8)
    assert d["decode"]["ratio_wall"] == pytest.approx(0.5)
    assert d["decode"]["ms_per_token"] == pytest.approx(10.0)
    assert d["decode"]["gbps"] == pytest.approx(10.0) and d["decode"]["fraction_of_bandwidth"] == 0.5
    assert d["prefill_all"]["gflops"] == pytest.approx(20.0)
    assert d["prefill_all"]["peak_rss_over_weights"] == 2.0
    text = bench.format_report(report)
    assert "0.80" in text and "0.50" in text and "50% of the GEMM peak" in text


def test_forward_flops_match_the_matmuls_the_forward_pass_runs(monkeypatch):
    """Count 2·m·k·n over every matmul the model calls; bench.forward_flops must agree."""
    model = random_model("llama")
    counted = []
    linear, scores, mix = ops.linear, ops.attention_scores, ops.attention_mix

    def count_linear(x, W, b=None):
        counted.append(2 * x.size * W.shape[-1])
        return linear(x, W, b)

    def count_scores(q, k, *scalar):  # scalar: Gemma's query_pre_attn_scalar
        counted.append(2 * q.size * k.shape[2])
        return scores(q, k, *scalar)

    def count_mix(pattern, v):
        counted.append(2 * pattern.size * v.shape[-1])
        return mix(pattern, v)

    monkeypatch.setattr(ops, "linear", count_linear)
    monkeypatch.setattr(ops, "attention_scores", count_scores)
    monkeypatch.setattr(ops, "attention_mix", count_mix)
    model(np.arange(7)[None])
    assert sum(counted) == bench.forward_flops(model.cfg, 7)
    counted.clear()
    model(np.arange(7)[None], last_only=True)
    assert sum(counted) == bench.forward_flops(model.cfg, 7, logits_positions=1)


# --- loading -------------------------------------------------------------------------------


def test_loading_gives_the_same_weights_as_the_saved_model(tmp_path):
    """What the bench loads is the model that was saved, exactly (both families)."""
    import minillm

    for family in ("gpt2", "llama"):
        model = random_model(family, seed=5)
        loaded = minillm.load(save_pretrained(model, tmp_path / family))
        for (name, a), (_, b) in zip(model.named_parameters(), loaded.named_parameters()):
            assert np.array_equal(a, b), name
