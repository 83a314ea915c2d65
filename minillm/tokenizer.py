"""Text <-> token ids, through the `tokenizers` library and the model's own tokenizer.json.

BOS is added exactly when the model's own tokenizer adds it: that is what
its post-processor says (Llama / TinyLlama: yes; GPT-2 and SmolLM2: no), so
we let `tokenizers` apply it and never prepend a token ourselves.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from minillm.errors import CheckpointError, MinillmError


def resolve_token(model, token) -> int:
    """One token written as text (which must be exactly one token) or as an id -> its id.

    The one place a token given either way is resolved: edits, metrics, lens, DLA and
    readouts all call it. `model` may be None for ids (then only their type is checked);
    with a model, an id must be in its vocabulary.
    """
    if isinstance(token, str):
        if model is None:
            raise MinillmError(f"token {token!r} is text: pass the model so it can be tokenized")
        return int(model.to_single_token(token))
    if isinstance(token, bool) or not isinstance(token, (int, np.integer)):
        raise MinillmError(f"a token must be single-token text or an int id, got {token!r}")
    if model is not None and not 0 <= token < model.cfg.d_vocab:
        V = model.cfg.d_vocab
        raise MinillmError(f"token {int(token)} does not exist: it is outside the vocabulary of {V} "
                           f"tokens (0–{V - 1})")
    return int(token)


def check_text(text: str) -> None:
    """Text must be valid Unicode: a lone surrogate (e.g. '\\ud800', from a bad decode) is not."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise MinillmError(
            f"the text has a lone surrogate {text[e.start]!r} (U+{ord(text[e.start]):04X}) at index "
            f"{e.start}: it is not valid Unicode (decode bytes with errors='replace' first)"
        ) from None


class Tokenizer:
    def __init__(self, path: str | Path):
        from tokenizers import Tokenizer as HFTokenizer

        self.path = Path(path)
        try:
            self._tok = HFTokenizer.from_file(str(self.path))
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as e:  # the Rust library's own errors, and its panics (BaseException)
            raise CheckpointError(f"{self.path}: cannot read tokenizer ({e})") from None
        self.config = _read_json(self.path.parent / "tokenizer_config.json")

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        if not isinstance(text, str):
            raise MinillmError(f"expected text (str), got {type(text).__name__}")
        check_text(text)
        return self._tok.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        ids = [int(i) for i in ids]
        n = self.vocab_size
        for j, i in enumerate(ids):
            if not 0 <= i < n:
                raise MinillmError(f"token id {i} at index {j} is outside the vocabulary of "
                                   f"{self.path} (0 .. {n - 1})")
        return self._tok.decode(ids, skip_special_tokens=skip_special_tokens)

    def batch_decode(self, rows, skip_special_tokens: bool = False) -> list[str]:
        return [self.decode(r, skip_special_tokens) for r in rows]

    def _special(self, which: str) -> str | None:
        """The text of a special token named in tokenizer_config.json (e.g. "bos_token")."""
        value = self.config.get(which)
        if isinstance(value, dict):  # {"content": "<s>", ...}
            value = value.get("content")
        return value if isinstance(value, str) else None

    @property
    def bos_token(self) -> str | None:
        return self._special("bos_token")

    @property
    def eos_token(self) -> str | None:
        return self._special("eos_token")

    @property
    def pad_token(self) -> str | None:
        return self._special("pad_token")

    @property
    def bos_token_id(self) -> int | None:
        return None if self.bos_token is None else self.token_to_id(self.bos_token)

    @property
    def eos_token_id(self) -> int | None:
        return None if self.eos_token is None else self.token_to_id(self.eos_token)

    @property
    def pad_token_id(self) -> int | None:
        return None if self.pad_token is None else self.token_to_id(self.pad_token)

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def id_to_token(self, i: int) -> str | None:
        return self._tok.id_to_token(int(i))

    def batch_encode(self, texts: list[str], padding_side: str = "left", pad_id: int = 0,
                     encode=None):
        """A ragged batch as (ids [b, p], attention_mask [b, p]), padded on one side.
        `encode(text) -> ids` replaces `self.encode` (e.g. to add or drop BOS)."""
        rows = [(encode or self.encode)(t) for t in texts]
        width = max(len(r) for r in rows)
        ids = np.full((len(rows), width), pad_id, np.int64)
        mask = np.zeros((len(rows), width), np.int64)
        for i, r in enumerate(rows):
            sl = slice(width - len(r), width) if padding_side == "left" else slice(0, len(r))
            ids[i, sl], mask[i, sl] = r, 1
        return ids, mask


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError, RecursionError, OSError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({type(e).__name__}: {e})") from None
    return data if isinstance(data, dict) else {}
