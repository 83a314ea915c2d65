"""The `PROMPT | --ids I,J,...` choice that commands share (for checkpoints without a tokenizer)."""

from __future__ import annotations

import numpy as np

from minillm.errors import MinillmError

IDS_HELP = "token ids instead of a prompt, comma-separated (for checkpoints without a tokenizer)"


def prompt_or_ids(prompt: str | None, ids: str | None) -> str | np.ndarray:
    """The prompt text, or the ids of `--ids` as an int64 array [1, p]; exactly one must be given."""
    if (prompt is None) == (ids is None):
        raise MinillmError("give either a prompt or --ids (not both)")
    if ids is None:
        from minillm.tokenizer import check_text

        check_text(prompt)
        return prompt
    try:
        values = [int(t) for t in ids.replace(" ", ",").split(",") if t]
    except ValueError:
        raise MinillmError(f"--ids must be comma-separated integers, got {ids!r}") from None
    if not values:
        raise MinillmError("--ids is empty")
    return np.array([values], np.int64)
