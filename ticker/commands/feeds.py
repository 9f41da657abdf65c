"""``--feed`` for ``ticker serve`` and ``ticker feed``: repeatable, each value a built-in
feed or a plugin (``feeds/plugins.py``), all built and checked before anything starts.

``TICKER_FEED`` holds one feed, or several separated by whitespace (as pip reads its
multi-valued variables): ``TICKER_FEED="sim walk:EURUSD=1.08"``. A feed whose text has a
space in it (a replay path) is given with ``--feed`` instead.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
from collections.abc import Sequence
from typing import Any

from feeds.base import FeedAdapter
from feeds.plugins import (
    EXCHANGES,
    FeedPluginError,
    FeedSpec,
    check_disjoint,
    check_names,
    load_feed,
    parse_feed_spec,
)
from feeds.replay.adapter import ReplayFeed
from ticker.commands import replay
from ticker.commands.envparser import EnvParser

DEFAULT_SIM_SYMBOLS = 100
DEFAULT_SIM_BOOKS = DEFAULT_SIM_SYMBOLS
"""Simulated symbols with order books unless ``--sim-books`` says: all of the default
universe (a book costs per batch its symbol ticks in, so a large universe keeps a few)."""
SHOWN_SYMBOLS = 5
"""A plugin's startup line names this many of its symbols."""
log = logging.getLogger("ticker")

Built = list[tuple[FeedSpec, FeedAdapter]]
"""Each feed with the ``--feed`` value it came from (which names it in messages)."""


class Feeds(tuple[FeedSpec, ...]):
    """The ``--feed`` values in order; printed as written (``--help`` shows the default)."""

    __slots__ = ()

    def __str__(self) -> str:
        return " ".join(map(str, self))

    def names(self) -> set[str]:
        """The chosen feeds' names: which flags they read, what may come alone."""
        return {spec.name for spec in self}

    def flags(self) -> str:
        """``--feed sim --feed walk:...``: how a message names what was chosen."""
        return " ".join(f"--feed {spec}" for spec in self)


DEFAULT = Feeds([FeedSpec("sim", "")])


def feed_arg(text: str) -> FeedSpec:
    """One ``--feed`` value (argparse keeps an ArgumentTypeError's words, not a ValueError's)."""
    try:
        return parse_feed_spec(text)
    except FeedPluginError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def feeds_env(text: str) -> Feeds:
    """``TICKER_FEED``: one or more feeds, separated by whitespace."""
    specs = Feeds(feed_arg(word) for word in text.split())
    if not specs:
        raise argparse.ArgumentTypeError("give at least one feed, e.g. sim")
    return specs


class Repeated(argparse.Action):
    """``--feed`` again adds a feed; the first one given replaces the default (which may
    come from ``TICKER_FEED``: the command line wins over the environment)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        current = getattr(namespace, self.dest)
        kept = () if current is self.default else current
        setattr(namespace, self.dest, Feeds([*kept, values]))


def mix_problem(specs: Feeds) -> str | None:
    """``none`` means no local feed, so it comes alone."""
    if "none" in specs.names() and len(specs) > 1:
        others = Feeds(spec for spec in specs if spec.name != "none")
        return f"--feed none means no local feed: drop it, or drop {others.flags()}"
    return None


def add_exchange_options(parser: EnvParser) -> None:
    """``--coinbase-url`` and its kind: another endpoint (a proxy, a sandbox, a test's)."""
    from feeds.exchanges.args import VENUES

    for name in EXCHANGES:
        parser.add_option(
            f"--{name}-url",
            default=None,
            metavar="URL",
            help=f"{name}: the websocket endpoint (default {VENUES[name].url})",
        )


def foreign_exchange_flags(names: set[str]) -> list[tuple[str, str]]:
    """``--binance-url`` with no binance feed would be ignored: (its dest, its feed)."""
    return [(f"{name}_url", f"{name}:PRODUCTS") for name in EXCHANGES if name not in names]


def build(args: argparse.Namespace) -> Built:
    """Every feed of ``args.feed``, checked together; raises ValueError (a FeedPluginError
    among them) or RecordingError with the one line to show."""
    from feeds.sim.adapter import SimulatedFeed

    built: Built = []
    for spec in args.feed:
        if spec.name == "sim":
            count = args.symbols if isinstance(args.symbols, int) else DEFAULT_SIM_SYMBOLS
            sim = SimulatedFeed(
                count, args.rate, skew=args.skew, seed=args.seed, books=args.sim_books
            )
            built.append((spec, sim))
        elif spec.name == "replay":
            built.append((spec, replay.replay_feed(args, spec.args)))
        elif spec.name in EXCHANGES:
            from feeds.exchanges.args import exchange_feed

            url = getattr(args, f"{spec.name}_url", None)
            feed = exchange_feed(spec.name, spec.args, url)
            if feed.venue.books and getattr(args, "book_interval_ms", None) == 0:
                raise ValueError(
                    f"--feed {spec.name}: books=1 but --book-interval-ms 0 serves no books"
                )
            built.append((spec, feed))
        elif not spec.builtin:
            built.append((spec, load_feed(spec)))
    check_names(built)
    check_disjoint(feed for _, feed in built)
    return built


def stop_serving() -> None:
    """A feed can never work (``FeedFatal``, already logged in one line): stop the server
    as SIGTERM does, so ``serve`` shuts down in order and exits with status 2."""
    os.kill(os.getpid(), signal.SIGTERM)


def adapters(built: Built) -> list[FeedAdapter]:
    """The feeds alone, once their specs have served the startup checks."""
    return [feed for _, feed in built]


def log_feeds(args: argparse.Namespace, built: Built, epoch: str) -> None:
    """One line per feed: what it is and how many symbols it brings."""
    if not built:
        sources = [
            *(["what comes through Redis"] if getattr(args, "redis", None) else []),
            *(["what publishers send to /publish"] if getattr(args, "publish", False) else []),
        ]
        log.info("no local feed: serving %s", " and ".join(sources) or "nothing")
    for spec, feed in built:
        if spec.name == "sim":
            log.info(
                "feed sim: %d symbols at %g ticks/s (skew %g, seed %s), %d with books; epoch %s",
                len(feed.symbols()),
                args.rate,
                args.skew,
                args.seed,
                min(args.sim_books, len(feed.symbols())),
                epoch,
            )
        elif isinstance(feed, ReplayFeed):
            replay.log_replay(args, spec.args, feed, epoch)
        else:
            log.info(
                "feed %s: %s from --feed %s; epoch %s",
                feed.name,
                _some(feed.symbols()),
                spec,
                epoch,
            )


def _some(symbols: Sequence[str]) -> str:
    """``3 symbols (A, B, C)``, the list cut short past ``SHOWN_SYMBOLS``."""
    shown = ", ".join(symbols[:SHOWN_SYMBOLS])
    more = ", ..." if len(symbols) > SHOWN_SYMBOLS else ""
    return f"{len(symbols)} symbol(s) ({shown}{more})"
