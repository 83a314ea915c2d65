"""The model a user holds: the forward pass plus tokenizer, hooks, caching and generation.

`Transformer` (model.py) is the math; `HookedModel` adds what experiments
need around it, with TransformerLens's method and argument names so that
code written for TransformerLens ports with few changes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from minillm.config import ModelConfig
from minillm.errors import MinillmError
from minillm.model import Transformer
from minillm.tokenizer import Tokenizer

NameFilter = str | Sequence[str] | Callable[[str], bool] | None


class HookedModel(Transformer):
    def __init__(self, cfg: ModelConfig, dtype=np.float32, tokenizer: Tokenizer | None = None,
                 name: str = "", path: Path | None = None):
        super().__init__(cfg, dtype)
        self.tokenizer = tokenizer
        self.name = name
        self.path = path

    def __repr__(self) -> str:
        c = self.cfg
        return (f"HookedModel({self.name or c.model_type}: {c.n_layers} layers, d_model "
                f"{c.d_model}, {c.n_heads} heads ({c.n_kv_heads} kv), d_mlp {c.d_mlp}, "
                f"vocab {c.d_vocab}, {self.dtype})")

    # --- tokens and text ---------------------------------------------------------------------

    def _need_tokenizer(self) -> Tokenizer:
        if self.tokenizer is None:
            raise MinillmError(
                f"{self.path or self.name}: this checkpoint has no tokenizer.json, so text "
                "methods are unavailable; pass token ids instead"
            )
        return self.tokenizer

    def to_tokens(self, text: str | Sequence[str], padding_side: str = "left") -> np.ndarray:
        """Text -> int64 ids [1, p] (BOS only if the model's tokenizer adds one).

        A list of texts gives [b, p] padded on `padding_side`; use
        `to_tokens_and_mask` to get the attention mask too.
        """
        if isinstance(text, str):
            return np.array([self._need_tokenizer().encode(text)], np.int64)
        return self.to_tokens_and_mask(text, padding_side)[0]

    def to_tokens_and_mask(self, texts: Sequence[str], padding_side: str = "left"):
        """A list of texts -> (ids [b, p], attention_mask [b, p]) for a ragged batch."""
        pad = self.cfg.extra.get("pad_token_id")
        pad = pad if isinstance(pad, int) else 0
        return self._need_tokenizer().batch_encode(list(texts), padding_side, pad)

    def to_string(self, ids) -> str | list[str]:
        """ids [p] -> text; ids [b, p] -> a list of texts."""
        ids = np.asarray(ids)
        if ids.ndim == 2:
            return [self.to_string(row) for row in ids]
        return self._need_tokenizer().decode(ids.tolist())

    def to_str_tokens(self, text_or_ids) -> list[str]:
        """Each token as its own piece of text (for plot labels)."""
        ids = self.to_tokens(text_or_ids)[0] if isinstance(text_or_ids, str) else text_or_ids
        tok = self._need_tokenizer()
        return [tok.decode([int(i)]) for i in np.asarray(ids).reshape(-1)]

    def to_single_token(self, text: str) -> int:
        """The id of a text that is exactly one token (error saying how it splits otherwise)."""
        ids = self._need_tokenizer().encode(text, add_special_tokens=False)
        if len(ids) != 1:
            pieces = [self.tokenizer.decode([i]) for i in ids]
            raise MinillmError(f"{text!r} is not a single token: it tokenizes as {pieces}")
        return ids[0]

    def _as_tokens(self, tokens) -> np.ndarray:
        return self.to_tokens(tokens) if isinstance(tokens, str) else np.asarray(tokens)

    def forward(self, tokens, attention_mask=None, cache=None, last_only=False) -> np.ndarray:
        """Logits [b, p, V] for ids [b, p] (or a str); see Transformer.forward."""
        return super().forward(self._as_tokens(tokens), attention_mask, cache, last_only)

    __call__ = forward

    def loss(self, tokens, per_token: bool = False, attention_mask=None) -> float | np.ndarray:
        """Next-token cross-entropy (nats), as transformers' `labels=input_ids` loss.

        tokens [b, p] ids (or a str; [p] is taken as one row). Position i predicts
        token i + 1, so a row of p tokens makes p - 1 predictions.
        per_token=False: the mean over all predictions, a float (perplexity is
        exp of it). per_token=True: an array [b, p-1] in the model's dtype.
        attention_mask [b, p] (1 = token, 0 = padding): a prediction counts only
        if both its input and its target are real tokens; the others are 0 in
        the per-token array and left out of the mean.
        """
        from minillm import ops

        tokens = self._as_tokens(tokens)
        if tokens.ndim == 1:
            tokens = tokens[None, :]
        if tokens.ndim != 2 or tokens.shape[1] < 2:
            raise MinillmError(
                f"loss needs at least 2 tokens per row (one prediction), got shape {tokens.shape}"
            )
        nll = ops.next_token_nll(self.forward(tokens, attention_mask), tokens)  # [b, p-1]
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
        return float(nll.sum(dtype=np.float64) / n)

    # --- hooks -------------------------------------------------------------------------------

    def hook_names(self) -> list[str]:
        """Every hook point, in the order they fire in a forward pass."""
        return list(self.hooks.valid_names)

    def run_with_hooks(self, tokens, fwd_hooks=(), attention_mask=None, cache=None,
                       last_only=False) -> np.ndarray:
        """One forward pass with temporary hooks: fwd_hooks = [(name or predicate, fn)]."""
        with self.hooks(fwd_hooks):
            return self.forward(tokens, attention_mask, cache, last_only)

    def run_with_cache(self, tokens, names_filter: NameFilter = None, attention_mask=None,
                       cache=None, fwd_hooks=()):
        """Logits and a dict of activations {hook name: array}, for the hooks asked for.

        names_filter: None (all hooks except the large `hook_result`), a name,
        a list of names, or a predicate over names.
        """
        from minillm.activation_cache import ActivationCache

        names = self._filter_names(names_filter)
        store: dict[str, np.ndarray] = {}

        def save(act, hook):
            store[hook.name] = act

        with self.hooks(fwd_hooks):
            logits = self.run_with_hooks(tokens, [(n, save) for n in names], attention_mask,
                                         cache)
        ordered = {n: store[n] for n in names if n in store}
        return logits, ActivationCache(ordered, self)

    def _filter_names(self, names_filter: NameFilter) -> list[str]:
        if names_filter is None:
            return [n for n in self.hook_names() if not n.endswith("hook_result")]
        if isinstance(names_filter, str) or callable(names_filter):
            return self.hooks.resolve(names_filter)
        for n in names_filter:
            self.hooks.check_name(n)
        wanted = set(names_filter)
        return [n for n in self.hook_names() if n in wanted]

    # --- activation interventions (minillm/interventions.py) ---------------------------------

    def run_with_interventions(self, tokens, interventions=(), attention_mask=None, cache=None,
                               last_only=False) -> np.ndarray:
        """Logits of one run with activation interventions (patch, zero, mean, ...) in place.

        Everything is validated before the run: hook names, layers, heads,
        neurons, and positions (against this run's length, or n_ctx when
        decoding with a KV cache).
        """
        from minillm.interventions import to_hooks

        tokens = self._as_tokens(tokens)
        for i in interventions if cache is None else ():  # decoding: later positions come later
            if hasattr(i, "check_positions"):
                i.check_positions(tokens.shape[-1])
        return self.run_with_hooks(tokens, to_hooks(self, interventions), attention_mask, cache,
                                   last_only)

    @contextmanager
    def intervened(self, interventions) -> Iterator[HookedModel]:
        """`with model.intervened([...]):` interventions apply to every run inside the block
        (generation too); removed on exit, also on exceptions."""
        from minillm.interventions import to_hooks

        with self.hooks(to_hooks(self, interventions)):
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

    def get_parameter(self, name: str) -> np.ndarray:
        """A parameter's live view by its documented name, e.g. 'blocks.3.attn.W_Q'."""
        params = dict(self.named_parameters())
        if name == "unembed.W_U":
            return self.unembed.W_U
        if name not in params:
            import difflib

            close = difflib.get_close_matches(name, list(params), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise MinillmError(f"no parameter named {name!r}{hint}")
        return params[name]

    def n_params(self) -> int:
        return sum(v.size for _, v in self.named_parameters())

    # --- generation --------------------------------------------------------------------------

    def generate(self, prompt, max_new_tokens: int = 20, **kwargs):
        """Continue a prompt (str or ids [1, p]); see minillm.generate.generate."""
        from minillm.generate import generate

        return generate(self, prompt, max_new_tokens=max_new_tokens, **kwargs)

    # --- weight edits (minillm/edits.py: the ops; minillm/journal.py: exact revert) ----------

    @property
    def journal(self):
        """The journal of weight edits applied to this model (created on first use)."""
        from minillm.journal import Journal

        if "_journal" not in self.__dict__:
            self._journal = Journal(self)
        return self._journal

    def edit(self, op):
        """Apply a weight edit from minillm.edits; returns a handle with .revert(mode=)."""
        return self.journal.apply(op)

    def revert_all(self) -> None:
        """Undo every edit bit for bit (also inverse-reverted ones): the weights are pristine."""
        self.journal.revert_all()

    def edited(self, *ops):
        """`with model.edited(op, ...):` the edits hold inside the block, reverted on exit."""
        return self.journal.edited(*ops)

    @property
    def edits(self) -> list:
        """The edits in force, oldest first (each prints as a one-line description)."""
        return self.journal.active
