"""`minillm ablate`: successive median replacement of MLP neurons -> ripple plot, heatmap, CSV, JSON."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from minillm.errors import MinillmError

HELP = "median-replacement sweep of the most active MLP neurons at the last position (ripple plot)"


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x]
    except ValueError:
        raise MinillmError(f"expected comma-separated numbers, got {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", nargs="?", default="smollm2-135m", metavar="NAME_OR_PATH",
                        help="a catalog name or a model folder (default: smollm2-135m)")
    parser.add_argument("--prompt", default="It was a dark and stormy", help="the prompt")
    parser.add_argument("--target", default=" night", help="the target token whose logit is tracked")
    parser.add_argument("-o", "--out", required=True, metavar="DIR",
                        help="folder for PNG, CSV and JSON files")
    parser.add_argument("--rates", default=None, metavar="P1,P2,...",
                        help="percentages of neurons to replace (default: 0.2..4.5 fine and 10..90 coarse)")
    parser.add_argument("--layers", default=None, metavar="L1,L2,...", help="layers to sweep (default: all)")
    parser.add_argument("--measure", choices=["logit", "log_prob"], default="logit",
                        help="track the target's raw logit (default) or its log-probability")
    parser.add_argument("--count", choices=["floor", "round"], default="floor",
                        help="neurons per rate: floor(p%% · d_mlp) with at least one (the study's, default) "
                             "or round(...)")
    parser.add_argument("--by", choices=["value", "abs", "magnitude"], default="value",
                        help="'most active' = highest signed value (the study's, default), largest |a|, "
                             "or largest |a − median|")
    parser.add_argument("--batch-size", type=int, default=64, help="runs per forward pass")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    from minillm.commands.patch import add_prompt_set_arguments

    add_prompt_set_arguments(parser, "prompt and target, or clean and answer")


def run(args: argparse.Namespace) -> int:

    import minillm
    from minillm.interp import ablation as A
    from minillm.interp.patching import save

    rates = _floats(args.rates) if args.rates else list(A.FINE_RATES + A.COARSE_RATES)
    layers = [int(x) for x in _floats(args.layers)] if args.layers else None
    if args.batch_size < 1:
        raise MinillmError(f"--batch-size must be at least 1, got {args.batch_size}")
    model = minillm.load(args.model, dtype=np.dtype(args.dtype))
    if args.prompts:
        return run_prompt_set(args, model, rates, layers)
    res = A.median_replacement(model, args.prompt, args.target, rates, layers, args.batch_size,
                               measure=args.measure, count=args.count, by=args.by)
    out = Path(args.out)
    save(res.delta, out, "median_replacement", plot=False)
    res.delta.plot(out / "median_replacement_heatmap.png")
    A.plot_ripple(res, out / "ripple.png")
    summary = res.summary() | dict(model=args.model, rates=res.rates, counts=res.counts,
                                   d_mlp=model.cfg.d_mlp, layers=res.layers)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"base {args.measure}({args.target!r}) = {res.base_logit:.3f}; {len(res.layers)} layers × "
          f"{len(rates)} rates in {res.seconds:.1f} s; wrote ripple.png, "
          f"median_replacement_heatmap.png, CSV, JSON to {out}/")
    if res.interrupted:
        print("interrupted: the files hold the partial results (NaN = not measured)")
        return 130
    return 0


def run_prompt_set(args, model, rates, layers) -> int:
    """`minillm ablate --prompts FILE`: median replacement on every prompt, mean and CI per cell."""
    from minillm.data import read_prompts
    from minillm.data.shards import executor_from_args
    from minillm.interp import prompt_sweeps as PS

    if args.n_boot < 1 or args.prompts_per_shard < 1:
        raise MinillmError("--n-boot and --prompts-per-shard must be at least 1")
    prompts = read_prompts(args.prompts, model, need="target")
    out = Path(args.out)
    with executor_from_args(args.workers, args.scheduler, out) as ex:
        res = PS.median_replacement_over_prompts(model, prompts, rates, layers, args.measure, args.batch_size,
                                                 n_boot=args.n_boot, confidence=args.confidence,
                                                 seed=args.seed, prompts_per_shard=args.prompts_per_shard,
                                                 executor=ex, out=out, resume=args.resume)
    PS.plot_ripple_intervals(res).savefig(out / "ripple.png", dpi=100)
    worst = {lab: res.labels[0][int(np.nanargmin(res.mean[:, j]))] for j, lab in enumerate(res.labels[1])
             if not np.isnan(res.mean[:, j]).all()}
    summary = dict(model=args.model, prompts=args.prompts, n_prompts=len(prompts), measure=args.measure,
                   rates=res.labels[1], layers=res.labels[0], most_damaging_layer=worst,
                   seconds=res.meta["seconds"], engine=res.meta["engine"])
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"{len(prompts)} prompts x {len(res.labels[0])} layers x {len(res.labels[1])} rates in "
          f"{res.meta['seconds']:.1f} s; wrote ripple.png (with {args.confidence:.0%} bands), "
          f"result.csv/json, "
          f"per-prompt values to {out}/")
    return 0
