"""LOBSTER message files (NASDAQ order book events): executions become trade ticks.

``TICKER_DATE_STARTms_ENDms_message_LEVEL.csv``, six (or seven) headerless columns:
time (seconds after midnight, New York, up to 9 decimals), type, order id, size, price
(dollars x 10000), direction. Types 4 (visible execution), 5 (hidden) and 6 (cross) are
trades; type 7 is a trading halt (``read_halts``: a replay reports it as the symbol's
status); the rest are book changes. When ``..._orderbook_LEVEL.csv`` sits beside
the message file (one row per message row: ask price, ask size, bid price, bid size, ...),
each trade carries the best bid and ask after it, and ``read_books`` makes the book rows:
row k of the orderbook file is the top LEVEL levels after message k, so the first row is
a reset and each later one the levels that changed (those that left the top LEVEL are
removed: the recorded book is LOBSTER's view of it). A renamed file gets its symbol and
date from ``Naming`` (``--symbol``, ``--date``) instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np

from ticker.core.books import Level
from ticker.recording.book_lines import BookLog, BookRow
from ticker.recording.importers.csvcolumns import Column, read_columns, read_text_lines
from ticker.recording.problems import Problems, RecordingError
from ticker.recording.table import TickTable

NAME = re.compile(r"(?P<symbol>[^_]+)_(?P<date>\d{4}-\d{2}-\d{2})_\d+_\d+_message_\d+\.csv")
NEW_YORK = ZoneInfo("America/New_York")
TRADE_TYPES = (4, 5, 6)
HALT_TYPE = 7
HALT_STATES = {-1: "trading halted", 0: "quoting resumed, trading still halted", 1: ""}
"""A type-7 row's price says which: -1 a halt, 0 quotes are back, 1 trading is back."""
PRICE_SCALE = 10_000
EMPTY_LEVEL = 9_999_999_999
"""LOBSTER's dummy price for an empty book level (negative on the bid side)."""

MESSAGE_COLUMNS = (
    Column(0, "time", "decimal"),
    Column(1, "type", "int"),
    Column(3, "size", "int"),
    Column(4, "price", "int"),
)
BOOK_COLUMNS = (Column(0, "ask", "int"), Column(2, "bid", "int"))


@dataclass(frozen=True, slots=True)
class Naming:
    """What a LOBSTER file's name says, given by hand for a renamed file; a value given
    wins over the name's."""

    symbol: str | None = None
    day: date | None = None


def matches(path: Path) -> bool:
    """The file has LOBSTER's message-file name (so its format is known from it)."""
    return NAME.fullmatch(path.name) is not None


def symbol_and_day(path: Path, naming: Naming) -> tuple[str, date]:
    """From ``naming``, else from the file name; RecordingError says which flag is missing."""
    found = NAME.fullmatch(path.name)
    symbol = naming.symbol or (found["symbol"] if found else None)
    day = naming.day or (date.fromisoformat(found["date"]) if found else None)
    missing = [flag for flag, v in (("--symbol", symbol), ("--date", day)) if v is None]
    if missing:
        raise RecordingError(
            path,
            "not named like a LOBSTER message file (TICKER_DATE_START_END_message_LEVEL.csv), "
            f"so its symbol and date are unknown: pass {' and '.join(missing)} "
            "(e.g. --symbol AAPL --date 2012-06-21)",
        )
    assert symbol is not None and day is not None
    return symbol, day


def session_start_ns(day: date) -> int:
    """Epoch ns of midnight by the trading day's New York wall clock.

    LOBSTER counts wall-clock seconds from midnight; the UTC offset is the one in force
    during the session (noon), so a DST switch at 2 a.m. does not shift the trades.
    """
    offset = datetime(day.year, day.month, day.day, 12, tzinfo=NEW_YORK).utcoffset()
    assert offset is not None
    naive = datetime(day.year, day.month, day.day) - datetime(1970, 1, 1)
    return (naive - offset) // timedelta(microseconds=1) * 1000


def read_lobster(path: Path, problems: Problems, naming: Naming | None = None) -> TickTable:
    """The file's trades (types 4, 5, 6), with the best quotes if the book sits beside it."""
    symbol, day = symbol_and_day(path, naming or Naming())
    cols, lines = read_columns(path, read_text_lines(path), 1, MESSAGE_COLUMNS, problems)
    trades = np.isin(cols["type"], TRADE_TYPES)
    ns = session_start_ns(day) + cols["time"][trades]
    bid = ask = None
    book_path = orderbook_beside(path)
    if book_path is not None:
        bid, ask = _best_quotes(book_path, lines, problems)
        bid, ask = bid[trades], ask[trades]
    return TickTable.build(
        [symbol],
        t=ns // 1000,
        sym=np.zeros(int(trades.sum()), np.int32),
        p=cols["price"][trades] / PRICE_SCALE,
        v=cols["size"][trades].astype(np.float64),
        b=bid,
        a=ask,
        lines=lines[trades],
    )


