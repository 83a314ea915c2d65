"""Running dataset-level work in shards, on any `concurrent.futures.Executor`, resumably.

    from minillm.data import run_shards, dask_executor
    with dask_executor(workers=2) as ex:               # a local Dask cluster (or scheduler="tcp://...")
        total = run_shards(fn, tasks, merge, executor=ex, out="out/stats", resume=True)

A job is a list of tasks (shard 0, 1, 2, ...), one module-level function
`fn(task) -> result`, and `merge(accumulated, result) -> accumulated`. The
engine is whatever runs `fn`: nothing (`executor=None`: in this process, in
order), a `ThreadPoolExecutor` or `ProcessPoolExecutor`, or a Dask cluster
through `Client.get_executor()`. Tasks carry a `ModelSpec` (folder and
dtype), never a model: each worker loads the model once and keeps it.

Results are merged in shard order whatever order they finish in (at most
`max_pending` shards are in flight, so the waiting room is bounded), which
makes the merged numbers the same floating-point sums on every engine.

With `out=`, each shard's result is written to `out/shards/NNNNN.*` as soon
as it completes (to a temporary name, then renamed, so a file is whole or
absent) and the job's parameters to `out/job.json`. `resume=True` loads the
shards already there and runs only the missing ones; a folder written by a
job with other parameters is refused rather than mixed in.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Executor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from minillm.data.corpus import Corpus
from minillm.errors import MinillmError


@dataclass(frozen=True)
class ModelSpec:
    """How a worker gets the model: a folder (or catalog name) and a dtype."""

    path: str
    dtype: str = "float32"

    @classmethod
    def of(cls, model, executor: Executor | None = None) -> ModelSpec:
        """The spec of a loaded model; refused when workers could not rebuild it from disk."""
        if getattr(model, "path", None) is None:
            raise MinillmError(
                "this model was not loaded from a folder, so workers cannot load it: "
                "save it and minillm.load the folder, or run without an executor"
            )
        if model.edits:
            raise MinillmError(
                f"the model has {len(model.edits)} weight edit(s) in force; workers "
                "load the weights from disk and would not see them: revert them, or "
                "run without an executor"
            )
        return cls(str(model.path), np.dtype(model.dtype).name)

    def load(self):
        """This process's copy of the model, loaded on first use (see `use`)."""
        with _LOCK:
            if self not in _MODELS:
                import minillm

                _MODELS[self] = minillm.load(self.path, dtype=np.dtype(self.dtype))
                _MODEL_LOCKS[self] = threading.Lock()
                reset_peak_rss()  # the peak reported by shards is the peak after loading
            return _MODELS[self]

    @contextmanager
    def use(self) -> Iterator:
        """The process's model, held by this thread until the block ends: hooks are registered on
        the model, so threads of one process take turns with it (use processes for parallelism)."""
        model = self.load()
        with _MODEL_LOCKS[self]:
            yield model


_LOCK = threading.Lock()
_MODELS: dict[ModelSpec, object] = {}  # one model per spec per process, shared by its threads
_MODEL_LOCKS: dict[ModelSpec, threading.Lock] = {}


def reset_peak_rss() -> None:
    """Start this process's peak-memory count afresh (Linux; elsewhere a no-op)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_rss_mb() -> float:
    """This process's peak resident memory, in MB: Linux's VmHWM, since the last `reset_peak_rss`
    (a worker resets it once its model is loaded); elsewhere ru_maxrss, the whole life's peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker_record(t0_wall: float, t0_cpu: float) -> dict:
    """{pid: {peak_rss_mb, seconds, cpu_seconds, shards: 1}} for a shard that began at these
    time.perf_counter() / time.process_time() readings; merged with `merge_workers`."""
    return {
        str(os.getpid()): dict(
            peak_rss_mb=round(peak_rss_mb(), 1),
            seconds=round(time.perf_counter() - t0_wall, 3),
            cpu_seconds=round(time.process_time() - t0_cpu, 3),
            shards=1,
        )
    }


def merge_workers(into: dict, other: dict) -> dict:
    """Fold worker records together: peak memory by max, times and shard counts by sum."""
    for pid, w in other.items():
        old = into.setdefault(pid, {})
        for k, v in w.items():
            old[k] = max(old.get(k, 0), v) if k == "peak_rss_mb" else round(old.get(k, 0) + v, 3)
    return into


