"""``ticker publish URL [FILE|-]``: ticks (and book changes) from a file or a pipe into a
server.

Lines are NDJSON or CSV with a header (``ticker/client/lines.py``); an NDJSON line may
be a book change set (``{"book": {...}}``, docs/publishing.md), sent in order with the
ticks. They go through
``ticker.client.Publisher`` in batches of ``--batch``: full batches while the input keeps
up, and whatever has arrived as soon as the input pauses, so ``tail -f quotes.csv |
ticker publish URL -`` publishes each line when it is written. A reader thread hands
chunks over a small bounded queue: a slow server slows the reading, never fills memory.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import stat
import sys
import threading
import time
from pathlib import Path
from typing import Any

from ticker.commands.argtypes import positive
from ticker.commands.envparser import Commands
from ticker.core.publish_books import is_book
from ticker.progress import Progress

CHUNK = 1 << 16
FOLLOW_POLL_S = 0.2
MAX_SHOWN_PROBLEMS = 10
EXIT_REFUSED = 1
EXIT_BAD_INPUT = 2


def add_parser(commands: Commands) -> None:
    """``publish URL [FILE]`` with ``--token``, ``--batch`` and ``--follow``."""
    parser = commands.add_parser(
        "publish",
        help="publish ticks from a file or stdin into a server (ticker serve --publish)",
        description="Publish ticks read from FILE (or stdin: -) into the server at URL: NDJSON "
        '(one tick object a line, or a book change {"book": {"s": ..., "bids": [[price, '
        'size], ...], "asks": [...]}}) or CSV with a header naming tick fields, e.g. s,p,v. '
        "Example: tail -f quotes.csv | ticker publish http://127.0.0.1:8080 -",
    )
    parser.add_argument("url", help="the server, e.g. http://127.0.0.1:8080")
    parser.add_argument("file", nargs="?", default="-", help="the input; - = stdin (default)")
    add = parser.add_option
    add("--token", default=None, help="a token with a pub claim (ticker token --publish)")
    add("--batch", type=positive(int), default=1000, help="ticks per batch at most")
    parser.add_argument(
        "--follow", action="store_true", help="keep reading FILE as it grows, like tail -f"
    )


QUEUED_CHUNKS = 8


def _reader(
    fd: int,
    follow: bool,
    loop: asyncio.AbstractEventLoop,
    queue: asyncio.Queue[bytes | None],
    slots: threading.Semaphore,
) -> None:
    """Thread: chunks into the queue, None at the end; a slot per queued chunk bounds it."""
    chunk: bytes | None = b""
    while chunk is not None:
        try:
            chunk = os.read(fd, CHUNK) or None
        except OSError:
            chunk = None
        if chunk is None and follow:
            time.sleep(FOLLOW_POLL_S)
            chunk = b""
            continue
        slots.acquire()
        try:
            loop.call_soon_threadsafe(queue.put_nowait, chunk)
        except RuntimeError:  # the loop is gone: nobody is reading any more
            return


class Run:
    """One ``ticker publish``: pending ticks with their line numbers, and the totals."""

    def __init__(self, args: argparse.Namespace) -> None:
        from ticker.client.lines import LineDecoder

        self.args = args
        self.decoder = LineDecoder()
        self.pending: list[Any] = []
        self.lines: list[int] = []
        self.symbols: set[str] = set()
        self.books = 0
        """Book change sets published (the rest of ``progress.count`` are ticks)."""
        self.batches = 0
        self.progress = Progress("published", stream=sys.stderr)
        self._sending_lines: list[int] = []

    def take(self, data: bytes) -> None:
        """Decodes whole lines into pending ticks."""
        for line in data.split(b"\n"):
            tick = self.decoder.decode(line)
            if tick is not None:
                self.pending.append(tick)
                self.lines.append(self.decoder.number)

    async def send(self, pub: Any, everything: bool) -> None:
        """Full batches, and the rest too when ``everything``."""
        size = self.args.batch
        while len(self.pending) >= size or (everything and self.pending):
            ticks, self.pending = self.pending[:size], self.pending[size:]
            lines, self.lines = self.lines[:size], self.lines[size:]
            self._sending_lines = lines
            if pub.connect_error is not None:  # said now, not after give_up_s of silence
                print(
                    f"ticker publish: cannot connect to {pub.url} ({pub.connect_error}); "
                    f"retrying for up to {pub.give_up_s:g} s: is the server running?",
                    file=sys.stderr,
                )
            ack = await pub.publish(ticks)
            self.batches += 1
            self.symbols.update(ack.q)
            self.symbols.update(item["book"]["s"] for item in ticks if is_book(item))
            self.books += ack.books
            self.progress.advance(ack.accepted)

    def published(self) -> str:
        """What went in: ``N ticks``, and the book change sets when there were any."""
        ticks = f"{self.progress.count - self.books:,} ticks"
        return f"{ticks} and {self.books:,} book change(s)" if self.books else ticks

    def problems(self, problems: list[dict[str, Any]]) -> list[str]:
        """The server's problems, by input line instead of index in the batch."""
        shown = []
        for problem in problems[:MAX_SHOWN_PROBLEMS]:
            index = problem.get("index")
            where = f"line {self._sending_lines[index]}" if isinstance(index, int) else "batch"
            field = f" {problem['field']}:" if problem.get("field") else ""
            shown.append(f"  {where}:{field} {problem.get('message')}")
        if len(problems) > MAX_SHOWN_PROBLEMS:
            shown.append(f"  ... and {len(problems) - MAX_SHOWN_PROBLEMS} more")
        return shown


