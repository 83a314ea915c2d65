"""`minillm bench`: how fast is the forward pass, and how far is it from the machine's limits?

    minillm bench smollm2-135m                    # minillm alone
    minillm bench smollm2-135m --vs torch         # the same work with transformers + torch
    minillm bench smollm2-135m --json out.json    # everything measured, machine-readable

Phases (each in a fresh subprocess, so one phase cannot warm or bloat another):

    load           minillm.load (memory-mapped safetensors) up to the first logits
    prefill_all    one forward pass over `prefill_tokens` tokens, logits for every position
    prefill_last   the same, logits for the last position only
    decode         greedy generation of `new_tokens` after a `prompt_tokens` prompt (KV cache)
    hooks          `run_with_cache` over `prefill_tokens` tokens with every hook recording
                   (torch: output_hidden_states + output_attentions, eager attention)
    sweep          residual-stream patching, every layer x `sweep_positions` positions,
                   batched (`patching_sweep`)
    sweep_separate the same cells, one `run_with_interventions` per cell (minillm only);
                   `sweep_sample` evenly spread cells are timed and scaled to all cells

Each timed phase runs `warmup` untimed repetitions, then `runs` timed ones,
and reports the median, min and max wall time (time.perf_counter) and the
median CPU time of the process (time.process_time: all threads, so with two
busy BLAS threads it can be twice the wall time). CPU time is the steadier
number on a loaded machine; the load average at start and end is recorded.

Peak memory: each worker resets the kernel's high-water mark of its resident
set (writing 5 to /proc/self/clear_refs) after the model is loaded, runs the
phase, and reads VmHWM from /proc/self/status, so the number is the peak RSS
*during that phase*, model weights included. Where that is unavailable (not
Linux), it falls back to resource.getrusage's ru_maxrss of the worker, a
whole-life peak; the JSON names the method used.

Distance to the physical limits, measured in the same run with the same
thread count: the best GEMM throughput (GFLOP/s) over matrix shapes like the
model's, and the best read bandwidth (GB/s, a large sgemv and a large sum).
Prefill reports achieved GFLOP/s (counted matmul FLOPs / wall time); decode
reports achieved GB/s (weight bytes read per token / wall time per token).

Threads: `--threads N` sets OPENBLAS_NUM_THREADS, OMP_NUM_THREADS and
MKL_NUM_THREADS for every worker (and torch.set_num_threads). torch and
transformers are imported only in the torch workers, never by minillm itself.
"""

from __future__ import annotations

import gc
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np

from minillm.errors import MinillmError

PHASES = ("load", "prefill_all", "prefill_last", "decode", "hooks", "sweep", "sweep_separate")
TORCH_PHASES = ("load", "prefill_all", "prefill_last", "decode", "hooks")
TORCH_HINT = "pip install torch==2.13.0 transformers"


@dataclass
class Settings:
    """What to run: sizes, repetitions, threads."""

    runs: int = 5
    warmup: int = 1
    sweep_runs: int = 1  # the separate-runs sweep is long: time it fewer times
    sweep_sample: int = 60  # separate runs timed (evenly spread cells), scaled to all; 0 = all
    threads: int = 0  # 0: $OPENBLAS_NUM_THREADS, else every CPU this process may use
    prefill_tokens: int = 128
    prompt_tokens: int = 16
    new_tokens: int = 64
    sweep_positions: int = 16
    seed: int = 0
    machine_seconds: float = 0.3  # per measurement of the GEMM peak and the bandwidth
    machine_mb: int = 256  # size of the bandwidth test matrix: far larger than any cache

    def resolved_threads(self) -> int:
        if self.threads > 0:
            return self.threads
        env = os.environ.get("OPENBLAS_NUM_THREADS", "")
        if env.isdigit() and int(env) > 0:
            return int(env)
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# --- timing and memory ------------------------------------------------------------------------


def time_runs(fn, runs: int, warmup: int) -> dict:
    """Run fn warmup + runs times; wall and CPU seconds of the timed runs."""
    for _ in range(warmup):
        fn()
    walls, cpus = [], []
    for _ in range(runs):
        gc.collect()
        c, w = time.process_time(), time.perf_counter()
        fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return summary(walls, cpus)


