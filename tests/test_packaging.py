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


def _unannotated(fn) -> list[str]:
    import inspect

    sig = inspect.signature(fn)
    missing = [n for n, p in sig.parameters.items()
               if n not in ("self", "cls") and p.annotation is inspect.Parameter.empty]
    if sig.return_annotation is inspect.Signature.empty:
        missing.append("return")
    return missing


def test_the_public_api_has_type_hints():
    """load, the model's methods and the interp functions: every parameter and return annotated."""
    import importlib
    import inspect
    import pkgutil

    import minillm.interp
    from minillm.hooked_model import HookedModel

    gaps = {"minillm.load": _unannotated(minillm.load)}
    for name, fn in vars(HookedModel).items():
        if not name.startswith("_") and inspect.isfunction(fn):
            gaps[f"HookedModel.{name}"] = _unannotated(fn)
    modules = [importlib.import_module(m.name) for m in pkgutil.iter_modules(minillm.interp.__path__,
                                                                            "minillm.interp.")]
    for module in modules:
        for name, fn in vars(module).items():
            if not name.startswith("_") and inspect.isfunction(fn) and fn.__module__ == module.__name__:
                gaps[f"{module.__name__}.{name}"] = _unannotated(fn)
    gaps = {k: v for k, v in gaps.items() if v}
    assert not gaps, gaps
