"""How ticks travel between nodes through Redis: key names, channels and messages.

Pure and synchronous (no Redis client here), so it is unit-tested without a server.

A message is one JSON object built by joining bytes the origin's bus already encoded:
``{"o": origin, "n": message number, "k": [tick, ...]}``. ``o`` comes first so a node can
recognise (and skip) its own messages by their first bytes; ``n`` counts the origin's
messages on that channel, so a receiver notices a lost message even when it held the last
tick of a quiet symbol.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

import orjson

from ticker.core.symbols import symbol_problem
from ticker.core.ticks import Tick

DEFAULT_SHARDS = 64


@dataclass(frozen=True, slots=True)
class Keys:
    """The Redis names of one cluster; ``shards`` = 0 means one channel per symbol."""

    prefix: str = "ticker"
    shards: int = DEFAULT_SHARDS

    def __post_init__(self) -> None:
        if self.shards < 0:
            raise ValueError("shards must be 0 (one channel per symbol) or more")

    @property
    def epoch(self) -> str:
        """A string: the cluster's stream epoch (``q`` values compare within it)."""
        return f"{self.prefix}:epoch"

    @property
    def last(self) -> str:
        """A hash: symbol -> its latest tick, encoded (the cluster-wide snapshots)."""
        return f"{self.prefix}:last"

    @property
    def symbols(self) -> str:
        """A set: every symbol an origin declared (the universe edge nodes offer)."""
        return f"{self.prefix}:symbols"

    @property
    def fed(self) -> str:
        """A set: the symbols origins' feeds serve (their q is the feed's: never published)."""
        return f"{self.prefix}:fed"

    @property
    def counters(self) -> str:
        """A hash: symbol -> the last q given to a published tick (``sequencer.py``)."""
        return f"{self.prefix}:q"

    @property
    def numbers(self) -> str:
        """A hash: channel -> the number of the last published message on it."""
        return f"{self.prefix}:n"

    @property
    def control(self) -> str:
        """A channel: origins announce themselves here (epoch or universe may have changed)."""
        return f"{self.prefix}:control"

    @property
    def status(self) -> str:
        """A hash (symbol -> its status, not ``live``) and a channel (every change)."""
        return f"{self.prefix}:status"

    @property
    def books(self) -> str:
        """A set (the symbols with a book in the cluster) and a channel (every change set
        their owners apply, ``book_wire.py``)."""
        return f"{self.prefix}:books"

    def book(self, symbol: str) -> str:
        """A list: the symbol's latest full book, then the change sets after it."""
        return f"{self.prefix}:book:{symbol}"

    def channel(self, symbol: str) -> str:
        """The channel a symbol's ticks travel on: its own, or its shard's (crc32)."""
        if not self.shards:
            return f"{self.prefix}:s:{symbol}"
        return f"{self.prefix}:shard:{zlib.crc32(symbol.encode()) % self.shards}"

    def all_channels(self, symbols: list[str]) -> set[str]:
        """Every channel these symbols can be on: what a "*" subscriber needs."""
        if not self.shards:
            return {self.channel(s) for s in symbols}
        return {f"{self.prefix}:shard:{i}" for i in range(self.shards)}


def origin_prefix(origin: str) -> bytes:
    """The first bytes of every message this origin publishes."""
    return b'{"o":' + orjson.dumps(origin) + b","


def encode_message(prefix: bytes, number: int, segments: list[bytes]) -> bytes:
    """One channel's share of a batch: segments are already-encoded, comma-joined ticks."""
    return b"".join((prefix, b'"n":', str(number).encode(), b',"k":[', b",".join(segments), b"]}"))


class BadMessage(ValueError):
    """Something on a ticker channel that is not a ticker message (counted, skipped)."""


def decode_message(data: bytes) -> tuple[str, int, list[Any]]:
    """(origin, message number, ticks) of a message; the ticks are checked by ``valid_tick``."""
    try:
        message = orjson.loads(data)
        origin, number, ticks = message["o"], message["n"], message["k"]
    except (orjson.JSONDecodeError, TypeError, KeyError) as exc:
        raise BadMessage(f"not a ticker message: {exc}") from None
    if type(origin) is not str or type(number) is not int or type(ticks) is not list:
        raise BadMessage("not a ticker message: wrong field types")
    return origin, number, ticks


def valid_symbol(symbol: Any) -> bool:
    """A symbol from Redis is input: the one rule of ``ticker/core/symbols.py``."""
    return symbol_problem(symbol) is None


def valid_tick(tick: Any) -> bool:
    """What the bus needs of a relayed tick: a valid symbol, a price, and origin q and t."""
    if type(tick) is not dict:
        return False
    q = tick.get("q")
    return (
        valid_symbol(tick.get("s"))
        and type(q) is int
        and q > 0
        and type(tick.get("t")) is int
        and type(tick.get("p")) in (int, float)
    )


def decode_tick(data: bytes) -> Tick | None:
    """A value of the last-values hash, or None if it is not a valid tick."""
    try:
        tick = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return tick if valid_tick(tick) else None