def summary(walls: list[float], cpus: list[float]) -> dict:
    return dict(wall_median=statistics.median(walls), wall_min=min(walls), wall_max=max(walls),
                cpu_median=statistics.median(cpus), runs=len(walls), walls=walls, cpus=cpus)


class PeakRSS:
    """Peak resident set size of this process from `reset()` on (see module docstring)."""

    def __init__(self):
        self.method = "VmHWM after clear_refs=5"
        try:
            self.reset()
            self._read_hwm()
        except OSError:
            self.method = "ru_maxrss (whole worker)"

    def reset(self) -> None:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")

    def _read_hwm(self) -> int:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        raise OSError("no VmHWM")

    def try_reset(self) -> None:
        if self.method.startswith("VmHWM"):
            self.reset()

    def peak(self) -> int:
        """Bytes."""
        if self.method.startswith("VmHWM"):
            return self._read_hwm()
        import resource

        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return kb if sys.platform == "darwin" else kb * 1024


# --- counting work ---------------------------------------------------------------------------


def matmul_params(cfg) -> int:
    """Weights multiplied per token in the blocks (QKV, O, MLP), excluding the unembedding."""
    d, e, h, kv, m = cfg.d_model, cfg.d_head, cfg.n_heads, cfg.n_kv_heads, cfg.d_mlp
    mlp = (3 if cfg.gated_mlp else 2) * d * m
    return cfg.n_layers * (d * (h + 2 * kv) * e + h * e * d + mlp)


def forward_flops(cfg, p: int, past: int = 0, logits_positions: int | None = None) -> float:
    """Matmul FLOPs (2 per multiply-add) of a forward pass over p new tokens after `past` cached ones.

    Counts the weight GEMMs, the attention scores and mixing as computed (every
    query against every key, masked ones included), and the unembedding for
    `logits_positions` positions (default: all p).
    """
    logits_positions = p if logits_positions is None else logits_positions
    attn = cfg.n_layers * 2 * 2 * cfg.n_heads * cfg.d_head * p * (past + p)
    return 2.0 * matmul_params(cfg) * p + attn + 2.0 * cfg.d_model * cfg.d_vocab * logits_positions


def decode_bytes_per_token(cfg, itemsize: int = 4) -> int:
    """Weight bytes one decoding step must read: every block matmul and the unembedding."""
    return itemsize * (matmul_params(cfg) + cfg.d_model * cfg.d_vocab)


# --- the machine -----------------------------------------------------------------------------