def merge_counts(into: dict, other: dict) -> dict:
    """Fold one shard's meta into another's: token, text and window counts add, worker records merge."""
    for key in ("n_tokens", "n_texts", "n_windows"):
        into[key] = into.get(key, 0) + other.get(key, 0)
    merge_workers(into.setdefault("workers", {}), other.get("workers", {}))
    return into


def merge_results(acc: Any, result: Any) -> Any:
    """The usual `merge` of `run_shards`: the first result, then acc.merge(result) (in place)."""
    return result if acc is None else acc.merge(result)


def options(given: dict, defaults: dict, what: str) -> dict:
    """`defaults` updated with the `given` keyword options; an unknown one is a MinillmError listing them."""
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise MinillmError(f"unknown option {unknown[0]!r}: {what} takes {', '.join(defaults)}")
    return defaults | given


def engine_name(executor: Executor | None) -> str:
    """What ran the shards, for metadata: "serial", or the executor's class."""
    return "serial" if executor is None else type(executor).__name__


# --- result files -------------------------------------------------------------------------------------


def write_tensors(path: str | Path, tensors: dict[str, np.ndarray], key: str, info: Any) -> None:
    """One safetensors file of `tensors`, with `info` as JSON in the file's metadata under `key`."""
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path),
              metadata={key: json.dumps(info, default=str)})


def read_tensors(path: str | Path, key: str, what: str) -> tuple[Any, dict[str, np.ndarray]]:
    """(info, tensors) of a `write_tensors` file; a MinillmError naming the file when it is not one."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "numpy") as f:
            info = json.loads((f.metadata() or {})[key])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (OSError, KeyError, ValueError) as e:
        raise MinillmError(f"{path}: not a minillm {what} file ({type(e).__name__}: {e})") from None
    return info, tensors


def save_result(result: Any, folder: str | Path, stem: str, summary: dict) -> Path:
    """folder/<stem>.safetensors (`result.to_file`, whole or absent: written under a temporary name,
    then renamed) and folder/<stem>.json (`summary`, readable)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f"{stem}.part.safetensors"
    result.to_file(tmp)
    os.replace(tmp, folder / f"{stem}.safetensors")
    (folder / f"{stem}.json").write_text(json.dumps(summary, indent=1, default=str))
    return folder


def result_file(folder_or_file: str | Path, stem: str, command: str) -> Path:
    """The <stem>.safetensors that `save_result` wrote into a folder (or the file itself)."""
    p = Path(folder_or_file)
    p = p / f"{stem}.safetensors" if p.is_dir() else p
    if not p.is_file():
        raise MinillmError(f"{folder_or_file}: no {stem}.safetensors there "
                           f"(write one with minillm {command})")
    return p


def shard_ranges(n_items: int, per_shard: int) -> list[tuple[int, int]]:
    """[start, stop) ranges of `per_shard` items covering 0..n_items-1."""
    if per_shard < 1:
        raise MinillmError(f"a shard needs at least 1 item, got {per_shard}")
    return [(s, min(s + per_shard, n_items)) for s in range(0, n_items, per_shard)]


