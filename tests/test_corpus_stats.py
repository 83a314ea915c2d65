"""Corpora, streaming statistics, top activations, shards and engines (issue 21).

The model is the 2-layer golden fixture with a byte-level tokenizer (tests/corpus_helpers.py),
saved in a folder so that worker processes can load it; the corpora are generated, seeded.
"""

from __future__ import annotations

import json
import tracemalloc
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import minillm
from minillm import cli
from minillm.data import Corpus, run_shards
from minillm.data.shards import CorpusTask, ModelSpec, corpus_shard
from minillm.errors import MinillmError
from minillm.interp import ablation as A
from minillm.interp import interventions as iv
from minillm.interp import metrics as M
from minillm.interp import stats as S
from minillm.interp import top_activations as T
from tests.corpus_helpers import generated_texts, tiny_text_model

HOOKS = "blocks.*.mlp.hook_post,blocks.1.attn.hook_z,blocks.0.hook_resid_post"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tiny_text_model(tmp_path_factory.mktemp("tiny_text"))


@pytest.fixture(scope="module")
def model(folder):
    return minillm.load(folder)


@pytest.fixture(scope="module")
def texts():
    return generated_texts(40, seed=3, max_words=30)


def exact_samples(model, corpus, names, window, batch_size, docs_per_shard=S.DOCS_PER_SHARD, positions="all"):
    """Every sample of each hook, gathered in one array (what the streaming statistics summarise).
    Batched as the shards batch (each shard starts a new batch): the same float32 activations."""
    out = {n: [] for n in names}
    n_docs = corpus.count()
    for b in (
        b
        for s in range(0, n_docs, docs_per_shard)
        for b in corpus.batches(model, window, batch_size, s, s + docs_per_shard, progress=False)
    ):
        acts = S.collect(model, b, names)
        for n in names:
            out[n].append(S.samples(acts[n], n, b, positions, "neuron"))
    return {n: np.concatenate(v).astype(np.float64) for n, v in out.items()}


def true_rank(x, q):
    """Fraction of samples <= q, per column: x [N, G], q [G]."""
    return (x <= q).mean(0)


def assert_within_rank_error(err, eps: float, what: object = "") -> None:
    """err: |true rank - asked rank| of many quantile queries (units, quantiles). The sketch's stated
    error eps holds with 99 % confidence per query, not for the largest of hundreds of queries: of G
    queries at most 1 % may exceed it, plus 3 binomial standard deviations (measured on the 384 units
    of these tests: 4 of 300 runs had one unit above eps, at most 1.14 eps). None may exceed 2 eps:
    KLL's rank error has a sub-Gaussian tail (Karnin, Lang & Liberty 2016), so if P(err > eps) = 1 %,
    P(err > 2 eps) <= 2 exp(-4 ln 200), about 1e-9 per query."""
    err = np.ravel(err)
    over = int((err > eps).sum())
    assert over <= 0.01 * err.size + 3 * np.sqrt(0.0099 * err.size), (what, over, err.size)
    assert err.max() <= 2 * eps, (what, err.max() / eps)


# --- reading corpora -----------------------------------------------------------------------------


