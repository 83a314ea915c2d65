"""`minillm view KIND MODEL "prompt" -o file.html`: an interactive HTML view, one offline file."""

import argparse

import numpy as np

HELP = ("write an interactive HTML view (attention, lens, patching, neurons, top-activations): "
        "one offline file")
KINDS = ("attention", "lens", "patching", "neurons", "top-activations")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", choices=KINDS, help="which view")
    parser.add_argument("model", metavar="NAME_OR_PATH", help="a catalog name or the path of a model folder")
    parser.add_argument("prompt", help="the text (for patching: the clean prompt; for top-activations: "
                        "the folder `minillm top-activations -o` wrote)")
    parser.add_argument("-o", "--out", default=None, metavar="HTML",
                        help="the file to write (default out/views/KIND.html)")
    parser.add_argument("--layer", type=int, default=None,
                        help="attention: the layer shown first; neurons: the layer (default: the middle)")
    parser.add_argument("--heads", default=None, metavar="H1,H2,...",
                        help="attention: heads shown side by side at first (default 0,1,2)")
    parser.add_argument("--target", action="append", default=[], metavar="TOKEN",
                        help="lens: colour by this single-token text's probability or rank (repeatable)")
    parser.add_argument("-k", type=int, default=5, help="lens: top-k tokens on hover (default 5)")
    parser.add_argument("--neurons", default=None, metavar="N1,N2,...",
                        help="neurons: the neurons offered (default: the 20 most active in the text); "
                        "top-activations: the neurons shown (default: all, at most the 256 strongest)")
    parser.add_argument("--corrupted", default=None, help="patching: the corrupted prompt (required)")
    parser.add_argument("--answer", default=None, help="patching: the clean answer token, e.g. ' Mary'")
    parser.add_argument("--wrong", default=None, help="patching: the corrupted answer token, e.g. ' John'")
    parser.add_argument("--component", default="resid_pre",
                        help="patching: what is patched (resid_pre, attn_out, mlp_out, heads, ...; "
                        "default resid_pre)")
    parser.add_argument("--layers", default=None, metavar="L1,L2,...", help="patching: layers (default all)")


def _ints(text: str | None, what: str) -> list[int] | None:
    from minillm.errors import MinillmError

    if text is None:
        return None
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise MinillmError(f"{what} must be comma-separated integers, got {text!r}") from None


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import minillm
    from minillm.errors import MinillmError
    from minillm.views import html

    if args.kind == "patching" and not (args.corrupted and args.answer and args.wrong):
        raise MinillmError("the patching view needs --corrupted PROMPT, --answer TOKEN and --wrong TOKEN")
    heads, neurons, layers = (_ints(args.heads, "--heads"), _ints(args.neurons, "--neurons"),
                              _ints(args.layers, "--layers"))
    model = minillm.load(args.model, dtype=np.float32)
    if args.kind == "attention":
        view = html.attention(model, args.prompt, heads=heads, layer=args.layer)
    elif args.kind == "lens":
        view = html.lens(model, args.prompt, targets=args.target, k=args.k)
    elif args.kind == "top-activations":
        from minillm.interp.top_activations import TopActivations

        view = html.top_activations(TopActivations.load(args.prompt, model), neurons=neurons)
    elif args.kind == "neurons":
        layer = model.cfg.n_layers // 2 if args.layer is None else args.layer
        view = html.neurons(model, args.prompt, layer=layer, neurons=neurons)
    else:
        from minillm.interp import metrics as M
        from minillm.interp import patching as P

        if args.component not in P.COMPONENTS:
            raise MinillmError(f"unknown component {args.component!r}; choose from {', '.join(P.COMPONENTS)}")
        metric = M.logit_diff(model, args.answer, args.wrong)
        res = P.patching_sweep(model, args.prompt, args.corrupted, metric, args.component, "denoising",
                               layers=layers)
        view = html.patching(res)
    out = view.save(Path(args.out) if args.out else Path("out") / "views" / f"{args.kind}.html")
    print(f"{out} ({out.stat().st_size / 1e3:.0f} kB): open it in a browser; it works offline")
    return 0