def run_shards(
    fn: Callable[[Any], Any],
    tasks: Sequence[Any],
    merge: Callable[[Any, Any], Any] | None = None,
    executor: Executor | None = None,
    out: str | Path | None = None,
    resume: bool = False,
    params: dict | None = None,
    save: Callable[[Any, Path], None] | None = None,
    load: Callable[[Path], Any] | None = None,
    suffix: str = ".safetensors",
    progress: bool = True,
    desc: str = "shards",
    size: Callable[[Any], int] | None = None,
    unit: str = "shard",
    max_pending: int | None = None,
) -> Any:
    """Run fn(task) for every task, merge the results in task order; see the module docstring.

    save/load write and read one result (`out` needs load; save defaults to
    result.to_file(path)); merge None is `merge_results`. size(result)
    is what the progress bar counts (e.g. tokens, with unit="tok"; default
    1 per shard). Returns merge(...merge(merge(None, r0), r1)..., rn), or
    None for no tasks. Ctrl-C cancels what has not started; the shards
    already written stay, for `resume`.
    """
    from tqdm.auto import tqdm

    n = len(tasks)
    folder = Path(out) / "shards" if out is not None else None
    done: set[int] = set()
    merge = merge or merge_results
    save = save or (lambda r, p: r.to_file(p))
    if folder is not None:
        if load is None:
            raise MinillmError("writing shards needs a load= function")
        done = _prepare(Path(out), folder, n, params or {}, resume, suffix)
    path = (lambda i: folder / f"{i:05d}{suffix}") if folder is not None else None
    size = size or (lambda r: 1)
    pending_idx = [i for i in range(n) if i not in done]
    max_pending = max_pending or max(2, 2 * _workers(executor))

    acc, next_i, waiting = None, 0, {}
    bar = tqdm(
        total=None if unit != "shard" else n,
        desc=desc,
        unit=unit,
        unit_scale=unit != "shard",
        disable=not progress,
        leave=False,
    )

    def drain():
        nonlocal acc, next_i
        while next_i < n and (next_i in waiting or next_i in done):
            r = waiting.pop(next_i) if next_i in waiting else load(path(next_i))
            if next_i in done:
                bar.update(size(r))
            acc = merge(acc, r)
            next_i += 1

    def finished(i, r):
        if path is not None:
            tmp = path(i).with_name(path(i).stem + ".part" + suffix)
            save(r, tmp)
            os.replace(tmp, path(i))
        waiting[i] = r
        bar.update(size(r))
        drain()

    try:
        drain()
        if executor is None:
            for i in pending_idx:
                finished(i, fn(tasks[i]))
        else:
            todo: Iterator[int] = iter(pending_idx)
            running: dict = {}
            try:
                while True:
                    while len(running) + len(waiting) < max_pending:
                        i = next(todo, None)
                        if i is None:
                            break
                        running[executor.submit(fn, tasks[i])] = i
                    if not running:
                        break
                    ready, _ = wait(list(running), return_when=FIRST_COMPLETED)
                    for f in sorted(ready, key=lambda f: running[f]):
                        finished(running.pop(f), f.result())
            finally:
                for f in running:
                    f.cancel()
        drain()
    finally:
        bar.close()
    if next_i != n:  # cannot happen unless a merge skipped: a bug, not a user error
        raise RuntimeError(f"merged {next_i} of {n} shards")
    return acc


def _workers(executor) -> int:
    if executor is None:
        return 1
    n = getattr(executor, "_max_workers", None)
    if n:
        return int(n)
    client = getattr(executor, "_client", None)  # dask's ClientExecutor
    if client is not None:
        try:
            return max(1, sum(w.get("nthreads", 1) for w in client.scheduler_info()["workers"].values()))
        except Exception:  # noqa: BLE001 - the count only sizes the queue
            return 2
    return 2


def _prepare(out: Path, folder: Path, n: int, params: dict, resume: bool, suffix: str) -> set[int]:
    """Check or write out/job.json; the shard numbers already complete."""
    job = dict(params, n_shards=n)
    job = json.loads(json.dumps(job, default=str))  # the form it has once read back
    manifest = out / "job.json"
    existing = sorted(folder.glob(f"[0-9][0-9][0-9][0-9][0-9]{suffix}")) if folder.is_dir() else []
    if manifest.is_file():
        try:
            old = json.loads(manifest.read_text())
        except ValueError:
            raise MinillmError(
                f"{manifest} is not valid JSON; remove the folder {out} to start over"
            ) from None
        if old != job:
            diff = sorted(k for k in set(old) | set(job) if old.get(k) != job.get(k))
            raise MinillmError(
                f"{out} holds shards of another job (different {', '.join(diff)}); "
                "use another folder, or remove it to start over"
            )
        if existing and not resume:
            raise MinillmError(
                f"{out} already holds {len(existing)} of {n} shards of this job: pass "
                "--resume (resume=True) to continue it, or use another folder"
            )
    elif existing:
        raise MinillmError(f"{folder} holds shard files but no job.json; remove it to start over")
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob(f"*.part{suffix}"):
        stale.unlink()  # a shard that was being written when the last run stopped
    if not manifest.is_file():
        tmp = manifest.with_suffix(".part")
        tmp.write_text(json.dumps(job, indent=1))
        os.replace(tmp, manifest)
    return {int(p.stem) for p in existing if int(p.stem) < n}


# --- jobs over a corpus -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CorpusTask:
    """One shard of a job over a corpus: documents start..stop-1, read in windows and batches, and
    what to compute on each batch. `job` is small and picklable, with `.empty()` (a result with no
    data: a `.merge`-able, `.to_file`-able object with a `meta` dict) and `.update(acc, model, batch)`."""

    model: ModelSpec | None
    corpus: Corpus
    start: int
    stop: int
    window: int
    batch_size: int
    job: Any
    progress: bool = False


