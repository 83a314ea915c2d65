"""Smoke test of an installed minillm, run by .ci/python-versions on each Python it finds.

Imports the installed package (not the source tree), loads the tiny GPT-2 and Llama
fixtures and checks logits and loss against transformers' frozen values, with the
tolerances of tests/test_forward.py and tests/test_loss.py. Needs no pytest.
Usage: python smoke.py REPO_DIR
"""

import subprocess
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

import minillm

repo = Path(sys.argv[1]).resolve()
installed = Path(minillm.__file__).resolve().parent
assert not installed.is_relative_to(repo), f"imported the source tree {installed}, not the installed package"
assert (installed / "py.typed").is_file(), "py.typed is missing from the installed package"
assert (installed / "checkpoints" / "catalog.json").is_file(), "the catalog is missing from the package"
out = subprocess.run([sys.executable, "-m", "minillm", "--version"], capture_output=True, text=True, check=True)
assert out.stdout.startswith(f"minillm {minillm.__version__}"), out.stdout
for name in ("gpt2", "llama_gqa_untied"):
    folder = repo / "tests" / "fixtures" / name
    ref = load_file(str(folder / "reference.safetensors"))
    model = minillm.load(folder)
    diff = float(np.abs(model(ref["input_ids"]) - ref["logits"]).max())
    assert diff <= 5e-5, f"{name}: logits differ from transformers by {diff}"
    loss = model.loss(ref["input_ids"])
    assert abs(loss - float(ref["loss"])) <= 1e-4, f"{name}: loss {loss} vs {float(ref['loss'])}"
    print(f"{name}: logits max diff {diff:.2e}, loss {loss:.6f}")
print(f"minillm {minillm.__version__} OK on Python {sys.version.split()[0]}, NumPy {np.__version__}")
