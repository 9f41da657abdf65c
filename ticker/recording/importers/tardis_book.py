"""tardis.dev ``incremental_book_L2`` CSV (``exchange,symbol,timestamp,local_timestamp,
is_snapshot,side,price,amount``): absolute level changes, so book rows with no ticks.

Rows of one symbol sharing ``local_timestamp`` (and ``is_snapshot``) are one message, so
one book row at that time; tardis orders the file by ``local_timestamp`` (when it got
the message), and so does the recording (``timestamp``, the exchange's, can go back).
``is_snapshot`` true after false (or first) begins the source's whole book: a reset row;
snapshot rows that go on in a later message add to it. ``amount`` 0 removes the level.
"""

from __future__ import annotations

from pathlib import Path

from ticker.core.books import Level
from ticker.recording.book_lines import BookLog, BookRow
from ticker.recording.importers.csvcolumns import read_text_lines
from ticker.recording.importers.tardis import named_columns
from ticker.recording.problems import Problems
from ticker.recording.table import TickTable, valid_symbol

COLUMNS = {
    "symbol": "str",
    "local_timestamp": "int",
    "is_snapshot": "str",
    "side": "str",
    "price": "float",
    "amount": "float",
}
SIDES = {"bid": True, "ask": False}
FLAGS = {"true": True, "false": False}


def matches_header(first_line: str) -> bool:
    """A tardis CSV whose header has ``is_snapshot``: the book one, not the trades one."""
    return "is_snapshot" in first_line.strip().split(",")


def read_books(path: Path, problems: Problems, into: BookLog) -> TickTable:
    """The file's messages as book rows into ``into``; the ticks (none) as a table."""
    lines = read_text_lines(path)
    what = "tardis incremental_book_L2 CSV"
    cols, numbers = named_columns(path, lines, COLUMNS, what, problems)
    rows = zip(
        numbers.tolist(),
        cols["symbol"].tolist(),
        cols["local_timestamp"].tolist(),
        cols["is_snapshot"].tolist(),
        cols["side"].tolist(),
        cols["price"].tolist(),
        cols["amount"].tolist(),
        strict=True,
    )
    snapshot: dict[str, bool] = {}
    """Symbol -> whether its last row was a snapshot row."""
    current: tuple[str, int, bool] | None = None
    bids: list[Level] = []
    asks: list[Level] = []
    for line, symbol, t, flag, side, price, amount in rows:
        problem = _problem(symbol, flag, side, price, amount)
        if problem is not None:
            problems.bad(path, line, problem)
            continue
        is_snapshot = FLAGS[flag]
        key = (symbol, t, is_snapshot)
        if key != current:  # a new message: its row fills as its lines come
            reset = is_snapshot and not snapshot.get(symbol, False)
            bids, asks = [], []
            into.add(BookRow(t, symbol, bids, asks, reset), line)
            current = key
        (bids if SIDES[side] else asks).append((price, amount))
        snapshot[symbol] = is_snapshot
    return TickTable.empty()


def _problem(symbol: str, flag: str, side: str, price: float, amount: float) -> str | None:
    if not valid_symbol(symbol):
        return f"symbol {symbol[:40]!r} is not a symbol (1 to 32 characters)"
    if flag not in FLAGS:
        return f"is_snapshot must be true or false, got {flag[:20]!r}"
    if side not in SIDES:
        return f"side must be bid or ask, got {side[:20]!r}"
    if not (price > 0 and amount >= 0):
        return "price must be > 0 and amount >= 0"
    return None
