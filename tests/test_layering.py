"""The package's layering, read from the source: the core never imports the rings around it,
and no module reaches into another module's private names.

The core is the flat modules of minillm/ that compute a transformer (docs/architecture.md).
It may import itself, `errors` and `checkpoints/` (loading reads checkpoints); never grad/,
edit/, interp/, verify/, course/, views/, commands/, tl/ or data/, not even inside a
function, not even for a type annotation. What the core needs from those rings,
minillm/__init__.py lends it (`hooks.RING_PARTS`).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "minillm"
RINGS = ("grad", "edit", "interp", "verify", "course", "views", "commands", "tl", "data")
# minillm/__init__.py assembles the package (it lends the rings to the core); cli.py and
# __main__.py are the command line, the outermost ring.
NOT_CORE = {"__init__.py", "__main__.py", "cli.py"}
CORE = sorted(p for p in PACKAGE.glob("*.py") if p.name not in NOT_CORE)


def _imports(tree: ast.Module) -> list[tuple[int, str]]:
    """(line, imported module) for every import anywhere: module level, inside functions and
    classes, under `if TYPE_CHECKING:`."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.lineno, node.module))
            # `from minillm import interp` imports the subpackage minillm.interp
            found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return sorted(found)


def test_the_core_is_a_real_set_of_modules():
    names = {p.stem for p in CORE}
    assert {"model", "ops", "hooks", "hooked_model", "params", "config", "loading"} <= names
    assert len(CORE) >= 10  # the glob found the package


@pytest.mark.parametrize("path", CORE, ids=lambda p: p.name)
def test_the_core_never_imports_an_outer_ring(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    bad = [f"{path.name}:{line} imports {mod}" for line, mod in _imports(tree)
           if any(mod == f"minillm.{r}" or mod.startswith(f"minillm.{r}.") for r in RINGS)]
    assert not bad, "the core imports an outer ring: " + "; ".join(bad)


def test_the_layering_check_sees_function_level_imports():
    """The check above catches a lazy import inside a method (one once hid a loop) and an
    annotation-only import."""
    tree = ast.parse("def f():\n    from minillm.grad import backward\n"
                     "if TYPE_CHECKING:\n    from minillm.edit.journal import Journal\n")
    assert _imports(tree) == [(2, "minillm.grad"), (2, "minillm.grad.backward"),
                              (4, "minillm.edit.journal"), (4, "minillm.edit.journal.Journal")]


def test_no_module_imports_another_modules_private_names():
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("minillm"):
                bad += [f"{path.relative_to(PACKAGE.parent)}:{node.lineno} imports {node.module}.{a.name}"
                        for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
    assert not bad, "private names imported across modules (make them public): " + "; ".join(bad)