async def _publish(args: argparse.Namespace, fd: int) -> int:
    from ticker.client.lines import LineError
    from ticker.client.publisher import Publisher, PublishError

    job = Run(args)
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes | None] = asyncio.Queue()
    slots = threading.Semaphore(QUEUED_CHUNKS)
    reader = threading.Thread(
        target=_reader, args=(fd, args.follow, loop, queue, slots), daemon=True
    )
    reader.start()
    started = time.monotonic()
    tail = b""
    try:
        async with Publisher(args.url, token=args.token, batch=args.batch) as pub:
            while (chunk := await queue.get()) is not None:
                slots.release()
                data, _, tail = (tail + chunk).rpartition(b"\n")
                job.take(data)
                await job.send(pub, everything=queue.empty())
            job.take(tail)
            await job.send(pub, everything=True)
    except LineError as exc:
        print(f"ticker publish: error: {args.file}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except PublishError as exc:
        job.progress.done()
        print(
            f"ticker publish: error: {exc}; published {job.published()} before it",
            file=sys.stderr,
        )
        for line in job.problems(exc.problems):
            print(line, file=sys.stderr)
        return EXIT_REFUSED
    job.progress.done()
    print(
        f"published {job.published()} of {len(job.symbols)} symbol(s)"
        f" in {job.batches} batch(es), {time.monotonic() - started:.1f} s",
        file=sys.stderr,
    )
    return 0


def run(args: argparse.Namespace) -> int:
    """The command: 0 when everything was published, 1 refused, 2 bad input."""
    from ticker.client.publisher import publish_url

    try:
        publish_url(args.url)
    except ValueError as exc:
        print(f"ticker publish: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        fd = sys.stdin.fileno() if args.file == "-" else os.open(Path(args.file), os.O_RDONLY)
        if stat.S_ISDIR(os.fstat(fd).st_mode):  # it opens, and reads as an error
            raise IsADirectoryError(0, "a directory, not a file of ticks")
    except OSError as exc:
        print(f"ticker publish: error: {args.file}: {exc.strerror}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.follow and args.file == "-":
        print(
            "ticker publish: error: --follow reads a FILE; stdin is followed anyway",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    try:
        return asyncio.run(_publish(args, fd))
    except KeyboardInterrupt:
        return 130
