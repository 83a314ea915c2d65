"""Metrics: the one metric type of every causal experiment, sweep and gradient.

    from minillm.interp import metrics as M
    ld = M.logit_diff(model, " Mary", " John")          # logit(" Mary") - logit(" John"), last position
    ld(model(tokens))                                    # per row: [b]
    ld.value(logits), ld.grad(logits)                    # the batch mean, and d mean / d logits [b, p, V]
    lp = M.log_prob(model, " night")                     # log p(" night")
    lg = M.logit(model, " night")                        # the raw logit of " night"
    kl = M.kl_to(clean_logits)                           # KL(clean || run) at the last position
    ce = M.cross_entropy(tokens)                         # next-token loss of a text (as model.loss)
    norm = M.normalized(ld, clean_value, corrupted_value)   # 0 = corrupted, 1 = clean

A metric is a `Metric`: called on logits [b, p, V] it gives one value per
batch row (so one batched forward pass scores many patched variants,
minillm.interp.batch); `value(logits)` is the number for the whole batch
(the mean over rows; cross-entropy: over all predictions); `grad(logits)`
is d value / d logits, the seed of the backward pass; `last_only` is True
when it reads only the last position (sweeps may then ask the model for the
last position's logits only). The same objects go to the patching and
ablation sweeps, to `minillm.grad.backward.backward` and to attribution.

Tokens may be given as single-token text (needs the model), ids, or lists of
either: a list is a *set* of tokens whose logits are averaged (e.g. " Mary"
and "Mary"); a list of lists gives one set per batch row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from minillm import ops
from minillm.errors import MinillmError
from minillm.tokenizer import resolve_token

if TYPE_CHECKING:
    from minillm.hooked_model import HookedModel, TokensLike, TokenSpec


class Metric:
    """Per-row values, the batch value and its gradient seed, from logits [b, p, V]."""

    @property
    def last_only(self) -> bool:
        """Reads only the last position (a metric at `pos` = -1)."""
        return getattr(self, "pos", None) == -1

    def __call__(self, logits: np.ndarray) -> np.ndarray:  # -> [b]
        raise NotImplementedError

    def value(self, logits: np.ndarray) -> float:
        """The batch's value: the mean over rows."""
        return float(np.mean(self(logits)))

    def grad(self, logits: np.ndarray) -> np.ndarray:
        """d value / d logits   [b, p, V]"""
        raise MinillmError(f"{type(self).__name__} has no gradient")


def _set_weights(ids: np.ndarray, b: int, V: int) -> np.ndarray:
    """d (batch mean of the mean over each row's token set) / d entry: 1/(b·k) at the set.   -> [b, V]"""
    ids = np.broadcast_to(ids, (b, ids.shape[-1]))
    d = np.zeros((b, V))
    for r in range(b):
        np.add.at(d[r], ids[r], 1.0 / (b * ids.shape[-1]))
    return d


def _seed(logits: np.ndarray, pos: int, rows_grad: np.ndarray) -> np.ndarray:
    """A gradient that is `rows_grad` [b, V] at position `pos` and 0 elsewhere, in the logits' dtype."""
    d = np.zeros(logits.shape, np.float64)
    d[:, pos] = rows_grad
    return d.astype(logits.dtype)


def token_ids(model: HookedModel, tokens: TokensLike) -> np.ndarray:
    """Tokens as text or ids -> an int array [k] (one set) or [b, k] (one set per row).

    " Mary" -> [id]; [" Mary", "Mary"] -> [id1, id2]; [[" Mary"], [" John"]] -> [[id1], [id2]].
    """
    def one(t) -> int:
        return resolve_token(model, t)

    if isinstance(tokens, (str, int, np.integer)):
        return np.array([one(tokens)])
    tokens = list(np.asarray(tokens).tolist()) if isinstance(tokens, np.ndarray) else list(tokens)
    if not tokens:
        raise MinillmError("an empty token set: give at least one token")
    if all(isinstance(t, (list, tuple)) for t in tokens):
        rows = [[one(t) for t in row] for row in tokens]
        if len({len(r) for r in rows}) != 1:
            raise MinillmError("per-row token sets must all have the same size")
        return np.array(rows)
    return np.array([one(t) for t in tokens])


def _check_vocab(ids: np.ndarray, logits: np.ndarray) -> None:
    if ids.size and (ids.min() < 0 or ids.max() >= logits.shape[-1]):
        raise MinillmError(f"token id {int(ids.max())} is outside the vocabulary of {logits.shape[-1]}")


