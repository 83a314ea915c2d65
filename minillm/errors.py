"""The one exception type minillm raises for a user's mistake or a bad file.

Every message names what is at fault (file, tensor, layer, index) and, where
possible, what to do about it.
"""


class MinillmError(Exception):
    """A clear, actionable error: bad input, a bad file, a missing model."""


class CheckpointError(MinillmError):
    """A weights, config or tokenizer file is missing, malformed or inconsistent."""


class ConfigError(CheckpointError):
    """A config.json names an unknown architecture or an unsupported option."""


class NetworkError(MinillmError):
    """A download failed (no network, HTTP error, checksum mismatch)."""
