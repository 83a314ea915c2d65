"""Sweeps over prompt sets (per-prompt results, mean, bootstrap CI), the IOI generator, prompt files."""

from __future__ import annotations

import json

import numpy as np
import pytest

import minillm
from minillm import cli
from minillm.data import PromptPair, ioi_prompts, read_prompts, write_prompts
from minillm.errors import MinillmError
from minillm.interp import ablation as A
from minillm.interp import metrics as M
from minillm.interp import patching as P
from minillm.interp import prompt_sweeps as PS
from tests.corpus_helpers import tiny_text_model


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tiny_text_model(tmp_path_factory.mktemp("tiny_text"))


@pytest.fixture(scope="module")
def model(folder):
    return minillm.load(folder)


def byte_pairs(n: int, seed: int = 0, same_length: bool = False) -> list[PromptPair]:
    """IOI-shaped pairs for the byte-level model: one-byte names, so answers are single tokens."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        a, b = rng.choice(list("ABCDEFGH"), 2, replace=False)
        pre = "".join(rng.choice(list("xyz "), 4 if same_length else int(rng.integers(2, 7))))
        out.append(PromptPair(f"{pre}{a} and {b} go; {b} to", f"{pre}{a} and {b} go; {a} to", a, b))
    return out


# --- IOI prompts and prompt files -----------------------------------------------------------------


def test_ioi_generator_is_seeded_and_corrupts_s2():
    a, b = ioi_prompts(30, seed=1), ioi_prompts(30, seed=1)
    assert a == b and a != ioi_prompts(30, seed=2)
    for i, p in enumerate(a):
        io, s = p.answer.strip(), p.wrong.strip()
        words, bad = p.clean.replace(",", " ,").split(), p.corrupted.replace(",", " ,").split()
        diff = [j for j, (x, y) in enumerate(zip(words, bad)) if x != y]
        assert len(words) == len(bad) and len(diff) == 1  # only S2 changes ...
        assert words[diff[0]] == s and bad[diff[0]] == io  # ... from S to IO
        assert words.count(s) == 2 and words.count(io) == 1
        first = words.index(io) < words.index(s)
        assert first == (i % 2 == 0)  # ABBA and BABA alternate
    abc = ioi_prompts(10, seed=1, corruption="abc")
    for p in abc:
        third = set(p.corrupted.replace(",", " ").replace(".", " ").split()) - set(
            p.clean.replace(",", " ").replace(".", " ").split()
        )
        assert len(third) == 1 and " " + third.pop() not in (p.answer, p.wrong)


def test_ioi_prompts_on_smollm2_keep_length_and_are_solved(smollm2):
    """Single-token names only: clean and corrupted always have the same token count; and the real model
    does IOI: the logit difference IO - S is positive on average and flips sign when S2 is corrupted."""
    pairs = ioi_prompts(16, seed=0, model=smollm2)
    clean = [smollm2.to_tokens(p.clean) for p in pairs]
    corrupt = [smollm2.to_tokens(p.corrupted) for p in pairs]
    assert all(c.shape == d.shape for c, d in zip(clean, corrupt))
    both = [  # one batch of 2 rows (clean, corrupted) per pair
        M.logit_diff(smollm2, p.answer, p.wrong)(smollm2(np.concatenate([c, d]), last_only=True))
        for p, c, d in zip(pairs, clean, corrupt)
    ]
    ld, ld_bad = [float(x[0]) for x in both], [float(x[1]) for x in both]
    assert np.mean(ld) > 1.0 and np.mean(ld_bad) < np.mean(ld) - 1.0, (np.mean(ld), np.mean(ld_bad))


def test_prompt_files(tmp_path, model):
    pairs = byte_pairs(3)
    path = write_prompts(pairs, tmp_path / "p.jsonl")
    assert read_prompts(path) == pairs
    assert len(read_prompts("ioi:5:3")) == 5 and read_prompts("ioi:5:3") == ioi_prompts(5, 3)
    (tmp_path / "t.jsonl").write_text('{"prompt": "It was a", "target": " night"}\n')
    assert read_prompts(tmp_path / "t.jsonl", need="target") == [PromptPair("It was a", answer=" night")]
    with pytest.raises(MinillmError, match=r"t.jsonl:1: a patching prompt needs .* missing clean, corrupted"):
        read_prompts(tmp_path / "t.jsonl")
    (tmp_path / "bad.jsonl").write_text('{"prompt": "x", "target": " y"}\n[1]\n')
    with pytest.raises(MinillmError, match="bad.jsonl:2: expected a JSON object"):
        read_prompts(tmp_path / "bad.jsonl", need="target")
    with pytest.raises(MinillmError, match="expected ioi:N"):
        read_prompts("ioi:many")


# --- the sweeps ----------------------------------------------------------------------------------


def test_bootstrap_interval():
    rng = np.random.default_rng(0)
    x = rng.normal(2.0, 3.0, (400, 3))
    x[:, 2] = 5.0  # a constant cell: the interval is that constant
    lo, hi = PS.bootstrap_ci(x, n_boot=2000, seed=1)
    assert lo[2] == hi[2] == 5.0
    half = 1.96 * x[:, :2].std(0, ddof=1) / np.sqrt(len(x))  # the normal-theory half-width
    np.testing.assert_allclose((hi - lo)[:2] / 2, half, rtol=0.1)  # bootstrap ≈ normal for n = 400
    assert ((lo[:2] < x[:, :2].mean(0)) & (x[:, :2].mean(0) < hi[:2])).all()
    assert np.array_equal(PS.bootstrap_ci(x, seed=1)[0], PS.bootstrap_ci(x, seed=1)[0])  # seeded
    with_nan = x.copy()
    with_nan[:200, 0] = np.nan  # a cell half the prompts lack: its interval uses the others
    assert np.isfinite(PS.bootstrap_ci(with_nan)[0]).all()


def test_patching_over_prompts_is_the_stack_of_single_sweeps(model):
    pairs = byte_pairs(6)
    res = PS.patching_over_prompts(model, pairs, "heads", progress=False)
    assert res.values.shape == (6, 2, 4) and res.axes == ("prompt", "layer", "head")
    for i in (0, 5):
        p = pairs[i]
        one = P.patching_sweep(
            model, p.clean, p.corrupted, M.logit_diff(model, p.answer, p.wrong), "heads", progress=False
        )
        assert np.array_equal(res.values[i], one.values)
    np.testing.assert_allclose(res.mean, res.values.mean(0), rtol=1e-15)
    assert ((res.ci_low <= res.mean + 1e-12) & (res.mean <= res.ci_high + 1e-12)).all()
    # ragged prompts: [layer, pos] results aligned at the last token
    rp = PS.patching_over_prompts(model, pairs, "resid_pre", progress=False)
    width = max(model.to_tokens(p.clean).shape[1] for p in pairs)
    assert rp.values.shape == (6, 2, width) and rp.labels[1][-1] == "-1"
    short = min(range(6), key=lambda i: model.to_tokens(pairs[i].clean).shape[1])
    assert np.isnan(rp.values[short, :, 0]).all() and not np.isnan(rp.values[:, :, -1]).any()
    # equal lengths: columns are positions, labelled with tokens
    eq = PS.patching_over_prompts(model, byte_pairs(3, same_length=True), "resid_pre", progress=False)
    assert eq.labels[1][0].startswith("0:")
    fig = eq.plot()
    assert len(fig.axes) == 3 and fig.axes[1].get_xlabel().startswith("mean with 95% bootstrap interval")
    with pytest.raises(MinillmError, match="unknown option 'prompts_per_shards': a prompt-set sweep takes"):
        PS.patching_over_prompts(model, pairs, "heads", prompts_per_shards=2)


def test_ablation_and_median_replacement_over_prompts(model, tmp_path):
    pairs = byte_pairs(4)
    ab = PS.ablation_over_prompts(model, pairs, "heads", "zero", progress=False)
    p = pairs[2]
    one = A.ablation_sweep(
        model, p.clean, M.logit_diff(model, p.answer, p.wrong), "heads", "zero", progress=False
    )
    assert np.array_equal(ab.values[2], one.values)
    mean_ab = PS.ablation_over_prompts(model, pairs, "heads", "mean", progress=False)
    assert np.isfinite(mean_ab.mean).all() and not np.allclose(mean_ab.mean, ab.mean)
    prompts = [PromptPair(q.clean, answer=q.answer) for q in pairs]
    mr = PS.median_replacement_over_prompts(
        model, prompts, rates=[10, 50], progress=False, out=tmp_path / "mr"
    )
    single = A.median_replacement(model, prompts[1].clean, prompts[1].answer, rates=[10, 50], progress=False)
    assert np.array_equal(mr.values[1], single.delta.values) and mr.labels[1] == ["10%", "50%"]
    saved = json.loads((tmp_path / "mr" / "result.json").read_text())
    assert saved["ci_low"] == mr.ci_low.tolist() and len(saved["prompts"]) == 4
    fig = PS.plot_ripple_intervals(mr)
    assert len(fig.axes[0].collections) == 2  # one confidence band per rate


def test_saved_csv_reads_back_whatever_the_labels(tmp_path):
    import csv

    labels = (["0", "1"], ['3: "quoted", with comma', "4:\n"])
    values = np.array([[[1.0, 2.0], [3.0, np.nan]], [[3.0, 4.0], [5.0, np.nan]]])
    res = PS.PromptSweep(values, ("prompt", "layer", "pos"), labels, "t", [{"clean": "a"}, {"clean": "b"}])
    res.save(tmp_path, "r", plot=False)
    with open(tmp_path / "r.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["layer", "pos", "mean", "ci_low", "ci_high", "n"]
    assert [r[:3] + r[5:] for r in rows[1:]] == [["0", labels[1][0], "2", "2"], ["0", "4:\n", "3", "2"],
                                                 ["1", labels[1][0], "4", "2"], ["1", "4:\n", "nan", "0"]]


def test_patch_and_ablate_commands_with_prompts_serial_and_on_dask(folder, model, tmp_path, capsys):
    """--prompts FILE, shards written as they finish, --resume, and a 2-process Dask cluster that gives
    the same per-prompt values and intervals as this process."""
    prompts = write_prompts(byte_pairs(6, seed=4), tmp_path / "pairs.jsonl")
    base = [
        "patch",
        str(folder),
        "--prompts",
        str(prompts),
        "--components",
        "heads",
        "--prompts-per-shard",
        "2",
    ]
    assert cli.main(base + ["-o", str(tmp_path / "serial")]) == 0
    assert "heads: 6 prompts" in capsys.readouterr().out
    serial = json.loads((tmp_path / "serial" / "denoising_heads" / "result.json").read_text())
    shards = sorted((tmp_path / "serial" / "denoising_heads" / "shards").glob("*.safetensors"))
    assert len(shards) == 3
    shards[1].unlink()  # as if interrupted: --resume recomputes only the missing shard
    assert cli.main(base + ["-o", str(tmp_path / "serial"), "--resume"]) == 0
    again = json.loads((tmp_path / "serial" / "denoising_heads" / "result.json").read_text())
    assert again["mean"] == serial["mean"] and again["ci_low"] == serial["ci_low"]
    assert cli.main(base + ["-o", str(tmp_path / "dask"), "--workers", "2"]) == 0
    dask = json.loads((tmp_path / "dask" / "denoising_heads" / "result.json").read_text())
    assert dask["mean"] == serial["mean"] and dask["ci_high"] == serial["ci_high"]
    assert dask["meta"]["engine"] == "ClientExecutor"
    assert (tmp_path / "dask" / "denoising_heads" / "result.png").stat().st_size > 10_000
    capsys.readouterr()
    targets = tmp_path / "targets.jsonl"
    targets.write_text(
        "".join(json.dumps({"prompt": p.clean, "target": p.answer}) + "\n" for p in byte_pairs(3))
    )
    assert (
        cli.main(
            [
                "ablate",
                str(folder),
                "--prompts",
                str(targets),
                "--rates",
                "10,50",
                "-o",
                str(tmp_path / "abl"),
            ]
        )
        == 0
    )
    summary = json.loads((tmp_path / "abl" / "summary.json").read_text())
    assert summary["n_prompts"] == 3 and summary["rates"] == ["10%", "50%"]
    assert (tmp_path / "abl" / "ripple.png").stat().st_size > 10_000
    assert cli.main(base + ["-o", str(tmp_path / "x"), "--path"]) == 1
    assert "--path patching runs on one prompt pair" in capsys.readouterr().err
