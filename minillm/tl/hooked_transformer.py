"""`HookedTransformer`: a minillm model with TransformerLens's entry points and defaults.

Everything a HookedTransformer does is minillm's own `HookedModel` (hooks,
caches, stacked weights, OV/QK circuits, loss, start/stop at a layer); this
subclass only adds what TransformerLens does differently *by default*:

- `from_pretrained` applies TransformerLens's weight processing (fold_ln,
  center_writing_weights, center_unembed, fold_value_biases) as journalled
  edits, so `model.revert_all()` gives back the checkpoint's weights bit for bit;
  `from_pretrained_no_processing` does not.
- Text gets a BOS token in front (`default_prepend_bos=True`) and ragged
  batches are padded on the right (`model.padding_side`, as minillm's own default).
- `forward` takes TransformerLens's positional order (input, return_type,
  loss_per_token, prepend_bos, padding_side, start_at_layer, tokens, ...).
- `generate` samples by default (do_sample=True) and returns prompt +
  continuation, as TransformerLens's does.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from minillm.errors import MinillmError
from minillm.hooked_model import HookedModel, Output

PROCESSING = ("fold_ln", "center_writing_weights", "center_unembed", "fold_value_biases",
              "refactor_factored_attn_matrices")


def _dtype(dtype) -> np.dtype:
    """"float32" / "float64" / np.float32 / torch-style "torch.float32" -> a NumPy dtype."""
    name = str(dtype).removeprefix("torch.")
    if name in ("float32", "float", "fp32"):
        return np.dtype(np.float32)
    if name in ("float64", "double", "fp64"):
        return np.dtype(np.float64)
    raise MinillmError(f"dtype {dtype!r} is not supported: minillm runs in float32 or float64")


class TLConfig:
    """`model.cfg` of a HookedTransformer: minillm's ModelConfig, read through, plus the names
    TransformerLens's config has (n_key_value_heads, device, default_prepend_bos, ...).

    `default_prepend_bos` and `use_attn_result` may be assigned, as in TransformerLens;
    every other field is fixed by the checkpoint.
    """

    def __init__(self, model: HookedTransformer):
        object.__setattr__(self, "_model", model)

    @property
    def _cfg(self):
        return self._model.__dict__["cfg"]

    def __getattr__(self, name: str):
        model, cfg = self._model, self._cfg
        tl_names = {
            "n_key_value_heads": lambda: cfg.n_kv_heads if cfg.n_kv_heads < cfg.n_heads else None,
            "device": lambda: "cpu",
            "default_prepend_bos": lambda: bool(model.default_prepend_bos),
            "tokenizer_prepends_bos": lambda: bool(model.tokenizer is not None and
                                                   model.tokenizer.encode("")),
            # TransformerLens renames the norms once their gains are folded away: "LNPre" / "RMSPre"
            "normalization_type": lambda: ("LN" if cfg.layer_norm else "RMS")
            + ("Pre" if any(getattr(h.op, "fold_ln", False) for h in model.edits) else ""),
            "positional_embedding_type": lambda: "rotary" if cfg.rotary_dim else "standard",
            "d_vocab_out": lambda: cfg.d_vocab,
            "model_name": lambda: model.name,
            "use_attn_result": lambda: bool(getattr(model, "use_attn_result", False)),
            "dtype": lambda: model.dtype,
        }
        if name in tl_names:
            return tl_names[name]()
        return getattr(cfg, name)

    def __setattr__(self, name: str, value) -> None:
        if name in ("default_prepend_bos", "use_attn_result"):
            setattr(self._model, name, value)
        else:
            raise MinillmError(f"cfg.{name} is fixed by the checkpoint and cannot be assigned")

    def __repr__(self) -> str:
        return f"TLConfig({self._cfg!r}, default_prepend_bos={self.default_prepend_bos})"


class HookedTransformer(HookedModel):
    """A minillm model loaded the TransformerLens way: `HookedTransformer.from_pretrained(name)`."""

    @property
    def cfg(self) -> TLConfig:
        return TLConfig(self)

    @cfg.setter
    def cfg(self, value) -> None:
        self.__dict__["cfg"] = value.__dict__["cfg"] if isinstance(value, TLConfig) else value

    @classmethod
    def from_pretrained(cls, model_name: str | Path, fold_ln: bool = True,
                        center_writing_weights: bool = True, center_unembed: bool = True,
                        refactor_factored_attn_matrices: bool = False,
                        fold_value_biases: bool = True, default_prepend_bos: bool | None = None,
                        default_padding_side: str | None = None, dtype="float32",
                        device=None, n_devices: int = 1, move_to_device: bool = True,
                        **unsupported) -> HookedTransformer:
        """Load a catalog name, a hub id or a local Hugging Face folder, processed as
        TransformerLens processes weights by default.

        The processing flags are minillm.load's; together they are one journalled
        edit (`model.edits` lists it, `model.revert_all()` undoes it).
        `device`, `n_devices` and `move_to_device` are accepted and have no
        effect (NumPy runs on the CPU). TransformerLens options that would
        change the model (`hf_model`, `tokenizer`, `checkpoint_index`,
        `first_n_layers`, ...) are refused by name rather than ignored.
        """
        import minillm

        given = {k: v for k, v in unsupported.items() if v is not None}
        if given:
            raise MinillmError(f"HookedTransformer.from_pretrained: {', '.join(sorted(given))} "
                               "not supported by minillm (it loads the checkpoint as it is, with "
                               "its own tokenizer)")
        model = minillm.load(model_name, dtype=_dtype(dtype), fold_ln=fold_ln,
                             center_writing_weights=center_writing_weights,
                             center_unembed=center_unembed, fold_value_biases=fold_value_biases,
                             refactor_factored_attn_matrices=refactor_factored_attn_matrices)
        model.__class__ = cls  # the same object, with TransformerLens's defaults on top
        model.default_prepend_bos = True if default_prepend_bos is None else default_prepend_bos
        if default_padding_side is not None:
            model.padding_side = default_padding_side
        return model

    @classmethod
    def from_pretrained_no_processing(cls, model_name: str | Path, fold_ln: bool = False,
                                      center_writing_weights: bool = False,
                                      center_unembed: bool = False,
                                      refactor_factored_attn_matrices: bool = False,
                                      fold_value_biases: bool = False, **kwargs) -> HookedTransformer:
        """`from_pretrained` with every weight-processing flag off: the checkpoint's weights."""
        return cls.from_pretrained(model_name, fold_ln=fold_ln,
                                   center_writing_weights=center_writing_weights,
                                   center_unembed=center_unembed,
                                   refactor_factored_attn_matrices=refactor_factored_attn_matrices,
                                   fold_value_biases=fold_value_biases, **kwargs)

    # --- TransformerLens's argument order and defaults ------------------------------------------

    def to_tokens(self, input: str | Sequence[str], prepend_bos: bool | None = None,
                  padding_side: str | None = None, move_to_device: bool = True,
                  truncate: bool = True) -> np.ndarray:
        """Text -> ids [b, p]; BOS in front unless prepend_bos=False; ragged batches padded
        on `padding_side` (default `model.padding_side`, right). Texts longer than n_ctx are
        cut when `truncate`."""
        ids = super().to_tokens(input, prepend_bos, padding_side)
        return ids[:, : self.cfg.n_ctx] if truncate else ids

    def forward(self, input, return_type: str | None = "logits", loss_per_token: bool = False,
                prepend_bos: bool | None = None, padding_side: str | None = None,
                start_at_layer: int | None = None, tokens=None, shortformer_pos_embed=None,
                attention_mask=None, stop_at_layer: int | None = None, past_kv_cache=None, *,
                cache=None, last_only: bool = False):
        """TransformerLens's forward: `model(input, return_type, loss_per_token, ...)`.

        `tokens` supplies the ids for the loss when starting from a residual
        stream (start_at_layer); `past_kv_cache` is a minillm KVCache.
        """
        if shortformer_pos_embed is not None:
            raise MinillmError("shortformer_pos_embed: minillm has no shortformer models")
        kv = past_kv_cache if past_kv_cache is not None else cache
        if start_at_layer is not None and tokens is not None and return_type in ("loss", "both"):
            logits = super().forward(input, attention_mask, start_at_layer=start_at_layer,
                                     stop_at_layer=stop_at_layer)
            loss = self.loss_fn(logits, tokens, attention_mask, per_token=loss_per_token)
            return loss if return_type == "loss" else Output(logits, loss)
        return super().forward(input, attention_mask, kv, last_only, return_type=return_type,
                               loss_per_token=loss_per_token, prepend_bos=prepend_bos,
                               padding_side=padding_side,
                               start_at_layer=start_at_layer, stop_at_layer=stop_at_layer)

    __call__ = forward

    def input_to_embed(self, input, prepend_bos: bool | None = None,
                       padding_side: str | None = None, attention_mask=None, past_kv_cache=None):
        """(residual stream entering block 0 [b, p, d], tokens [b, p], None, attention_mask)."""
        if isinstance(input, str) or (isinstance(input, (list, tuple)) and input
                                      and isinstance(input[0], str)):
            if isinstance(input, str):
                tokens = self.to_tokens(input, prepend_bos, padding_side)
            else:
                tokens, mask = self.to_tokens_and_mask(input, padding_side or self.padding_side,
                                                       prepend_bos)
                attention_mask = mask if attention_mask is None else attention_mask
        else:
            tokens = np.atleast_2d(np.asarray(input))
        residual = super().forward(tokens, attention_mask, stop_at_layer=0)
        return residual, tokens, None, attention_mask

    def generate(self, input="", max_new_tokens: int = 10, stop_at_eos: bool = True,
                 eos_token_id: int | None = None, do_sample: bool = True, top_k: int | None = None,
                 top_p: float | None = None, temperature: float = 1.0, freq_penalty: float = 0.0,
                 use_past_kv_cache: bool = True, prepend_bos: bool | None = None,
                 padding_side: str | None = None, return_type: str = "input",
                 verbose: bool = True, seed: int | None = None, **kwargs):
        """TransformerLens's generate: samples unless do_sample=False (then greedy), returns
        prompt + continuation (text for text input, ids for ids input).

        One prompt at a time (ids [1, p]); `freq_penalty` is not implemented.
        `seed` (minillm's) makes sampling reproducible.
        """
        from minillm.generate import generate

        if freq_penalty:
            raise MinillmError("freq_penalty is not implemented in minillm's generate")
        if return_type not in ("input", "str", "tokens"):
            raise MinillmError(f"return_type must be 'input', 'str' or 'tokens', got {return_type!r}")
        as_text = return_type == "str" or (return_type == "input" and isinstance(input, str))
        ids = self.to_tokens(input, prepend_bos) if isinstance(input, str) else np.atleast_2d(input)
        out = generate(self, ids, max_new_tokens=max_new_tokens,
                       temperature=temperature if do_sample else 0.0, top_k=top_k, top_p=top_p,
                       seed=seed, stop_at_eos=stop_at_eos,
                       eos_token_ids=None if eos_token_id is None else [eos_token_id],
                       return_ids=True)
        if not as_text:
            return out
        return self.need_tokenizer().decode(out[0].tolist(), skip_special_tokens=True)

    # --- torch.nn.Module habits that published code calls on the model ------------------------

    def to(self, device_or_dtype, print_details: bool = True) -> HookedTransformer:
        """`model.to(device)` is a no-op (NumPy runs on the CPU); a dtype is refused with the
        way to get it (float64: load with dtype="float64")."""
        if "float" in str(device_or_dtype) or "double" in str(device_or_dtype):
            if _dtype(device_or_dtype) != self.dtype:
                raise MinillmError(f"cannot convert a loaded model to {device_or_dtype}: load it "
                                   f"with dtype={_dtype(device_or_dtype).name!r}")
        return self

    def cpu(self) -> HookedTransformer:
        return self

    def cuda(self, device=None) -> HookedTransformer:
        raise MinillmError("minillm runs on the CPU with NumPy; there is no CUDA device")

    def eval(self) -> HookedTransformer:
        return self

    def state_dict(self) -> dict[str, np.ndarray]:
        """{parameter name: live view}, under TransformerLens's names (see named_parameters)."""
        return dict(self.named_parameters())

    def set_use_attn_result(self, use_attn_result: bool) -> None:
        """Cache `hook_result` (every head's output) by default in run_with_cache."""
        self.use_attn_result = bool(use_attn_result)

    def _filter_names(self, names_filter):
        names = super()._filter_names(names_filter)
        if names_filter is None and getattr(self, "use_attn_result", False):
            names = super()._filter_names(lambda n: True)
        return names