def test_corpus_sources_and_windows(model, tmp_path):
    txt = tmp_path / "a.txt"
    txt.write_text("first paragraph\nstill first\n\n\nsecond one\n\nthird\n")
    assert [t for _, t in Corpus.from_files(txt).documents()] == [
        "first paragraph\nstill first",
        "second one",
        "third",
    ]
    assert Corpus.from_files(txt, split="line").count() == 4
    assert Corpus.from_files(txt, split="file").count() == 1
    js = tmp_path / "b.jsonl"
    js.write_text('{"text": "alpha", "id": 1}\n\n{"text": "beta gamma"}\n')
    c = Corpus.open(js)
    assert [t for _, t in c.documents()] == ["alpha", "beta gamma"]
    assert list(c.documents(1, 2)) == [(1, "beta gamma")]
    # windows never cross documents; concatenated they give each document's tokens back
    corpus = Corpus.from_texts(["x" * 23, "", "yz" * 5])
    wins = list(corpus.windows(model, window=10))
    assert [(w.doc, w.start, len(w.tokens), w.last) for w in wins] == [
        (0, 0, 10, False),
        (0, 10, 10, False),
        (0, 20, 3, True),
        (2, 0, 10, True),
    ]
    batches = list(corpus.batches(model, window=10, batch_size=3, progress=False))
    b = batches[0]
    assert b.tokens.shape == (3, 10) and b.mask[2].tolist() == [1] * 3 + [0] * 7
    assert b.attention_mask is not None and batches[1].attention_mask is None
    assert sum(x.n_tokens for x in batches) == 23 + 10
    # a shard's part of a list of strings holds only its strings, numbered as in the whole list
    part = corpus.part(1, 3)
    assert part.texts == ("", "yz" * 5) and list(part.documents(1, 3)) == list(corpus.documents(1, 3))
    assert [(w.doc, w.start) for w in part.windows(model, 10, 1, 3)] == [(2, 0)]


def test_corpus_bad_input_names_the_place(model, tmp_path):
    js = tmp_path / "bad.jsonl"
    js.write_text('{"text": "ok"}\n{"body": "no"}\n')
    with pytest.raises(MinillmError, match=r"bad.jsonl:2: the record has no field 'text' \(fields: body\)"):
        Corpus.from_jsonl(js).count()
    js.write_text('{"text": 5}\n')
    with pytest.raises(MinillmError, match="bad.jsonl:1: field 'text' is a int"):
        list(Corpus.from_jsonl(js).documents())
    js.write_text("{not json\n")
    with pytest.raises(MinillmError, match="bad.jsonl:1: not a JSON record"):
        list(Corpus.from_jsonl(js).documents())
    with pytest.raises(MinillmError, match="does not exist"):
        Corpus.from_files(tmp_path / "missing.txt")
    with pytest.raises(MinillmError, match="longer than the model's context"):
        next(Corpus.from_texts(["a"]).windows(model, window=1000))
    with pytest.raises(MinillmError, match="unknown option 'windw': a job over a corpus takes window, "):
        S.corpus_stats(model, ["a text"], "blocks.0.mlp.hook_post", windw=16)
    js.write_text("[1, 2]\n")
    with pytest.raises(MinillmError, match="bad.jsonl:1: expected a JSON object, got list"):
        Corpus.from_jsonl(js).count()


def test_reader_memory_is_flat(model, tmp_path):
    """Peak Python memory while streaming a corpus 10x larger stays the same (one batch at a time)."""

    def peak(n_docs):
        path = tmp_path / f"c{n_docs}.txt"
        path.write_text("\n\n".join(generated_texts(n_docs, seed=n_docs)))
        tracemalloc.start()
        n = sum(b.n_tokens for b in Corpus.from_files(path).batches(model, 32, 4, progress=False))
        size, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top, n

    small, n_small = peak(200)
    large, n_large = peak(2000)
    assert n_large > 8 * n_small
    assert large < 1.5 * small + 50_000, (small, large)  # bytes; 10x the corpus would be ~10x if held


# --- statistics ----------------------------------------------------------------------------------


def test_stats_match_the_exact_numbers(model, texts):
    corpus = Corpus.from_texts(texts)
    st = S.corpus_stats(model, corpus, HOOKS, window=16, batch_size=4, docs_per_shard=7, progress=False)
    names = list(st.hooks)
    assert names == [
        "blocks.0.mlp.hook_post",
        "blocks.0.hook_resid_post",
        "blocks.1.attn.hook_z",
        "blocks.1.mlp.hook_post",
    ]  # forward order
    x = exact_samples(model, corpus, names, 16, 4, 7)
    eps = S.rank_error()
    assert eps == pytest.approx(0.0133, abs=1e-4)
    for n in names:
        h = st[n]
        assert h.count == len(x[n]) == st.meta["n_tokens"]
        # float64 sums of the same float32 samples in another order: agreement to ~1e-12 relative
        scale = np.abs(x[n]).max()
        np.testing.assert_allclose(h.mean, x[n].mean(0), rtol=0, atol=1e-12 * scale)
        np.testing.assert_allclose(h.var().ravel(), x[n].var(0), rtol=1e-10, atol=1e-12 * scale**2)
        assert np.array_equal(h.min, x[n].min(0)) and np.array_equal(h.max, x[n].max(0))
        rank = true_rank(x[n], st.median[n].ravel())
        assert_within_rank_error(np.abs(rank - 0.5) - 1 / h.count, eps, n)
    assert st.mean["blocks.1.attn.hook_z"].shape == (model.cfg.n_heads, model.cfg.d_head)


