"""A client's book rebuilt from frames, written apart from ``ticker/core/books.py`` (the
way a client in another language would, from docs/protocol.md alone): every delta must
chain (``pu``), keep the book within its depth, and match its ``cs``."""

from __future__ import annotations

import zlib
from decimal import Decimal
from typing import Any


def number(x: float) -> str:
    """docs/protocol.md: the shortest round-trip decimal, no exponent, no trailing zeros."""
    d = Decimal(repr(x)).normalize()
    text = f"{d:f}"
    return text


def ref_checksum(bids: dict[float, float], asks: dict[float, float]) -> int:
    best_bids = sorted(bids, reverse=True)[:10]
    best_asks = sorted(asks)[:10]
    left = ",".join(number(p) + ":" + number(bids[p]) for p in best_bids)
    right = ",".join(number(p) + ":" + number(asks[p]) for p in best_asks)
    return zlib.crc32((left + "|" + right).encode("ascii")) & 0xFFFFFFFF


class RefBook:
    """One topic's book as a client keeps it; ``AssertionError`` on any inconsistency."""

    def __init__(self, snapshot: dict[str, Any]) -> None:
        assert snapshot["type"] == "book" and snapshot["snapshot"] is True, snapshot
        self.symbol = snapshot["s"]
        self.depth: int | None = snapshot.get("depth")
        self.u: int = snapshot["u"]
        self.bids = {float(p): float(s) for p, s in snapshot["bids"]}
        self.asks = {float(p): float(s) for p, s in snapshot["asks"]}
        self.frames = 1
        self._check(snapshot)

    def apply(self, delta: dict[str, Any]) -> None:
        assert delta["type"] == "book" and not delta.get("snapshot"), delta
        assert delta["s"] == self.symbol and delta.get("depth") == self.depth, delta
        assert delta["pu"] == self.u, f"pu {delta['pu']} does not chain to {self.u}"
        assert delta["u"] > self.u
        for side, levels in ((self.bids, delta["bids"]), (self.asks, delta["asks"])):
            for p, s in levels:
                if s == 0:
                    side.pop(float(p), None)
                else:
                    side[float(p)] = float(s)
        self.u = delta["u"]
        self.frames += 1
        self._check(delta)

    def _check(self, frame: dict[str, Any]) -> None:
        if self.depth is not None:
            assert len(self.bids) <= self.depth and len(self.asks) <= self.depth, frame
        got = ref_checksum(self.bids, self.asks)
        assert got == frame["cs"], f"cs {frame['cs']} but the book's is {got}: {frame}"

    def top(self, n: int | None = None) -> tuple[list[list[float]], list[list[float]]]:
        """Both sides as ``[[price, size], ...]``, best first."""
        bids = sorted(self.bids.items(), key=lambda level: -level[0])[:n]
        asks = sorted(self.asks.items())[:n]
        return [list(b) for b in bids], [list(a) for a in asks]
