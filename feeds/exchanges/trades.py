"""Which trades are new: the exchange's trade ids, remembered across reconnects.

A reconnect, or the overlap of two connections while one replaces the other, hands us
trades we already published; each exchange numbers its trades per symbol, in increasing
order, and sends them in that order. So one number per symbol, the highest id published,
is enough to drop every replay, and it is bounded by the universe, not by time. Where
the ids are contiguous (Binance) a jump past the next id is a gap: trades we never saw.
"""

from __future__ import annotations

NEW = 0
DUPLICATE = -1


class TradeIds:
    """The highest trade id published per symbol; lives on the feed, not on a connection."""

    __slots__ = ("contiguous", "duplicates", "gaps", "last")

    def __init__(self, contiguous: bool) -> None:
        self.contiguous = contiguous
        """The exchange's ids go up by one per trade of a symbol: a jump is a gap."""
        self.last: dict[str, int] = {}
        self.duplicates = 0
        """Trades dropped because their id was already published."""
        self.gaps: dict[str, int] = {}
        """Per symbol: trades missed, counted from the ids that were skipped."""

    def check(self, symbol: str, trade_id: int) -> int:
        """``NEW``, ``DUPLICATE``, or for a contiguous exchange the number of trades missed
        just before this one (> 0); the trade is then remembered as published."""
        last = self.last.get(symbol)
        if last is not None and trade_id <= last:
            self.duplicates += 1
            return DUPLICATE
        self.last[symbol] = trade_id
        if self.contiguous and last is not None and trade_id > last + 1:
            missed = trade_id - last - 1
            self.gaps[symbol] = self.gaps.get(symbol, 0) + missed
            return missed
        return NEW
