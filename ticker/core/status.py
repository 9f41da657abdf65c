"""Per-symbol status: whether each symbol's data is live, and why not when it is not.

A price that stopped moving looks the same whether the market is quiet or the feed is
down; the status tells clients which. Feeds (and their supervisors) set it here; each
session listens and sends its client the changes of the symbols it follows, as one
``status`` control frame. Pure and synchronous: the clock is injected.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from ticker.core.ticks import MicrosClock, now_us

LIVE = "live"
STALE = "stale"
"""Its source is disconnected, reconnecting, or silent past its watchdog."""
HALTED = "halted"
"""The source says trading is halted."""
CLOSED = "closed"
"""No more data will come: a finite feed ended, or the exchange refused the symbol."""
STATUSES = (LIVE, STALE, HALTED, CLOSED)

StatusSink = Callable[[Iterable[str], str, str], None]
"""What a feed is given to report with: (symbols, status, reason)."""


@dataclass(frozen=True, slots=True)
class SymbolStatus:
    """One symbol's status since ``since`` (µs since the epoch)."""

    status: str
    reason: str
    since: int

    def to_json(self) -> dict[str, object]:
        """As the ``status`` frame carries it."""
        return {"status": self.status, "reason": self.reason, "since": self.since}


def statuses_from_json(value: object) -> dict[str, SymbolStatus]:
    """``to_json`` values by symbol, read back (from another process); ``ValueError``."""
    if type(value) is not dict:
        raise ValueError("statuses must be an object: symbol -> status")
    out: dict[str, SymbolStatus] = {}
    for symbol, given in value.items():
        got = given if type(given) is dict else {}
        status, reason, since = got.get("status"), got.get("reason", ""), got.get("since")
        if status not in STATUSES or type(reason) is not str or type(since) is not int:
            raise ValueError(f"not a status: {given!r:.100}")
        out[symbol] = SymbolStatus(status, reason[:MAX_REASON], since)
    return out


class StatusListener(Protocol):
    """A session: told of every change, it keeps those of the symbols it follows."""

    def status_changed(self, changes: dict[str, SymbolStatus]) -> None:
        """Some symbols changed status."""
        ...


class StatusBoard:
    """The status of every symbol that ever had one set; a symbol absent is ``live``.

    Changes are rare (a reconnect, a halt), so telling every listener of each is cheap;
    setting a symbol to the status it already has is no change and tells nobody.
    """

    __slots__ = ("_clock", "_listeners", "_status")

    def __init__(self, clock: MicrosClock = now_us) -> None:
        self._clock = clock
        self._status: dict[str, SymbolStatus] = {}
        self._listeners: set[StatusListener] = set()

    def set(self, symbols: Iterable[str], status: str, reason: str = "") -> None:
        """Set these symbols' status (a ``StatusSink``); listeners hear of the changes."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}, not {status!r}")
        now = self._clock()
        changes: dict[str, SymbolStatus] = {}
        for symbol in symbols:
            old = self._status.get(symbol)
            if (old.status if old else LIVE) == status and (old is None or old.reason == reason):
                continue
            changes[symbol] = self._status[symbol] = SymbolStatus(status, reason, now)
        if changes:
            for listener in list(self._listeners):
                listener.status_changed(changes)

    def apply(self, given: dict[str, SymbolStatus]) -> None:
        """Take statuses another process set, ``since`` and all (the cluster relays them):
        each is kept unless the board holds a later one; listeners hear of the changes."""
        changes: dict[str, SymbolStatus] = {}
        for symbol, st in given.items():
            old = self._status.get(symbol)
            if (old.since > st.since) if old is not None else st.status == LIVE:
                continue
            if old != st:
                changes[symbol] = self._status[symbol] = st
        if changes:
            for listener in list(self._listeners):
                listener.status_changed(changes)

    def get(self, symbol: str) -> SymbolStatus | None:
        """The symbol's status, None when it never had one (it is live)."""
        return self._status.get(symbol)

    def not_live(self, symbols: Iterable[str]) -> dict[str, SymbolStatus]:
        """The status of each of these symbols that is not ``live``."""
        got = self._status.get
        return {s: st for s in symbols if (st := got(s)) is not None and st.status != LIVE}

    def counts(self) -> dict[str, int]:
        """Symbols with a status set, by status (``live`` ones set back included)."""
        counts = dict.fromkeys(STATUSES, 0)
        for st in self._status.values():
            counts[st.status] += 1
        return counts

    def listen(self, listener: StatusListener) -> None:
        """Tell ``listener`` of every change from now on."""
        self._listeners.add(listener)

    def leave(self, listener: StatusListener) -> None:
        """Stop telling ``listener``."""
        self._listeners.discard(listener)


MAX_REASON = 200
"""Characters of a publisher's reason kept (it goes to every subscriber)."""


def parse_statuses(body: object) -> dict[str, tuple[str, str]]:
    """A publisher's ``{"symbols": {SYMBOL: {"status": ..., "reason": ...}}}`` as
    symbol -> (status, reason); ``ValueError`` saying what is wrong."""
    if type(body) is not dict or type(symbols := body.get("symbols")) is not dict or not symbols:
        raise ValueError('the body must be {"symbols": {SYMBOL: {"status": ..., "reason": ...}}}')
    out: dict[str, tuple[str, str]] = {}
    for symbol, given in symbols.items():
        status = given.get("status") if type(given) is dict else None
        if status not in STATUSES:
            raise ValueError(f"{symbol}: status must be one of {', '.join(STATUSES)}")
        reason = given.get("reason", "")
        if type(reason) is not str:
            raise ValueError(f"{symbol}: reason must be a string")
        out[symbol] = (status, reason[:MAX_REASON])
    return out