def test_by_head_by_hook_and_last_position(model, texts):
    corpus = Corpus.from_texts(texts)
    z = "blocks.1.attn.hook_z"
    heads = S.corpus_stats(model, corpus, z, window=16, by="head", progress=False)[z]
    whole = S.corpus_stats(model, corpus, z, window=16, by="hook", progress=False)[z]
    x = exact_samples(model, corpus, [z], 16, 8)[z].reshape(-1, model.cfg.n_heads, model.cfg.d_head)
    assert heads.shape == (model.cfg.n_heads,) and whole.shape == ()
    np.testing.assert_allclose(heads.mean, x.mean((0, 2)), atol=1e-12)
    np.testing.assert_allclose(whole.var(), x.var(), rtol=1e-10)
    # the last real position of each text: compare with each text run on its own
    post = "blocks.1.mlp.hook_post"
    last = S.corpus_stats(model, corpus, post, window=16, positions="last", progress=False)
    assert last[post].count == len(texts) == last.meta["n_texts"]
    alone = []
    for t in texts:
        ids = model.to_tokens(t)
        start = (ids.shape[1] - 1) // 16 * 16  # the last window starts here
        _, cache = model.run_with_cache(ids[:, start:], names_filter=[post])
        alone.append(cache[post][0, -1])
    # padding changes the GEMM's row count, hence float32 rounding: a few ulps of the magnitudes
    tol = 64 * np.finfo(np.float32).eps * np.abs(alone).max()
    np.testing.assert_allclose(last.mean[post], np.mean(alone, 0, dtype=np.float64), atol=tol)


def test_quantile_sketch_rank_error_after_merges():
    """KLL: 60 000 samples per unit in 3 shards of 4 batches; every quantile's true rank lies within the
    stated normalised rank error (1.33 % for k = 200, at 99 % confidence per query)."""
    rng = np.random.default_rng(0)
    data = np.concatenate([rng.standard_normal((30000, 4)), rng.exponential(1.0, (30000, 4)) * 3], 0)
    data = data[rng.permutation(len(data))].astype(np.float32)
    shards = []
    for part in np.array_split(data, 3):
        h = S.HookStats("h", "neuron", (4,))
        for chunk in np.array_split(part, 4):
            h.update(chunk)
        shards.append(h)
    merged = shards[0]
    for h in shards[1:]:
        merged.merge(h)
    assert merged.count == len(data)
    eps = S.rank_error(200)
    qs = (0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99)
    err = [np.abs(true_rank(data.astype(np.float64), merged.quantile(q)) - q) for q in qs]
    assert_within_rank_error(err, eps)  # 28 queries: at most one above eps, none above 2 eps
    np.testing.assert_allclose(merged.mean, data.astype(np.float64).mean(0), atol=1e-12)


