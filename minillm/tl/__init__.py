"""TransformerLens's names over minillm: port HookedTransformer code by changing the import.

    from minillm.tl import HookedTransformer, ActivationCache, FactoredMatrix, utils, patching
    model = HookedTransformer.from_pretrained("gpt2")          # or a local HF folder
    logits, cache = model.run_with_cache("When Mary and John went to the store, John gave")

Everything here is minillm itself: `HookedTransformer` is a minillm
`HookedModel` with TransformerLens's defaults (weight processing, BOS,
right padding), `ActivationCache` and `FactoredMatrix` are minillm's own
classes, and `utils` / `patching` hold TransformerLens's functions over
NumPy arrays. See docs/migrating_from_transformerlens.md for the idioms and
the few differences.
"""

from minillm.activation_cache import ActivationCache
from minillm.factored_matrix import FactoredMatrix
from minillm.hooks import HookPoint
from minillm.tl import patching, utils
from minillm.tl.hooked_transformer import HookedTransformer

__all__ = ["ActivationCache", "FactoredMatrix", "HookPoint", "HookedTransformer", "patching",
           "utils"]