def corpus_shard(task: CorpusTask, model=None) -> Any:
    """One shard's result (on a worker; `model` given when run in this process). Its meta counts the
    tokens, texts and windows, and records the worker (`worker_record`)."""
    t0, c0 = time.perf_counter(), time.process_time()
    if model is None:
        with task.model.use() as model:
            return corpus_shard(task, model)
    acc = task.job.empty()
    counts = dict(n_tokens=0, n_texts=0, n_windows=0)
    for batch in task.corpus.batches(model, task.window, task.batch_size, task.start, task.stop,
                                     progress=task.progress, desc=f"docs {task.start}-{task.stop - 1}"):
        task.job.update(acc, model, batch)
        counts["n_tokens"] += batch.n_tokens
        counts["n_texts"] += int(batch.last.sum())
        counts["n_windows"] += len(batch.length)
    acc.meta = dict(counts, workers=worker_record(t0, c0))
    return acc


# The options of every job over a corpus (the `**engine` of corpus_stats and top_activations), with
# their defaults: how the corpus is cut (tokens per window, windows per forward pass, documents per
# shard) and how the shards run (executor, output folder for shards and result, resume, progress bar).
DOCS_PER_SHARD = 64
CORPUS_OPTIONS = dict(window=128, batch_size=8, docs_per_shard=DOCS_PER_SHARD, executor=None, out=None,
                      resume=False, progress=True)


def run_corpus_job(model, corpus: Corpus, job: Any, params: dict, load: Callable[[Path], Any], desc: str,
                   meta: dict | None = None, **engine: Any) -> Any:
    """Run `job` (see `CorpusTask`) on every shard of `docs_per_shard` documents, on `executor`, and
    merge the results in shard order (`run_shards`). engine: `CORPUS_OPTIONS`.

    params: what identifies the job in out/job.json; the model, the corpus and the shard shapes are
    added. Returns the merged result (`job.empty()` for an empty corpus); its meta holds the params,
    the counts, the workers' records, seconds, tokens_per_s, the engine, and `meta`. With `out`, the
    shards are written to out/shards/ as they complete and the result by its `.save(out)`.
    """
    e = options(engine, CORPUS_OPTIONS, "a job over a corpus")
    executor, out = e["executor"], e["out"]
    t0 = time.perf_counter()
    spec = ModelSpec.of(model) if executor is not None else None
    n_docs = corpus.count()
    params = dict(params, model=str(getattr(model, "path", None) or model.name),
                  dtype=np.dtype(model.dtype).name, corpus=corpus.describe(), n_docs=n_docs,
                  window=e["window"], batch_size=e["batch_size"], docs_per_shard=e["docs_per_shard"])
    tasks = [CorpusTask(spec, corpus.part(a, b), a, b, e["window"], e["batch_size"], job,
                        progress=executor is None and e["progress"])
             for a, b in shard_ranges(n_docs, e["docs_per_shard"])]
    fn = corpus_shard if executor is not None else functools.partial(corpus_shard, model=model)
    res = run_shards(fn, tasks, merge_results, executor, out, e["resume"], params, load=load,
                     progress=e["progress"], desc=desc, size=lambda r: r.meta["n_tokens"], unit="tok")
    if res is None:  # an empty corpus
        res = job.empty()
        res.meta = dict(n_tokens=0, n_texts=0, n_windows=0, workers={})
    seconds = time.perf_counter() - t0
    n_tokens = res.meta.get("n_tokens", 0)
    res.meta = dict(params, n_tokens=n_tokens, n_texts=res.meta.get("n_texts", 0),
                    n_windows=res.meta.get("n_windows", 0), workers=res.meta.get("workers", {}),
                    seconds=round(seconds, 3), tokens_per_s=round(n_tokens / seconds, 1) if seconds else None,
                    engine=engine_name(executor), **(meta or {}))
    if out is not None:
        res.save(out)
    return res


# --- engines ------------------------------------------------------------------------------------------

