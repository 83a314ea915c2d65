"""The key/value cache for generation: plain arrays you can inspect, clone, cut and compare.

Per layer l, `cache.keys(l)` and `cache.values(l)` are [b, kv, P, e] with P =
`cache.length` positions so far (keys after RoPE, as attention uses them).
Storage grows geometrically, so appending one token does not reallocate.
"""

from __future__ import annotations

import numpy as np

from minillm.errors import MinillmError


class KVCache:
    def __init__(self, n_layers: int, batch: int, n_kv_heads: int, d_head: int, dtype):
        self.n_layers, self.batch = n_layers, batch
        self.n_kv_heads, self.d_head, self.dtype = n_kv_heads, d_head, np.dtype(dtype)
        self.length = 0
        self.attention_mask: np.ndarray | None = None  # [b, length], or None: no padding
        self._k = [self._empty(16) for _ in range(n_layers)]  # each [b, kv, capacity, e]
        self._v = [self._empty(16) for _ in range(n_layers)]

    @classmethod
    def for_model(cls, model, batch: int = 1) -> KVCache:
        cfg = model.cfg
        return cls(cfg.n_layers, batch, cfg.n_kv_heads, cfg.d_head, model.dtype)

    def _empty(self, capacity: int) -> np.ndarray:
        return np.zeros((self.batch, self.n_kv_heads, capacity, self.d_head), self.dtype)

    def keys(self, layer: int) -> np.ndarray:
        """[b, kv, length, e]"""
        return self._k[layer][:, :, : self.length]

    def values(self, layer: int) -> np.ndarray:
        """[b, kv, length, e]"""
        return self._v[layer][:, :, : self.length]

    def append(self, layer: int, k: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Store the new positions' k, v [b, kv, n, e] after the cached ones.

        Returns all keys and values [b, kv, length + n, e]. `length` itself
        moves on only in `advance`, once every layer has appended.
        """
        end = self.length + k.shape[2]
        if end > self._k[layer].shape[2]:
            self._k[layer] = self._grown(self._k[layer], end)
            self._v[layer] = self._grown(self._v[layer], end)
        self._k[layer][:, :, self.length : end] = k
        self._v[layer][:, :, self.length : end] = v
        return self._k[layer][:, :, :end], self._v[layer][:, :, :end]

    def _grown(self, old: np.ndarray, needed: int) -> np.ndarray:
        new = self._empty(max(needed, 2 * old.shape[2]))
        new[:, :, : self.length] = old[:, :, : self.length]
        return new

    def advance(self, n: int, mask: np.ndarray | None) -> None:
        """Called by the model after a forward pass appended n positions to every layer."""
        self.length += n
        self.attention_mask = None if mask is None else mask[:, : self.length].copy()

    def clone(self) -> KVCache:
        """An independent copy (later appends to either do not affect the other)."""
        new = KVCache(self.n_layers, self.batch, self.n_kv_heads, self.d_head, self.dtype)
        new.length = self.length
        new.attention_mask = None if self.attention_mask is None else self.attention_mask.copy()
        new._k = [k.copy() for k in self._k]
        new._v = [v.copy() for v in self._v]
        return new

    def repeat(self, n: int) -> KVCache:
        """A new cache holding the whole batch n times: [b, ...] -> [n·b, ...].

        Row j·b + i is a copy of row i (numpy's `tile` order), so n variants
        of a prompt set can continue from one shared prefix.
        """
        if int(n) < 1:
            raise MinillmError(f"repeat needs n >= 1, got {n}")
        n = int(n)
        new = KVCache(self.n_layers, self.batch * n, self.n_kv_heads, self.d_head, self.dtype)
        new.length = self.length
        new.attention_mask = None if self.attention_mask is None else np.tile(self.attention_mask, (n, 1))
        new._k = [np.tile(k[:, :, : self.length], (n, 1, 1, 1)) for k in self._k]
        new._v = [np.tile(v[:, :, : self.length], (n, 1, 1, 1)) for v in self._v]
        return new

    def truncate(self, length: int) -> None:
        """Forget every position from `length` on (to re-run from an earlier point)."""
        if not 0 <= length <= self.length:
            raise MinillmError(f"cannot truncate a cache of length {self.length} to {length}")
        self.length = length
        if self.attention_mask is not None:
            self.attention_mask = self.attention_mask[:, :length].copy()

    def max_abs_diff(self, other: KVCache) -> np.ndarray:
        """Per layer, the largest |k - k'| or |v - v'| between two caches.   -> [n_layers]"""
        if (other.length, other.batch, other.n_layers) != (self.length, self.batch, self.n_layers):
            raise MinillmError("caches differ in length, batch or layers; cannot compare")
        return np.array([
            max(np.abs(self.keys(l) - other.keys(l)).max(initial=0.0),
                np.abs(self.values(l) - other.values(l)).max(initial=0.0))
            for l in range(self.n_layers)
        ])

    def nbytes(self) -> int:
        return sum(k.nbytes + v.nbytes for k, v in zip(self._k, self._v))

    def __repr__(self) -> str:
        return (f"KVCache(layers={self.n_layers}, batch={self.batch}, length={self.length}, "
                f"kv_heads={self.n_kv_heads}, d_head={self.d_head}, dtype={self.dtype})")
