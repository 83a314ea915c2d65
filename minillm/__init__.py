"""minillm: a pure-NumPy reference implementation of GPT-2 and Llama.

    import minillm
    model = minillm.load("smollm2-135m")
    logits = model("It was a dark and stormy")          # [1, p, vocab]
    logits, cache = model.run_with_cache("It was a dark and stormy")
"""

import importlib
import importlib.abc
import importlib.util
import sys

from minillm.config import ModelConfig
from minillm.edit import edits
from minillm.errors import CheckpointError, ConfigError, MinillmError
from minillm.hooked_model import HookedModel
from minillm.kv_cache import KVCache
from minillm.loading import load

__version__ = "0.1.0"
__all__ = [
    "CheckpointError", "ConfigError", "HookedModel", "KVCache", "MinillmError",
    "ModelConfig", "edits", "load", "__version__",
]


# Module paths from before the subpackages (grad/, edit/, interp/, verify/, course/): each
# name imports the module that now holds the code. `minillm.edits` is the public name of
# the edit operations and stays; the others are kept for one release.
_MOVED = {
    "minillm.edits": "minillm.edit.edits",
    "minillm.journal": "minillm.edit.journal",
    "minillm.drift": "minillm.edit.drift",
    "minillm.backward": "minillm.grad.backward",
    "minillm.ops_backward": "minillm.grad.ops_backward",
    "minillm.interventions": "minillm.interp.interventions",
    "minillm.variants": "minillm.interp.batch",
    "minillm.compare": "minillm.verify",
    "minillm.diagnostics": "minillm.verify.diagnostics",
    "minillm.interp.broken": "minillm.verify.broken",
    "minillm.lessons": "minillm.course.grader",
    "minillm.bench": "minillm.commands.benchmark",
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Answers only for the old names in _MOVED, with the module at the new path."""

    def find_spec(self, fullname, path=None, target=None):
        return importlib.util.spec_from_loader(fullname, self) if fullname in _MOVED else None

    def create_module(self, spec):
        module = importlib.import_module(_MOVED[spec.name])
        self.spec = module.__spec__  # the import system sets __spec__ to the old name's: undo it
        return module

    def exec_module(self, module) -> None:
        module.__spec__ = self.spec


if not any(isinstance(f, _MovedModules) for f in sys.meta_path):
    sys.meta_path.append(_MovedModules())
