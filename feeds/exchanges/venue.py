"""One exchange's protocol, without I/O: what to send after connecting, and what each
message it sends means as ticks and, with ``?books=1``, as order-book changes.

A ``Venue`` subclass per exchange (``coinbase.py``, ``binance.py``, ``kraken.py``) knows
its messages; this base keeps what every exchange shares: the best bid and ask per
symbol (which every trade tick carries), the trade ids (``trades.py``: a replayed trade
is dropped), the lag, and the rule that a message we cannot read is counted and skipped,
never fatal. It is driven by ``link.py`` and tested with plain calls.

Books: a subclass hands each product's snapshot to ``book_reset`` and its updates to
``book_change`` (both go to the node's ``BookSink``), and calls ``resync`` when it sees the
book is wrong (a sequence gap, a bad checksum, an update before its snapshot): the product
is ``stale`` (``resyncing`` says why) until its next snapshot, which the link asks for by
``resubscriptions`` or, where the snapshot is a REST call (Binance), by ``snapshot_path``.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import Any, ClassVar

import orjson

from feeds.exchanges.numbers import decimal
from feeds.exchanges.stats import ExchangeStats
from feeds.exchanges.trades import DUPLICATE, TradeIds
from ticker.core.books import BookSink, Level
from ticker.core.ticks import Tick

log = logging.getLogger("ticker.feeds")

Message = dict[str, Any]
WAITING = "book: waiting for its snapshot"
"""Why a product with books is ``stale`` on a new connection until its snapshot."""


def levels(pairs: Iterable[Any]) -> list[Level]:
    """``[[price, size], ...]`` as the exchanges write them (decimal strings) to levels."""
    return [(decimal(price), decimal(size)) for price, size, *_ in pairs]


def _no_books(
    symbol: str, bids: Iterable[Level], asks: Iterable[Level], reset: bool = False
) -> None:
    """The book sink of a feed not bound to a node (``ticker feed``, tests)."""


class Venue(ABC):
    """The protocol of one exchange, for one feed (its state outlives reconnects).

    ``names`` maps the exchange's product ids to ticker's symbols (the prefix added).
    """

    name: ClassVar[str]
    """The feed's name (``--feed NAME:...``), labelling its logs and metrics."""
    url: ClassVar[str]
    """The public endpoint; ``--NAME-url`` overrides it."""
    watchdog_s: ClassVar[float]
    """Reconnect after this long without any message (the exchange's keepalive rules)."""
    per_connection: int
    """Products one connection may carry; more products open more connections."""
    contiguous_ids: ClassVar[bool]
    """The exchange's trade ids go up by one per trade of a product: a jump is a gap."""
    messages_per_s: ClassVar[float] = 5.0
    """At most this many client messages per second on one connection."""
    rotate_after_s: ClassVar[float | None] = None
    """The exchange cuts connections at an age: replace each one before that."""
    rest_url: ClassVar[str | None] = None
    """Where ``snapshot_path`` is served (a venue whose snapshots are REST calls)."""
    snapshot_spacing_s: float = 1.0
    """At least this long between two REST snapshots of one connection (their weight)."""

    def __init__(self, names: dict[str, str], *, books: bool = False) -> None:
        self.names = names
        self.books = books
        """Subscribe to the exchange's book channel and hand its changes to ``book_sink``."""
        self.book_sink: BookSink = _no_books
        self.ids = TradeIds(self.contiguous_ids)
        self.stats = ExchangeStats()
        self.quotes: dict[str, tuple[float, float]] = {}
        """The latest best bid and ask of each symbol, carried by its next trade tick."""
        self.refused: dict[str, str] = {}
        """Products the exchange refused (unknown, delisted), with its reason."""
        self.halted: str | None = None
        """Why the exchange says trading is halted for all its products; None: it is not."""
        self.halted_products: dict[str, str] = {}
        """Products the exchange says are halted on their own, with why."""
        self.resyncing: dict[str, str] = {}
        """Products whose book waits for a fresh snapshot, with why: ``stale`` meanwhile."""
        self._due: list[str] = []
        self.asked: set[str] = set()
        """Products resubscribed for a new snapshot (the venues whose snapshot comes with
        a subscribe): their updates until it comes are stale, ignored."""

    @classmethod
    def product(cls, text: str) -> str:
        """A product id as the user wrote it, as the exchange spells it: all three spell
        theirs in capitals (``BTC-USD``, ``BTCUSDT``, ``BTC/USD``)."""
        return text.upper()

    @abstractmethod
    def subscriptions(self, products: list[str]) -> list[str]:
        """The messages to send right after connecting."""

    def after_refusal(self, products: list[str]) -> list[str]:
        """What to send once a product was refused, ``products`` being those left (an
        exchange that refuses a whole request for one bad product needs it again)."""
        return []

    @abstractmethod
    def read(self, message: Any, arrival_us: int, out: list[Tick]) -> None:
        """Append the ticks of one decoded message to ``out``; raise ``KeyError``,
        ``TypeError`` or ``ValueError`` for a message that is not as documented, and
        call ``unknown`` for one of a type it does not read."""

    def parse(self, data: str | bytes) -> Any:
        """One message's JSON (a venue that needs the exact decimals parses its own way)."""
        return orjson.loads(data)

    def decode(self, data: str | bytes, arrival_us: int) -> list[Tick]:
        """The ticks of one message as received; a bad message is counted, not raised."""
        out: list[Tick] = []
        try:
            self.read(self.parse(data), arrival_us, out)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            self.stats.malformed += 1
            log.debug("feed %s: skipped a malformed message (%s): %.200s", self.name, exc, data)
            return []
        return out

    # -- books ----------------------------------------------------------------------

    def connected(self, products: list[str]) -> None:
        """A new connection (not a rotation's replacement): every book of ``products``
        starts over from the snapshot the subscribe brings."""
        if self.books:
            for product in products:
                self.resyncing[product] = WAITING
            self._due = [p for p in self._due if p not in products]
            self.forget_books(products)

    @abstractmethod
    def forget_books(self, products: list[str]) -> None:
        """Drop what the venue keeps of these products' books (a new connection)."""

    def resync(self, product: str, reason: str) -> None:
        """The product's book is wrong: counted, ``stale``, and a fresh snapshot asked for."""
        self.stats.book_resyncs += 1
        log.warning("feed %s: %s: resyncing its book (%s)", self.name, product, reason)
        self.resyncing[product] = f"book resyncing: {reason}"
        self.ask_snapshot(product)

    def refetch(self, product: str, reason: str) -> None:
        """The node found the product's book wrong (crossed): start it over from a fresh
        snapshot, the updates until then ignored (``asked``) or, where the snapshot is a
        REST call, buffered for it."""
        self.forget_books([product])
        self.asked.add(product)
        self.resync(product, reason)

    def ask_snapshot(self, product: str) -> None:
        """Have the link ask for the product's snapshot (the first one is no fault)."""
        if product not in self._due:
            self._due.append(product)

    def take_resyncs(self) -> list[str]:
        """The products whose fresh snapshot the link must ask for now."""
        due, self._due = self._due, []
        return due

    def resubscriptions(self, products: list[str]) -> list[str]:
        """The messages that bring fresh snapshots of these products' books."""
        return []

    def snapshot_path(self, product: str) -> str | None:
        """Where a product's book snapshot is a REST call: its path and query."""
        return None

    def rest_snapshot(self, product: str, body: Any) -> None:
        """The answer of ``snapshot_path``'s call (only for a venue that has one)."""
        raise NotImplementedError(self.name)

    def book_reset(self, product: str, bids: list[Level], asks: list[Level]) -> None:
        """The product's whole book (a snapshot): its resync, if any, is over."""
        self.resyncing.pop(product, None)
        self.book_sink(self.names[product], bids, asks, reset=True)

    def book_change(self, product: str, bids: list[Level], asks: list[Level]) -> None:
        """Absolute level changes of the product's book (size 0 removes)."""
        if bids or asks:
            self.book_sink(self.names[product], bids, asks)

    def unknown(self, message: object) -> None:
        """Count a message of a type we do not read (exchanges add types)."""
        self.stats.unknown += 1

    def refuse(self, product: str, reason: str) -> None:
        """The exchange refused ``product``: the link marks it and carries on."""
        if product in self.names:
            self.refused[product] = reason

    def quote(self, product: str, bid: object, ask: object) -> None:
        """A best bid/ask update: kept for the symbol's next trade, not published alone."""
        symbol = self.names.get(product)
        if symbol is not None:
            self.quotes[symbol] = (decimal(bid), decimal(ask))

    def trade(
        self,
        out: list[Tick],
        product: str,
        trade_id: int,
        price: object,
        size: object,
        side: str,
        event_us: int,
        arrival_us: int,
    ) -> None:
        """Append the tick of one trade unless it was published already (a replay)."""
        symbol = self.names.get(product)
        if symbol is None:
            self.unknown(product)
            return
        if type(trade_id) is not int:
            raise TypeError("a trade id must be an integer")
        tick: Tick = {
            "s": symbol,
            "p": decimal(price),
            "v": decimal(size),
            "x": trade_id,
            "et": event_us,
            "sd": side,
        }
        verdict = self.ids.check(symbol, trade_id)
        if verdict == DUPLICATE:
            return
        if verdict > 0:
            log.warning(
                "feed %s: %s: %d trade(s) missed before trade %d",
                self.name,
                symbol,
                verdict,
                trade_id,
            )
        quote = self.quotes.get(symbol)
        if quote is not None:
            tick["b"], tick["a"] = quote
        self.stats.lag.observe(arrival_us - event_us)
        out.append(tick)
