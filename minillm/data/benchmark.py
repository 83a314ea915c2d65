"""`minillm bench MODEL --corpus`: corpus statistics throughput, Dask speed-up and memory per worker.

    minillm bench smollm2-135m --corpus                      # 10k and 100k tokens, 1 process and 2 workers
    minillm bench smollm2-135m --corpus --corpus-tokens 10000,100000,1000000 --json corpus.json

For each corpus size the same job, `corpus_stats` of `--corpus-hooks`
(default: one middle layer's mlp.hook_post, with KLL quantile sketches), runs
    serial   in a fresh subprocess, 1 BLAS thread: tokens/s, and the process's
             peak resident memory (VmHWM, model weights included);
    dask     on a new LocalCluster of `workers` processes x 1 thread: tokens/s
             (wall time from submitting the first shard to merging the last,
             cluster start-up excluded and reported apart) and each worker's
             peak resident memory, read inside the worker after its shards.
The speed-up is serial time / Dask time for the same size. The corpus is
generated here (seeded sentences from a small grammar, written as JSONL):
nothing is downloaded. Throughput does not depend on what the words say, only
on the token count and the window and batch shapes, which are the ones a
real corpus would get.

`estimate()` turns the measured rates into a paper estimate for a larger
corpus on N machines (`format_report` prints it for 100M tokens).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from minillm.data.prompts import NAMES, OBJECTS, PLACES

_VERBS = (
    "saw",
    "found",
    "carried",
    "painted",
    "described",
    "remembered",
    "opened",
    "followed",
    "sold",
    "built",
)
_ADJ = ("old", "quiet", "bright", "heavy", "small", "strange", "warm", "distant", "green", "broken")
_TIME = ("In the morning", "Later that day", "After a while", "Before the storm", "On Sunday", "At night")
_LINK = ("because", "although", "while", "and then", "so", "until")


def sentence(rng: np.random.Generator) -> str:
    pick = lambda xs: xs[int(rng.integers(len(xs)))]  # noqa: E731
    a = f"{pick(NAMES)} {pick(_VERBS)} the {pick(_ADJ)} {pick(OBJECTS)} near the {pick(PLACES)}"
    if rng.random() < 0.5:
        a += f" {pick(_LINK)} {pick(NAMES)} {pick(_VERBS)} a {pick(_ADJ)} {pick(OBJECTS)}"
    return (f"{pick(_TIME)}, " + a if rng.random() < 0.3 else a) + "."


def synthetic_corpus(path: str | Path, n_tokens: int, model, seed: int = 0) -> dict:
    """Write a JSONL corpus of at least `n_tokens` tokens (documents of 3..30 sentences)."""
    rng = np.random.default_rng(seed)
    tok = model.need_tokenizer()
    total = docs = 0
    with open(path, "w", encoding="utf-8") as f:
        while total < n_tokens:
            text = " ".join(sentence(rng) for _ in range(int(rng.integers(3, 31))))
            total += len(tok.encode(text))
            docs += 1
            f.write(json.dumps({"text": text}) + "\n")
    return dict(path=str(path), tokens=total, documents=docs)


def _job(
    model_name: str, corpus: str, hooks: str, window: int, batch_size: int, docs_per_shard: int, workers: int
) -> dict:
    """One measurement (run in a fresh process)."""
    import minillm
    from minillm.data import Corpus
    from minillm.data.shards import ModelSpec, dask_executor, peak_rss_mb, reset_peak_rss
    from minillm.interp import stats as S

    model = minillm.load(model_name)
    reset_peak_rss()
    data = Corpus.from_jsonl(corpus)
    kw = dict(window=window, batch_size=batch_size, docs_per_shard=docs_per_shard, progress=False)
    if workers <= 1:
        t, c = time.perf_counter(), time.process_time()
        st = S.corpus_stats(model, data, hooks, **kw)
        seconds, cpu = time.perf_counter() - t, time.process_time() - c
        return dict(
            engine="serial",
            seconds=seconds,
            cpu_seconds=cpu,
            tokens=st.meta["n_tokens"],
            tokens_per_s=st.meta["n_tokens"] / seconds,
            tokens_per_cpu_s=st.meta["n_tokens"] / cpu,
            peak_rss_mb=[round(peak_rss_mb(), 1)],
            shards=sum(w["shards"] for w in st.meta["workers"].values()),
        )
    t0 = time.perf_counter()
    with dask_executor(workers=workers, preload=ModelSpec.of(model)) as ex:  # workers load before timing
        startup = time.perf_counter() - t0
        t = time.perf_counter()
        st = S.corpus_stats(model, data, hooks, executor=ex, **kw)
        seconds = time.perf_counter() - t
    w = st.meta["workers"]
    return dict(
        engine=f"dask {workers} workers x 1 thread",
        seconds=seconds,
        startup_s=round(startup, 2),
        tokens=st.meta["n_tokens"],
        tokens_per_s=st.meta["n_tokens"] / seconds,
        peak_rss_mb=sorted(v["peak_rss_mb"] for v in w.values()),
        cpu_seconds=sum(v.get("cpu_seconds", 0) for v in w.values()),
        tokens_per_cpu_s=st.meta["n_tokens"] / max(1e-9, sum(v.get("cpu_seconds", 0) for v in w.values())),
        shards_per_worker=sorted(v["shards"] for v in w.values()),
    )


def run_corpus_bench(
    model_name: str,
    sizes=(10_000, 100_000),
    workers: int = 2,
    hooks: str | None = None,
    window: int = 128,
    batch_size: int = 8,
    docs_per_shard: int = 8,
    progress=print,
    json_path: str | Path | None = None,
) -> dict:
    """Measure every size serially and on `workers` Dask workers (see the module docstring).
    json_path: the report so far is rewritten there after every measurement."""
    import minillm

    model = minillm.load(model_name)
    hooks = hooks or f"blocks.{model.cfg.n_layers // 2}.mlp.hook_post"
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    report = dict(
        model=model_name,
        hooks=hooks,
        window=window,
        batch_size=batch_size,
        docs_per_shard=docs_per_shard,
        workers=workers,
        cpus=os.cpu_count(),
        load_start=os.getloadavg()[0],
        sizes=[],
    )
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            info = synthetic_corpus(Path(tmp) / f"corpus_{n}.jsonl", n, model, seed=n)
            row = dict(target_tokens=n, corpus=dict(tokens=info["tokens"], documents=info["documents"]))
            for w in (1, workers):
                progress(
                    f"corpus bench: {info['tokens']} tokens, {'serial' if w == 1 else f'{w} workers'} ..."
                )
                job = json.dumps([model_name, info["path"], hooks, window, batch_size, docs_per_shard, w])
                proc = subprocess.run(
                    [sys.executable, "-m", "minillm.data.benchmark", job],
                    env=env,
                    capture_output=True,
                    text=True,
                )
                if proc.returncode != 0:
                    raise RuntimeError(f"corpus bench worker failed:\n{proc.stderr[-3000:]}")
                row["serial" if w == 1 else "dask"] = json.loads(proc.stdout.strip().splitlines()[-1])
                if json_path is not None:
                    partial = dict(report, sizes=report["sizes"] + [row], load_now=os.getloadavg()[0])
                    Path(json_path).write_text(json.dumps(partial, indent=2))
            row["speedup"] = row["serial"]["seconds"] / row["dask"]["seconds"]
            report["sizes"].append(row)
    report["load_end"] = os.getloadavg()[0]
    return report


def estimate(
    tokens_per_s_per_worker: float,
    efficiency: float,
    tokens: float = 1e8,
    machines=(1, 4, 16, 64),
    cores: int = 2,
) -> list[dict]:
    """Hours for `tokens` on N machines of `cores` workers, from a measured per-worker rate and
    parallel efficiency (speed-up / workers). Start-up, corpus reading on shared storage and
    merging are left out: shards are large, so they are small next to the forward passes."""
    out = []
    for n in machines:
        rate = tokens_per_s_per_worker * n * cores * efficiency
        out.append(dict(machines=n, workers=n * cores, hours=tokens / rate / 3600))
    return out


def format_report(r: dict) -> str:
    """The measurements as a Markdown table, and the paper estimate for 100M tokens.

    tok/CPU-s divides by the CPU time the workers got, not the wall time: on a shared machine it
    is what a worker would do on a core of its own. The estimate uses it, times the parallel
    efficiency measured in CPU terms (Dask's tok/CPU-s over one process's).
    """
    lines = [
        f"corpus statistics: {r['model']}, hooks {r['hooks']}, window {r['window']}, "
        f"batch {r['batch_size']}, {r['docs_per_shard']} documents per shard; load average "
        f"{r['load_start']:.1f} -> {r['load_end']:.1f} on {r['cpus']} CPUs",
        "",
        "| tokens | 1 process: tok/s | tok/CPU-s | peak RSS | "
        f"{r['workers']} workers: tok/s | tok/CPU-s | speed-up (wall) | peak RSS per worker | "
        "cluster start |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in r["sizes"]:
        a, b = s["serial"], s["dask"]
        lines.append(
            f"| {s['corpus']['tokens']:,} | {a['tokens_per_s']:.0f} | {_get(a, 'tokens_per_cpu_s')} | "
            f"{a['peak_rss_mb'][0]:.0f} MB | {b['tokens_per_s']:.0f} | {_get(b, 'tokens_per_cpu_s')} | "
            f"{s['speedup']:.2f}x | {', '.join(f'{m:.0f}' for m in b['peak_rss_mb'])} MB | "
            f"{b['startup_s']:.1f} s |"
        )
    big = max(r["sizes"], key=lambda s: s["corpus"]["tokens"])
    a, b = big["serial"], big["dask"]
    rate = a.get("tokens_per_cpu_s", a["tokens_per_s"])
    eff = (
        b["tokens_per_cpu_s"] / a["tokens_per_cpu_s"]
        if "tokens_per_cpu_s" in a and "tokens_per_cpu_s" in b
        else big["speedup"] / r["workers"]
    )
    lines += [
        "",
        f"paper estimate for 100M tokens: {rate:.0f} tok/s per worker on a core of its own, "
        f"{min(eff, 1.0):.0%} parallel efficiency ({big['corpus']['tokens']:,}-token run), "
        "2 workers per machine:",
    ]
    for e in estimate(rate, min(eff, 1.0)):
        lines.append(f"  {e['machines']:3d} machine(s), {e['workers']:3d} workers: {e['hours']:8.1f} h")
    return "\n".join(lines)


def _get(d: dict, key: str) -> str:
    return f"{d[key]:.0f}" if key in d else "-"


if __name__ == "__main__":
    print(json.dumps(_job(*json.loads(sys.argv[1]))))
