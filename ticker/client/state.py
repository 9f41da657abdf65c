"""What the client remembers across reconnects, without I/O: positions, gaps, backoff.

``Continuity`` follows the stream the way docs/protocol.md says a client should: the
epoch, the last ``q`` of each symbol (what ``since`` sends back on a reconnect), ticks
already seen dropped, and in mode ``all`` every jump of ``q`` reported as a ``Gap``.
``Backoff`` is the reconnect rule of ticker.core.codes with this client's delays.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from ticker.client.books import OrderBook
from ticker.core.bus import WILDCARD
from ticker.core.codes import ABNORMAL, BACKOFF, ErrorCode, reconnect_rule


@dataclass(frozen=True, slots=True)
class Tick:
    """One price update. ``snapshot``: it came in a snapshot (the latest value when the
    subscription started), not live."""

    symbol: str
    price: float
    q: int
    time_us: int
    bid: float | None = None
    ask: float | None = None
    size: float | None = None
    snapshot: bool = False

    @classmethod
    def from_wire(cls, tick: dict[str, Any], snapshot: bool = False) -> Tick:
        """A wire tick dict as a typed ``Tick`` (absent fields None)."""
        return cls(
            tick["s"],
            tick["p"],
            tick["q"],
            tick["t"],
            tick.get("b"),
            tick.get("a"),
            tick.get("v"),
            snapshot,
        )


@dataclass(frozen=True, slots=True)
class Candle:
    """One OHLCV bar of a candle topic (``AAPL@1m``); ``closed``: final, it will not change.

    ``start_us`` is the bar's UTC-aligned start; an open bar comes again as it changes.
    """

    symbol: str
    interval: str
    start_us: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    count: int
    closed: bool

    @property
    def topic(self) -> str:
        """The topic it belongs to, ``SYMBOL@INTERVAL``."""
        return f"{self.symbol}@{self.interval}"

    @classmethod
    def from_wire(cls, bar: dict[str, Any]) -> Candle:
        """A wire bar dict (``s i ts o h l c v n x``) as a typed ``Candle``."""
        return cls(
            bar["s"],
            bar["i"],
            bar["ts"],
            bar["o"],
            bar["h"],
            bar["l"],
            bar["c"],
            bar["v"],
            bar["n"],
            bar["x"],
        )


class CandleContinuity:
    """Drops the bars a resubscribe sends again: a reconnect asks for history anew, and a
    closed bar the client already has (or an older open one) must not come out twice."""

    def __init__(self) -> None:
        self.closed: dict[str, int] = {}
        """Topic -> start of the last closed bar handed on."""

    def accept(self, bar: dict[str, Any]) -> Candle | None:
        """The bar as a ``Candle``, or None if the client has it (or a later one) closed."""
        candle = Candle.from_wire(bar)
        last = self.closed.get(candle.topic)
        if last is not None and candle.start_us <= last:
            return None
        if candle.closed:
            self.closed[candle.topic] = candle.start_us
        return candle


@dataclass(frozen=True, slots=True)
class Gap:
    """Ticks of ``symbol`` the client never got and could not recover: ``first`` to
    ``last`` (``q`` values, inclusive). Only reported in mode ``all``."""

    symbol: str
    first: int
    last: int

    @property
    def missed(self) -> int:
        """How many ticks of the symbol never arrived."""
        return self.last - self.first + 1


@dataclass(frozen=True, slots=True)
class Connected:
    """Subscribed on a new session (the first one, or after a reconnect): from here on,
    what the server publishes reaches the feed."""

    session: str
    epoch: str
    new_stream: bool
    """The epoch changed (or it is the first connection): ``q`` values restarted."""


@dataclass(frozen=True, slots=True)
class Disconnected:
    """The link ended: its close code and reason, and whether the client retries."""

    code: int
    reason: str
    retry_in: float | None
    """Seconds until the next attempt; None: the client stops (a code that says not to)."""


@dataclass(frozen=True, slots=True)
class ServerError:
    """An ``error`` frame the server sent (docs/protocol.md), e.g. ``unknown_symbol`` with
    the symbols it refused in ``symbols``; the connection stays open."""

    code: str
    message: str
    symbols: tuple[str, ...] = ()

    @classmethod
    def from_wire(cls, frame: dict[str, Any]) -> ServerError:
        """An ``error`` frame as the event (absent symbols: none named)."""
        return cls(
            str(frame.get("code")), str(frame.get("message")), tuple(frame.get("symbols") or ())
        )


@dataclass(frozen=True, slots=True)
class Status:
    """A symbol's status changed (docs/protocol.md, Symbol status): ``live``, ``stale``
    (its source is down or silent), ``halted`` or ``closed``; ``since`` in µs."""

    symbol: str
    status: str
    reason: str
    since: int

    @classmethod
    def from_wire(cls, frame: dict[str, Any]) -> list[Status]:
        """One event per symbol a ``status`` frame names."""
        return [
            cls(symbol, str(s.get("status")), str(s.get("reason", "")), int(s.get("since", 0)))
            for symbol, s in frame["symbols"].items()
        ]


Event = Tick | Candle | OrderBook | Gap | Connected | Disconnected | ServerError | Status

SYMBOL_REFUSALS = frozenset({ErrorCode.UNKNOWN_SYMBOL, ErrorCode.NOT_ENTITLED})
"""The errors that refuse some symbols of a subscription and let the others through."""


class SubscriptionRefused(Exception):
    """The server refused the whole subscription: every symbol asked for is unknown or
    not allowed by the token, or the request itself was refused (``too_many_symbols``,
    ``bad_request``). Nothing would ever stream, so the feed ends."""

    def __init__(self, errors: Iterable[ServerError]) -> None:
        self.errors = tuple(errors)
        """The server's error frames, in the order they came."""
        self.symbols = tuple(s for e in self.errors for s in e.symbols)
        """The refused symbols, as the server named them (empty for a refused request)."""
        super().__init__("; ".join(e.message for e in self.errors))


