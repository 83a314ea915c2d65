"""minillm: a pure-NumPy reference implementation of GPT-2 and Llama.

    import minillm
    model = minillm.load("smollm2-135m")
    logits = model("It was a dark and stormy")          # [1, p, vocab]
    logits, cache = model.run_with_cache("It was a dark and stormy")
"""

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

# `minillm.edits` is the public name of the edit operations (minillm/edit/edits.py):
# `import minillm.edits` and `from minillm.edits import scale_neuron` work as well.
sys.modules[__name__ + ".edits"] = edits
