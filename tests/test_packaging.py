"""Packaging and small CLI conveniences: --version, python -m minillm, py.typed, the
distribution's metadata, and `lens --ids` for checkpoints without a tokenizer."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import tomllib

import minillm
from minillm.cli import main
from tests.conftest import golden_folder

ROOT = Path(__file__).resolve().parents[1]


def test_version_and_python_dash_m(capsys):
    try:
        main(["--version"])
    except SystemExit as exc:
        assert exc.code == 0
    assert capsys.readouterr().out.startswith(f"minillm {minillm.__version__} (Python ")
    out = subprocess.run([sys.executable, "-m", "minillm", "--version"], capture_output=True, text=True,
                         check=True, cwd=ROOT)
    assert out.stdout.startswith(f"minillm {minillm.__version__}")


def test_the_distribution_name_is_free_and_the_import_name_stays():
    """"minillm" on PyPI is another project (checked with `pip index versions`); ours is
    distributed as minillm-numpy and imported as minillm."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["name"] == "minillm-numpy"
    assert project["scripts"]["minillm"] == "minillm.cli:main"
    versions = {c.rsplit(":: ", 1)[1] for c in project["classifiers"] if "Python :: 3." in c}
    assert versions == {"3.10", "3.11", "3.12", "3.13"}
    assert (ROOT / "minillm" / "py.typed").is_file()


def test_lens_takes_ids_for_a_checkpoint_without_a_tokenizer(tmp_path, capsys):
    out_png = tmp_path / "lens.png"
    assert main(["lens", str(golden_folder("gpt2")), "--ids", "5,6,7,8", "--target", "17",
                 "--out", str(out_png)]) == 0
    out = capsys.readouterr().out
    assert "top-1 token per layer × position" in out and out_png.is_file()
    assert main(["lens", str(golden_folder("gpt2")), "hello", "--ids", "5"]) == 1
    assert "give either a prompt or --ids" in capsys.readouterr().err
