"""Keep the lectures honest: every measured number a README quotes must be one its script prints.

A "measured number" is a decimal written with at least two significant digits
(`0.72`, `−11.6`, `1.4e-1`, `46%` is not one: percentages and integers are
counts and settings as often as measurements). Numbers inside code spans,
code blocks and display maths are left out: those are names (`L23H3`), code and
formulas. A quoted number matches a printed one when they agree to the quoted
precision (half a unit in the last quoted digit, plus 0.2 % for the last-bit
differences between BLAS kernels). Numbers written in e-notation (3.2e-5) are
rounding-level measurements, whose digits depend on the CPU's BLAS kernel: they
match a printed number within a factor of 2 (the same order of magnitude).
"""

from __future__ import annotations

import re

import numpy as np

_NUMBER = re.compile(r"(?<![\w.])[−+-]?\d+(?:\.\d+)?(?:e[−+-]?\d+)?(?![\w])")


def _prose(markdown: str) -> str:
    text = re.sub(r"```.*?```", " ", markdown, flags=re.S)
    text = re.sub(r"\$\$.*?\$\$", " ", text, flags=re.S)
    text = re.sub(r"\$[^$\n]+\$", " ", text)
    text = re.sub(r"`[^`\n]*`", " ", text)
    text = re.sub(r"<!--.*?-->", " ", text, flags=re.S)
    return text


def _value(token: str) -> float:
    return float(token.replace("−", "-"))


def _resolution(token: str) -> float:
    """Half a unit in the last written digit: '0.72' -> 0.005, '1.4e-1' -> 0.005."""
    mantissa, _, exponent = token.replace("−", "-").lstrip("+-").partition("e")
    decimals = len(mantissa.partition(".")[2])
    return 0.5 * 10.0 ** (-decimals) * 10.0 ** int(exponent or 0)


def _is_measured(token: str) -> bool:
    mantissa = token.replace("−", "-").lstrip("+-").partition("e")[0]
    if "." not in mantissa and "e" not in token:
        return False
    return len(mantissa.replace(".", "").lstrip("0")) >= 2


def quoted_numbers(markdown: str) -> list[str]:
    """The measured-looking numbers of a lecture's prose, in order."""
    return [m.group(0) for m in _NUMBER.finditer(_prose(markdown)) if _is_measured(m.group(0))]


def missing_numbers(markdown: str, output: str) -> list[str]:
    """The quoted numbers of `markdown` that `output` (a script's printed text) does not contain."""
    printed = [_value(m.group(0)) for m in _NUMBER.finditer(output)]
    missing = []
    for token in quoted_numbers(markdown):
        v, tol = _value(token), _resolution(token)
        if "e" in token:  # rounding-level: the order of magnitude is what a lecture can promise
            found = any(p != 0 and np.sign(p) == np.sign(v) and 0.5 <= v / p <= 2 for p in printed)
        else:
            found = any(abs(v - p) <= tol + 2e-3 * abs(p) for p in printed)
        if not found:
            missing.append(token)
    return missing
