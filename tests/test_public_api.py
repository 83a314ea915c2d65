"""The public names the README documents stay importable under those names.

Two checks: every `minillm.…` module or attribute written in README.md resolves, and the
API the README's code shows (load, the model's methods, the edit ops, the engine, the
metrics, verification, the course) keeps its names. A rename that forgets the README fails
here instead of in a user's notebook.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

import minillm

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")

# What the README's code and tables promise, module by module.
API = {
    "minillm": ["load", "HookedModel", "KVCache", "ModelConfig", "MinillmError", "edits"],
    "minillm.edits": ["scale_neuron", "zero_neuron", "scale_head", "zero_head", "reduce_embedding",
                      "boost_embedding", "zero_embedding", "scale_norm"],
    "minillm.interp.interventions": ["patch", "zero", "mean", "median", "scale", "add", "resample"],
    "minillm.interp.batch": ["run_batch", "run_variants", "BatchResult", "prefix_cache"],
    "minillm.interp.metrics": ["Metric", "logit_diff", "logit", "log_prob", "kl_to", "cross_entropy",
                               "normalized"],
    "minillm.interp.patching": ["patching_sweep", "patch_all", "path_patching"],
    "minillm.interp.ablation": ["ablation_sweep", "median_replacement"],
    "minillm.interp.pruning": ["importance", "prune_lowest", "pruning_curve"],
    "minillm.interp.attribution": ["attribution_patching", "activation_patching", "gradient_importance"],
    "minillm.grad.backward": ["backward"],
    "minillm.edit.drift": ["measure_drift", "interference_map"],
    "minillm.verify": ["dump", "run_dump", "load_dump", "compare", "from_hf_hidden_states",
                       "from_transformer_lens", "first_nonfinite"],
    "minillm.verify.diagnostics": ["first_nonfinite"],
    "minillm.course": ["list_lessons", "check_lesson", "run_lesson"],
}
MODEL_METHODS = ["to_tokens", "to_string", "to_str_tokens", "run_with_cache", "run_with_hooks",
                 "run_with_interventions", "intervened", "generate", "edit", "edited", "revert_all",
                 "hook_names", "set_use_attn_result", "loss"]


@pytest.mark.parametrize("module", sorted(API))
def test_the_readme_api_keeps_its_names(module):
    mod = importlib.import_module(module)
    missing = [name for name in API[module] if not hasattr(mod, name)]
    assert not missing, f"{module} lost {missing}"


def test_the_model_keeps_its_method_names():
    missing = [m for m in MODEL_METHODS if not callable(getattr(minillm.HookedModel, m, None))]
    assert not missing, missing


def _resolves(dotted: str) -> bool:
    """A module path, or a module path followed by attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return False
        return True
    return False


def test_every_minillm_name_in_the_readme_resolves():
    names = set(re.findall(r"`(minillm(?:\.[A-Za-z_]\w*)+)", README))
    names |= {f"minillm.interp.{m}" for row in re.findall(r"`minillm\.interp\.\w+`((?:, `\.\w+`)+)", README)
              for m in re.findall(r"`\.(\w+)`", row)}
    assert len(names) > 15  # the README really names modules
    broken = sorted(n for n in names if not _resolves(n))
    assert not broken, f"README.md names {broken}, which do not exist"


def test_minillm_edits_is_importable_every_way():
    import minillm.edits
    from minillm.edits import scale_neuron

    assert minillm.edits is minillm.edit.edits and scale_neuron is minillm.edit.edits.scale_neuron


def test_the_readme_layout_table_names_every_module_and_package():
    """README.md's layout table matches the tree: each top-level module and subpackage of
    minillm/ has a row (a module may share a row with others: `minillm/a.py`, `b.py`)."""
    package = Path(minillm.__file__).parent
    table = README[README.index("## Layout"):]
    table = table[: table.index("\n## ", 1)] if "\n## " in table[1:] else table
    rows = [line for line in table.splitlines() if line.startswith("| `minillm/")]
    cells = " ".join(line.split(" | ")[0] for line in rows)
    entries = [p.name for p in package.iterdir() if p.suffix == ".py" and p.name != "__init__.py"]
    entries += [p.name + "/" for p in package.iterdir() if (p / "__init__.py").is_file()]
    missing = sorted(e for e in entries if f"`{e}`" not in cells and f"`minillm/{e}`" not in cells)
    assert not missing, f"README.md's layout table has no row for {missing}"
