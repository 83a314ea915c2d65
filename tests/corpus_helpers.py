"""A tiny model with a real tokenizer, in a folder workers can load, and a small generated corpus."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

FIXTURES = Path(__file__).parent / "fixtures"


def _bytes_to_unicode() -> dict[int, str]:
    """The byte-level BPE alphabet: byte b -> one printable character."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def tiny_text_model(folder: Path, fixture: str = "llama_tied") -> Path:
    """The 2-layer golden fixture model (vocab 256) plus a byte-level tokenizer.json: one token
    per UTF-8 byte, so any text tokenizes within the vocabulary. Returns the folder."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for f in ("config.json", "model.safetensors"):
        shutil.copy(FIXTURES / fixture / f, folder / f)
    vocab = {ch: b for b, ch in _bytes_to_unicode().items()}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.save(str(folder / "tokenizer.json"))
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["vocab_size"] == 256
    return folder


WORDS = (
    "the cat dog house river stone light morning quiet walked ran saw under over near far "
    "and but then a an of to in on with bright dark small large old new"
).split()


def generated_texts(n: int, seed: int = 0, min_words: int = 3, max_words: int = 40) -> list[str]:
    """n seeded texts of random words (lengths vary, so windows and padding vary)."""
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, int(rng.integers(min_words, max_words + 1)))) for _ in range(n)]
