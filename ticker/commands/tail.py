"""``ticker tail [URL] SYMBOL...``: live ticks on the terminal, through ``ticker.client``.

On a terminal, a table updated in place (last price, change since the first tick seen,
bid/ask, age of the last tick), redrawn at most ``REDRAW_S`` apart; piped, one line per
tick; ``--json``, one JSON object per tick (the protocol's fields). ``--book SYMBOL``
follows ``SYMBOL@book10`` (``--depth 50``) instead: on a terminal a ladder (asks above,
bids below, the spread between), piped a line (or JSON object) per update, every update
checked by the client (``pu`` chaining, ``cs``). Connection news
(reconnects, gaps, the server's errors) goes to stderr. Ctrl-C or SIGTERM ends it cleanly
(exit 0); a server that ends the feed for good exits 1; a handshake refused (no valid
token) or only unknown or not-entitled symbols exits 2, with the server's reason.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
import os
import shutil
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TextIO

import orjson

from ticker.client import (
    BookError,
    Candle,
    Connected,
    Disconnected,
    FeedClosed,
    Gap,
    OrderBook,
    ServerError,
    Status,
    SubscriptionRefused,
    Tick,
    connect,
)
from ticker.client.books import book_topic, is_book_topic
from ticker.commands.envparser import Commands, EnvParser
from ticker.commands.refusals import nothing_left_line, refused_line
from ticker.core.books import DEPTHS, canonical
from ticker.core.bus import WILDCARD
from ticker.core.ticks import MicrosClock, now_us
from ticker.core.topics import is_derived

DEFAULT_URL = "ws://127.0.0.1:8080/ws"
REDRAW_S = 0.2
EXIT_CLOSED = 1
EXIT_BAD_INPUT = 2


def add_parser(commands: Commands) -> None:
    """``tail [URL] SYMBOL...`` and its options (``--token``: ``TICKER_TOKEN``)."""
    parser = commands.add_parser(
        "tail",
        help="print live ticks of some symbols",
        description="Print live ticks: a table updating in place on a terminal, one line per "
        "tick when piped; a refused token or symbol exits 2. "
        "URL: ws(s)://HOST/ws, http(s)://HOST/sse or http(s)://HOST/poll "
        f"(default {DEFAULT_URL}).",
    )
    parser.add_argument("targets", nargs="*", metavar="[URL] SYMBOL", help="symbols, * = all")
    parser.checks.append(_targets_agree)
    add = parser.add_option
    parser.add_argument("--json", action="store_true", help="one JSON object per tick")
    parser.add_argument(
        "--book",
        metavar="SYMBOL",
        help="the order book of SYMBOL: a ladder on a terminal, a line per update piped",
    )
    add("--depth", type=int, default=10, choices=DEPTHS, help="levels a side with --book")
    add("--mode", default="conflate", choices=("conflate", "all"), help="delivery mode")
    add("--max-hz", type=float, default=None, help="at most this many updates per second")
    add("--token", default=None, help="sent as Authorization: Bearer (see ticker token)")


def split_targets(
    targets: list[str], book: str | None = None, depth: int = 10
) -> tuple[str, list[str]]:
    """``[URL] SYMBOL...``: the URL is the first argument if it has a scheme. With
    ``--book SYMBOL`` the one topic is ``SYMBOL@bookN`` and no other symbol is named."""
    if targets and "://" in targets[0]:
        url, symbols = targets[0], targets[1:]
    else:
        url, symbols = DEFAULT_URL, targets
    if book is not None:
        if symbols:
            raise ValueError("--book SYMBOL follows one book: name no other symbol")
        if book == WILDCARD or is_derived(book):
            raise ValueError(f"--book takes a symbol (AAPL), not {book!r}")
        return url, [book_topic(book, depth)]
    if not symbols:
        raise ValueError("name at least one symbol (or '*')")
    if any(map(is_book_topic, symbols)):
        raise ValueError("to follow an order book, write --book SYMBOL (--depth 10|50)")
    return url, symbols


def _targets_agree(args: argparse.Namespace, parser: EnvParser) -> str | None:
    """What argparse says of a missing positional (``--book`` makes SYMBOL optional), and
    a ``--depth`` that would be ignored."""
    if args.book is None:
        if not args.targets:
            return "the following arguments are required: [URL] SYMBOL"
        if depth := parser.given(args, "depth"):
            return f"{depth} is the depth of --book SYMBOL; without --book there is no book"
    return None


def _clock_text(t_us: int) -> str:
    return datetime.fromtimestamp(t_us / 1e6, UTC).strftime("%H:%M:%S.%f")


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def tick_line(tick: Tick) -> str:
    """One tick as a line of text (piped output)."""
    return (
        f"{_clock_text(tick.time_us)} {tick.symbol} {tick.price:g} "
        f"bid={_num(tick.bid)} ask={_num(tick.ask)} size={_num(tick.size)} q={tick.q}"
    )


def tick_json(tick: Tick) -> bytes:
    """A tick as the protocol's JSON object, absent fields left out (``--json``)."""
    wire = {"s": tick.symbol, "p": tick.price, "b": tick.bid, "a": tick.ask, "v": tick.size}
    wire = {k: v for k, v in wire.items() if v is not None}
    return orjson.dumps({**wire, "t": tick.time_us, "q": tick.q})


