"""Where model folders live on disk."""

import os
from pathlib import Path

_REPO = Path(__file__).resolve().parents[2]


def weights_dir() -> Path:
    """The weights directory.

    `$MINILLM_HOME/weights` when MINILLM_HOME is set; else the checkout's own
    `weights/` folder when minillm runs from a source checkout; else
    `~/.cache/minillm/weights`.
    """
    if os.environ.get("MINILLM_HOME"):
        return Path(os.environ["MINILLM_HOME"]).expanduser() / "weights"
    if (_REPO / "weights" / "README.md").is_file() and (_REPO / "pyproject.toml").is_file():
        return _REPO / "weights"
    return Path.home() / ".cache" / "minillm" / "weights"
