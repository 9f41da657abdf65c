"""``ticker serve``'s recording flags: ``--feed replay:PATH`` (and how its flags make the
feed) and ``--record DIR``."""

from __future__ import annotations

import argparse
import logging
from datetime import timedelta
from pathlib import Path

from feeds.replay.adapter import ReplayFeed
from ticker.commands.argtypes import non_negative, positive
from ticker.commands.convert import add_input_options, mapping_from, naming_from
from ticker.commands.envparser import EnvParser
from ticker.core.ticks import MAX_SYMBOL_LENGTH
from ticker.core.times import EPOCH, parse_time
from ticker.progress import Progress
from ticker.recording.problems import Problems
from ticker.recording.rotating import SUFFIXES
from ticker.recording.schedule import ReplayOptions

RECORD_FORMATS = tuple(s.lstrip(".") for s in SUFFIXES)
log = logging.getLogger("ticker")


def symbols_arg(text: str) -> int | list[str]:
    """A count (simulated symbols) or a comma-separated list (symbols to replay)."""
    if text.strip().isdigit():
        count = int(text)
        if count <= 0:
            raise argparse.ArgumentTypeError(f"{text!r}: the number of symbols must be positive")
        return count
    names = [s.strip() for s in text.split(",") if s.strip()]
    if not names or any(len(s) > MAX_SYMBOL_LENGTH for s in names):
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected a count or a comma-separated list of symbols "
            f"of up to {MAX_SYMBOL_LENGTH} characters each"
        )
    return names


def add_replay_options(parser: EnvParser) -> None:
    """How ``--feed replay:`` plays: speed, loop, time range, and how to read."""
    add = parser.add_option
    add(
        "--speed",
        type=non_negative(float, "speed"),
        default=1.0,
        help="replay: 1 = as recorded, 0 = flat out",
    )
    parser.add_flag("--loop", help="replay: start over at the end (q and time keep rising)")
    parser.add_flag("--keep-time", help="replay: keep recorded timestamps (default: re-based)")
    add("--from", dest="start", type=parse_time, default=None, help="replay: from (ISO or µs)")
    add("--to", dest="end", type=parse_time, default=None, help="replay: up to, excluded")
    add_input_options(parser)


def add_record_options(parser: EnvParser) -> None:
    """``--record DIR`` (everything published, to disk) and ``--replay-dir``."""
    add = parser.add_option
    add("--replay-dir", type=Path, default=None, help="recordings clients may replay on demand")
    add("--record", type=Path, default=None, help="log every published tick into this directory")
    add("--record-format", default="jsonl.gz", choices=RECORD_FORMATS, help="--record's format")
    add(
        "--record-max-bytes",
        type=positive(int, "size"),
        default=1 << 30,
        help="--record: start a new file past this",
    )


def replay_feed(args: argparse.Namespace, sources: str) -> ReplayFeed:
    """The feed of ``--feed replay:SOURCES``; raises RecordingError/ValueError on bad input."""
    paths = [Path(p) for p in sources.split(",") if p]
    symbols = args.symbols if isinstance(args.symbols, list) else None
    problems = Problems(args.on_error, "--on-error")
    options = ReplayOptions(speed=args.speed, loop=args.loop, keep_time=args.keep_time)
    try:
        mapping = mapping_from(args)
    except ValueError as exc:
        raise ValueError(f"--columns {args.columns}: {exc}") from None
    feed = ReplayFeed.from_paths(
        paths,
        options,
        problems,
        symbols=symbols,
        start=args.start,
        end=args.end,
        sort=args.sort,
        fmt=args.format,
        mapping=mapping,
        naming=naming_from(args),
    )
    if args.speed == 0 and not args.loop:
        feed.meter = Progress("replay", total=len(feed.table))  # shown on a TTY only
    for line in problems.summary():
        log.warning("replay: %s", line)
    return feed


def log_replay(args: argparse.Namespace, sources: str, feed: ReplayFeed, epoch: str) -> None:
    """One line with what will be played: the files, the window, the speed, the end."""
    first, last = feed.span()
    log.info(
        "feed replay: %d ticks%s of %d symbol(s) from %s, %s to %s, at speed %g%s; %s; epoch %s",
        len(feed.table),
        f" and {len(feed.books)} book rows" if len(feed.books) else "",
        len(feed.symbols()),
        sources,
        _iso(first),
        _iso(last),
        args.speed,
        " (flat out)" if args.speed == 0 else "",
        "looping" if args.loop else "once: it ends with the recording (--loop: start over)",
        epoch,
    )


def _iso(us: int) -> str:
    return (EPOCH + timedelta(microseconds=us)).isoformat()
