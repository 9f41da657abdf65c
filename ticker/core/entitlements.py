"""Who a client is and which symbols it may see: pure, checked by the session.

The patterns come from a verified token's ``symbols`` claim and are compiled once per
token into one regular expression (``fnmatch`` rules, case-sensitive): ``AAPL``,
``FX:*``, ``EU?X``, ``*``. Every path that hands a client a symbol (subscribe, "*",
snapshots, ``list``, replays, whatever the transport) asks ``Entitlements.allows``.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from ticker.core.topics import base_of

MAX_PATTERNS = 1000
MAX_PATTERN_LENGTH = 64
MAX_SUBJECT_LENGTH = 256


class TokenError(Exception):
    """A token that cannot be accepted; the message says why, never the token.

    Here rather than in ``tokens.py`` so that the session can catch it without importing
    PyJWT (the CLI imports the session; the crypto libraries load only when auth is on).
    """


class Entitlements:
    """The symbols a client is entitled to, as glob patterns compiled once."""

    __slots__ = ("_match", "everything", "patterns")

    def __init__(self, patterns: Sequence[str]) -> None:
        if len(patterns) > MAX_PATTERNS:
            raise ValueError(f"at most {MAX_PATTERNS} symbol patterns")
        for pattern in patterns:
            if not isinstance(pattern, str) or not 0 < len(pattern) <= MAX_PATTERN_LENGTH:
                raise ValueError(f"each pattern must be a string of 1 to {MAX_PATTERN_LENGTH}")
        self.patterns = tuple(dict.fromkeys(patterns))
        self.everything = "*" in self.patterns
        """Every symbol, present and future: the session then needs no filtering at all."""
        regex = "|".join(fnmatch.translate(p) for p in self.patterns)
        self._match = re.compile(regex).match if regex else None

    def allows(self, symbol: str) -> bool:
        """Whether the token's ``symbols`` patterns cover this symbol, or the base symbol
        of a derived topic (a token for ``AAPL`` may see ``AAPL@1m``)."""
        if self.everything:
            return True
        return self._match is not None and self._match(base_of(symbol)) is not None

    def split(self, symbols: Iterable[str]) -> tuple[list[str], list[str]]:
        """(entitled, refused), order kept."""
        allowed: list[str] = []
        refused: list[str] = []
        for symbol in symbols:
            (allowed if self.allows(symbol) else refused).append(symbol)
        return allowed, refused

    def filter(self, symbols: Iterable[str]) -> list[str]:
        """The symbols the token covers, in order (all of them with ``*``)."""
        return list(symbols) if self.everything else [s for s in symbols if self.allows(s)]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Entitlements) and other.patterns == self.patterns

    def __hash__(self) -> int:
        return hash(self.patterns)

    def __repr__(self) -> str:
        return f"Entitlements({list(self.patterns)!r})"


EVERYTHING = Entitlements(["*"])


@dataclass(frozen=True, slots=True)
class Principal:
    """The holder of a verified token (or the anonymous client when auth is off)."""

    sub: str = ""
    """The token's subject; "" when auth is off (connection limits then count by IP only)."""
    exp: float | None = None
    """Unix time the token expires at; the session closes with 1008 then unless refreshed."""
    entitlements: Entitlements = field(default=EVERYTHING)
    delay_s: float = 0.0
    """Seconds every tick is held back for this client (0: live)."""
    max_conns: int | None = None
    """Connections this subject may hold at once (None: the server's per-subject limit)."""
    publish: Entitlements | None = None
    """The symbols this holder may publish (the token's ``pub`` claim); None: it may not."""

    def describe(self) -> dict[str, object]:
        """What the welcome frame says of the token (never the token itself)."""
        return {
            "sub": self.sub,
            "exp": self.exp,
            "symbols": list(self.entitlements.patterns),
            "delay": self.delay_s,
        }


ANONYMOUS = Principal()
