"""The model a user holds: the forward pass plus tokenizer, hooks, caching and generation.

`Transformer` (model.py) is the math; `HookedModel` adds what experiments
need around it, with TransformerLens's method and argument names so that
code written for TransformerLens ports with few changes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from minillm.config import ModelConfig
from minillm.errors import MinillmError, did_you_mean
from minillm.hooks import ring_part
from minillm.model import Transformer
from minillm.tokenizer import Tokenizer

if TYPE_CHECKING:
    from minillm.activation_cache import ActivationCache
    from minillm.factored_matrix import FactoredMatrix
    from minillm.kv_cache import KVCache

NameFilter = str | Sequence[str] | Callable[[str], bool] | None
# Token ids [b, p] or [p] (an array or nested lists), or text that the model's tokenizer encodes.
TokensLike = str | np.ndarray | Sequence[int] | Sequence[Sequence[int]]
FwdHooks = Sequence[tuple[str | Callable[[str], bool], Callable]]
# A token given as an id or as single-token text, or one per prompt (a list or an array).
TokenSpec = int | str | Sequence[int | str] | np.ndarray


class Output(NamedTuple):
    """What `model(tokens, return_type="both")` returns: unpack it, or read .logits / .loss."""

    logits: np.ndarray  # [b, p, V]
    loss: np.floating | np.ndarray  # the mean (float64), or [b, p-1] with loss_per_token


class HookedModel(Transformer):
    def __init__(self, cfg: ModelConfig, dtype=np.float32, tokenizer: Tokenizer | None = None,
                 name: str = "", path: Path | None = None):
        super().__init__(cfg, dtype)
        self.tokenizer = tokenizer
        self.name = name
        self.path = path
        # None: BOS exactly where the model's own tokenizer adds one. True / False: always /
        # never start a text with BOS (TransformerLens's `prepend_bos`; its default is True).
        self.default_prepend_bos: bool | None = None
        # Which side `to_tokens(list)` pads; with "left", the forward pass masks leading padding
        # itself (TransformerLens's `tokenizer.padding_side`, default "right").
        self.padding_side = "right"

    def __repr__(self) -> str:
        c = self.cfg
        return (f"HookedModel({self.name or c.model_type}: {c.n_layers} layers, d_model "
                f"{c.d_model}, {c.n_heads} heads ({c.n_kv_heads} kv), d_mlp {c.d_mlp}, "
                f"vocab {c.d_vocab}, {self.dtype})")

    # --- tokens and text ---------------------------------------------------------------------

    def need_tokenizer(self) -> Tokenizer:
        """The model's tokenizer, or a MinillmError saying the checkpoint has none (pass ids)."""
        if self.tokenizer is None:
            raise MinillmError(
                f"{self.path or self.name}: this checkpoint has no tokenizer.json, so text "
                "methods are unavailable; pass token ids instead"
            )
        return self.tokenizer

    def to_tokens(self, text: str | Sequence[str], prepend_bos: bool | None = None,
                  padding_side: str | None = None) -> np.ndarray:
        """Text -> int64 ids [1, p] (BOS only if the model's tokenizer adds one, unless
        `prepend_bos` (or `model.default_prepend_bos`) says True / False).

        A list of texts gives [b, p], padded with the pad id on `padding_side`
        (default `model.padding_side`, "right" as in TransformerLens: each row's
        real tokens then get their true logits without a mask). For left
        padding set `model.padding_side = "left"`, and the forward pass infers
        the mask from the leading pads, as TransformerLens does; or use
        `to_tokens_and_mask` and pass the mask.
        """
        if isinstance(text, str):
            return np.array([self._encode(text, prepend_bos)], np.int64)
        return self.to_tokens_and_mask(text, padding_side or self.padding_side, prepend_bos)[0]

    @property
    def pad_token_id(self) -> int:
        """The id padding uses: the checkpoint's pad_token_id, else 0."""
        pad = self.cfg.extra.get("pad_token_id")
        return pad if isinstance(pad, int) else 0

    def infer_attention_mask(self, tokens: np.ndarray) -> np.ndarray | None:
        """TransformerLens's rule: with `padding_side == "left"`, leading pad ids are padding.

        tokens [b, p] -> mask [b, p] (1 = real token), or None when nothing is masked.
        """
        if self.padding_side != "left":
            return None
        tokens = np.asarray(tokens)
        tokens = tokens[None] if tokens.ndim == 1 else tokens
        leading = np.cumsum(tokens != self.pad_token_id, axis=-1) == 0  # [b, p]
        return (~leading).astype(np.int64) if leading.any() else None

    def to_tokens_and_mask(self, texts: Sequence[str], padding_side: str = "left",
                           prepend_bos: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
        """A list of texts -> (ids [b, p], attention_mask [b, p]) for a ragged batch."""
        if padding_side not in ("left", "right"):
            raise MinillmError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        if isinstance(texts, str) or not list(texts):
            raise MinillmError("to_tokens needs a text or a non-empty list of texts, got "
                               f"{texts!r}")
        return self.need_tokenizer().batch_encode(list(texts), padding_side, self.pad_token_id,
                                                   encode=lambda t: self._encode(t, prepend_bos))

    def _encode(self, text: str, prepend_bos: bool | None) -> list[int]:
        """One text -> ids, with BOS added or removed as `prepend_bos` asks."""
        tok = self.need_tokenizer()
        if prepend_bos is None:
            prepend_bos = self.default_prepend_bos
        ids = tok.encode(text)
        if prepend_bos is None:
            return ids
        bos = self.cfg.bos_token_id
        if bos is None:
            raise MinillmError(f"{self.name or self.path}: prepend_bos needs a BOS token, but "
                               "config.json names none (bos_token_id)")
        has_bos = bool(ids) and ids[0] == bos
        if prepend_bos and not has_bos:
            return [bos, *ids]
        if not prepend_bos and has_bos and tok.encode(text, add_special_tokens=False)[:1] != [bos]:
            return ids[1:]
        return ids

    def to_string(self, ids: np.ndarray | Sequence[int] | Sequence[Sequence[int]]) -> str | list[str]:
        """ids [p] (or one id) -> text; ids [b, p] -> a list of texts."""
        ids = np.asarray(ids)
        if ids.ndim == 0:
            ids = ids[None]
        if ids.size and not np.issubdtype(ids.dtype, np.integer):
            raise MinillmError(f"to_string takes integer token ids, got dtype {ids.dtype}")
        if ids.ndim == 2:
            return [self.to_string(row) for row in ids]
        return self.need_tokenizer().decode(ids.tolist())  # checks every id is in the vocabulary

    def to_str_tokens(self, text_or_ids: TokensLike, prepend_bos: bool | None = None) -> list:
        """Each token as its own piece of text (for plot labels).

        A str is tokenized first (with `prepend_bos` as in `to_tokens`); ids may
        be [p] or [1, p]; a list of texts gives a list of lists.
        """
        if isinstance(text_or_ids, (list, tuple)) and text_or_ids and isinstance(text_or_ids[0], str):
            return [self.to_str_tokens(t, prepend_bos) for t in text_or_ids]
        if isinstance(text_or_ids, str):
            ids = self.to_tokens(text_or_ids, prepend_bos)[0]
        else:
            ids = np.asarray(text_or_ids)
            if ids.ndim == 2 and ids.shape[0] != 1:
                raise MinillmError(f"to_str_tokens takes one row of ids ([p] or [1, p]), got "
                                   f"shape {ids.shape}")
        tok = self.need_tokenizer()
        return [tok.decode([int(i)]) for i in np.asarray(ids).reshape(-1)]

    def to_single_token(self, text: str) -> int:
        """The id of a text that is exactly one token (error saying how it splits otherwise)."""
        ids = self.need_tokenizer().encode(text, add_special_tokens=False)
        if len(ids) != 1:
            pieces = [self.tokenizer.decode([i]) for i in ids]
            raise MinillmError(f"{text!r} is not a single token: it tokenizes as {pieces}")
        return ids[0]

    def to_single_str_token(self, token_id: int) -> str:
        """The text of one token id."""
        return self.need_tokenizer().decode([int(token_id)])

    def get_token_position(self, single_token: str | int, input: TokensLike, mode: str = "first",
                           prepend_bos: bool | None = None) -> int:
        """Where a token occurs in a text or ids ([p] or [1, p]): its first or last position."""
        ids = self.to_tokens(input, prepend_bos)[0] if isinstance(input, str) else np.asarray(input)
        if ids.ndim == 2:
            if ids.shape[0] != 1:
                raise MinillmError(f"get_token_position takes one row of ids, got shape {ids.shape}")
            ids = ids[0]
        token = self.to_single_token(single_token) if isinstance(single_token, str) else int(single_token)
        where = np.flatnonzero(ids == token)
        if where.size == 0:
            raise MinillmError(f"token {token} ({self.to_single_str_token(token)!r}) does not "
                               "occur in the input")
        if mode not in ("first", "last"):
            raise MinillmError(f"mode must be 'first' or 'last', not {mode!r}")
        return int(where[0] if mode == "first" else where[-1])

    def tokens_to_residual_directions(self, tokens: int | str | Sequence[int | str] | np.ndarray
                                      ) -> np.ndarray:
        """The unembedding column of each token: the residual direction whose dot product is
        its logit (before the final norm).   str / int -> [d]; ids [...] -> [..., d]"""
        if isinstance(tokens, str):
            tokens = self.to_single_token(tokens)
        ids = np.asarray(tokens)
        if not np.issubdtype(ids.dtype, np.integer):
            raise MinillmError(f"tokens must be a single-token text or integer ids, got {tokens!r}")
        if ((ids < 0) | (ids >= self.cfg.d_vocab)).any():
            raise MinillmError(f"token ids must be in 0..{self.cfg.d_vocab - 1}, got {tokens!r}")
        if ids.size == 1:
            ids = ids.reshape(())
        return np.moveaxis(self.unembed.W_U[:, ids], 0, -1)

    def as_tokens(self, tokens: TokensLike) -> np.ndarray:
        """Text (or a list of texts) through `to_tokens`; token ids as an array, unchanged.

        Every function that takes "text or ids" calls this once at its entry.
        """
        if isinstance(tokens, str) or (isinstance(tokens, (list, tuple)) and tokens
                                       and all(isinstance(t, str) for t in tokens)):
            return self.to_tokens(tokens)
        return np.asarray(tokens)

    def forward(self, tokens: TokensLike, attention_mask: np.ndarray | None = None,
                cache: KVCache | None = None, last_only: bool = False, *,
                return_type: str | None = "logits", loss_per_token: bool = False,
                prepend_bos: bool | None = None, padding_side: str | None = None,
                start_at_layer: int | None = None, stop_at_layer: int | None = None) -> Any:
        """Logits [b, p, V] for ids [b, p] (or a str, or a list of texts); see Transformer.forward.

        As in TransformerLens: `return_type` "logits" (default), "loss" (the mean
        next-token cross-entropy, see `loss_fn`; per position [b, p-1] with
        `loss_per_token`), "both" (logits, loss) or None (run for the hooks,
        return nothing); `prepend_bos` / `padding_side` apply to text input;
        `start_at_layer` / `stop_at_layer` run a slice of the blocks. Without
        an attention_mask, a left-padded batch of ids (`model.padding_side ==
        "left"`) gets the mask inferred from its leading pad ids, as in
        TransformerLens.
        """
        if return_type not in ("logits", "loss", "both", None):
            raise MinillmError(f"return_type must be 'logits', 'loss', 'both' or None, got "
                               f"{return_type!r}")
        if isinstance(tokens, str):
            tokens = self.to_tokens(tokens, prepend_bos)
        elif isinstance(tokens, (list, tuple)) and tokens and isinstance(tokens[0], str):
            tokens, mask = self.to_tokens_and_mask(tokens, padding_side or self.padding_side,
                                                   prepend_bos)
            attention_mask = mask if attention_mask is None else attention_mask
        elif attention_mask is None and cache is None and start_at_layer is None:
            attention_mask = self.infer_attention_mask(tokens)
        out = super().forward(tokens, attention_mask, cache, last_only, start_at_layer,
                              stop_at_layer)
        if stop_at_layer is not None or return_type == "logits":
            return out
        if return_type is None:
            return None
        if start_at_layer is not None:
            raise MinillmError("return_type 'loss' with start_at_layer needs the token ids: "
                               "compute model.loss_fn(logits, tokens) yourself")
        loss = self.loss_fn(out, tokens, attention_mask, per_token=loss_per_token)
        return loss if return_type == "loss" else Output(out, loss)

    __call__ = forward

    @staticmethod
    def loss_fn(logits: np.ndarray, tokens: np.ndarray, attention_mask: np.ndarray | None = None,
                per_token: bool = False) -> float | np.ndarray:
        """Next-token cross-entropy (nats) of logits [b, p, V] for ids [b, p] (TransformerLens's
        `loss_fn`; `loss` runs the model first).

        Position i predicts token i + 1, so a row of p tokens makes p - 1
        predictions. per_token=False: the mean over all predictions, a float
        (a NumPy float64; perplexity is exp of it). per_token=True: [b, p-1] in
        the logits' dtype. attention_mask [b, p] (1 = token, 0 = padding): a
        prediction counts only if both its input and its target are real
        tokens; the others are 0 in the per-token array and left out of the mean.
        """
        from minillm import ops

        tokens = np.asarray(tokens)
        if tokens.ndim == 1:
            tokens = tokens[None, :]
        logits = np.asarray(logits)
        if tokens.ndim != 2 or tokens.shape[1] < 2:
            raise MinillmError(
                f"loss needs at least 2 tokens per row (one prediction), got shape {tokens.shape}"
            )
        if logits.shape[:2] != tokens.shape:
            raise MinillmError(f"logits {logits.shape} do not match tokens {tokens.shape}")
        nll = ops.next_token_nll(logits, tokens)  # [b, p-1]
        if attention_mask is not None:
            real = np.asarray(attention_mask) != 0  # [b, p]
            keep = real[:, 1:] & real[:, :-1]  # [b, p-1]
            if not keep.any():
                raise MinillmError("attention_mask leaves no prediction whose input and target are both real")
            nll = np.where(keep, nll, 0).astype(nll.dtype)
            n = int(keep.sum())
        else:
            n = nll.size
        if per_token:
            return nll
        return np.float64(nll.sum(dtype=np.float64) / n)

    def loss(self, tokens: TokensLike, per_token: bool = False,
             attention_mask: np.ndarray | None = None) -> float | np.ndarray:
        """Next-token cross-entropy (nats) of a run on `tokens`, as transformers' `labels=input_ids`
        loss: ids [b, p] (or a str; [p] is taken as one row); see `loss_fn`."""
        tokens = self.as_tokens(tokens)
        if tokens.ndim == 1:
            tokens = tokens[None, :]
        if tokens.ndim != 2 or tokens.shape[1] < 2:
            raise MinillmError(
                f"loss needs at least 2 tokens per row (one prediction), got shape {tokens.shape}"
            )
        return self.loss_fn(self.forward(tokens, attention_mask), tokens, attention_mask, per_token)

    # --- hooks -------------------------------------------------------------------------------

    def hook_names(self) -> list[str]:
        """Every hook point, in the order they fire in a forward pass."""
        return list(self.hooks.valid_names)

    @property
    def use_attn_result(self) -> bool:
        """The setting that makes attention compute each head's output and fire attn.hook_result."""
        return self.hooks.use_attn_result

    @use_attn_result.setter
    def use_attn_result(self, value: bool) -> None:
        self.hooks.use_attn_result = bool(value)

    def set_use_attn_result(self, use_attn_result: bool) -> None:
        """Per-head attention outputs on or off (TransformerLens's name).

        On: attention computes every head's output z_h·W_O[h] [b, p, h, d] and
        sums them (another summation order than the single W_O product, so
        logits differ by float32 rounding), attn.hook_result fires, and
        run_with_cache caches it by default. Off (the default): hooking
        attn.hook_result is an error that names this setting.
        """
        self.use_attn_result = use_attn_result

    @property
    def hook_dict(self) -> dict:
        """{hook name: HookPoint} for every hook point (TransformerLens's `hook_dict`)."""
        return {n: self.hooks.point(n) for n in self.hooks.valid_names}

    def add_hook(self, name: str | Callable[[str], bool], hook: Callable, dir: str = "fwd",
                 is_permanent: bool = False, level: int | None = None, prepend: bool = False) -> None:
        """Register hook(act, hook_point) at a hook name, or at every name a predicate
        accepts, until `reset_hooks()` (permanent hooks survive it). `prepend` runs it
        before the hooks already there. dir="bwd": a backward hook, hook(grad, hook_point),
        called by every backward pass (minillm.grad.backward) while it is registered."""
        for n in self.hooks.resolve(name):
            self.hooks.add(n, hook, prepend=prepend, permanent=is_permanent, dir=dir)

    def add_perma_hook(self, name: str | Callable[[str], bool], hook: Callable, dir: str = "fwd") -> None:
        """A hook that `reset_hooks()` keeps (`reset_hooks(including_permanent=True)` removes it)."""
        self.add_hook(name, hook, dir=dir, is_permanent=True)

    def reset_hooks(self, clear_contexts: bool = True, direction: str = "both",
                    including_permanent: bool = False, level: int | None = None) -> None:
        """Remove the hooks added with `add_hook` (permanent ones too if asked) and empty
        every hook's `ctx` (unless clear_contexts=False)."""
        self.hooks.reset(including_permanent, clear_contexts)

    def remove_all_hook_fns(self, direction: str = "both", including_permanent: bool = False,
                            level: int | None = None) -> None:
        """Remove hooks as `reset_hooks` does, but keep the hooks' `ctx`."""
        self.hooks.reset(including_permanent, clear_contexts=False)

    def run_with_hooks(self, tokens: TokensLike, fwd_hooks: FwdHooks = (),
                       attention_mask: np.ndarray | None = None, cache: KVCache | None = None,
                       last_only: bool = False, *, bwd_hooks: FwdHooks = (), metric: Callable | None = None,
                       reset_hooks_end: bool = True, clear_contexts: bool = False,
                       **forward_kwargs: Any) -> Any:
        """One forward pass with temporary hooks: fwd_hooks = [(name or predicate, fn)].

        `forward_kwargs` are forward's (return_type, stop_at_layer, prepend_bos, ...).

        bwd_hooks = [(name or predicate, fn)] are called as fn(grad, hook) with
        d(metric)/d(activation) at their hook, from the hand-written backward
        pass. They need `metric`: a `minillm.interp.metrics.Metric` (value and
        gradient) such as `metrics.logit_diff(model, ...)`, or "loss" (the default with
        return_type="loss") for the mean next-token cross-entropy of `tokens`.
        The return value is forward's (logits, loss, or both).
        """
        if not bwd_hooks:
            with self.hooks(fwd_hooks, reset_hooks_end=reset_hooks_end, clear_contexts=clear_contexts):
                return self.forward(tokens, attention_mask=attention_mask, cache=cache,
                                    last_only=last_only, **forward_kwargs)
        return self._run_with_bwd_hooks(tokens, fwd_hooks, bwd_hooks, metric, attention_mask, cache,
                                        reset_hooks_end, clear_contexts, forward_kwargs)

    def _run_with_bwd_hooks(self, tokens, fwd_hooks, bwd_hooks, metric, attention_mask, cache,
                            reset_hooks_end, clear_contexts, forward_kwargs):
        return_type = forward_kwargs.pop("return_type", "logits")
        if metric is None and return_type in ("loss", "both"):
            metric = "loss"
        if metric is None:
            raise MinillmError("bwd_hooks need a metric to differentiate (minillm has no autograd): "
                               "pass metric=minillm.interp.metrics.logit_diff(model, ...), or metric='loss'")
        if cache is not None or forward_kwargs:
            raise MinillmError("bwd_hooks run the whole model once: no KV cache and no "
                               f"{sorted(forward_kwargs)}")
        tokens = self.as_tokens(tokens)
        tokens = tokens[None] if tokens.ndim == 1 else tokens
        if isinstance(metric, str):
            if metric != "loss":
                raise MinillmError(f"metric must be a function or 'loss', got {metric!r}")
            metric = ring_part("loss_metric")(tokens, attention_mask)  # interp.metrics.cross_entropy
        with self.hooks(fwd_hooks, bwd_hooks, reset_hooks_end=reset_hooks_end,
                        clear_contexts=clear_contexts):
            res = ring_part("backward")(self, tokens, metric, attention_mask=attention_mask,
                                        params=False)  # grad.backward.backward
        if return_type == "loss":
            return res.value
        return (res.logits, res.value) if return_type == "both" else res.logits

    def run_with_cache(self, tokens: TokensLike, names_filter: NameFilter = None,
                       attention_mask: np.ndarray | None = None, cache: KVCache | None = None,
                       fwd_hooks: FwdHooks = (), *, remove_batch_dim: bool = False,
                       return_cache_object: bool = True, device: object = None,
                       **forward_kwargs: Any) -> tuple[Any, ActivationCache | dict[str, np.ndarray]]:
        """The forward pass's output and an ActivationCache {hook name: array} of the hooks asked for.

        names_filter: None (every hook; attn.hook_result only with `use_attn_result`), a name,
        a list of names, or a predicate over names. `remove_batch_dim` drops the
        batch axis (of size 1) from every cached activation (not from the output),
        as TransformerLens does; `forward_kwargs` are forward's (return_type,
        stop_at_layer, ...). `device` is accepted and ignored (NumPy runs on the CPU).
        """
        from minillm.activation_cache import ActivationCache

        names = self._filter_names(names_filter)
        store: dict[str, np.ndarray] = {}

        def save(act, hook):
            store[hook.name] = act

        with self.hooks(fwd_hooks):
            out = self.run_with_hooks(tokens, [(n, save) for n in names],
                                      attention_mask=attention_mask, cache=cache, **forward_kwargs)
        ordered = {n: store[n] for n in names if n in store}
        activations = ActivationCache(ordered, self)
        if remove_batch_dim:
            activations = activations.remove_batch_dim()
        return out, (activations if return_cache_object else dict(activations))

    def _filter_names(self, names_filter: NameFilter) -> list[str]:
        if names_filter is None:  # attn.hook_result only with the setting use_attn_result
            return self.hooks.resolve(lambda n: True)
        if isinstance(names_filter, str) or callable(names_filter):
            return self.hooks.resolve(names_filter)
        for n in names_filter:
            self.hooks.check_name(n)
        wanted = set(names_filter)
        return [n for n in self.hook_names() if n in wanted]

    # --- activation interventions (minillm/interp/interventions.py, lent via RING_PARTS) -----

    def run_with_interventions(self, tokens: TokensLike, interventions: Sequence = (),
                               attention_mask: np.ndarray | None = None, cache: KVCache | None = None,
                               last_only: bool = False) -> np.ndarray:
        """Logits of one run with activation interventions (patch, zero, mean, ...) in place.

        Everything is validated before the run: hook names, layers, heads,
        neurons, and positions (against this run's length, or n_ctx when
        decoding with a KV cache).
        """
        to_hooks = ring_part("to_hooks")  # interp.interventions.to_hooks
        tokens = self.as_tokens(tokens)
        for i in interventions if cache is None else ():  # decoding: later positions come later
            if hasattr(i, "check_positions"):
                i.check_positions(tokens.shape[-1])
        return self.run_with_hooks(tokens, to_hooks(self, interventions), attention_mask, cache,
                                   last_only)

    @contextmanager
    def intervened(self, interventions: Sequence) -> Iterator[HookedModel]:
        """`with model.intervened([...]):` interventions apply to every run inside the block
        (generation too); removed on exit, also on exceptions."""
        with self.hooks(ring_part("to_hooks")(self, interventions)):  # interp.interventions.to_hooks
            yield self

    # --- parameters --------------------------------------------------------------------------

    def named_parameters(self) -> Iterator[tuple[str, np.ndarray]]:
        """Every parameter under its documented name, as a live view (W_U only if untied)."""
        yield "embed.W_E", self.embed.W_E
        if self.pos_embed is not None:
            yield "pos_embed.W_pos", self.pos_embed.W_pos
        for l, block in enumerate(self.blocks):
            for name, value in block.named_parameters():
                yield f"blocks.{l}.{name}", value
        yield "ln_final.w", self.ln_final.w
        if self.ln_final.b is not None:
            yield "ln_final.b", self.ln_final.b
        if not self.cfg.tie_embeddings:
            yield "unembed.W_U", self.unembed.W_U
        if self.unembed.b_U is not None:
            yield "unembed.b_U", self.unembed.b_U

    def get_parameter(self, name: str) -> np.ndarray:
        """A parameter's live view by its documented name, e.g. 'blocks.3.attn.W_Q'.

        Attention keys/values answer to both names: `_W_K` (the stored heads)
        and `W_K` (per query head; read-only for grouped-query attention).
        """
        params = dict(self.named_parameters())
        if name == "unembed.W_U":
            return self.unembed.W_U
        if name in params:
            return params[name]
        head, _, leaf = name.rpartition(".")
        other = leaf[1:] if leaf.startswith("_") else f"_{leaf}"
        if leaf.lstrip("_") in ("W_K", "W_V", "b_K", "b_V") and f"{head}.{other}" in params:
            return getattr(self.blocks[int(head.split(".")[1])].attn, leaf)

        hint = did_you_mean(name, params)
        raise MinillmError(f"no parameter named {name!r}{hint}")

    def n_params(self) -> int:
        return sum(v.size for _, v in self.named_parameters())

    # --- every layer's weights stacked, as TransformerLens's HookedTransformer has them -------
    # Copies, not live views: write through `model.blocks[l]....` (or an edit) to change weights.

    def _stack(self, get) -> np.ndarray:
        return np.stack([get(b) for b in self.blocks])

    def _per_query_head(self, x: np.ndarray) -> np.ndarray:
        """[kv, ...] -> [h, ...]: query head j reads key/value head j // n_groups."""
        return x if x.shape[0] == self.cfg.n_heads else np.repeat(x, self.cfg.n_groups, axis=0)

    def _stack_bias(self, get, shape) -> np.ndarray:
        """A stacked bias; zeros for a model without that bias (as TransformerLens keeps them)."""
        return self._stack(lambda b: get(b) if get(b) is not None else np.zeros(shape, self.dtype))

    @property
    def W_E(self) -> np.ndarray:
        """[d_vocab, d_model] (the live embedding matrix)."""
        return self.embed.W_E

    @property
    def W_U(self) -> np.ndarray:
        """[d_model, d_vocab] (live; W_E.T when tied)."""
        return self.unembed.W_U

    @property
    def b_U(self) -> np.ndarray:
        """[d_vocab]: the unembedding bias (made by fold_ln on LayerNorm models), else zeros."""
        b = getattr(self.unembed, "b_U", None)
        return b if b is not None else np.zeros(self.cfg.d_vocab, self.dtype)

    @property
    def W_pos(self) -> np.ndarray:
        """[n_ctx, d_model] (GPT-2's learned positions)."""
        if self.pos_embed is None:
            raise MinillmError(f"{self.cfg.model_type} uses rotary positions: there is no W_pos")
        return self.pos_embed.W_pos

    @property
    def W_E_pos(self) -> np.ndarray:
        """[d_vocab + n_ctx, d_model]: token and position embeddings, one above the other."""
        return np.concatenate([self.W_E, self.W_pos])

    @property
    def W_Q(self) -> np.ndarray:
        """[n_layers, n_heads, d_model, d_head]"""
        return self._stack(lambda b: b.attn.W_Q)

    @property
    def W_K(self) -> np.ndarray:
        """[n_layers, n_heads, d_model, d_head] (per query head, as blocks[l].attn.W_K)"""
        return self._stack(lambda b: self._per_query_head(b.attn.W_K))

    @property
    def W_V(self) -> np.ndarray:
        """[n_layers, n_heads, d_model, d_head] (per query head, as blocks[l].attn.W_V)"""
        return self._stack(lambda b: self._per_query_head(b.attn.W_V))

    @property
    def W_O(self) -> np.ndarray:
        """[n_layers, n_heads, d_head, d_model]"""
        return self._stack(lambda b: b.attn.W_O)

    def _attn_bias(self, which: str) -> np.ndarray:
        def get(b):
            return self._per_query_head(getattr(b.attn, which)) if b.attn.b_QKV is not None else None

        return self._stack_bias(get, (self.cfg.n_heads, self.cfg.d_head))

    @property
    def b_Q(self) -> np.ndarray:
        """[n_layers, n_heads, d_head] (zeros without biases)"""
        return self._attn_bias("b_Q")

    @property
    def b_K(self) -> np.ndarray:
        """[n_layers, n_heads, d_head] (zeros without biases)"""
        return self._attn_bias("b_K")

    @property
    def b_V(self) -> np.ndarray:
        """[n_layers, n_heads, d_head] (zeros without biases)"""
        return self._attn_bias("b_V")

    @property
    def b_O(self) -> np.ndarray:
        """[n_layers, d_model] (zeros without biases)"""
        return self._stack_bias(lambda b: b.attn.b_O, (self.cfg.d_model,))

    @property
    def W_in(self) -> np.ndarray:
        """[n_layers, d_model, d_mlp] (llama: the "up" projection)"""
        return self._stack(lambda b: b.mlp.W_in)

    @property
    def W_gate(self) -> np.ndarray | None:
        """[n_layers, d_model, d_mlp] for gated MLPs (llama), else None"""
        return self._stack(lambda b: b.mlp.W_gate) if self.blocks[0].mlp.gated else None

    @property
    def W_out(self) -> np.ndarray:
        """[n_layers, d_mlp, d_model]"""
        return self._stack(lambda b: b.mlp.W_out)

    @property
    def b_in(self) -> np.ndarray:
        """[n_layers, d_mlp] (zeros without biases)"""
        return self._stack_bias(lambda b: getattr(b.mlp, "b_in", None), (self.cfg.d_mlp,))

    @property
    def b_out(self) -> np.ndarray:
        """[n_layers, d_model] (zeros without biases)"""
        return self._stack_bias(lambda b: getattr(b.mlp, "b_out", None), (self.cfg.d_model,))

    @property
    def QK(self) -> FactoredMatrix:
        """Every head's QK circuit W_Q @ W_K.T as a FactoredMatrix [n_layers, n_heads, d_model, d_model]."""
        from minillm.factored_matrix import FactoredMatrix

        return FactoredMatrix(self.W_Q, self.W_K.swapaxes(-2, -1))

    @property
    def OV(self) -> FactoredMatrix:
        """Every head's OV circuit W_V @ W_O as a FactoredMatrix [n_layers, n_heads, d_model, d_model]."""
        from minillm.factored_matrix import FactoredMatrix

        return FactoredMatrix(self.W_V, self.W_O)

    def all_composition_scores(self, mode: str) -> np.ndarray:
        """Q-, K- or V-composition score of every pair of heads (left head writes, right head
        reads).   -> [n_layers, n_heads, n_layers, n_heads], zero unless the right head's
        layer is later than the left head's."""
        from minillm.factored_matrix import composition_scores

        rights = {"Q": lambda: self.QK, "K": lambda: self.QK.T, "V": lambda: self.OV}
        if mode not in rights:
            raise MinillmError(f"mode must be one of 'Q', 'K', 'V', not {mode!r}")
        scores = composition_scores(self.OV, rights[mode](), broadcast_dims=True)
        L = self.cfg.n_layers
        later = np.arange(L)[:, None, None, None] < np.arange(L)[None, None, :, None]
        return np.where(later, scores, 0.0)

    def accumulated_bias(self, layer: int, mlp_input: bool = False,
                         include_mlp_biases: bool = True) -> np.ndarray:
        """The output biases (b_O, b_out) of blocks 0 .. layer-1 summed (and block `layer`'s
        b_O if `mlp_input`).   -> [d_model] (zeros for a model without output biases)"""
        if not 0 <= layer <= self.cfg.n_layers or (mlp_input and layer == self.cfg.n_layers):
            raise MinillmError(f"layer {layer} is out of range 0..{self.cfg.n_layers}"
                               + (" (mlp_input needs a block)" if mlp_input else ""))
        total = np.zeros(self.cfg.d_model, self.dtype)
        for l in range(layer + (1 if mlp_input else 0)):
            total += self.b_O[l]
            if include_mlp_biases and l < layer:
                total += self.b_out[l]
        return total

    def all_head_labels(self) -> list[str]:
        """["L0H0", "L0H1", ...]: one label per head, layer-major."""
        return [f"L{l}H{h}" for l in range(self.cfg.n_layers) for h in range(self.cfg.n_heads)]

    # --- generation --------------------------------------------------------------------------

    def generate(self, prompt: TokensLike, max_new_tokens: int = 20, **kwargs: Any) -> str | np.ndarray:
        """Continue a prompt (str or ids [1, p]); see minillm.generate.generate."""
        from minillm.generate import generate

        return generate(self, prompt, max_new_tokens=max_new_tokens, **kwargs)

    # --- weight edits (edit/edits.py: the ops; edit/journal.py: exact revert; via RING_PARTS)

    @property
    def journal(self) -> Any:
        """The journal of weight edits applied to this model (a minillm.edit.journal.Journal,
        created on first use)."""
        if "_journal" not in self.__dict__:
            self._journal = ring_part("journal")(self)  # edit.journal.Journal
        return self._journal

    def edit(self, op: Any) -> Any:
        """Apply a weight edit (an Edit from minillm.edits); returns its EditHandle, with
        .revert(mode=)."""
        return self.journal.apply(op)

    def revert_all(self) -> None:
        """Undo every edit bit for bit (also inverse-reverted ones): the weights are pristine."""
        self.journal.revert_all()

    def edited(self, *ops: Any) -> AbstractContextManager[HookedModel]:
        """`with model.edited(op, ...):` the edits hold inside the block, reverted on exit."""
        return self.journal.edited(*ops)

    @property
    def edits(self) -> list:
        """The edits in force, oldest first (each prints as a one-line description)."""
        return self.journal.active
