"""Book items of a publish request, and a request's items checked together, all or nothing.

A publisher's request may carry, among its ticks, book change sets for the node's
``@book`` topics: ``{"book": {"s": "AAPL", "bids": [[189.1, 300], ...], "asks": [...],
"reset": false}}``, absolute levels as every book source gives them (size 0 removes the
level; ``reset``: this is the publisher's whole book). ``check_items`` checks every item
of the request, ticks by ``ticker.core.publish``'s rules and book items by these, and
gives either the whole ``Batch`` or a refusal listing every problem by item index: a
request with one bad item publishes neither its ticks nor its book changes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from itertools import chain
from operator import itemgetter
from typing import Any

from ticker.core.books import MAX_LEVELS, Level
from ticker.core.publish import (
    Problems,
    bad_request,
    check_tick,
    check_ticks,
    number_problem,
    plainly_good,
)
from ticker.core.symbols import symbol_problem
from ticker.core.ticks import TickBatch

BOOK = "book"
"""The key that makes an item a book change set instead of a tick."""
MAX_CHANGE_LEVELS = MAX_LEVELS
"""Levels a side of one change set may carry: a book keeps no more than that a side."""
BOOK_FIELDS = ("s", "bids", "asks", "reset")
BOOK_SHAPE = '{"book": {"s": SYMBOL, "bids": [[price, size], ...], "asks": [...], "reset": false}}'


@dataclass(frozen=True, slots=True)
class BookChange:
    """One checked book item: what ``BookSink`` takes, and where it was in the request."""

    index: int
    """The item's index in the request, for a problem found after the checks."""
    symbol: str
    bids: list[Level]
    asks: list[Level]
    reset: bool

    @property
    def cost(self) -> int:
        """What it weighs against ``--max-publish-ticks`` and the rate: a tick a level
        (at least one: an empty reset still empties a book)."""
        return max(1, len(self.bids) + len(self.asks))


@dataclass(frozen=True, slots=True)
class Batch:
    """A checked request: its ticks for the bus and its book change sets for the books."""

    ticks: TickBatch
    books: list[BookChange]

    def __len__(self) -> int:
        return len(self.ticks) + len(self.books)

    @property
    def cost(self) -> int:
        """Ticks plus book levels: what the size bound and the rate count."""
        return len(self.ticks) + sum(change.cost for change in self.books)

    def symbols(self) -> list[str]:
        """Every symbol of the request, once each, ticks' first."""
        named: Iterable[str] = map(itemgetter("s"), self.ticks)
        if self.books:
            named = chain(named, (change.symbol for change in self.books))
        return list(dict.fromkeys(named))


def is_book(item: object) -> bool:
    """Whether a request's item is a book change set (else it is checked as a tick)."""
    return type(item) is dict and BOOK in item


def check_items(items: list[Any]) -> Batch:
    """Every item checked; the batch when all pass, else every problem, nothing kept."""
    if plainly_good(items):  # ticks only, all good: the hot path costs what it did
        return Batch(items, [])
    if not any(map(is_book, items)):
        return Batch(check_ticks(items), [])
    problems = Problems()
    ticks: TickBatch = []
    books: list[BookChange] = []
    for index, item in enumerate(items):
        if is_book(item):
            change = check_book(index, item)
            if isinstance(change, BookChange):
                books.append(change)
            else:
                for name, message in change:
                    problems.add(index, name, message)
        else:
            ticks.append(item)
    if not plainly_good(ticks):  # find each bad tick by its index in the request
        for index, item in enumerate(items):
            if not is_book(item):
                check_tick(index, item, problems)
    if problems.found:
        raise bad_request(problems)
    return Batch(ticks, books)


def check_book(index: int, item: dict[str, Any]) -> BookChange | list[tuple[str, str]]:
    """One book item: its change set, or its problems as ``(field, message)``."""
    problems: list[tuple[str, str]] = [
        (str(key), f"unknown field: a book item is {BOOK_SHAPE}") for key in item if key != BOOK
    ]
    body = item[BOOK]
    if type(body) is not dict:
        return [*problems, (BOOK, f"must be an object: {BOOK_SHAPE}")]
    for key in body:
        if key not in BOOK_FIELDS:
            problems.append((f"book.{key}", f"unknown field: a book has {', '.join(BOOK_FIELDS)}"))
    symbol = body.get("s")
    if "s" not in body:
        problems.append(("book.s", "missing: every book change needs a symbol"))
    elif (why := symbol_problem(symbol)) is not None:
        problems.append(("book.s", why))
    reset = body.get("reset", False)
    if type(reset) is not bool:
        problems.append(("book.reset", "must be true or false"))
    bids = check_side("bids", body.get("bids", []), problems)
    asks = check_side("asks", body.get("asks", []), problems)
    if not problems and not bids and not asks and not reset:
        problems.append((BOOK, "no levels: send bids or asks (reset: true and none empties it)"))
    if problems:
        return problems
    return BookChange(index, body["s"], bids, asks, reset)


def check_side(
    name: str, levels: object, problems: list[tuple[str, str]], prefix: str = "book."
) -> list[Level]:
    """A side's levels as floats, each problem named by its place (``book.bids[3]``);
    a recording's book rows are checked by it too (``prefix`` "")."""
    where = f"{prefix}{name}"
    if type(levels) is not list:
        problems.append((where, "must be a list of [price, size] levels"))
        return []
    if len(levels) > MAX_CHANGE_LEVELS:
        problems.append(
            (where, f"{len(levels)} levels, over the limit of {MAX_CHANGE_LEVELS} a side")
        )
        return []
    out: list[Level] = []
    for i, level in enumerate(levels):
        why = _level_problem(level)
        if why is not None:
            problems.append((f"{where}[{i}]", why))
        else:
            out.append((float(level[0]), float(level[1]) or 0.0))  # -0.0 removes as 0
    return out


def _level_problem(level: object) -> str | None:
    if type(level) is not list or len(level) != 2:
        return "must be [price, size]"
    price, size = level
    why = number_problem("p", price)
    if why is not None:
        return f"the price {why}"
    if price <= 0:
        return f"the price {price} must be above 0"
    why = number_problem("v", size)
    return None if why is None else f"the size {why}"