def test_stats_save_load_and_ablate_with_them(model, texts, tmp_path):
    corpus = Corpus.from_texts(texts)
    post = "blocks.1.mlp.hook_post"
    st = S.corpus_stats(model, corpus, post, window=16, out=tmp_path / "st", progress=False)
    meta = json.loads((tmp_path / "st" / "stats.json").read_text())
    assert meta["hooks"][post]["count"] == st[post].count and meta["rank_error"] == pytest.approx(
        0.01329, abs=1e-4
    )
    back = S.CorpusStats.load(tmp_path / "st")
    assert np.array_equal(back.mean[post], st.mean[post]) and np.array_equal(
        back.median[post], st.median[post]
    )
    # mean / median ablation take the statistics directly
    ids = model.to_tokens(texts[0])[:, :40]
    for make, which in ((iv.mean, "mean"), (iv.median, "median")):
        _, cache = model.run_with_cache(
            ids,
            names_filter=[post],
            fwd_hooks=iv.to_hooks(model, [make("post", back, layer=1, neuron=[2, 5])]),
        )
        want = getattr(back, which)[post][[2, 5]].astype(np.float32)
        assert np.array_equal(cache[post][0, :, [2, 5]].T, np.broadcast_to(want, (ids.shape[1], 2)))
    m = M.logit_diff(None, 7, 11)
    res = A.ablation_sweep(
        model, ids[:, :12], m, "neurons", "median", reference=back, layers=[1], progress=False
    )
    assert res.shape == (1, model.cfg.d_mlp) and np.isfinite(res.values).all()
    with pytest.raises(MinillmError, match="no median of blocks.0.mlp.hook_post"):
        A.ablation_sweep(
            model, ids[:, :12], m, "neurons", "median", reference=back, layers=[0], progress=False
        )


# --- top activations -----------------------------------------------------------------------------


def test_top_activations_are_the_exact_top_k(model, texts, tmp_path):
    corpus = Corpus.from_texts(texts)
    post = "blocks.1.mlp.hook_post"
    top = T.top_activations(
        model,
        corpus,
        layer=1,
        neurons=[0, 3, 17],
        k=6,
        before=4,
        after=2,
        window=16,
        docs_per_shard=9,
        out=tmp_path / "top",
        progress=False,
    )
    # brute force: every (value, doc, offset) of the corpus, sorted
    rows = []
    for b in corpus.batches(model, 16, 8, progress=False):
        a = S.collect(model, b, [post])[post]
        for r in range(len(b.length)):
            for p in range(b.length[r]):
                rows.append((a[r, p], int(b.doc[r]), int(b.start[r] + p), b.tokens[r], p, b.length[r]))
    for i, nr in enumerate([0, 3, 17]):
        best = sorted(rows, key=lambda t: (-t[0][nr], t[1], t[2]))[:6]
        assert top.values[i].tolist() == [np.float32(t[0][nr]) for t in best]
        assert top.doc[i].tolist() == [t[1] for t in best] and top.pos[i].tolist() == [t[2] for t in best]
        _, _, _, toks, p, n = best[0]
        assert top.tokens[i, 0].tolist() == [int(toks[j]) if 0 <= j < n else -1 for j in range(p - 4, p + 3)]
    text = top.text(model, 3, n=2)
    assert text.count("[[") == 2 and "doc " in text
    page = top.view(model).html  # the view of minillm.views.html (driven in Chromium in test_views.py)
    assert page.startswith("<!DOCTYPE html>") and page.count('"c":') == 3 * 6  # 6 examples of 3 neurons
    back = T.TopActivations.load(tmp_path / "top")
    assert np.array_equal(back.values, top.values) and np.array_equal(back.tokens, top.tokens)
    with pytest.raises(MinillmError, match="neuron 999 does not exist"):
        T.top_activations(model, corpus, layer=1, neurons=[999], progress=False)


# --- engines, shards and resume ------------------------------------------------------------------


def assert_same_results(a: S.CorpusStats, b: S.CorpusStats, data: dict) -> None:
    eps = S.rank_error()
    for n in a.hooks:
        assert a[n].count == b[n].count
        assert np.array_equal(a[n].min, b[n].min) and np.array_equal(a[n].max, b[n].max)
        # the same shards merged in the same order: equal up to float64 summation (bitwise in practice)
        np.testing.assert_allclose(a[n].mean, b[n].mean, rtol=0, atol=1e-12 * np.abs(data[n]).max())
        for st in (a, b):  # sketches use randomness: each within the stated rank error of the truth
            assert_within_rank_error(np.abs(true_rank(data[n], st.median[n].ravel()) - 0.5) - 1 / a[n].count,
                                     eps, n)


