"""Sequence continuity of what a node receives from other nodes.

Pub/sub is at-most-once: a message can be lost (a slow subscriber cut off, a link that
dropped). ``q`` is per symbol, +1 per tick at the origin, so a jump in ``q`` is a gap; and
each origin numbers its messages per channel, so a lost message is noticed at the next one
on that channel, even if it held the last tick of a quiet symbol. Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ticker.core.ticks import Tick

GAP_FIELD = "g"
"""Added to the first tick after a gap: how many ticks of its symbol this node never got."""


class Continuity:
    """The last ``q`` seen per symbol and the last message number per (origin, channel)."""

    __slots__ = ("_numbers", "_seen", "gaps", "lost_messages", "stale")

    def __init__(self) -> None:
        self._seen: dict[str, int] = {}
        self._numbers: dict[tuple[str, str], int] = {}
        self.gaps = 0
        """Ticks that came after a jump in ``q`` (each is one gap, whatever its size)."""
        self.lost_messages = 0
        """Jumps in a channel's message numbers."""
        self.stale = 0
        """Ticks dropped because their ``q`` was not newer than one already seen."""

    def message(self, origin: str, channel: str, number: int) -> bool:
        """Record a message number; True if messages before it were lost."""
        key = (origin, channel)
        last = self._numbers.get(key)
        self._numbers[key] = number
        if last is not None and number > last + 1:
            self.lost_messages += 1
            return True
        return False

    def admit(self, ticks: Iterable[Any]) -> tuple[list[Tick], list[str]]:
        """The ticks newer than what was seen, in order, and the symbols that had a gap.

        The first tick after a gap gets ``g``: the number of ticks skipped, so a client in
        mode ``all`` is told, in order, where its stream has a hole.
        """
        seen = self._seen
        fresh: list[Tick] = []
        gapped: list[str] = []
        for tick in ticks:
            symbol, q = tick["s"], tick["q"]
            last = seen.get(symbol, 0)
            if q <= last:
                self.stale += 1
                continue
            if last and q > last + 1:
                tick[GAP_FIELD] = q - last - 1
                self.gaps += 1
                gapped.append(symbol)
            seen[symbol] = q
            fresh.append(tick)
        return fresh, gapped

    def last(self, symbol: str) -> int:
        """The highest ``q`` seen of ``symbol`` (0: none): where a lost counter restarts."""
        return self._seen.get(symbol, 0)

    def forget_channel(self, channel: str) -> None:
        """A channel was (re)subscribed: its next message number is the new baseline."""
        for key in [k for k in self._numbers if k[1] == channel]:
            del self._numbers[key]

    def forget(self, symbols: Iterable[str]) -> None:
        """These symbols are no longer followed: whatever comes next is a fresh start."""
        for symbol in symbols:
            self._seen.pop(symbol, None)

    def reset(self) -> None:
        """A new epoch: ``q`` restarted everywhere."""
        self._seen.clear()
        self._numbers.clear()