def _set_mean(logits_at: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Mean logit over a token set.   logits_at [b, V], ids [k] or [b, k] -> [b]"""
    if ids.ndim == 1:
        return logits_at[:, ids].mean(-1)
    if ids.shape[0] != logits_at.shape[0]:
        raise MinillmError(f"per-row token sets have {ids.shape[0]} rows, the logits {logits_at.shape[0]}")
    return np.take_along_axis(logits_at, ids, axis=-1).mean(-1)


@dataclass
class LogitDiff(Metric):
    """mean logit[correct set] - mean logit[wrong set] at position `pos`.   logits [b, p, V] -> [b]

    With one token on each side this is log p(correct) - log p(wrong): the
    softmax normaliser cancels, which makes it the workhorse of patching.
    """

    correct: np.ndarray  # [k] or [b, k] token ids
    wrong: np.ndarray
    pos: int = -1

    def __call__(self, logits: np.ndarray) -> np.ndarray:
        _check_vocab(self.correct, logits)
        _check_vocab(self.wrong, logits)
        at = logits[:, self.pos].astype(np.float64)  # [b, V]
        return _set_mean(at, self.correct) - _set_mean(at, self.wrong)

    def grad(self, logits: np.ndarray) -> np.ndarray:
        """d (batch mean) / d logits   [b, p, V]"""
        b, V = logits.shape[0], logits.shape[-1]
        return _seed(logits, self.pos, _set_weights(self.correct, b, V) - _set_weights(self.wrong, b, V))


@dataclass
class Logit(Metric):
    """mean logit[target set] at position `pos` (raw, before the softmax).   logits [b, p, V] -> [b]"""

    target: np.ndarray  # [k] or [b, k]
    pos: int = -1

    def __call__(self, logits: np.ndarray) -> np.ndarray:
        _check_vocab(self.target, logits)
        return _set_mean(logits[:, self.pos].astype(np.float64), self.target)

    def grad(self, logits: np.ndarray) -> np.ndarray:
        """d (batch mean) / d logits: 1 / (b·k) at each target."""
        return _seed(logits, self.pos, _set_weights(self.target, logits.shape[0], logits.shape[-1]))


@dataclass
class LogProb(Metric):
    """mean log p(target set) at position `pos`.   logits [b, p, V] -> [b]"""

    target: np.ndarray  # [k] or [b, k]
    pos: int = -1

    def __call__(self, logits: np.ndarray) -> np.ndarray:
        _check_vocab(self.target, logits)
        logp = ops.log_softmax(logits[:, self.pos].astype(np.float64), axis=-1)  # [b, V]
        return _set_mean(logp, self.target)

    def grad(self, logits: np.ndarray) -> np.ndarray:
        """d (batch mean) / d logits: (onehot - softmax) averaged over the set and batch."""
        b = logits.shape[0]
        p = np.exp(ops.log_softmax(logits[:, self.pos].astype(np.float64), axis=-1))  # [b, V]
        return _seed(logits, self.pos, _set_weights(self.target, b, p.shape[-1]) - p / b)


@dataclass
class KLToClean(Metric):
    """KL(clean || run) at position `pos`, in nats: 0 when the run predicts like the clean run.

    clean_logits: [1, p, V] or [b, p, V] (or [.., 1, V] for the last position only).
    logits [b, p, V] -> [b]
    """

    clean_logits: np.ndarray
    pos: int = -1

    def __call__(self, logits: np.ndarray) -> np.ndarray:
        ref = ops.log_softmax(np.asarray(self.clean_logits)[:, self.pos].astype(np.float64), axis=-1)
        run = ops.log_softmax(logits[:, self.pos].astype(np.float64), axis=-1)  # [b, V]
        return (np.exp(ref) * (ref - run)).sum(-1)

    def grad(self, logits: np.ndarray) -> np.ndarray:
        """d (batch mean) / d logits: (softmax(run) - p_clean) / b."""
        ref = ops.log_softmax(np.asarray(self.clean_logits)[:, self.pos].astype(np.float64), axis=-1)
        run = ops.log_softmax(logits[:, self.pos].astype(np.float64), axis=-1)
        return _seed(logits, self.pos, (np.exp(run) - np.exp(ref)) / logits.shape[0])


@dataclass
class Normalized(Metric):
    """(metric - corrupted) / (clean - corrupted): 0 = the corrupted run, 1 = the clean run."""

    metric: Metric
    clean: float
    corrupted: float

    def __post_init__(self):
        if self.clean == self.corrupted:
            raise MinillmError(f"the metric is {self.clean:g} on both the clean and the corrupted "
                               "prompt: nothing to normalise (does the corruption change the answer?)")

    @property
    def last_only(self) -> bool:
        return getattr(self.metric, "last_only", False)

    def __call__(self, logits: np.ndarray) -> np.ndarray:
        return (self.metric(logits) - self.corrupted) / (self.clean - self.corrupted)

    def grad(self, logits: np.ndarray) -> np.ndarray:
        return (self.metric.grad(logits) / (self.clean - self.corrupted)).astype(logits.dtype)


class CrossEntropy(Metric):
    """Mean next-token cross-entropy of the text `tokens` [b, p] (a loss: lower is better).

    Per row: the mean over that row's predictions; `value`: the mean over all
    b·(p-1) predictions (with `attention_mask`, those whose input and target
    are real tokens), the number `model.loss` gives. Gradient: (softmax - onehot) / N.
    """

    last_only = False

    def __init__(self, tokens: np.ndarray, attention_mask: np.ndarray | None = None):
        self.tokens = np.asarray(tokens).reshape(-1, np.shape(tokens)[-1])
        self.attention_mask = None if attention_mask is None else np.asarray(attention_mask)

    def _keep(self) -> np.ndarray:  # [b, p-1]: predictions that count
        if self.attention_mask is None:
            return np.ones((self.tokens.shape[0], self.tokens.shape[1] - 1), bool)
        m = self.attention_mask != 0
        return m[:, 1:] & m[:, :-1]

    def __call__(self, logits: np.ndarray) -> np.ndarray:
        from minillm.hooked_model import HookedModel

        per_token = HookedModel.loss_fn(logits, self.tokens, self.attention_mask, per_token=True)
        return np.asarray(per_token, np.float64).sum(-1) / np.maximum(self._keep().sum(-1), 1)

    def value(self, logits: np.ndarray) -> float:
        from minillm.hooked_model import HookedModel

        return float(HookedModel.loss_fn(logits, self.tokens, self.attention_mask))

    def grad(self, logits: np.ndarray) -> np.ndarray:
        from minillm.grad.ops_backward import log_softmax_backward

        targets, keep = self.tokens[:, 1:], self._keep()  # [b, p-1]
        logp = ops.log_softmax(logits[:, :-1], axis=-1)  # [b, p-1, V]
        dlogp = np.zeros_like(logp)
        weights = -keep.astype(logp.dtype) / keep.sum()  # d loss / d logp[target]
        np.put_along_axis(dlogp, targets[..., None], weights[..., None], axis=-1)
        dlogits = np.zeros_like(logits)
        dlogits[:, :-1] = log_softmax_backward(dlogp, logp)
        return dlogits


def logit_diff(model: HookedModel, correct: TokenSpec, wrong: TokenSpec, pos: int = -1) -> LogitDiff:
    """logit(correct) - logit(wrong) at `pos`; tokens as text, ids, or sets (lists) of either."""
    return LogitDiff(token_ids(model, correct), token_ids(model, wrong), pos)


def logit(model: HookedModel, target: TokenSpec, pos: int = -1) -> Logit:
    """The raw logit of target at `pos`; target as text, an id, or a set (list) of either."""
    return Logit(token_ids(model, target), pos)


def log_prob(model: HookedModel, target: TokenSpec, pos: int = -1) -> LogProb:
    """log p(target) at `pos`; target as text, an id, or a set (list) of either."""
    return LogProb(token_ids(model, target), pos)


def cross_entropy(tokens: np.ndarray, attention_mask: np.ndarray | None = None) -> CrossEntropy:
    """The next-token cross-entropy of the text `tokens` [b, p] (see CrossEntropy)."""
    return CrossEntropy(tokens, attention_mask)


def kl_to(clean_logits: np.ndarray, pos: int = -1) -> KLToClean:
    """KL(clean || run) at `pos` against the given clean logits [1 or b, p, V]."""
    return KLToClean(np.asarray(clean_logits), pos)


def normalized(metric: Metric, clean: float, corrupted: float) -> Normalized:
    """The normalised patching metric (0 = corrupted, 1 = clean)."""
    return Normalized(metric, float(clean), float(corrupted))


def value(model: HookedModel, metric: Metric, tokens: TokensLike, attention_mask: np.ndarray | None = None,
          fwd_hooks: Sequence = ()) -> float:
    """The metric of one run, averaged over batch rows (tokens: text, [1, p] or [b, p])."""
    tokens = model.as_tokens(tokens)
    logits = model.run_with_hooks(tokens, list(fwd_hooks), attention_mask=attention_mask,
                                  last_only=getattr(metric, "last_only", False))
    return metric.value(logits)