def test_engines_give_the_same_answers(model, folder, texts, tmp_path):
    """Serial, threads, and a real 2-process Dask LocalCluster (reached by its scheduler address, from
    Python and from `minillm stats --scheduler`): same counts, min, max and top-k, means to float64
    summation error, medians within the sketch's rank error."""
    from dask.distributed import LocalCluster

    from minillm.data import dask_executor

    corpus = Corpus.from_texts(texts)
    kw = dict(window=16, batch_size=4, docs_per_shard=6, progress=False)
    serial = S.corpus_stats(model, corpus, HOOKS, **kw)
    top = T.top_activations(model, corpus, layer=1, k=5, **kw)
    data = exact_samples(model, corpus, list(serial.hooks), 16, 4, 6)
    with ThreadPoolExecutor(2) as ex:
        assert_same_results(serial, S.corpus_stats(model, corpus, HOOKS, executor=ex, **kw), data)
    jsonl = tmp_path / "texts.jsonl"
    jsonl.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address="127.0.0.1:0"
    ) as cluster:
        # both workers load the model before the first shard: neither is still starting up when the
        # shards are handed out (on a busy machine, one slow worker could otherwise lose all its
        # queued shards to the other, and the test would not see two processes)
        with dask_executor(scheduler=cluster.scheduler_address, preload=ModelSpec.of(model)) as ex:
            dask = S.corpus_stats(model, corpus, HOOKS, executor=ex, **kw)
            dtop = T.top_activations(model, corpus, layer=1, k=5, executor=ex, **kw)
        assert (
            cli.main(
                [
                    "stats",
                    str(folder),
                    str(jsonl),
                    "--hooks",
                    HOOKS,
                    "--window",
                    "16",
                    "--batch-size",
                    "4",
                    "--docs-per-shard",
                    "6",
                    "-o",
                    str(tmp_path / "cli"),
                    "--scheduler",
                    cluster.scheduler_address,
                ]
            )
            == 0
        )
    assert len(dask.meta["workers"]) == 2  # both worker processes did shards
    assert_same_results(serial, dask, data)
    assert_same_results(serial, S.CorpusStats.load(tmp_path / "cli"), data)
    for f in ("values", "doc", "pos", "tokens"):
        assert np.array_equal(getattr(top, f), getattr(dtop, f)), f


def test_shards_resume_after_an_interruption(model, texts, tmp_path):
    corpus = Corpus.from_texts(texts)
    kw = dict(window=16, batch_size=4, docs_per_shard=5, progress=False)
    full = S.corpus_stats(model, corpus, "blocks.1.mlp.hook_post", **kw)

    calls = []

    def flaky(task):
        calls.append(task.start)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return corpus_shard(task, model)

    names = S.resolve_hooks(model, "blocks.1.mlp.hook_post")
    job = S.StatsJob(tuple(names), ((model.cfg.d_mlp,),), "all", "neuron", 200)
    tasks = [CorpusTask(None, corpus, s, min(s + 5, 40), 16, 4, job) for s in range(0, 40, 5)]
    io = dict(load=S.CorpusStats.from_file, params={"job": 1}, progress=False)
    with pytest.raises(KeyboardInterrupt):
        run_shards(flaky, tasks, out=tmp_path / "r", **io)
    assert len(list((tmp_path / "r" / "shards").glob("*.safetensors"))) == 3  # the finished shards stayed
    with pytest.raises(MinillmError, match="pass --resume"):
        run_shards(flaky, tasks, out=tmp_path / "r", **io)
    with pytest.raises(MinillmError, match="another job"):
        run_shards(flaky, tasks, out=tmp_path / "r", resume=True, **(io | dict(params={"job": 2})))
    calls.clear()
    resumed = run_shards(lambda t: corpus_shard(t, model), tasks, out=tmp_path / "r", resume=True, **io)
    h, f = resumed["blocks.1.mlp.hook_post"], full["blocks.1.mlp.hook_post"]
    assert h.count == f.count and np.array_equal(h.min, f.min) and np.array_equal(h.max, f.max)
    np.testing.assert_allclose(h.mean, f.mean, rtol=0, atol=1e-12 * np.abs(f.max).max())