def measure_machine(seconds: float = 0.3, mb: int = 256) -> dict:
    """Best GEMM GFLOP/s (model-like shapes) and best read bandwidth GB/s, with the current threads."""
    rng = np.random.default_rng(0)

    def best_rate(fn, work: float) -> float:
        fn()
        best, t_end = 0.0, time.perf_counter() + seconds
        while time.perf_counter() < t_end:
            t = time.perf_counter()
            fn()
            best = max(best, work / (time.perf_counter() - t))
        return best

    gemm = {}
    for n, k, m in ((128, 576, 3072), (512, 576, 3072), (1024, 1024, 1024)):
        a = rng.random((n, k), dtype=np.float32)
        b = rng.random((k, m), dtype=np.float32)
        gemm[f"{n}x{k}x{m}"] = best_rate(lambda a=a, b=b: a @ b, 2.0 * n * k * m) / 1e9
    W = np.ones((max(1, mb) * 2**20 // (4 * 16384), 16384), np.float32)
    x = rng.random((1, W.shape[0]), dtype=np.float32)
    bandwidth = {
        f"sgemv {mb} MB": best_rate(lambda: x @ W, W.nbytes) / 1e9,
        f"sum {mb} MB": best_rate(lambda: W.sum(), W.nbytes) / 1e9,
    }
    return dict(gemm_gflops=gemm, gemm_peak_gflops=max(gemm.values()),
                read_gbps=bandwidth, bandwidth_gbps=max(bandwidth.values()))


# --- minillm worker --------------------------------------------------------------------------


def _ids(rng, vocab: int, n: int) -> np.ndarray:
    return rng.integers(0, vocab, (1, n)).astype(np.int64)


def _minillm_phase(name: str, phase: str, s: Settings, rss: PeakRSS) -> dict:
    import minillm

    rng = np.random.default_rng(s.seed)
    if phase == "load":
        first = None

        def load():
            nonlocal first
            model = minillm.load(name)
            first = model(_ids(np.random.default_rng(s.seed), model.cfg.d_vocab, 4), last_only=True)

        load()  # warm-up: the page cache, the imports
        gc.collect()
        rss.try_reset()
        out = time_runs(load, s.runs, 0)
        out["finite"] = bool(np.isfinite(first).all())
        return out

    model = minillm.load(name)
    cfg = model.cfg
    out = dict(weight_bytes=int(sum(v.nbytes for v in _storage(model))))
    gc.collect()
    rss.try_reset()
    if phase in ("prefill_all", "prefill_last", "hooks"):
        ids = _ids(rng, cfg.d_vocab, s.prefill_tokens)
        last = phase == "prefill_last"
        fn = (lambda: model.run_with_cache(ids)) if phase == "hooks" else (
            lambda: model(ids, last_only=last))
        out.update(time_runs(fn, s.runs, s.warmup))
        out["flops"] = forward_flops(cfg, s.prefill_tokens, 0, 1 if last else None)
    elif phase == "decode":
        ids = _ids(rng, cfg.d_vocab, s.prompt_tokens)
        fn = lambda: model.generate(ids, max_new_tokens=s.new_tokens, temperature=0.0,  # noqa: E731
                                    stop_at_eos=False, return_ids=True)
        out.update(time_runs(fn, s.runs, s.warmup))
        out["bytes_per_token"] = decode_bytes_per_token(cfg, model.dtype.itemsize)
    elif phase in ("sweep", "sweep_separate"):
        out.update(_sweep(model, rng, phase, s))
    else:
        raise MinillmError(f"unknown phase {phase!r}; choose from {', '.join(PHASES)}")
    return out


def _storage(model):
    """Every parameter array once (fused storage, not the views into it)."""
    seen = {}
    for _, v in model.named_parameters():
        base = v
        while base.base is not None and isinstance(base.base, np.ndarray):
            base = base.base
        seen[id(base)] = base
    return list(seen.values())


def _sweep(model, rng, phase: str, s: Settings) -> dict:
    """resid_pre patching over every layer x `sweep_positions` positions, batched or one run per cell.

    The corrupted prompt differs from the clean one at one token, two thirds of
    the way in (like a name swap); the metric is a logit difference.
    """
    from minillm.interp import interventions as iv
    from minillm.interp import metrics as M
    from minillm.interp.patching import patching_sweep

    cfg = model.cfg
    p = s.sweep_positions
    clean = _ids(rng, cfg.d_vocab, p)
    corrupted = clean.copy()
    corrupted[0, (2 * p) // 3] = (clean[0, (2 * p) // 3] + 1) % cfg.d_vocab
    metric = M.logit_diff(model, int(rng.integers(cfg.d_vocab)), int(rng.integers(cfg.d_vocab)))
    cells = cfg.n_layers * p
    if phase == "sweep":
        runs = []

        def fn():
            res = patching_sweep(model, clean, corrupted, metric, "resid_pre", progress=False)
            runs.append(res.meta["runs"])

        out = time_runs(fn, s.runs, s.warmup)
        out["forward_rows"] = runs[-1]
    else:
        # Every separate run has the same shapes and cost, so timing an evenly spread sample of
        # the cells and scaling by cells / sample measures the whole sweep (sweep_sample=0: all).
        _, clean_cache = model.run_with_cache(clean, names_filter=lambda n: n.endswith("hook_resid_pre"))
        every = [(layer, pos) for layer in range(cfg.n_layers) for pos in range(p)]
        n = cells if s.sweep_sample <= 0 else min(cells, s.sweep_sample)
        sample = [every[i] for i in np.linspace(0, cells - 1, n).round().astype(int)]

        def fn():
            for layer, pos in sample:
                patch = iv.patch("resid_pre", clean_cache, layer=layer, pos=pos)
                metric(model.run_with_interventions(corrupted, [patch], last_only=True))

        model.run_with_interventions(corrupted, [], last_only=True)  # warm-up
        out = time_runs(fn, s.sweep_runs, 0)
        scale = cells / n
        for key in ("wall_median", "wall_min", "wall_max", "cpu_median"):
            out[key] *= scale
        out["walls"] = [w * scale for w in out["walls"]]
        out["cpus"] = [c * scale for c in out["cpus"]]
        out["timed_cells"] = n
        out["forward_rows"] = cells
    out["cells"] = cells
    return out


# --- torch worker (optional extra; imported only here) ---------------------------------------


def _torch_phase(name: str, phase: str, s: Settings, rss: PeakRSS) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    from minillm.loading import resolve

    torch.set_num_threads(s.resolved_threads())
    folder = str(resolve(name))
    rng = np.random.default_rng(s.seed)
    attn = "eager" if phase == "hooks" else "sdpa"

    def load():
        m = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation=attn)
        m.eval()
        return m

    with torch.inference_mode():
        if phase == "load":
            def load_and_run():
                m = load()
                m(torch.from_numpy(_ids(np.random.default_rng(s.seed), m.config.vocab_size, 4)))

            load_and_run()
            gc.collect()
            rss.try_reset()
            return time_runs(load_and_run, s.runs, 0)
        m = load()
        vocab = m.config.vocab_size
        gc.collect()
        rss.try_reset()
        if phase in ("prefill_all", "prefill_last", "hooks"):
            ids = torch.from_numpy(_ids(rng, vocab, s.prefill_tokens))
            kwargs = dict(prefill_last=dict(logits_to_keep=1),
                          hooks=dict(output_hidden_states=True, output_attentions=True)).get(phase, {})
            return time_runs(lambda: m(ids, **kwargs), s.runs, s.warmup)
        if phase == "decode":
            ids = torch.from_numpy(_ids(rng, vocab, s.prompt_tokens))
            n = s.new_tokens
            return time_runs(lambda: m.generate(ids, attention_mask=torch.ones_like(ids),
                                                max_new_tokens=n, min_new_tokens=n, do_sample=False,
                                                pad_token_id=0), s.runs, s.warmup)
    raise MinillmError(f"phase {phase!r} has no torch version")


def _worker_main(argv: list[str]) -> int:
    """python -m minillm.commands.benchmark '<json job>': run one phase, print one JSON line."""
    job = json.loads(argv[0])
    s = Settings(**job["settings"])
    rss = PeakRSS()
    if job["engine"] == "machine":
        out = measure_machine(s.machine_seconds, s.machine_mb)
    else:
        phase_fn = _torch_phase if job["engine"] == "torch" else _minillm_phase
        out = phase_fn(job["name"], job["phase"], s, rss)
        out["peak_rss"] = rss.peak()
        out["rss_method"] = rss.method
    print("BENCH-RESULT " + json.dumps(out))
    return 0


# --- the driver -----------------------------------------------------------------------------


def _run_worker(job: dict, threads: int) -> dict:
    env = dict(os.environ)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    proc = subprocess.run([sys.executable, "-m", "minillm.commands.benchmark", json.dumps(job)],
                          capture_output=True, text=True, env=env)
    for line in proc.stdout.splitlines():
        if line.startswith("BENCH-RESULT "):
            return json.loads(line[len("BENCH-RESULT "):])
    tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-8:])
    what = f"{job['engine']} {job.get('phase', '')}".strip()
    raise MinillmError(f"benchmark worker for {what} failed (exit {proc.returncode}):\n{tail}")


