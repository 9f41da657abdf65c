"""The symbol-name rule, written once for everything that admits a name from outside.

Names come from publishers, recordings and other nodes; subscribers, URLs, entitlement
globs and derived topics (``AAPL@1m``) all have to read them back unambiguously. So the
rule is an allow-list of printable ASCII: no whitespace or control characters (logs,
terminals), no ``,`` (lists in query strings and ``--feed`` arguments), no ``@`` (the
derived-topic separator), no ``*``, ``?``, ``[`` or ``]`` (entitlement globs).
"""

from __future__ import annotations

import re

from ticker.core.ticks import MAX_SYMBOL_LENGTH

SYMBOL_CHARACTERS = "A-Z a-z 0-9 . _ - : / ^ = + # $ & ! % ~"
"""The allowed characters, as docs/protocol.md lists them."""

_SYMBOL = re.compile(r"[A-Za-z0-9._\-:/^=+#$&!%~]{1," + str(MAX_SYMBOL_LENGTH) + "}")

SYMBOL_RULE = (
    f"a symbol is 1 to {MAX_SYMBOL_LENGTH} characters from {SYMBOL_CHARACTERS}"
    " (no spaces, ',', '@' or '*')"
)


def symbol_problem(symbol: object) -> str | None:
    """Why ``symbol`` is not a valid name, or None when it is."""
    if type(symbol) is not str:
        return "must be a string"
    if _SYMBOL.fullmatch(symbol) is None:
        return f"{symbol[:40]!r} is not a valid symbol: {SYMBOL_RULE}"
    return None
