"""Symbol names for the simulated market: real tickers first, then made-up ones.

Real names make a small demo recognisable; beyond them, pronounceable made-up names read
better in a UI than serial numbers and still scale to millions. A real ticker starts at
its reference price, whatever the seed, so AAPL looks like AAPL on every run.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

REFERENCE_DATE = "2024-12-31"
REFERENCE_PRICES: dict[str, float] = {
    "AAPL": 250.0, "MSFT": 421.0, "GOOGL": 189.0, "AMZN": 219.0, "NVDA": 134.0,
    "META": 585.0, "TSLA": 404.0, "AVGO": 232.0, "JPM": 240.0, "V": 316.0,
    "UNH": 506.0, "XOM": 108.0, "LLY": 772.0, "MA": 527.0, "JNJ": 145.0,
    "PG": 168.0, "HD": 389.0, "COST": 916.0, "MRK": 99.0, "ABBV": 178.0,
    "CVX": 145.0, "PEP": 152.0, "KO": 62.0, "ADBE": 445.0, "CRM": 334.0,
    "NFLX": 891.0, "AMD": 121.0, "WMT": 90.0, "BAC": 44.0, "TMO": 520.0,
    "MCD": 290.0, "CSCO": 59.0, "ORCL": 167.0, "INTC": 20.0, "QCOM": 154.0,
    "TXN": 188.0, "IBM": 220.0, "DIS": 111.0, "NKE": 76.0, "SBUX": 91.0,
    "PFE": 26.5, "ABT": 113.0, "GS": 573.0, "MS": 126.0, "WFC": 70.0,
    "BA": 177.0, "CAT": 363.0, "GE": 167.0, "UBER": 60.0, "PYPL": 85.0,
}  # fmt: skip
"""Where each real ticker starts, in US dollars: its closing price on ``REFERENCE_DATE``
(NYSE/NASDAQ), approximately (rounded to the dollar): written down from the published
year-end closing quotes, with no data feed at hand to check them against. A demo's
realism, not market data (the LOBSTER sample in tests/data has AAPL at $585 on
2012-06-21, before the 2014 and 2020 splits)."""

WELL_KNOWN: tuple[str, ...] = tuple(REFERENCE_PRICES)
"""The real tickers, most valuable companies first: the first names of every universe."""

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


def reference_prices(names: Sequence[str]) -> list[float | None]:
    """Each name's start price from ``REFERENCE_PRICES``; None for a made-up one."""
    return [REFERENCE_PRICES.get(name) for name in names]
