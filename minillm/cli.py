"""The `minillm` command line.

Each subcommand lives in `minillm/commands/<name>.py` and defines `HELP` (one
line), `add_arguments(parser)` and `run(args) -> int` (the exit status).
"""

import argparse
import importlib
import sys

from minillm.errors import MinillmError

# name on the command line -> module in minillm/commands/
COMMANDS = {
    "fetch": "fetch",
    "list": "list_models",
    "info": "info",
    "demo": "demo",
    "generate": "generate",
    "edit": "edit",
    "dump": "dump",
    "compare": "compare",
    "lesson": "lesson",
    "lens": "lens",
    "bench": "bench",
    "patch": "patch",
    "ablate": "ablate",
    "perplexity": "perplexity",
    "hooks": "hooks",
    "convert": "convert",
    "stats": "stats",
    "top-activations": "top_activations",
    "view": "view",
}


def version() -> str:
    """minillm's version, with the Python and NumPy it runs on."""
    import platform

    import numpy

    from minillm import __version__

    return f"{__version__} (Python {platform.python_version()}, NumPy {numpy.__version__})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="minillm",
        description="A pure-NumPy reference implementation of GPT-2 and Llama.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(f"minillm.commands.{module_name}")
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except MinillmError as e:
        print(f"minillm {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"minillm {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
