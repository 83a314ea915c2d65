"""Perplexity of a long text with a sliding window: every token scored once, in context.

A model sees at most `window` tokens at a time. The windows start at 0, stride,
2·stride, ...; each scores only the tokens after the previous window's end, so
every token from the second on is predicted exactly once, with at least
`window - stride` tokens of context (except in the first window). stride =
window gives disjoint chunks (fast, less context); a smaller stride costs
window/stride forward passes per token but gives each token more context.

    perplexity = exp(mean over tokens of -log p(token | its context))

The same definition as the strided evaluation of Hugging Face's perplexity guide,
checked against transformers in tests/test_perplexity.py.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from minillm.errors import MinillmError

if TYPE_CHECKING:
    from minillm.hooked_model import HookedModel, TokensLike


@dataclass
class PerplexityResult:
    """nll: each token's loss in nats [n - 1] (token i + 1 given what precedes it)."""

    nll: np.ndarray
    window: int
    stride: int
    seconds: float

    @property
    def n_tokens(self) -> int:
        return int(self.nll.size)

    @property
    def mean_nll(self) -> float:
        return float(self.nll.mean(dtype=np.float64))

    @property
    def perplexity(self) -> float:
        return math.exp(self.mean_nll)

    @property
    def tokens_per_second(self) -> float:
        return self.n_tokens / self.seconds if self.seconds > 0 else float("inf")

    def summary(self) -> dict:
        return {"perplexity": self.perplexity, "mean_nll": self.mean_nll, "tokens": self.n_tokens,
                "window": self.window, "stride": self.stride, "seconds": self.seconds,
                "tokens_per_second": self.tokens_per_second}


def sliding_window_nll(model: HookedModel, ids: np.ndarray | Sequence[int], window: int | None = None,
                       stride: int | None = None, progress: bool = True) -> PerplexityResult:
    """Each token's loss under a sliding window.   ids [n] (or [1, n]) -> PerplexityResult

    window: tokens per forward pass (default min(n_ctx, 1024)); stride: how far
    each window moves (default window // 2). A tqdm bar counts scored tokens
    and shows tokens/s.
    """
    ids = np.asarray(ids)
    if ids.ndim == 2 and ids.shape[0] == 1:
        ids = ids[0]
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
        raise MinillmError(f"ids must be one row of integer token ids, got shape {ids.shape} {ids.dtype}")
    n = ids.size
    if n < 2:
        raise MinillmError(f"perplexity needs at least 2 tokens, the text has {n}")
    window = min(model.cfg.n_ctx, 1024) if window is None else int(window)
    if not 2 <= window <= model.cfg.n_ctx:
        raise MinillmError(f"window must be between 2 and the context length {model.cfg.n_ctx}, got {window}")
    stride = max(1, window // 2) if stride is None else int(stride)
    if not 1 <= stride <= window:
        raise MinillmError(f"stride must be between 1 and the window ({window}), got {stride}")

    from tqdm.auto import tqdm

    nll = np.empty(n - 1, model.dtype)
    start = time.perf_counter()
    bar = tqdm(total=n - 1, desc="perplexity", unit="tok", unit_scale=True, disable=not progress,
               leave=False)
    prev_end = 0
    try:
        for begin in range(0, n - 1, stride):
            end = min(begin + window, n)
            first = max(prev_end, begin + 1)  # first target position scored in this window
            per_token = model.loss(ids[None, begin:end], per_token=True)[0]  # [end - begin - 1]
            nll[first - 1 : end - 1] = per_token[first - begin - 1 :]
            bar.update(end - first)
            bar.set_postfix(ppl=f"{math.exp(float(nll[: end - 1].mean(dtype=np.float64))):.3f}")
            prev_end = end
            if end == n:
                break
    finally:
        bar.close()
    return PerplexityResult(nll, window, stride, time.perf_counter() - start)


def perplexity(model: HookedModel, text_or_ids: TokensLike, window: int | None = None,
               stride: int | None = None, progress: bool = True) -> PerplexityResult:
    """Sliding-window perplexity of a text (tokenized by the model) or of token ids."""
    ids = model.to_tokens(text_or_ids)[0] if isinstance(text_or_ids, str) else text_or_ids
    return sliding_window_nll(model, ids, window, stride, progress)
