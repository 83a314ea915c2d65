"""`minillm patch`: activation (and path) patching of a clean / corrupted prompt pair -> PNG, CSV, JSON."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from minillm.errors import MinillmError

HELP = "activation / path patching of a clean and a corrupted prompt: heatmaps (PNG) and numbers (CSV, JSON)"

IOI_CLEAN = "When Mary and John went to the store, John gave a drink to"
IOI_CORRUPTED = "When Mary and John went to the store, Mary gave a drink to"
FAST = "resid_pre,attn_out,mlp_out,heads"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from minillm.interp.patching import COMPONENTS

    parser.add_argument("model", nargs="?", default="smollm2-135m", metavar="NAME_OR_PATH",
                        help="a catalog name or a model folder (default: smollm2-135m)")
    parser.add_argument("--clean", default=IOI_CLEAN, help=f"the clean prompt (default: {IOI_CLEAN!r})")
    parser.add_argument("--corrupted", default=IOI_CORRUPTED,
                        help="the corrupted prompt, same number of tokens (default: the IOI prompt with "
                        "the repeated name swapped)")
    parser.add_argument("--answer", default=" Mary", help="the clean answer token (default ' Mary')")
    parser.add_argument("--wrong", default=" John", help="the corrupted answer token (default ' John')")
    parser.add_argument("-o", "--out", required=True, metavar="DIR",
                        help="folder for PNG, CSV and JSON files")
    parser.add_argument("--components", default=FAST,
                        help=f"comma-separated, or 'all' (default {FAST}); choose from "
                        f"{', '.join(COMPONENTS)}")
    parser.add_argument("--direction", choices=["denoising", "noising", "both"], default="denoising",
                        help="denoising: patch clean into the corrupted run; noising: the reverse")
    parser.add_argument("--raw", action="store_true",
                        help="report the raw metric change instead of the normalised metric "
                        "(0 = corrupted, 1 = clean)")
    parser.add_argument("--path", action="store_true",
                        help="also path-patch every head and MLP -> logits (IOI-style, everything "
                        "else frozen)")
    parser.add_argument("--receivers", default=None, metavar="R1,R2,...",
                        help="path patching receivers besides 'logits', e.g. '20.3.q,mlp25' (implies --path)")
    parser.add_argument("--layers", default=None, metavar="L1,L2,...",
                        help="restrict the sweeps (and path-patching senders) to these layers")
    parser.add_argument("--batch-size", type=int, default=32, help="patched runs per forward pass")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    add_prompt_set_arguments(parser, "clean, corrupted, answer, wrong")


def add_prompt_set_arguments(parser: argparse.ArgumentParser, fields: str) -> None:
    """--prompts FILE and what goes with it (shared with `minillm ablate`)."""
    from minillm.data.shards import add_engine_arguments

    parser.add_argument("--prompts", default=None, metavar="FILE",
                        help=f"run over a prompt set: a JSONL file (fields {fields}) or ioi:N[:SEED] for N "
                        "generated IOI prompts; writes per-prompt results, the mean and a bootstrap "
                        "confidence interval per cell")
    parser.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples (default 1000)")
    parser.add_argument("--confidence", type=float, default=0.95, help="interval level (default 0.95)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    parser.add_argument("--prompts-per-shard", type=int, default=8,
                        help="prompts per shard, the unit of work and of --resume (default 8)")
    add_engine_arguments(parser)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    import minillm
    from minillm.interp import metrics as M
    from minillm.interp import patching as P

    comps = list(P.DEFAULT_COMPONENTS) if args.components == "all" else args.components.split(",")
    for c in comps:
        if c not in P.COMPONENTS:
            raise MinillmError(f"unknown component {c!r}; choose from {', '.join(P.COMPONENTS)}")
    if args.batch_size < 1:
        raise MinillmError(f"--batch-size must be at least 1, got {args.batch_size}")
    try:
        layers = [int(x) for x in args.layers.split(",")] if args.layers else None
    except ValueError:
        raise MinillmError(f"--layers must be comma-separated integers, got {args.layers!r}") from None
    from minillm.commands._outputs import check_output_folder
    from minillm.tokenizer import check_text

    check_output_folder(args.out)  # before loading the model
    for text in (args.clean, args.corrupted, args.answer, args.wrong):
        if isinstance(text, str):
            check_text(text)
    model = minillm.load(args.model, dtype=np.dtype(args.dtype))
    if args.prompts:
        return run_prompt_set(args, model, comps, layers)
    metric = M.logit_diff(model, args.answer, args.wrong)
    out = Path(args.out)
    summary = dict(model=args.model, clean=args.clean, corrupted=args.corrupted, answer=args.answer,
                   wrong=args.wrong, metric="logit(answer) - logit(wrong) at the last position", results={})
    directions = ["denoising", "noising"] if args.direction == "both" else [args.direction]
    interrupted = False
    for d in directions:
        for c in comps:
            res = P.patching_sweep(model, args.clean, args.corrupted, metric, c, d, normalize=not args.raw,
                                   layers=layers, batch_size=args.batch_size)
            P.save(res, out, f"{d}_{c}")
            summary["results"][f"{d}_{c}"] = res.meta
            print(f"{d} {c}: {res.meta['runs']} runs in {res.meta['seconds']:.1f} s; top: "
                  + ", ".join(f"{'/'.join(k)}={v:.2f}" for k, v in res.top(3)))
            if res.meta["interrupted"]:
                interrupted = True
                break
        if interrupted:
            break
    if (args.path or args.receivers) and not interrupted:
        receivers = ["logits"] + (args.receivers.split(",") if args.receivers else [])
        t = time.perf_counter()
        senders = [s for s in P.all_senders(model) if layers is None
                   or int(s[3:] if s.startswith("mlp") else s.split(".")[0]) in layers]
        res = P.path_patching(model, args.clean, args.corrupted, metric, senders, receivers=receivers,
                              normalize=not args.raw, batch_size=args.batch_size)
        P.save(res, out, "path_patching", plot=len(receivers) > 1)
        P.save(P.senders_by_layer(res, "logits"), out, "path_patching_logits")
        summary["results"]["path_patching"] = res.meta
        interrupted = res.meta["interrupted"]
        print(f"path patching -> {', '.join(receivers)}: {time.perf_counter() - t:.1f} s")
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"clean metric {summary['results'] and next(iter(summary['results'].values()))['clean']:.3f}; "
          f"wrote PNG/CSV/JSON to {out}/")
    if interrupted:
        print("interrupted: the files hold the partial results (NaN = not measured)")
        return 130
    return 0


def run_prompt_set(args, model, comps: list[str], layers) -> int:
    """`minillm patch --prompts FILE`: each component over the prompt set, mean and CI per cell."""
    from minillm.data import read_prompts
    from minillm.data.shards import executor_from_args
    from minillm.interp import prompt_sweeps as PS

    if args.path or args.receivers:
        raise MinillmError("--path patching runs on one prompt pair; drop --prompts or --path")
    if args.n_boot < 1 or args.prompts_per_shard < 1:
        raise MinillmError("--n-boot and --prompts-per-shard must be at least 1")
    pairs = read_prompts(args.prompts, model, need="pair")
    out = Path(args.out)
    summary = dict(model=args.model, prompts=args.prompts, n_prompts=len(pairs),
                   metric="logit(answer) - logit(wrong) at the last position", results={})
    directions = ["denoising", "noising"] if args.direction == "both" else [args.direction]
    with executor_from_args(args.workers, args.scheduler, out) as ex:
        for d in directions:
            for c in comps:
                res = PS.patching_over_prompts(model, pairs, c, d, normalize=not args.raw, layers=layers,
                                               batch_size=args.batch_size, n_boot=args.n_boot,
                                               confidence=args.confidence, seed=args.seed,
                                               prompts_per_shard=args.prompts_per_shard, executor=ex,
                                               out=out / f"{d}_{c}", resume=args.resume)
                top = res.top(3)
                summary["results"][f"{d}_{c}"] = dict(seconds=res.meta["seconds"], engine=res.meta["engine"],
                                                      top=[dict(cell=list(k), mean=m, ci=[lo, hi])
                                                           for k, m, lo, hi in top])
                print(f"{d} {c}: {len(pairs)} prompts in {res.meta['seconds']:.1f} s; top: "
                      + ", ".join(f"{'/'.join(k)}={m:.2f} [{lo:.2f}, {hi:.2f}]" for k, m, lo, hi in top))
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"wrote per-prompt values, mean and {args.confidence:.0%} intervals (CSV, JSON, PNG) to {out}/")
    return 0