# Dask defaults that cost CPU on this workload, measured on SmolLM2 statistics (docs/performance.md):
# - MALLOC_TRIM_THRESHOLD_ (set before spawning) makes glibc hand every large temporary array back to
#   the kernel, so each batch pays page faults again (1.6x the CPU time per token);
# - the statistical profiler samples the compute thread every 10 ms;
# - the event loops' timers: a 20 ms tick in every process, a 500 ms system monitor, and each
#   nanny's 100 ms memory monitor (the nannies of a local cluster live in the client's process).
#   An idle 2-worker cluster used 1.65 CPU-s per 20 s with them (4 % of the 2 cores), 0.26 with these.
# A remote cluster (--scheduler) keeps the settings its workers were started with.
LOCAL_CLUSTER_CONFIG = {
    "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "1s",
    "distributed.admin.system-monitor.interval": "5s",
    "distributed.worker.memory.monitor-interval": "1s",
}


@contextmanager
def dask_executor(
    workers: int | None = None,
    scheduler: str | None = None,
    threads_per_worker: int = 1,
    preload: ModelSpec | None = None,
) -> Iterator[Executor]:
    """A `concurrent.futures.Executor` on Dask: a new LocalCluster of `workers` processes
    (1 thread each by default, BLAS limited to match), or the cluster at `scheduler`.
    preload: every worker loads this model before the executor is handed out.

    Needs the optional extra: pip install 'minillm[corpus]'.
    """
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise MinillmError(
            "Dask is not installed: pip install 'minillm[corpus]' (dask[distributed])"
        ) from None
    if (workers is None) == (scheduler is None):
        raise MinillmError("give either workers=N (a local cluster) or scheduler=ADDRESS, not both")
    cluster = None
    if scheduler is None:
        if workers < 1:
            raise MinillmError(f"workers must be at least 1, got {workers}")
        blas = str(threads_per_worker)
        import dask

        with dask.config.set(LOCAL_CLUSTER_CONFIG):
            cluster = LocalCluster(
                n_workers=workers,
                threads_per_worker=threads_per_worker,
                processes=True,
                host="127.0.0.1",
                dashboard_address="127.0.0.1:0",  # a free port: never collide with another cluster
                env={"OPENBLAS_NUM_THREADS": blas, "OMP_NUM_THREADS": blas, "MKL_NUM_THREADS": blas},
            )
        client = Client(cluster)
    else:
        try:
            client = Client(scheduler, timeout=30)
        except OSError as e:
            raise MinillmError(f"cannot reach the Dask scheduler at {scheduler} ({e})") from None
    try:
        if preload is not None:
            client.run(warm_up, preload)
        yield client.get_executor()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def worker_cpu_seconds(executor) -> dict[str, float]:
    """The CPU time each Dask worker process has used so far (all its threads: the computation and
    Dask's own), by worker address; {} for an executor that is not Dask's."""
    import time

    client = getattr(executor, "_client", None)  # dask's ClientExecutor
    if client is None:
        return {}
    return {addr: float(t) for addr, t in client.run(time.process_time).items()}


def warm_up(spec: ModelSpec) -> None:
    """Load the model and run it once (first-touch page faults and BLAS buffers are paid here)."""
    with spec.use() as model:
        model(np.zeros((1, 8), np.int64), last_only=True)


@contextmanager
def executor_from_args(workers: int | None, scheduler: str | None, out=None) -> Iterator[Executor | None]:
    """The CLI's engine: None (this process), a local Dask cluster, or a remote scheduler.
    Ctrl-C inside says where the finished shards are and how to continue, then re-raises."""
    try:
        with _executor(workers, scheduler) as ex:
            yield ex
    except KeyboardInterrupt:
        if out is not None:
            print(f"interrupted: the finished shards are in {out}; run the same command with --resume "
                  "to continue", file=sys.stderr)
        raise


@contextmanager
def _executor(workers: int | None, scheduler: str | None) -> Iterator[Executor | None]:
    if scheduler:
        with dask_executor(scheduler=scheduler) as ex:
            yield ex
    elif workers and workers > 1:
        with dask_executor(workers=workers) as ex:
            yield ex
    else:
        yield None


def add_engine_arguments(parser) -> None:
    """--workers / --scheduler / --resume, shared by the dataset-level commands."""
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="run shards on a local Dask cluster of N processes, 1 thread each "
        "(default 1: in this process; needs pip install 'minillm[corpus]')",
    )
    parser.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="run shards on the existing Dask cluster at ADDRESS (e.g. tcp://host:8786)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run in the same output folder (finished shards are kept)",
    )