def check_torch() -> None:
    missing = [m for m in ("torch", "transformers") if importlib.util.find_spec(m) is None]
    if missing:
        raise MinillmError(f"--vs torch needs {' and '.join(missing)}: {TORCH_HINT}")


def run_bench(name: str, settings: Settings | None = None, vs_torch: bool = False,
              phases: tuple[str, ...] = PHASES, progress=None) -> dict:
    """Run every phase (and the torch ones with vs_torch); returns the report as a dict."""
    s = settings or Settings()
    bad = [p for p in phases if p not in PHASES]
    if bad:
        raise MinillmError(f"unknown phase {bad[0]!r}; choose from {', '.join(PHASES)}")
    if vs_torch:
        check_torch()
    from minillm.config import ModelConfig
    from minillm.loading import resolve

    cfg = ModelConfig.from_json(resolve(name) / "config.json")
    s = _fit_to_context(s, cfg.n_ctx)
    threads = s.resolved_threads()
    say = progress or (lambda msg: None)
    report = dict(model=name, settings=asdict(s), threads=threads, load_average_start=_loadavg(),
                  numpy=np.__version__, python=sys.version.split()[0], results={})
    jobs = [("machine", None)] + [("minillm", p) for p in phases]
    if vs_torch:
        jobs += [("torch", p) for p in phases if p in TORCH_PHASES]
    for engine, phase in jobs:
        say(f"{engine} {phase or 'peak GEMM and bandwidth'} ...")
        result = _run_worker(dict(engine=engine, phase=phase, name=name, settings=asdict(s)), threads)
        if engine == "machine":
            report["machine"] = result
        else:
            report["results"].setdefault(engine, {})[phase] = result
    report["load_average_end"] = _loadavg()
    report["derived"] = derived(report, cfg)
    return report


