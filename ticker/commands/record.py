"""``ticker record URL --out PATH``: a protocol v1 client that writes every tick it gets.

It connects in mode ``all`` (every tick, no conflation) to the symbols asked for ("*" by
default) and appends each ``ticks`` frame to the output as it arrives, flushed per frame:
a kill leaves a file that reads up to the last frame. Snapshots are not recorded (they
repeat ticks published before the recording began). It stops after ``--duration``
seconds, on Ctrl-C or SIGTERM (the file is flushed and closed: exit 0), or when the server
closes the connection (exit 1, the file closed the same way). A handshake refused (no
valid token) or nothing valid to subscribe to exits 2 with the server's reason, and
leaves no file behind.

Order books: ``--book SYMBOL`` (or a book topic such as ``SYMBOL@book10`` among the
symbols) subscribes to the book topic; its snapshot is written as a reset row and each
delta as a change-set row (``ticker/recording/book_lines.py``), at the time it arrived,
so the file replays the book as the client saw it. Only JSON Lines holds book rows.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aiohttp
import orjson

from ticker.client.links import LinkError, refusal
from ticker.client.state import Refusals, ServerError, SubscriptionRefused
from ticker.commands.envparser import Commands
from ticker.commands.refusals import is_mistake, nothing_left_line, refused_line
from ticker.core.books import SUFFIXES
from ticker.core.ticks import now_us
from ticker.progress import Progress
from ticker.recording.book_lines import BookRow
from ticker.recording.formats import TickWriter, holds_books, open_writer, remove
from ticker.recording.problems import RecordingError

EXIT_LOST = 1
EXIT_BAD_INPUT = 2


def add_parser(commands: Commands) -> None:
    """``record URL --out PATH`` (``--token`` and its ``TICKER_TOKEN`` as for ``tail``)."""
    parser = commands.add_parser(
        "record",
        help="record a ticker server's stream to a file",
        description="Connect to a ticker server as a client (mode all) and record its ticks.",
    )
    parser.add_argument("url", metavar="URL", help="e.g. ws://127.0.0.1:8080/ws")
    add = parser.add_option
    add("--out", type=Path, required=True, help="new .jsonl, .jsonl.gz, .npz or .ticks")
    # Not from TICKER_SYMBOLS: that variable is serve's (a count for the simulated feed).
    parser.add_argument("--symbols", default="*", help="comma-separated symbols, * = all")
    parser.add_argument(
        "--book",
        action="append",
        default=[],
        metavar="SYMBOL",
        help="also record SYMBOL's order book, every level (SYMBOL@book); repeatable",
    )
    add("--duration", type=float, default=None, help="seconds to record (default: until stopped)")
    add("--token", default=None, help="sent as Authorization: Bearer (see ticker token)")


def book_topics(symbols: str, books: list[str]) -> str:
    """The symbols with ``SYMBOL@book`` added for each ``--book``; ValueError if a symbol
    would have two book topics (their rows would mix in one file)."""
    topics = [s for s in symbols.split(",") if s] + [f"{b}@book" for b in books]
    seen: set[str] = set()
    for topic in topics:
        base, _, suffix = topic.partition("@")
        if suffix in SUFFIXES:
            if base in seen:
                raise ValueError(f"{base}: one book topic per symbol (a file holds one book)")
            seen.add(base)
    return ",".join(topics)


def is_book_topic(topic: str) -> bool:
    """``SYMBOL@book``, ``@book10``, ``@book50``."""
    return topic.partition("@")[2] in SUFFIXES


def stream_url(url: str, symbols: str) -> str:
    """The URL with ``mode=all`` and the symbols added (those already in it are kept)."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss", "http", "https"):
        raise ValueError(f"{url!r}: expected a ws:// or wss:// URL")
    query = dict(parse_qsl(parts.query))
    query.setdefault("mode", "all")
    query.setdefault("symbols", symbols)
    return urlunsplit(parts._replace(query=urlencode(query, safe="*,")))