class Refusals:
    """The server's errors about one subscription until it says ``subscribed``: to tell
    when none of the symbols asked for is left, so there is nothing to wait for."""

    def __init__(self, asked: Iterable[str]) -> None:
        self.asked = set(asked)
        self.errors: list[ServerError] = []
        self._refused: set[str] = set()

    def add(self, error: ServerError) -> bool:
        """One error frame about the subscription; True when it refused everything."""
        self.errors.append(error)
        if error.code not in SYMBOL_REFUSALS:
            return True
        self._refused.update(error.symbols)
        return WILDCARD not in self.asked and self.asked <= self._refused


class Continuity:
    """The position in the stream and what to make of each tick that arrives."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.epoch: str | None = None
        self.last_q: dict[str, int] = {}

    def welcome(self, epoch: str) -> bool:
        """A new session; True if it is a new stream (positions forgotten)."""
        if epoch == self.epoch:
            return False
        self.epoch = epoch
        self.last_q.clear()
        return True

    def since(self) -> dict[str, str]:
        """Query parameters that resume where the client is (empty before any tick)."""
        if self.epoch is None or not self.last_q:
            return {}
        since = ",".join(f"{s}:{q}" for s, q in self.last_q.items())
        return {"since": since, "epoch": self.epoch}

    def accept(self, tick: dict[str, Any], snapshot: bool) -> tuple[Tick | None, Gap | None]:
        """The tick to hand on (None: already seen) and the gap before it, if any."""
        symbol, q = tick["s"], tick["q"]
        last = self.last_q.get(symbol)
        if last is not None and q <= last:
            return None, None
        self.last_q[symbol] = q
        gap = None
        if last is not None and q > last + 1 and self.mode == "all":
            gap = Gap(symbol, last + 1, q - 1)
        return Tick.from_wire(tick, snapshot), gap


class Backoff:
    """Reconnect delays by the close code table: ``initial`` doubling up to ``maximum``
    (from at least 5 s after 4029), each times 0.8 to 1.2; none after a code that says
    not to reconnect."""

    def __init__(
        self, initial: float = 0.5, maximum: float = 30.0, rng: random.Random | None = None
    ) -> None:
        self.policy = replace(
            BACKOFF,
            initial_s=initial,
            rate_limited_s=max(initial, BACKOFF.rate_limited_s),
            max_s=maximum,
        )
        self.attempt = 0
        self._rng = rng or random.Random()

    def next(self, code: int = ABNORMAL) -> float | None:
        """Seconds to wait before reconnecting after ``code``; None: do not reconnect."""
        delay = self.policy.delay_s(reconnect_rule(code).retry, self.attempt, self._rng.random())
        if delay is not None:
            self.attempt += 1
        return delay

    def reset(self) -> None:
        """A session was established: the next loss starts from the shortest delay."""
        self.attempt = 0
