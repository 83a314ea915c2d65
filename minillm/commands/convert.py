"""`minillm convert FILE.gguf [-o FOLDER]`: a GGUF file (llama.cpp's format) -> a Hugging Face folder.

Architectures (llama.cpp's names): llama (Llama, SmolLM, Mistral-style), qwen2, gpt2,
gemma2, gemma3, qwen3, phi3, olmo2 and gptneox (Pythia), any quantization the `gguf`
package dequantizes. The tensors are dequantized to float32 and what llama.cpp's
converter did to them is undone (llama's q/k rows back in rotate-half order, GPT-2's
Conv1D weights transposed back, Gemma's norm gains stored as 1 + w, Pythia's regrouped
query_key_value rows); config.json and tokenizer.json are rebuilt from the metadata (see
checkpoints/gguf.py). A progress bar shows the tensors written. The folder then loads with
`minillm.load(FOLDER)`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = ("convert a GGUF file (llama, qwen2, gpt2, gemma2, gemma3, qwen3, phi3, olmo2, gptneox) "
        "into a Hugging Face folder minillm loads")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("gguf", metavar="FILE.gguf", type=Path, help="the GGUF file")
    parser.add_argument("-o", "--output", metavar="FOLDER", type=Path, default=None,
                        help="the folder to write (default: the weights directory / the file's name)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from minillm.checkpoints.gguf import convert_gguf_to_hf
    from minillm.checkpoints.paths import weights_dir
    from minillm.errors import MinillmError, format_bytes

    if not args.gguf.is_file():
        raise MinillmError(f"{args.gguf} is not a file")
    out = args.output if args.output is not None else weights_dir() / args.gguf.stem.lower()
    if out.exists() and any(out.iterdir()):
        raise MinillmError(f"{out} exists and is not empty: choose another folder with -o")
    out.parent.mkdir(parents=True, exist_ok=True)
    folder = convert_gguf_to_hf(args.gguf, out, progress=not args.quiet)
    size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
    print(f"{args.gguf} -> {folder} ({format_bytes(size)}); load it with minillm.load({str(folder)!r})")
    return 0