def test_stats_and_top_commands(folder, texts, tmp_path, capsys):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"body": t}) + "\n" for t in texts))
    out = tmp_path / "st"
    args = [
        "stats",
        str(folder),
        str(corpus),
        "--field",
        "body",
        "--hooks",
        "blocks.*.mlp.hook_post",
        "--window",
        "16",
        "--docs-per-shard",
        "10",
        "-o",
        str(out),
    ]
    assert cli.main(args) == 0
    assert "quantiles within ±0.0133 in rank" in capsys.readouterr().out
    st = S.CorpusStats.load(out)
    assert st["blocks.0.mlp.hook_post"].count == st.meta["n_tokens"] > 0
    assert cli.main(args) == 1 and "pass --resume" in capsys.readouterr().err
    assert cli.main(args + ["--resume"]) == 0
    top = tmp_path / "top"
    assert (
        cli.main(
            [
                "top-activations",
                str(folder),
                str(corpus),
                "--field",
                "body",
                "--layer",
                "1",
                "--neurons",
                "0,4-6",
                "-k",
                "3",
                "--window",
                "16",
                "-o",
                str(top),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "blocks.1.mlp.hook_post neuron 4: top 3" in printed and "[[" in printed
    page = (top / "top.html").read_text()
    assert 'data-kind="top-activations"' in page and page.count('{"id":') == 4
    assert (
        cli.main(
            ["stats", str(folder), str(corpus), "--hooks", "blocks.9.nothing", "-o", str(tmp_path / "x")]
        )
        == 1
    )


def test_benchmark_corpus_is_generated_and_estimates_scale(model, tmp_path):
    from minillm.data import benchmark as B

    a = B.synthetic_corpus(tmp_path / "a.jsonl", 2000, model, seed=5)
    b = B.synthetic_corpus(tmp_path / "b.jsonl", 2000, model, seed=5)
    assert (tmp_path / "a.jsonl").read_text() == (tmp_path / "b.jsonl").read_text()  # seeded, no download
    assert a == b | dict(path=a["path"]) and a["tokens"] >= 2000
    assert Corpus.from_jsonl(tmp_path / "a.jsonl").count() == a["documents"]
    est = B.estimate(100.0, 0.9, tokens=1e8, machines=(1, 10), cores=2)
    assert est[0]["hours"] == pytest.approx(1e8 / (100 * 2 * 0.9) / 3600)
    assert est[1]["hours"] == pytest.approx(est[0]["hours"] / 10)
    assert cli.main(["bench", "x", "--corpus", "--corpus-tokens", "a,b"]) == 1


def test_corpus_bench_end_to_end(folder):
    """`minillm bench --corpus`'s own pipeline on the tiny model (about 10 s): one process and a real
    2-worker LocalCluster on the same shards, CPU time of every process, the report."""
    from minillm.data import benchmark as B

    r = B.run_corpus_bench(str(folder), sizes=(20_000,), hooks="blocks.1.mlp.hook_post", window=64,
                           progress=lambda msg: None)
    (row,) = r["sizes"]
    a, b = row["serial"], row["dask"]
    assert a["tokens"] == b["tokens"] == row["corpus"]["tokens"] >= 20_000
    assert row["docs_per_shard"] == 4 and sum(b["shards_per_worker"]) == a["shards"] > 2
    assert len(b["peak_rss_mb"]) == 2 and min(b["peak_rss_mb"]) > 0 and a["peak_rss_mb"][0] > 0
    # every process's CPU is counted: the workers' (inside their shards and out) and the client's
    assert b["cpu_seconds"] == pytest.approx(b["client_cpu_seconds"] + sum(b["worker_cpu_seconds"]))
    assert sum(b["worker_cpu_seconds"]) >= 0.9 * b["shard_cpu_seconds"] > 0 and b["client_cpu_seconds"] > 0
    text = B.format_report(r)
    assert "| 2 workers: tok/s |" in text and f"| {a['tokens']:,} | 4 |" in text
    assert "CPU efficiency at" in text and "2 workers per machine" in text
