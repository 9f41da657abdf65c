"""Exchange decimals to tick numbers, exactly.

Exchanges send prices and sizes as decimal strings (``"0.00001305"``) so that no binary
rounding happens on the way. We keep that promise without carrying strings to every
client: ``float(text)`` is the double *nearest* the decimal (correctly rounded), and
orjson writes a double as the *shortest* text that reads back as the same double. For a
decimal of at most 15 significant digits (every price and size the exchanges quote)
that text is the same decimal number: ``"0.00001305"`` goes out as ``0.00001305``,
``"985.00000000"`` as ``985.0``. No arithmetic ever touches the parsed value, so there is
no drift to accumulate. A longer decimal is refused (``ValueError``): it cannot be a
double exactly, and the message is counted as malformed rather than published rounded.
"""

from __future__ import annotations

import re

MAX_DIGITS = 15
"""Significant digits that any double represents exactly, whatever the decimal."""

_DECIMAL = re.compile(r"-?(\d+)(?:\.(\d+))?")


def decimal(text: object) -> float:
    """The double that prints back as ``text``; ValueError for anything else (``nan``,
    ``1_000``, ``1e5``, more than ``MAX_DIGITS`` significant digits, a non-string)."""
    kind = type(text)
    if kind is float or kind is int:  # a JSON number (Kraken): parsed as exactly as a string
        return _finite(float(text))  # type: ignore[arg-type]
    if type(text) is not str or (match := _DECIMAL.fullmatch(text)) is None:
        raise ValueError(f"not a decimal: {text!r}")
    whole, frac = match.groups()
    digits = (whole + (frac or "").rstrip("0")).lstrip("0")
    if len(digits) > MAX_DIGITS:
        raise ValueError(f"{text!r} has more than {MAX_DIGITS} significant digits")
    return float(text)


def _finite(value: float) -> float:
    if value - value != 0.0:  # NaN and infinities
        raise ValueError("not a finite number")
    return value
