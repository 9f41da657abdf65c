"""Command line: ``ticker serve`` wires settings, feeds and the server together;
``ticker feed`` runs feeds into Redis with no server (a cluster's publisher).

Every flag can also be given as a ``TICKER_*`` environment variable (``--queue-bytes`` is
``TICKER_QUEUE_BYTES``); a flag on the command line wins over the environment.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from feeds.base import FeedAdapter
from ticker.cluster.wire import DEFAULT_SHARDS
from ticker.core.session import Limits
from ticker.server.settings import Settings

if TYPE_CHECKING:
    from ticker.cluster.redis import RedisBroker

DEFAULT_LIMITS = Limits()
LOG_LEVELS = ("debug", "info", "warning", "error")


def _positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        value = kind(text)
        if value <= 0:
            raise ValueError("must be positive")
        return value

    parse.__name__ = f"positive {kind.__name__}"
    return parse


def _non_negative_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise ValueError("must not be negative")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError("must not be negative")
    return value


def _redis_url(text: str) -> str:
    if not text.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("must start with redis://, rediss:// or unix://")
    return text


_redis_url.__name__ = "Redis URL (redis://host:port/db)"  # what argparse says of a bad one


class _EnvParser(argparse.ArgumentParser):
    """An ArgumentParser whose options also read ``TICKER_<OPTION>`` from the environment."""

    def add_option(
        self, flag: str, *, type: Callable[[str], Any] = str, default: Any = None, **kw: Any
    ) -> None:
        env = "TICKER_" + flag.lstrip("-").replace("-", "_").upper()
        raw = os.environ.get(env)
        if raw is not None:
            try:
                default = type(raw)
            except (TypeError, ValueError) as exc:
                self.error(f"environment variable {env}={raw!r} is invalid: {exc}")
            if kw.get("choices") and default not in kw["choices"]:
                self.error(f"environment variable {env}={raw!r}: choose from {kw['choices']}")
        help_text = kw.pop("help", "")
        kw["help"] = f"{help_text} [env {env}; default: %(default)s]"
        self.add_argument(flag, type=type, default=default, **kw)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ticker", description="Real-time market-data broadcaster over WebSocket."
    )
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_EnvParser
    )
    serve = commands.add_parser(
        "serve",
        help="run the broadcaster",
        description="Run the broadcaster: feeds -> topic bus -> WebSocket clients at /ws.",
    )
    assert isinstance(serve, _EnvParser)
    serve.add_option("--host", default="127.0.0.1", help="address to listen on")
    serve.add_option("--port", type=int, default=8080, help="TCP port to listen on")
    _add_feed_options(serve)
    _add_redis_options(serve, "join a cluster through this Redis (e.g. redis://host:6379/0)")
    serve.add_option(
        "--heartbeat",
        type=_positive(float),
        default=20.0,
        help="seconds of silence before the server sends a heartbeat frame",
    )
    serve.add_option(
        "--max-symbols",
        type=_positive(int),
        default=DEFAULT_LIMITS.max_symbols,
        help="most symbols one connection may subscribe to",
    )
    serve.add_option(
        "--queue-bytes",
        type=_positive(int),
        default=DEFAULT_LIMITS.queue_bytes,
        help="mode 'all': bytes a client may fall behind before it is closed with 4008",
    )
    serve.add_option(
        "--ops-per-s",
        type=_positive(int),
        default=DEFAULT_LIMITS.ops_per_s,
        help="operations per second a client may send before it gets rate_limited",
    )
    serve.add_option("--log-level", default="info", choices=LOG_LEVELS, help="how much to log")
    feed = commands.add_parser(
        "feed",
        help="run a feed into Redis, with no server (a cluster's publisher)",
        description="Run a feed and publish its ticks to Redis for every node of the cluster.",
    )
    assert isinstance(feed, _EnvParser)
    _add_feed_options(feed)
    _add_redis_options(feed, "the cluster's Redis (required), e.g. redis://host:6379/0")
    feed.add_option("--log-level", default="info", choices=LOG_LEVELS, help="how much to log")
    return parser


def _add_feed_options(parser: _EnvParser) -> None:
    """The same choices for both commands, so one TICKER_FEED works for either."""
    parser.add_option(
        "--feed",
        default="sim",
        choices=("sim", "none"),
        help="where ticks come from: sim = simulated; none (serve only) = only what comes "
        "through --redis",
    )
    parser.add_option(
        "--symbols", type=_positive(int), default=100, help="number of simulated symbols"
    )
    parser.add_option(
        "--rate",
        type=_positive(float),
        default=1000.0,
        help="simulated ticks per second, over all symbols",
    )
    parser.add_option(
        "--skew",
        type=_non_negative_float,
        default=0.0,
        help="Zipf exponent of symbol activity: 0 = even, 1.2 = a few symbols dominate",
    )
    parser.add_option(
        "--seed", type=int, default=None, help="random seed: the same seed, the same stream"
    )


def _add_redis_options(parser: _EnvParser, help_text: str) -> None:
    parser.add_option("--redis", type=_redis_url, default=None, help=help_text)
    parser.add_option(
        "--redis-shards",
        type=_non_negative_int,
        default=DEFAULT_SHARDS,
        help="channels symbols are spread over; 0 = one channel per symbol (docs/scaling.md)",
    )


def _feeds(args: argparse.Namespace) -> list[FeedAdapter]:
    from feeds.sim.adapter import SimulatedFeed

    if args.feed == "none":
        return []
    return [SimulatedFeed(args.symbols, args.rate, skew=args.skew, seed=args.seed)]


def settings_from(args: argparse.Namespace) -> Settings:
    limits = Limits(
        max_symbols=args.max_symbols, queue_bytes=args.queue_bytes, ops_per_s=args.ops_per_s
    )
    return Settings(host=args.host, port=args.port, heartbeat_s=args.heartbeat, limits=limits)


def serve(args: argparse.Namespace) -> int:
    from aiohttp import web

    from ticker.server.app import create_app
    from ticker.server.node import Node

    settings = settings_from(args)
    node = Node(settings, _feeds(args), broker=_broker(args))
    log = logging.getLogger("ticker")
    _log_feed(args, node.bus.epoch)
    web.run_app(
        create_app(node),
        host=settings.host,
        port=settings.port,
        shutdown_timeout=settings.close_grace_s + 1.0,
        access_log=None,
        print=lambda _: log.info(
            "listening on ws://%s:%d/ws (Ctrl-C to stop)", settings.host, settings.port
        ),
    )
    log.info("stopped")
    return 0


def _log_feed(args: argparse.Namespace, epoch: str) -> None:
    if args.feed == "none":
        logging.getLogger("ticker").info("no local feed: serving what comes through Redis")
        return
    logging.getLogger("ticker").info(
        "feed %s: %d symbols at %g ticks/s (skew %g, seed %s); epoch %s",
        args.feed,
        args.symbols,
        args.rate,
        args.skew,
        args.seed,
        epoch,
    )


def _broker(args: argparse.Namespace) -> RedisBroker | None:
    if args.redis is None:
        return None
    from ticker.cluster.redis import RedisBroker, RedisConfig

    return RedisBroker(RedisConfig(args.redis, shards=args.redis_shards))


def feed(args: argparse.Namespace) -> int:
    from ticker.cluster import publisher

    broker = _broker(args)
    assert broker is not None
    _log_feed(args, "from the cluster")
    return publisher.run(_feeds(args), broker)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "serve" and args.feed == "none" and args.redis is None:
        parser.error("--feed none serves only what comes through Redis: it needs --redis URL")
    if args.command == "feed" and args.feed == "none":
        parser.error("ticker feed runs a feed: --feed none is for ticker serve")
    if args.command == "feed" and args.redis is None:
        parser.error("ticker feed publishes to Redis: it needs --redis URL (or TICKER_REDIS)")
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if args.command == "serve":
        return serve(args)
    if args.command == "feed":
        return feed(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
