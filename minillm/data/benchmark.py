"""`minillm bench MODEL --corpus`: corpus statistics throughput, Dask speed-up and memory per worker.

    minillm bench smollm2-135m --corpus       # 10k, 100k and 1M tokens, 1 process and 2 workers
    minillm bench smollm2-135m --corpus --corpus-tokens 10000,100000 --json corpus.json

For each corpus size the same job, `corpus_stats` of `--corpus-hooks`
(default `DEFAULT_HOOKS`, with KLL quantile sketches), in shards of the same
documents for both engines, runs
    serial   in a fresh subprocess, 1 BLAS thread, the model loaded and run
             once before the clock starts: tokens/s, CPU time, and the
             process's peak resident memory after loading (VmHWM, model
             weights included);
    dask     on a new LocalCluster of `workers` processes x 1 thread, each of
             which has loaded the model and run it once: tokens/s (wall time
             from submitting the first shard to merging the last, cluster
             start-up excluded and reported apart), the CPU time of every
             process of the run, and each worker's peak resident memory, read
             inside the worker after its shards.
The speed-up is serial time / Dask time for the same size; the CPU efficiency
is Dask's tokens per CPU-second (all processes) over one process's. The corpus is
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

# An early hook: the forward pass stops after block 3 (of SmolLM2's 30), so 1M tokens take minutes.
# What a worker costs per token grows with the depth of the last hook; its overheads do not.
DEFAULT_HOOKS = "blocks.3.mlp.hook_post"
# A memory run (`--corpus-memory`): the forward pass stops at the embedding, so the time goes to reading,
# tokenizing and the statistics (576 sketches) and 1M tokens take about a minute per engine; the peak
# memory against the token count is what to read from it.
MEMORY_HOOKS = "blocks.0.hook_resid_pre"

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


def auto_docs_per_shard(n_docs: int, workers: int) -> int:
    """Shards for a measurement: about 8 per worker (so the last one to finish leaves the other
    workers idle for little of the run), between 4 and 64 documents each (so that a shard's fixed
    costs, sending and merging its ~4 MB of sketches, stay small next to its forward passes)."""
    return int(np.clip(n_docs // (8 * workers), 4, 64))


def _job(
    model_name: str, corpus: str, hooks: str, window: int, batch_size: int, docs_per_shard: int, workers: int
) -> dict:
    """One measurement (run in a fresh process). CPU time is counted for every process of the run:
    this one (with a Dask cluster: the client, the scheduler and the nannies) and each worker."""
    import minillm
    from minillm.data import Corpus
    from minillm.data.shards import (
        ModelSpec,
        dask_executor,
        peak_rss_mb,
        reset_peak_rss,
        worker_cpu_seconds,
    )
    from minillm.interp import stats as S

    model = minillm.load(model_name)
    data = Corpus.from_jsonl(corpus)
    kw = dict(window=window, batch_size=batch_size, docs_per_shard=docs_per_shard, progress=False)
    if workers <= 1:
        model(np.zeros((1, 8), np.int64), last_only=True)  # run once, as `warm_up` does on the workers
        reset_peak_rss()  # and count memory from there
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
        before = worker_cpu_seconds(ex)
        t, c = time.perf_counter(), time.process_time()
        st = S.corpus_stats(model, data, hooks, executor=ex, **kw)
        seconds, client_cpu = time.perf_counter() - t, time.process_time() - c
        after = worker_cpu_seconds(ex)
    w = st.meta["workers"]
    n = st.meta["n_tokens"]
    workers_cpu = {a: after[a] - before[a] for a in after}
    in_shards = sum(v.get("cpu_seconds", 0) for v in w.values())
    total = client_cpu + sum(workers_cpu.values())
    return dict(
        engine=f"dask {workers} workers x 1 thread",
        seconds=seconds,
        startup_s=round(startup, 2),
        tokens=n,
        tokens_per_s=n / seconds,
        peak_rss_mb=sorted(v["peak_rss_mb"] for v in w.values()),
        cpu_seconds=total,  # every process of the run
        client_cpu_seconds=client_cpu,
        worker_cpu_seconds=sorted(workers_cpu.values()),
        shard_cpu_seconds=in_shards,  # inside the shards only
        tokens_per_cpu_s=n / max(1e-9, total),
        tokens_per_shard_cpu_s=n / max(1e-9, in_shards),
        shards_per_worker=sorted(v["shards"] for v in w.values()),
    )


def run_corpus_bench(
    model_name: str,
    sizes=(10_000, 100_000, 1_000_000),
    workers: int = 2,
    hooks: str | None = None,
    window: int = 128,
    batch_size: int = 8,
    docs_per_shard: int | None = None,
    progress=print,
    json_path: str | Path | None = None,
) -> dict:
    """Measure every size serially and on `workers` Dask workers (see the module docstring).
    docs_per_shard: None = `auto_docs_per_shard` for each size (the same for both engines).
    json_path: the report so far is rewritten there after every measurement."""
    import minillm

    model = minillm.load(model_name)
    hooks = hooks or DEFAULT_HOOKS
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    report = dict(
        model=model_name,
        hooks=hooks,
        window=window,
        batch_size=batch_size,
        docs_per_shard=docs_per_shard or "auto",
        workers=workers,
        cpus=os.cpu_count(),
        load_start=os.getloadavg()[0],
        sizes=[],
    )
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            info = synthetic_corpus(Path(tmp) / f"corpus_{n}.jsonl", n, model, seed=n)
            per = docs_per_shard or auto_docs_per_shard(info["documents"], workers)
            row = dict(target_tokens=n, corpus=dict(tokens=info["tokens"], documents=info["documents"]),
                       docs_per_shard=per, load_start=os.getloadavg()[0])
            for w in (1, workers):
                progress(
                    f"corpus bench: {info['tokens']} tokens, {'serial' if w == 1 else f'{w} workers'} ..."
                )
                job = json.dumps([model_name, info["path"], hooks, window, batch_size, per, w])
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
            row["load_end"] = os.getloadavg()[0]
            row["speedup"] = row["serial"]["seconds"] / row["dask"]["seconds"]
            row["cpu_efficiency"] = row["dask"]["tokens_per_cpu_s"] / row["serial"]["tokens_per_cpu_s"]
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

    tok/CPU-s divides by CPU time, not wall time: for Dask, the CPU time of every process of the
    run (client, scheduler and nannies, and the workers, Dask's own threads included). On a shared
    machine it is what the run would take on cores of its own. CPU efficiency is Dask's tok/CPU-s
    over one process's; on idle cores the wall speed-up would be about workers x efficiency.
    """
    w = r["workers"]
    lines = [
        f"corpus statistics: {r['model']}, hooks {r['hooks']}, window {r['window']}, "
        f"batch {r['batch_size']}; load average {r['load_start']:.1f} -> {r['load_end']:.1f} on "
        f"{r['cpus']} CPUs",
        "",
        f"| tokens | docs/shard | 1 process: tok/s | tok/CPU-s | peak RSS | {w} workers: tok/s | "
        "tok/CPU-s (all processes) | CPU efficiency | speed-up (wall) | peak RSS per worker | "
        "cluster start | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in r["sizes"]:
        a, b = s["serial"], s["dask"]
        eff = b["tokens_per_cpu_s"] / a["tokens_per_cpu_s"]
        lines.append(
            f"| {s['corpus']['tokens']:,} | {s.get('docs_per_shard', r['docs_per_shard'])} | "
            f"{a['tokens_per_s']:.0f} | {a['tokens_per_cpu_s']:.0f} | {a['peak_rss_mb'][0]:.0f} MB | "
            f"{b['tokens_per_s']:.0f} | {b['tokens_per_cpu_s']:.0f} | {eff:.0%} | {s['speedup']:.2f}x | "
            f"{', '.join(f'{m:.0f}' for m in b['peak_rss_mb'])} MB | {b['startup_s']:.1f} s | "
            f"{s.get('load_start', r['load_start']):.1f}-{s.get('load_end', r['load_end']):.1f} |"
        )
    big = max(r["sizes"], key=lambda s: s["corpus"]["tokens"])
    a, b = big["serial"], big["dask"]
    rate = a["tokens_per_cpu_s"]
    eff = min(1.0, b["tokens_per_cpu_s"] / a["tokens_per_cpu_s"])
    lines += [
        "",
        f"CPU efficiency at {big['corpus']['tokens']:,} tokens: {eff:.0%}, which predicts a wall speed-up "
        f"of {w * eff:.2f}x on {w} idle cores (measured wall: {big['speedup']:.2f}x at load "
        f"{big.get('load_start', r['load_start']):.1f}).",
        f"paper estimate for 100M tokens: {rate:.0f} tok/s per worker on a core of its own, "
        f"{eff:.0%} parallel efficiency, 2 workers per machine:",
    ]
    for e in estimate(rate, eff):
        lines.append(f"  {e['machines']:3d} machine(s), {e['workers']:3d} workers: {e['hours']:8.1f} h")
    return "\n".join(lines)


if __name__ == "__main__":
    print(json.dumps(_job(*json.loads(sys.argv[1]))))