def _level(level: tuple[float, float] | None) -> str:
    return "-" if level is None else f"{canonical(level[0])}x{canonical(level[1])}"


def _spread(book: OrderBook) -> str:
    spread = book.spread
    return "-" if spread is None else f"{spread:.10g}"  # no float noise (0.0200000000001)


def book_line(book: OrderBook) -> str:
    """One book update as a line of text (piped output): the touch, the spread, how many
    levels a side, and that the checksum was verified (a failure ends the tail)."""
    kind = " snapshot" if book.snapshot else ""
    return (
        f"{book.topic} u={book.u}{kind} bid={_level(book.best_bid)} "
        f"ask={_level(book.best_ask)} spread={_spread(book)} "
        f"levels={len(book.bids)}/{len(book.asks)} cs={book.cs} ok"
    )


def book_json(book: OrderBook) -> bytes:
    """The client's whole book after an update, best first (``--book --json``)."""
    return orjson.dumps(
        {
            "s": book.symbol,
            "depth": book.depth,
            "u": book.u,
            "cs": book.cs,
            "snapshot": book.snapshot,
            "bids": book.bids,
            "asks": book.asks,
        }
    )


@dataclass(slots=True)
class Row:
    """One symbol's line of the table: its first price (for the change) and last tick."""

    first: float
    last: Tick


class TickTable:
    """The latest tick of each symbol, in first-seen order, rendered as aligned lines."""

    HEADER = ("SYMBOL", "LAST", "CHANGE", "CHANGE%", "BID", "ASK", "AGE")

    def __init__(self) -> None:
        self.rows: dict[str, Row] = {}
        self.status = "connecting..."
        """The last connection news, shown under the table."""
        self.not_live: dict[str, str] = {}
        """Symbols whose source is not live (``stale``, ``halted``, ``closed``): marked."""

    def mark(self, event: Status) -> None:
        """A symbol's status changed: its row says so until it is ``live`` again."""
        if event.status == "live":
            self.not_live.pop(event.symbol, None)
        else:
            self.not_live[event.symbol] = event.status

    def update(self, tick: Tick) -> None:
        """Keep the symbol's last tick; its first price stays, for the change."""
        row = self.rows.get(tick.symbol)
        if row is None:
            self.rows[tick.symbol] = Row(tick.price, tick)
        else:
            row.last = tick

    def render(self, now_us: int, max_rows: int = 1000) -> list[str]:
        """The table (at most ``max_rows`` symbols: it must fit the terminal to be redrawn
        in place) and the status line."""
        table = [self.HEADER]
        for symbol, row in itertools.islice(self.rows.items(), max_rows):
            tick, change = row.last, row.last.price - row.first
            pct = change / row.first * 100 if row.first else 0.0
            age = max(now_us - tick.time_us, 0) / 1e6
            marked = self.not_live.get(symbol)
            table.append(
                (
                    symbol if marked is None else f"{symbol} [{marked}]",
                    f"{tick.price:g}",
                    f"{change:+.4g}",
                    f"{pct:+.2f}%",
                    _num(tick.bid),
                    _num(tick.ask),
                    f"{age:.1f}s",
                )
            )
        widths = [max(len(r[i]) for r in table) for i in range(len(self.HEADER))]
        more = len(self.rows) - max_rows
        status = f"{self.status} ({more} more symbols: a taller terminal shows them)"
        return [*self._lines(table, widths), status if more > 0 else self.status]

    @staticmethod
    def _lines(table: Sequence[tuple[str, ...]], widths: list[int]) -> list[str]:
        return [
            "  ".join(
                cell.ljust(w) if i == 0 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(r, widths, strict=True))
            )
            for r in table
        ]


