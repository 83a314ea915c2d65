"""The activations of one run, by hook name: a dict with TransformerLens-style helpers."""

from __future__ import annotations

import numpy as np


class ActivationCache(dict):
    """{hook name: array}, in forward order, plus a reference to the model that made it."""

    def __init__(self, data: dict[str, np.ndarray], model):
        super().__init__(data)
        self.model = model

    def remove_batch_dim(self) -> ActivationCache:
        """Drop a batch axis of size 1 from every activation."""
        for name, act in self.items():
            if act.shape[0] != 1:
                from minillm.errors import MinillmError

                raise MinillmError(f"{name} has batch size {act.shape[0]}, not 1")
        return ActivationCache({k: v[0] for k, v in self.items()}, self.model)

    def to(self, dtype) -> ActivationCache:
        return ActivationCache({k: v.astype(dtype) for k, v in self.items()}, self.model)
