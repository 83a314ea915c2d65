"""Text generation: prefill the prompt once, then decode one token at a time with a KV cache."""

from __future__ import annotations

import numpy as np

from minillm import ops
from minillm.errors import MinillmError
from minillm.kv_cache import KVCache


def sample_next(logits: np.ndarray, rng: np.random.Generator, temperature: float = 0.0,
                top_k: int | None = None, top_p: float | None = None) -> int:
    """Pick the next token from last-position logits [V]: greedy at temperature 0."""
    if temperature == 0.0:
        return int(np.argmax(logits))
    logits = logits.astype(np.float64) / temperature
    if top_k is not None:
        kth = np.partition(logits, -top_k)[-top_k]
        logits = np.where(logits < kth, -np.inf, logits)
    probs = ops.softmax(logits)
    if top_p is not None:
        order = np.argsort(-probs)
        keep = np.cumsum(probs[order]) - probs[order] < top_p  # smallest set reaching top_p
        mask = np.zeros_like(probs, bool)
        mask[order[keep]] = True
        probs = np.where(mask, probs, 0.0)
        probs /= probs.sum()
    return int(rng.choice(len(probs), p=probs))


def generate(model, prompt, max_new_tokens: int = 20, temperature: float = 0.0,
             top_k: int | None = None, top_p: float | None = None, seed: int = 0,
             stop_at_eos: bool = True, return_ids: bool = False, on_token=None):
    """Continue `prompt` (a str, or ids [1, p]) by up to `max_new_tokens` tokens.

    Returns the continuation's text (a str prompt) or the full ids [1, p + new]
    (ids given, or return_ids=True). `on_token(id)` is called for each new
    token, for streaming.
    """
    if temperature < 0 or (top_p is not None and not 0 < top_p <= 1):
        raise MinillmError("temperature must be >= 0 and top_p in (0, 1]")
    text_in = isinstance(prompt, str)
    ids = model.to_tokens(prompt) if text_in else np.asarray(prompt)
    if ids.ndim != 2 or ids.shape[0] != 1:
        raise MinillmError(f"generate takes one prompt: ids of shape [1, p], got {ids.shape}")
    if ids.shape[1] + max_new_tokens > model.cfg.n_ctx:
        raise MinillmError(
            f"prompt ({ids.shape[1]} tokens) + max_new_tokens ({max_new_tokens}) exceeds the "
            f"context length of {model.cfg.n_ctx}"
        )
    rng = np.random.default_rng(seed)
    cache = KVCache.for_model(model, batch=1)
    logits = model.forward(ids, cache=cache, last_only=True)  # prefill: [1, 1, V]
    new: list[int] = []
    for _ in range(max_new_tokens):
        token = sample_next(logits[0, -1], rng, temperature, top_k, top_p)
        new.append(token)
        if on_token is not None:
            on_token(token)
        if stop_at_eos and token in model.cfg.eos_token_ids:
            break
        if len(new) == max_new_tokens:
            break
        logits = model.forward(np.array([[token]]), cache=cache)  # [1, 1, V]
    full = np.concatenate([ids, np.array([new], np.int64)], axis=1)
    if return_ids or not text_in:
        return full
    return model.to_string(np.array(new))
