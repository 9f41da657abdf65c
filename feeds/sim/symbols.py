"""Symbol names for the simulated market: real tickers first, then made-up ones.

Real names make a small demo recognisable; beyond them, pronounceable made-up names read
better in a UI than serial numbers and still scale to millions.
"""

from __future__ import annotations

from collections.abc import Iterator

WELL_KNOWN: tuple[str, ...] = (
    "AAPL", "MSFT", "GOOGL", "AMZN", "NVDA", "META", "TSLA", "AVGO", "JPM", "V",
    "UNH", "XOM", "LLY", "MA", "JNJ", "PG", "HD", "COST", "MRK", "ABBV",
    "CVX", "PEP", "KO", "ADBE", "CRM", "NFLX", "AMD", "WMT", "BAC", "TMO",
    "MCD", "CSCO", "ORCL", "INTC", "QCOM", "TXN", "IBM", "DIS", "NKE", "SBUX",
    "PFE", "ABT", "GS", "MS", "WFC", "BA", "CAT", "GE", "UBER", "PYPL",
)  # fmt: skip

MAX_SYMBOLS = 10**8
"""Fewer than the made-up names available (some collide with real tickers and are skipped)."""

_CONSONANTS = "BCDFGHJKLMNPRSTVWXYZ"
_VOWELS = "AEIOU"
_SYLLABLES = [c + v for c in _CONSONANTS for v in _VOWELS]  # 100 of them
_SCRAMBLE = 7919
"""Coprime to 100, so ``j * _SCRAMBLE + 1`` permutes every range of 100**k indexes: the
names are spread over the alphabet (not BABA, BABE, BABI...) and still never repeat."""


def _made_up() -> Iterator[str]:
    """Two, then three, then four syllables (up to 8 letters): 10**4 + 10**6 + 10**8 names."""
    for syllables in (2, 3, 4):
        space = len(_SYLLABLES) ** syllables
        for j in range(space):
            code = (j * _SCRAMBLE + 1) % space
            name = ""
            for _ in range(syllables):
                code, digit = divmod(code, len(_SYLLABLES))
                name += _SYLLABLES[digit]
            yield name


def symbol_names(n: int) -> list[str]:
    """``n`` distinct, uppercase names of at most 8 letters, the same for the same ``n``.

    The first names are the same whatever ``n``, so a larger universe extends a smaller one.
    """
    if not 0 <= n <= MAX_SYMBOLS:
        raise ValueError(f"n must be in [0, {MAX_SYMBOLS}]")
    names = list(WELL_KNOWN[:n])
    if n > len(names):
        taken = set(WELL_KNOWN)
        for name in _made_up():
            if name not in taken:
                names.append(name)
                if len(names) == n:
                    break
    return names
