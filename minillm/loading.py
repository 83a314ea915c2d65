"""`minillm.load`: a catalog name or a Hugging Face folder -> a model with real weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from minillm.checkpoints.hf import check_checkpoint_size, load_weights
from minillm.config import ModelConfig
from minillm.errors import MinillmError
from minillm.hooked_model import HookedModel
from minillm.tokenizer import Tokenizer


def resolve(name_or_path: str | Path) -> Path:
    """A catalog name or a folder path -> the folder holding config.json and weights."""
    from minillm.checkpoints import catalog

    return catalog.resolve(name_or_path)


def load(name_or_path: str | Path, dtype=np.float32) -> HookedModel:
    """Load a model: a catalog name (`minillm list`) or a path to a Hugging Face folder.

    dtype: np.float32 (default) or np.float64 (reference mode).
    """
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise MinillmError(f"dtype must be float32 or float64, got {dtype}")
    folder = resolve(name_or_path)
    cfg = ModelConfig.from_json(folder / "config.json")
    tok_path = folder / "tokenizer.json"
    tokenizer = Tokenizer(tok_path) if tok_path.is_file() else None
    check_checkpoint_size(cfg, folder)  # before allocating: a config cannot ask for more than the files hold
    model = HookedModel(cfg, dtype, tokenizer, name=str(name_or_path), path=folder)
    load_weights(model, folder)
    return model
