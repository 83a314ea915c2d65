"""No command writes into the current folder unasked: defaults go to out/ (git-ignored).

Every command that writes something is run from an empty current folder on a tiny model
with a tokenizer (the Qwen3 GGUF fixture, converted outside that folder), with its default
output where it has one (lens, view) and `-o out/...` where an output is required. Then
every file under the current folder must be under out/. Model homes (MINILLM_HOME, HF_HOME)
point outside it, as a user's do. About 10 s.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from minillm.checkpoints import gguf as conv
from minillm.cli import main
from tests.conftest import golden_folder


@pytest.fixture
def cwd(tmp_path, monkeypatch) -> Path:
    here = tmp_path / "cwd"
    here.mkdir()
    monkeypatch.chdir(here)
    monkeypatch.setenv("MINILLM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "mpl"))
    return here


def files_outside_out(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if p.is_file() and p.relative_to(folder).parts[0] != "out")


def test_commands_write_only_into_out(cwd, tmp_path):
    model = str(conv.convert_gguf_to_hf(golden_folder("gguf") / "qwen3.f32.gguf", tmp_path / "qwen3"))
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    text = inputs / "text.txt"
    text.write_text("ab cd ab cd abcd ab c\n\nba dc ab cd a b c d\n" * 4)
    prompt = "ab cd ab"
    runs = [
        ["lens", model, prompt],
        ["lens", model, "--ids", "1,2,3,4"],
        ["view", "lens", model, prompt],
        ["view", "attention", model, prompt],
        ["dump", model, prompt, "-o", "out/a.safetensors"],
        ["dump", model, prompt, "-o", "out/b.safetensors", "--dtype", "float64"],
        ["compare", "out/b.safetensors", "out/a.safetensors", "--plot", "out/cmp.png"],
        ["patch", model, "--clean", "ab cd ab", "--corrupted", "cd ab cd", "--answer", "cd",
         "--wrong", "ab", "-o", "out/patch"],
        ["ablate", model, "--prompt", prompt, "--target", "cd", "-o", "out/ablate", "--rates", "0.5"],
        ["perplexity", model, str(text), "--window", "8", "-q"],
        ["stats", model, str(text), "--hooks", "blocks.0.hook_resid_post", "--window", "16", "-o",
         "out/stats"],
        ["top-activations", model, str(text), "--layer", "0", "--window", "16", "-o", "out/top"],
        ["generate", model, prompt, "--max-new-tokens", "3"],
        ["edit", model, prompt, "--zero-neuron", "0:1"],
        ["info", model],
        ["hooks", model, "--json"],
    ]
    for argv in runs:
        assert main(argv) == 0, argv
        assert files_outside_out(cwd) == [], argv
    assert (cwd / "out" / "lens.png").is_file()  # lens's default
    assert (cwd / "out" / "views" / "lens.html").is_file()  # view's default