class Ladder:
    """One book topic as a price ladder: asks above (best lowest), bids below (best on
    top), the spread between, each level's size with a bar scaled to the largest shown."""

    BAR = 20

    def __init__(self) -> None:
        self.book: OrderBook | None = None
        self.status = "connecting..."
        """The last connection news, shown under the ladder."""
        self.not_live: str | None = None

    def mark(self, event: Status) -> None:
        """The symbol's status changed: the header says so until it is ``live`` again."""
        self.not_live = None if event.status == "live" else event.status

    def update(self, book: OrderBook) -> None:
        """Show the book after its latest update."""
        self.book = book

    def render(self, now_us: int, max_rows: int = 1000) -> list[str]:
        """Header, asks, spread, bids and the status line, in at most ``max_rows`` + 1
        lines (levels past the terminal's height are left out, far ones first)."""
        book = self.book
        if book is None:
            return ["waiting for the book's snapshot...", self.status]
        per_side = max((max_rows - 2) // 2, 1)
        asks, bids = book.asks[:per_side], book.bids[:per_side]
        marked = f" [{self.not_live}]" if self.not_live else ""
        header = f"{book.topic}{marked}  u={book.u}  cs={book.cs} ok  spread={_spread(book)}"
        shown = [*asks, *bids]
        pw = max((len(canonical(p)) for p, _ in shown), default=1)
        sw = max((len(canonical(s)) for _, s in shown), default=1)
        largest = max((s for _, s in shown), default=0.0) or 1.0

        def row(side: str, price: float, size: float) -> str:
            bar = "#" * max(round(size / largest * self.BAR), 1)
            return f"{side}  {canonical(price):>{pw}}  {canonical(size):>{sw}}  {bar}"

        lines = [header, *(row("ask", p, s) for p, s in reversed(asks))]
        lines.append(f"{'':3}  {'-' * pw}  spread {_spread(book)}")
        lines += [row("bid", p, s) for p, s in bids]
        return [*lines, self.status]


class Screen:
    """Redraws a block of lines in place on a terminal (ANSI: up, clear line)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.drawn = 0

    def draw(self, lines: list[str]) -> None:
        """Redraw the table in place: cursor up over the last drawing, lines cleared."""
        parts = [f"\x1b[{self.drawn}F"] if self.drawn else ["\x1b[?25l"]  # up; hide cursor
        parts += [f"\x1b[2K{line}\n" for line in lines]
        self.out.write("".join(parts))
        self.out.flush()
        self.drawn = len(lines)

    def close(self) -> None:
        """Give the cursor back, which ``draw`` hid."""
        if self.drawn:
            self.out.write("\x1b[?25h")  # show the cursor again
            self.out.flush()


def news(event: Gap | Connected | Disconnected | ServerError | Status) -> str:
    """Connection news as one line (stderr, or the status line under the table)."""
    if isinstance(event, Status):
        why = f": {event.reason}" if event.reason else ""
        return f"{event.symbol}: {event.status}{why}"
    if isinstance(event, ServerError):
        return f"server error {event.code}: {event.message}"
    if isinstance(event, Gap):
        return f"{event.symbol}: {event.missed} tick(s) missed (q {event.first}-{event.last})"
    if isinstance(event, Connected):
        return f"connected (session {event.session}, epoch {event.epoch})"
    if event.retry_in is None:
        return f"closed by the server: {event.code} {event.reason}"
    return f"disconnected ({event.code} {event.reason}); reconnecting in {event.retry_in:.1f} s"


async def tail(
    url: str,
    symbols: list[str],
    *,
    out: TextIO,
    err: TextIO,
    as_json: bool = False,
    mode: str = "conflate",
    max_hz: float | None = None,
    token: str | None = None,
    clock: MicrosClock = now_us,
) -> int:
    """Print the feed until it ends (exit 1) or the task is cancelled; a refused token or
    nothing valid to subscribe to is the user's to fix (one line, exit 2). A book topic
    in ``symbols`` (``--book``, see ``split_targets``) is drawn as a ``Ladder``."""
    table: TickTable | Ladder | None = None
    if out.isatty() and not as_json:
        table = Ladder() if any(map(is_book_topic, symbols)) else TickTable()
    screen = Screen(out)
    redraw: asyncio.Task[None] | None = None

    def draw() -> None:
        assert table is not None
        screen.draw(table.render(clock(), max(shutil.get_terminal_size().lines - 3, 1)))

    async def redraw_now_and_then() -> None:
        while True:
            await asyncio.sleep(REDRAW_S)
            draw()

    failure: tuple[int, str] | None = None  # exit status and line, said after the table
    try:
        async with connect(url, symbols, mode=mode, max_hz=max_hz, token=token) as feed:
            if table is not None:
                redraw = asyncio.create_task(redraw_now_and_then())
            async for event in feed.events():
                if isinstance(event, Disconnected) and event.retry_in is None:
                    continue  # for good: the exception that follows says why, once
                if isinstance(event, Candle):
                    continue  # the table and the lines are of ticks (or a book)
                if isinstance(event, OrderBook):
                    if isinstance(table, Ladder):
                        table.update(event)
                    else:
                        out.write(
                            (book_json(event).decode() if as_json else book_line(event)) + "\n"
                        )
                        out.flush()
                elif not isinstance(event, Tick):
                    if table is None:
                        print(news(event), file=err, flush=True)
                    else:  # under the table: stderr would scroll it away
                        table.status = news(event)
                        if isinstance(event, Status):
                            table.mark(event)
                elif isinstance(table, TickTable):
                    table.update(event)
                elif as_json:
                    out.write(tick_json(event).decode() + "\n")
                    out.flush()
                else:
                    out.write(tick_line(event) + "\n")
                    out.flush()
    except SubscriptionRefused as exc:
        failure = EXIT_BAD_INPUT, nothing_left_line("tail", exc)
    except BookError as exc:  # must never happen: the server's bug, said plainly
        failure = EXIT_CLOSED, f"ticker tail: the book does not check out: {exc}"
    except FeedClosed as exc:
        if exc.status is not None:  # the handshake was refused: a token, a parameter
            failure = EXIT_BAD_INPUT, refused_line("tail", url, exc.reason, exc.status)
        else:
            failure = EXIT_CLOSED, f"ticker tail: {exc}"
    finally:
        if redraw is not None:
            redraw.cancel()
            draw()
        screen.close()
    if failure is None:
        return 0
    print(failure[1], file=err, flush=True)
    return failure[0]


def run(args: argparse.Namespace) -> int:
    """``ticker tail``: check the targets before connecting, then follow until Ctrl-C."""
    try:
        url, symbols = split_targets(args.targets, args.book, args.depth)
        connect(url, symbols, mode=args.mode, max_hz=args.max_hz)  # checks, connects nothing
    except ValueError as exc:
        print(f"ticker tail: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    logging.getLogger("ticker.client").setLevel(logging.ERROR)  # tail says it itself
    return asyncio.run(_main(url, symbols, args))


async def _main(url: str, symbols: list[str], args: argparse.Namespace) -> int:
    task = asyncio.create_task(
        tail(
            url,
            symbols,
            out=sys.stdout,
            err=sys.stderr,
            as_json=args.json,
            mode=args.mode,
            max_hz=args.max_hz,
            token=args.token,
        )
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        return await task
    except asyncio.CancelledError:
        return 0
    except BrokenPipeError:  # piped into head and the like: the reader is gone
        with contextlib.suppress(OSError):  # and Python's own flush at exit must not fail
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