class Recording:
    """One client connection into one writer; ``stop()`` ends it cleanly."""

    def __init__(
        self,
        url: str,
        writer: TickWriter,
        progress: Progress | None = None,
        token: str | None = None,
    ) -> None:
        self.url = url
        self.writer = writer
        self.progress = progress
        self.headers = {"Authorization": f"Bearer {token}"} if token else None
        self.stopped = asyncio.Event()
        self.close_reason: str | None = None
        """Why the server ended the stream, if it did."""
        asked = dict(parse_qsl(urlsplit(url).query)).get("symbols", "*").split(",")
        self.refusals: Refusals | None = Refusals(asked)
        """What the server refused of the symbols asked, until it says ``subscribed``."""
        self.refused: SubscriptionRefused | None = None
        """The server refused every symbol asked for: the recording stopped at once."""

    def stop(self) -> None:
        """End the recording (a signal): the file is closed, what was written stays."""
        self.stopped.set()

    async def run(self, duration: float | None = None) -> None:
        """Record until stopped, ``duration`` passes or the server closes; raises
        ``LinkError`` if the handshake is refused, ``aiohttp.ClientError``/``OSError`` if
        the server cannot be reached."""
        async with aiohttp.ClientSession() as http:
            try:
                ws = await http.ws_connect(self.url, headers=self.headers)
            except aiohttp.WSServerHandshakeError as exc:
                raise await refusal(http, self.url, exc, headers=self.headers) from None
            async with ws:
                await self._record(ws, duration)

    async def _record(self, ws: aiohttp.ClientWebSocketResponse, duration: float | None) -> None:
        reader = asyncio.create_task(self._read(ws))
        stop = asyncio.create_task(self.stopped.wait())
        await asyncio.wait({reader, stop}, timeout=duration, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if reader.done():
            reader.result()  # a failure while reading propagates
            return
        reader.cancel()  # it only ever waits in receive(): no frame is half written
        with contextlib.suppress(asyncio.CancelledError):
            await reader

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        write, progress = self.writer.write_ticks, self.progress
        while True:
            msg = await ws.receive()
            if msg.type is not aiohttp.WSMsgType.TEXT:
                break
            frame = orjson.loads(msg.data)
            kind = frame.get("type")
            if kind == "ticks":
                write(frame["ticks"])
                if progress is not None:
                    progress.advance(len(frame["ticks"]))
            elif kind == "book":
                write([], [book_row(frame, now_us())])
                if progress is not None:
                    progress.advance(1)
            elif kind == "subscribed":
                self.refusals = None
            elif kind == "error":
                if self._refuse(frame):
                    return
                print(
                    f"ticker record: server error {frame.get('code')}: {frame.get('message')}",
                    file=sys.stderr,
                )
        reason = msg.extra if msg.type is aiohttp.WSMsgType.CLOSE else ""
        self.close_reason = f"closed by the server ({ws.close_code} {reason or ''})".strip()

    def _refuse(self, frame: dict[str, Any]) -> bool:
        """An error frame about the subscription; True when none of those asked for is
        left."""
        if self.refusals is None:
            return False
        if self.refusals.add(ServerError.from_wire(frame)):
            self.refused = SubscriptionRefused(self.refusals.errors)
        return self.refused is not None


def book_row(frame: dict[str, Any], t: int) -> BookRow:
    """A book frame as a row: a snapshot resets, a delta's levels are absolute already."""
    bids = [(float(p), float(q)) for p, q in frame["bids"]]
    asks = [(float(p), float(q)) for p, q in frame["asks"]]
    return BookRow(t, frame["s"], bids, asks, bool(frame.get("snapshot")))


async def _main(args: argparse.Namespace, writer: TickWriter) -> int:
    progress = Progress(f"record -> {args.out.name}")
    url = stream_url(args.url, book_topics(args.symbols, args.book))
    recording = Recording(url, writer, progress, token=args.token)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, recording.stop)
    start = time.monotonic()
    mistake: str | None = None
    lost: Exception | None = None
    try:
        await recording.run(args.duration)
    except LinkError as exc:
        if is_mistake(exc.status):
            mistake = refused_line("record", args.url, str(exc), exc.status)
        else:
            lost = exc
    except (aiohttp.ClientError, OSError) as exc:
        lost = exc
    finally:
        writer.close()
        progress.done()
    if lost is not None:
        if not writer.ticks:  # an empty file would stand in the way of the next try
            remove(args.out)
        print(f"ticker record: cannot connect to {args.url}: {lost}", file=sys.stderr)
        return EXIT_LOST
    if recording.refused is not None:
        mistake = nothing_left_line("record", recording.refused)
    if mistake is not None:
        remove(args.out)  # nothing was recorded: a second try must not find it in the way
        print(mistake, file=sys.stderr)
        return EXIT_BAD_INPUT
    rows = f" and {writer.books:,} book rows" if writer.books else ""
    print(
        f"recorded {writer.ticks:,} ticks{rows} to {args.out} in {time.monotonic() - start:.1f} s",
        file=sys.stderr,
    )
    if recording.close_reason is not None:
        print(f"ticker record: {recording.close_reason}", file=sys.stderr)
        return EXIT_LOST
    return 0


def run(args: argparse.Namespace) -> int:
    """Record; the arguments and the output are checked before anything connects."""
    try:
        topics = book_topics(args.symbols, args.book)
        stream_url(args.url, topics)  # a bad URL fails before the file is made
        if any(map(is_book_topic, topics.split(","))) and not holds_books(args.out):
            raise ValueError(
                f"{args.out}: order books need a .jsonl or .jsonl.gz --out "
                "(.npz and .ticks hold ticks only)"
            )
        if args.duration is not None and not args.duration > 0:
            raise ValueError("--duration must be positive")
        if args.out.exists():  # never appended to or overwritten: a recording is evidence
            raise ValueError(f"{args.out}: already exists; record into a new --out")
        writer = open_writer(args.out)
    except (RecordingError, ValueError) as exc:
        print(f"ticker record: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return asyncio.run(_main(args, writer))
