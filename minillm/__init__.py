"""minillm: a pure-NumPy reference implementation of GPT-2 and Llama.

    import minillm
    model = minillm.load("smollm2-135m")
    logits = model("It was a dark and stormy")          # [1, p, vocab]
    logits, cache = model.run_with_cache("It was a dark and stormy")
"""

import sys

from minillm import hooks as _core
from minillm.config import ModelConfig
from minillm.edit import edits
from minillm.edit import journal as _journal
from minillm.edit import processing as _processing
from minillm.errors import CheckpointError, ConfigError, MinillmError
from minillm.grad import backward as _backward
from minillm.hooked_model import HookedModel
from minillm.interp import interventions as _interventions
from minillm.interp import metrics as _metrics
from minillm.kv_cache import KVCache
from minillm.loading import load
from minillm.views import display as _display

__version__ = "0.1.0"
__all__ = [
    "CheckpointError", "ConfigError", "HookedModel", "KVCache", "MinillmError",
    "ModelConfig", "edits", "load", "__version__",
]

# The outer rings lend the core what it must not import itself (RING_PARTS in hooks.py):
# the core never imports grad/, edit/, interp/ or views/; this package assembles them.
_core.RING_PARTS.update(
    backward=_backward.backward,  # run_with_hooks(bwd_hooks=...)
    loss_metric=_metrics.cross_entropy,  # bwd_hooks with metric="loss"
    to_hooks=_interventions.to_hooks,  # run_with_interventions, intervened
    journal=_journal.Journal,  # model.edit(), .journal, .edited(), .revert_all()
    process_weights=_processing.process_weights,  # load(..., fold_ln=True, ...)
    cache_repr=_display.cache_repr,  # repr(ActivationCache)
    cache_html=_display.cache_html,  # an ActivationCache in a notebook
)

# `minillm.edits` is the public name of the edit operations (minillm/edit/edits.py):
# `import minillm.edits` and `from minillm.edits import scale_neuron` work as well.
sys.modules[__name__ + ".edits"] = edits