def _fit_to_context(s: Settings, n_ctx: int) -> Settings:
    """Shrink the token counts to fit a small model's context (tiny test models)."""
    s = Settings(**asdict(s))
    s.prefill_tokens = min(s.prefill_tokens, n_ctx)
    s.prompt_tokens = min(s.prompt_tokens, max(1, n_ctx // 2))
    s.new_tokens = min(s.new_tokens, n_ctx - s.prompt_tokens)
    s.sweep_positions = min(s.sweep_positions, n_ctx)
    return s


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def derived(report: dict, cfg) -> dict:
    """Ratios to torch, GFLOP/s and GB/s against the machine's measured limits, memory ratios."""
    mine = report["results"].get("minillm", {})
    torch_ = report["results"].get("torch", {})
    machine = report.get("machine", {})
    s = Settings(**report["settings"])
    out = {}
    for phase, r in mine.items():
        d = {}
        if phase in torch_:
            d["ratio_wall"] = r["wall_median"] / torch_[phase]["wall_median"]
            d["ratio_cpu"] = r["cpu_median"] / torch_[phase]["cpu_median"]
        if "flops" in r:
            d["gflops"] = r["flops"] / r["wall_median"] / 1e9
            d["gflops_cpu"] = r["flops"] / r["cpu_median"] / 1e9 * report["threads"]
            if machine:
                d["fraction_of_gemm_peak"] = d["gflops"] / machine["gemm_peak_gflops"]
        if phase == "decode":
            per_token = r["wall_median"] / s.new_tokens
            d["ms_per_token"] = 1e3 * per_token
            d["gbps"] = r["bytes_per_token"] / per_token / 1e9
            d["floor_ms_per_token"] = (1e3 * r["bytes_per_token"] / machine["bandwidth_gbps"] / 1e9
                                       if machine else None)
            if machine:
                d["fraction_of_bandwidth"] = d["gbps"] / machine["bandwidth_gbps"]
        if "weight_bytes" in r:
            d["peak_rss_over_weights"] = r["peak_rss"] / r["weight_bytes"]
        out[phase] = d
    if "sweep" in mine and "sweep_separate" in mine:
        out["sweep"]["speedup_vs_separate"] = (mine["sweep_separate"]["wall_median"]
                                               / mine["sweep"]["wall_median"])
        out["sweep"]["speedup_vs_separate_cpu"] = (mine["sweep_separate"]["cpu_median"]
                                                   / mine["sweep"]["cpu_median"])
    return out


TARGETS = {"prefill_all": "<= 1.0x torch", "prefill_last": "<= 1.0x torch",
           "decode": "<= 0.8x torch", "load": "<= 1 s", "sweep": ">= 5x separate"}


def format_report(report: dict) -> str:
    """The table `minillm bench` prints."""
    mine = report["results"].get("minillm", {})
    torch_ = report["results"].get("torch", {})
    der = report["derived"]
    s = report["settings"]
    ms = lambda x: f"{1e3 * x:8.1f}"  # noqa: E731
    lines = [
        f"minillm bench {report['model']}: {report['threads']} thread(s), float32, numpy "
        f"{report['numpy']}; load average {report['load_average_start']} -> "
        f"{report['load_average_end']}",
        f"prefill {s['prefill_tokens']} tokens; decode {s['new_tokens']} after {s['prompt_tokens']}; "
        f"sweep {s['sweep_positions']} positions x every layer. Times in ms: median (min-max) wall, "
        "median CPU.",
        "",
        f"{'phase':<15}{'median':>9}{'min':>9}{'max':>9}{'cpu':>9}{'peak RSS':>10}"
        + (f"{'torch':>9}{'t cpu':>9}{'ratio':>7}{'cpu r':>7}" if torch_ else "") + "  target",
    ]
    for phase, r in mine.items():
        row = (f"{phase:<15}{ms(r['wall_median']):>9}{ms(r['wall_min']):>9}{ms(r['wall_max']):>9}"
               f"{ms(r['cpu_median']):>9}{r['peak_rss'] / 2**20:>8.0f}MB")
        if torch_:
            t = torch_.get(phase)
            row += (f"{ms(t['wall_median']):>9}{ms(t['cpu_median']):>9}"
                    f"{der[phase]['ratio_wall']:>7.2f}{der[phase]['ratio_cpu']:>7.2f}" if t
                    else f"{'-':>9}{'-':>9}{'-':>7}{'-':>7}")
        lines.append(row + "  " + TARGETS.get(phase, ""))
    machine = report.get("machine")
    lines.append("")
    if machine:
        lines.append(f"measured limits: GEMM peak {machine['gemm_peak_gflops']:.0f} GFLOP/s, read "
                     f"bandwidth {machine['bandwidth_gbps']:.1f} GB/s")
    for phase in ("prefill_all", "prefill_last"):
        if phase in der and "gflops" in der[phase]:
            frac = der[phase].get("fraction_of_gemm_peak")
            lines.append(f"{phase}: {der[phase]['gflops']:.0f} GFLOP/s"
                         + (f" = {100 * frac:.0f}% of the GEMM peak" if frac else ""))
    if "decode" in der:
        d = der["decode"]
        lines.append(f"decode: {d['ms_per_token']:.1f} ms/token, {d['gbps']:.1f} GB/s of weights"
                     + (f" = {100 * d['fraction_of_bandwidth']:.0f}% of the bandwidth (floor "
                        f"{d['floor_ms_per_token']:.1f} ms/token)" if machine else ""))
        if "decode" in torch_:
            lines.append(f"torch decode: {1e3 * torch_['decode']['wall_median'] / s['new_tokens']:.1f} "
                         "ms/token")
    if "sweep" in der and "speedup_vs_separate" in der["sweep"]:
        sw = der["sweep"]
        lines.append(f"sweep: batched is {sw['speedup_vs_separate']:.1f}x faster than separate runs "
                     f"(CPU {sw['speedup_vs_separate_cpu']:.1f}x; {mine['sweep']['forward_rows']} "
                     f"patched rows instead of {mine['sweep']['cells']} runs; separate runs timed on "
                     f"{mine['sweep_separate'].get('timed_cells', mine['sweep']['cells'])} cells, "
                     "scaled)")
    for phase in ("prefill_all", "prefill_last", "decode"):
        if phase in der and "peak_rss_over_weights" in der[phase]:
            lines.append(f"{phase}: peak RSS {der[phase]['peak_rss_over_weights']:.2f}x the weight bytes")
            break
    first = next(iter(mine.values()), None)
    if first:
        lines.append(f"peak RSS measured with {first['rss_method']}, per phase in its own process")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
