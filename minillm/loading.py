"""`minillm.load`: a catalog name or a Hugging Face folder -> a model with real weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from minillm.checkpoints.hf import check_checkpoint_size, check_memory, load_weights
from minillm.config import ModelConfig
from minillm.errors import MinillmError, format_bytes
from minillm.hooked_model import HookedModel
from minillm.hooks import ring_part
from minillm.tokenizer import Tokenizer


def resolve(name_or_path: str | Path) -> Path:
    """A catalog name or a folder path -> the folder holding config.json and weights."""
    from minillm.checkpoints import catalog

    return catalog.resolve(name_or_path)


DTypeLike = type[np.floating] | np.dtype | str  # np.float32 (default), np.float64, "float64", ...


def load(name_or_path: str | Path, dtype: DTypeLike = np.float32, *, fold_ln: bool = False,
         center_writing_weights: bool = False, center_unembed: bool = False,
         fold_value_biases: bool = False, refactor_factored_attn_matrices: bool = False
         ) -> HookedModel:
    """Load a model: a catalog name (`minillm list`) or a path to a Hugging Face folder.

    dtype: np.float32 (default) or np.float64 (reference mode).
    fold_ln, center_writing_weights, center_unembed, fold_value_biases:
    TransformerLens's weight processing (see minillm.edit.processing), off by
    default: the weights are the checkpoint's. When asked for, it is applied as
    one weight edit (`model.edits` lists it, `model.revert_all()` undoes it).
    """
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise MinillmError(f"dtype must be float32 or float64, got {dtype}")
    folder = resolve(name_or_path)
    cfg = ModelConfig.from_json(folder / "config.json")
    tok_path = folder / "tokenizer.json"
    tokenizer = Tokenizer(tok_path) if tok_path.is_file() else None
    check_checkpoint_size(cfg, folder)  # before allocating: a config cannot ask for more than the files hold
    check_memory(folder, dtype)  # nor the files for more memory than the machine has
    try:
        model = HookedModel(cfg, dtype, tokenizer, name=str(name_or_path), path=folder)
    except MemoryError:
        from minillm.config import n_params_lower_bound

        n = n_params_lower_bound(cfg)
        raise MinillmError(f"{folder}: not enough memory for a model of {n:,} parameters "
                           f"({format_bytes(n * dtype.itemsize)} as {dtype})") from None
    load_weights(model, folder)
    flags = dict(fold_ln=fold_ln, center_writing_weights=center_writing_weights,
                 center_unembed=center_unembed, fold_value_biases=fold_value_biases,
                 refactor_factored_attn_matrices=refactor_factored_attn_matrices)
    if any(flags.values()):
        model.edit(ring_part("process_weights")(**flags))  # edit.processing.process_weights
    return model
