"""`minillm dump NAME "prompt" -o run.safetensors`: write a run's activations for comparison."""

from __future__ import annotations

import argparse

import numpy as np

from minillm import verify

HELP = "write every requested activation of one run to a safetensors file (see `minillm compare`)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="NAME_OR_PATH", help="a catalog name or a model folder")
    parser.add_argument("prompt", nargs="?", help="the text to run (or use --ids)")
    parser.add_argument("-o", "--output", required=True, metavar="FILE", help="the dump to write")
    parser.add_argument("--ids", metavar="I,J,...", help="token ids instead of a prompt, comma-separated")
    parser.add_argument("--hooks", metavar="PATTERN", default=None,
                        help="globs of hook names, comma-separated (default: every hook except "
                        "attn.hook_result), e.g. 'blocks.*.hook_resid_post,hook_logits'")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32",
                        help="float64 = the reference mode (default float32)")
    parser.add_argument("--force", action="store_true",
                        help=f"write dumps above {verify.DEFAULT_MAX_BYTES // 2**30} GiB")
    parser.add_argument("--inject-bug", choices=_bug_names(), metavar="BUG",
                        help="run a deliberately broken implementation (worked example of "
                        f"`minillm compare`): {', '.join(_bug_names())}")


def _bug_names() -> list[str]:
    from minillm.verify.broken import BUGS

    return list(BUGS)


def run(args: argparse.Namespace) -> int:
    import minillm
    from minillm.commands._ids import prompt_or_ids
    from minillm.commands._outputs import check_output_file, writing

    prompt = prompt_or_ids(args.prompt, args.ids)
    check_output_file(args.output, "the dump")  # before loading the model
    model = minillm.load(args.model, dtype=np.dtype(args.dtype))
    fwd_hooks, note = [], ""
    if args.inject_bug:
        from minillm.verify.broken import BUGS

        bug = BUGS[args.inject_bug]
        fwd_hooks, note = bug.hooks(model), f"deliberately broken: {bug.name} ({bug.description})"
    with writing("the dump", args.output):
        path = verify.dump(model, prompt, args.output, hooks=args.hooks, fwd_hooks=fwd_hooks,
                           allow_large=args.force, note=note)
    d = verify.load_dump(path)
    size = sum(a.nbytes for a in d.acts.values())
    print(f"wrote {len(d.acts)} activations ({size / 1e6:.1f} MB, {args.dtype}) of "
          f"{d.input_ids.shape[1]} tokens to {path}" + (f" [{note}]" if note else ""))
    return 0