def orderbook_beside(path: Path) -> Path | None:
    """The orderbook file of a message file, if it is there (a renamed file has none)."""
    book_path = path.with_name(path.name.replace("_message_", "_orderbook_"))
    return book_path if book_path != path and book_path.exists() else None


def read_books(path: Path, problems: Problems, naming: Naming | None, into: BookLog) -> None:
    """The orderbook file beside ``path`` as book rows at its messages' times (none
    without that file): a reset at the first row, then the levels each message changed."""
    book_path = orderbook_beside(path)
    if book_path is None:
        return
    symbol, day = symbol_and_day(path, naming or Naming())
    # the message file's bad lines were reported when its ticks were read
    cols, lines = read_columns(
        path, read_text_lines(path), 1, MESSAGE_COLUMNS, Problems(on_error="skip")
    )
    book_text = read_text_lines(book_path)
    width = len(book_text[0].split(","))
    if width % 4:
        raise RecordingError(
            book_path, f"{width} columns: expected 4 per level (ask, ask size, bid, bid size)", 1
        )
    spec = [Column(i, str(i), "int") for i in range(width)]
    bcols, blines = read_columns(book_path, book_text, 1, spec, problems)
    if not len(lines) or not len(blines) or blines[-1] < lines[-1]:
        raise RecordingError(
            book_path,
            f"{len(blines)} rows do not line up with the message file's rows "
            f"(up to line {lines[-1] if len(lines) else 0})",
        )
    grid = np.column_stack([bcols[str(i)] for i in range(width)]).tolist()
    row_of = dict(zip(blines.tolist(), range(len(blines)), strict=True))
    times = ((session_start_ns(day) + cols["time"]) // 1000).tolist()
    before: tuple[dict[int, int], dict[int, int]] | None = None
    for line, t in zip(lines.tolist(), times, strict=True):
        k = row_of.get(line)
        if k is None:
            continue  # a bad orderbook row (reported): the next row is whole anyway
        row = grid[k]
        now = _side(row, 2), _side(row, 0)
        if before is None:
            into.add(BookRow(t, symbol, _levels(now[0], True), _levels(now[1], False), True), line)
        else:
            bids, asks = _changed(before[0], now[0]), _changed(before[1], now[1])
            if bids or asks:
                into.add(BookRow(t, symbol, _levels(bids, True), _levels(asks, False)), line)
        before = now


def _side(row: list[int], offset: int) -> dict[int, int]:
    """One side of an orderbook row, price -> size (dummy levels left out)."""
    return {
        row[j]: row[j + 1]
        for j in range(offset, len(row), 4)
        if abs(row[j]) < EMPTY_LEVEL and row[j + 1] > 0
    }


def _changed(before: dict[int, int], now: dict[int, int]) -> dict[int, int]:
    """Levels to set so ``before`` becomes ``now``: gone ones at size 0."""
    out = {p: 0 for p in before if p not in now}
    out.update((p, s) for p, s in now.items() if before.get(p) != s)
    return out


def _levels(side: dict[int, int], bids: bool) -> list[Level]:
    """Prices in dollars, in book order."""
    return [(p / PRICE_SCALE, float(side[p])) for p in sorted(side, reverse=bids)]


@dataclass(frozen=True, slots=True)
class Halt:
    """A type-7 row: from ``t`` (µs) on, ``symbol`` is halted (``reason``) or trades again."""

    t: int
    symbol: str
    reason: str
    """Why it is halted; empty: trading resumed."""


def read_halts(path: Path, problems: Problems, naming: Naming | None = None) -> list[Halt]:
    """The file's trading-halt rows (type 7), in file order (times are ascending)."""
    symbol, day = symbol_and_day(path, naming or Naming())
    cols, _ = read_columns(path, read_text_lines(path), 1, MESSAGE_COLUMNS, problems)
    rows = np.flatnonzero(cols["type"] == HALT_TYPE)
    start = session_start_ns(day)
    return [
        Halt(
            int(start + cols["time"][i]) // 1000,
            symbol,
            HALT_STATES.get(
                int(cols["price"][i]), f"trading halted (LOBSTER halt state {cols['price'][i]})"
            ),
        )
        for i in rows.tolist()
    ]


def _best_quotes(
    book_path: Path, message_lines: np.ndarray, problems: Problems
) -> tuple[np.ndarray, np.ndarray]:
    """Best bid and ask for each kept message row (NaN where that side is empty)."""
    book_lines = read_text_lines(book_path)
    cols, lines = read_columns(book_path, book_lines, 1, BOOK_COLUMNS, Problems())
    if len(lines) != len(book_lines) or lines[-1] < message_lines[-1]:
        raise RecordingError(
            book_path,
            f"{len(lines)} rows do not line up with the message file's rows "
            f"(up to line {message_lines[-1]})",
        )
    row = message_lines - 1  # the book row of each message row, by line number
    ask = cols["ask"][row].astype(np.float64)
    bid = cols["bid"][row].astype(np.float64)
    ask[np.abs(ask) >= EMPTY_LEVEL] = np.nan
    bid[np.abs(bid) >= EMPTY_LEVEL] = np.nan
    return bid / PRICE_SCALE, ask / PRICE_SCALE
