"""Command line: ``ticker serve`` wires settings, feeds and the server together;
``ticker feed`` runs feeds into Redis with no server (a cluster's publisher).

Every flag can also be given as a ``TICKER_*`` environment variable (``--queue-bytes`` is
``TICKER_QUEUE_BYTES``); a flag on the command line wins over the environment.
"""

from __future__ import annotations

import argparse
import logging
import os
import ssl
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from feeds.base import FeedAdapter
from ticker.cluster.wire import DEFAULT_SHARDS
from ticker.commands import convert, record, replay, security, tail, token
from ticker.commands.argtypes import non_negative, port, positive
from ticker.core.session import Limits
from ticker.recording.problems import RecordingError
from ticker.server import redact
from ticker.server.settings import Settings

if TYPE_CHECKING:
    from ticker.cluster.redis import RedisBroker

DEFAULT_LIMITS = Limits()
DEFAULT_SETTINGS = Settings()
DEFAULT_SIM_SYMBOLS = 100
LOG_LEVELS = ("debug", "info", "warning", "error")


def _switch(text: str) -> bool:
    word = text.strip().lower()
    if word in ("1", "true", "yes", "on"):
        return True
    if word in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("use 1 or 0 (true/false, yes/no, on/off)")


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
        """An option and its variable; ``action="store_true"`` makes a switch (env 1 or 0)."""
        env = "TICKER_" + flag.lstrip("-").replace("-", "_").upper()
        switch = kw.get("action") == "store_true"
        if switch:
            type, default = _switch, bool(default)
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
        if switch:
            self.add_argument(flag, default=default, **kw)
        else:
            self.add_argument(flag, type=type, default=default, **kw)

    def add_flag(self, flag: str, *, help: str) -> None:
        """An on/off option; ``TICKER_<OPTION>`` set to 1, true or yes turns it on."""
        env = "TICKER_" + flag.lstrip("-").replace("-", "_").upper()
        raw = os.environ.get(env, "")
        if raw.lower() not in ("", "0", "false", "no", "1", "true", "yes"):
            self.error(f"environment variable {env}={raw!r}: use 1/true/yes or 0/false/no")
        default = raw.lower() in ("1", "true", "yes")
        self.add_argument(flag, action="store_true", default=default, help=f"{help} [env {env}]")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ticker",
        description="Real-time market-data broadcaster over WebSocket, SSE and long polling.",
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
    serve.add_option("--port", type=port, default=8080, help="TCP port to listen on")
    _add_feed_options(serve)
    _add_redis_options(serve, "join a cluster through this Redis (e.g. redis://host:6379/0)")
    serve.add_option(
        "--heartbeat",
        type=positive(float),
        default=20.0,
        help="seconds of silence before the server sends a heartbeat frame",
    )
    serve.add_option(
        "--max-symbols",
        type=positive(int),
        default=DEFAULT_LIMITS.max_symbols,
        help="most symbols one connection may subscribe to",
    )
    serve.add_option(
        "--queue-bytes",
        type=positive(int),
        default=DEFAULT_LIMITS.queue_bytes,
        help="mode 'all': bytes a client may fall behind before it is closed with 4008",
    )
    serve.add_option(
        "--ops-per-s",
        type=positive(int),
        default=DEFAULT_LIMITS.ops_per_s,
        help="operations per second a client may send before it gets rate_limited",
    )
    serve.add_option(
        "--history",
        type=non_negative(int),
        default=DEFAULT_SETTINGS.history,
        help="ticks kept per symbol for gap-free resume (since, Last-Event-ID); 0 = none",
    )
    serve.add_option(
        "--poll-hold",
        type=positive(float),
        default=DEFAULT_SETTINGS.poll_hold_s,
        help="seconds a long poll waits for data before it answers empty",
    )
    serve.add_option(
        "--poll-session",
        type=positive(float),
        default=DEFAULT_SETTINGS.poll_session_s,
        help="seconds a long-polling session lives without a poll",
    )
    serve.add_option(
        "--max-http-sessions",
        type=positive(int),
        default=DEFAULT_SETTINGS.max_http_sessions,
        help="SSE streams and long-polling sessions open at once; more get 503",
    )
    serve.add_option(
        "--metrics-port",
        type=port,
        default=None,
        help="serve /metrics on this port instead of the main one (so it need not be public)",
    )
    serve.add_option(
        "--metrics-host",
        default=None,
        help="address of the metrics port (default: the same as --host)",
    )
    serve.add_option(
        "--no-metrics",
        action="store_true",
        help="no /metrics, no latency or event-loop lag measurement (to measure their cost)",
    )
    serve.add_option("--log-level", default="info", choices=LOG_LEVELS, help="how much to log")
    replay.add_record_options(serve)
    security.add_security_options(serve)
    feed = commands.add_parser(
        "feed",
        help="run a feed into Redis, with no server (a cluster's publisher)",
        description="Run a feed and publish its ticks to Redis for every node of the cluster.",
    )
    assert isinstance(feed, _EnvParser)
    _add_feed_options(feed)
    _add_redis_options(feed, "the cluster's Redis (required), e.g. redis://host:6379/0")
    feed.add_option("--log-level", default="info", choices=LOG_LEVELS, help="how much to log")
    convert.add_parser(commands)
    record.add_parser(commands)
    token.add_parser(commands)
    tail.add_parser(commands)
    return parser


def _add_feed_options(parser: _EnvParser) -> None:
    """The same choices for both commands, so one TICKER_FEED works for either."""
    parser.add_option(
        "--feed",
        type=replay.feed_spec,
        default="sim",
        help="where ticks come from: sim = simulated, replay:PATH[,PATH...] = a recording; "
        "none (serve only) = only what comes through --redis",
    )
    parser.add_option(
        "--symbols",
        type=replay.symbols_arg,
        default=None,
        help="sim: number of simulated symbols (100 if not given); "
        "replay: comma-separated symbols to replay (all if not given)",
    )
    parser.add_option(
        "--rate",
        type=positive(float),
        default=1000.0,
        help="simulated ticks per second, over all symbols",
    )
    parser.add_option(
        "--skew",
        type=non_negative(float),
        default=0.0,
        help="Zipf exponent of symbol activity: 0 = even, 1.2 = a few symbols dominate",
    )
    parser.add_option(
        "--seed", type=int, default=None, help="random seed: the same seed, the same stream"
    )
    replay.add_replay_options(parser)


def _add_redis_options(parser: _EnvParser, help_text: str) -> None:
    parser.add_option("--redis", type=_redis_url, default=None, help=help_text)
    parser.add_option(
        "--redis-shards",
        type=non_negative(int),
        default=DEFAULT_SHARDS,
        help="channels symbols are spread over; 0 = one channel per symbol (docs/scaling.md)",
    )


def _feeds(args: argparse.Namespace) -> list[FeedAdapter]:
    from feeds.sim.adapter import SimulatedFeed

    if args.feed == "none":
        return []
    if args.feed.startswith(replay.REPLAY_PREFIX):
        return [replay.replay_feed(args)]
    if isinstance(args.symbols, list):
        raise ValueError("--symbols: the simulated feed takes a number of symbols")
    symbols = args.symbols or DEFAULT_SIM_SYMBOLS
    return [SimulatedFeed(symbols, args.rate, skew=args.skew, seed=args.seed)]


def settings_from(args: argparse.Namespace) -> Settings:
    limits = Limits(
        max_symbols=args.max_symbols,
        queue_bytes=args.queue_bytes,
        ops_per_s=args.ops_per_s,
        max_message_bytes=args.max_message_bytes,
        idle_s=args.idle_timeout,
    )
    return Settings(
        host=args.host,
        port=args.port,
        heartbeat_s=args.heartbeat,
        limits=limits,
        metrics=not args.no_metrics,
        metrics_port=args.metrics_port,
        metrics_host=args.metrics_host,
        **security.security_settings(args),
        history=args.history,
        poll_hold_s=args.poll_hold,
        poll_session_s=args.poll_session,
        max_http_sessions=args.max_http_sessions,
    )


def serve(args: argparse.Namespace) -> int:
    from aiohttp import web

    from ticker.server.app import create_app
    from ticker.server.node import Node
    from ticker.server.recorder import BusRecorder
    from ticker.server.replays import ReplayPump

    try:
        settings = settings_from(args)
        tls = security.ssl_context(args)
    except (OSError, ValueError, ssl.SSLError) as exc:
        print(f"ticker serve: error: {exc}", file=sys.stderr)
        return 2
    try:
        feeds = _feeds(args)
    except (RecordingError, ValueError) as exc:
        print(f"ticker serve: error: {exc}", file=sys.stderr)
        return 2
    node = Node(settings, feeds, broker=_broker(args))
    log = logging.getLogger("ticker")
    _log_feed(args, feeds, node.bus.epoch)
    app = create_app(node)
    if args.record is not None:
        try:
            recorder = BusRecorder(
                node.bus,
                args.record,
                suffix=f".{args.record_format}",
                max_bytes=args.record_max_bytes,
            )
        except (OSError, ValueError) as exc:
            print(f"ticker serve: error: --record {args.record}: {exc}", file=sys.stderr)
            return 2
        recorder.attach(app)
    if args.replay_dir is not None:
        try:
            pump = ReplayPump(args.replay_dir)
        except ValueError as exc:
            print(f"ticker serve: error: --replay-dir: {exc}", file=sys.stderr)
            return 2
        node.replays = pump
        pump.attach(app)
    web.run_app(
        app,
        host=settings.host,
        port=settings.port,
        shutdown_timeout=settings.close_grace_s + 1.0,
        ssl_context=tls,
        access_log=None,  # none: a query string may hold a token (docs/security.md)
        print=lambda _: log.info(
            "listening on %s://%s:%d/ws, /sse and /poll (Ctrl-C to stop)",
            "ws" if tls is None else "wss",
            settings.host,
            settings.port,
        ),
    )
    log.info("stopped")
    return 0


def _log_feed(args: argparse.Namespace, feeds: list[FeedAdapter], epoch: str) -> None:
    log = logging.getLogger("ticker")
    if args.feed == "none":
        log.info("no local feed: serving what comes through Redis")
    elif args.feed == "sim":
        log.info(
            "feed %s: %d symbols at %g ticks/s (skew %g, seed %s); epoch %s",
            args.feed,
            len(feeds[0].symbols()),
            args.rate,
            args.skew,
            args.seed,
            epoch,
        )
    else:
        log.info("feed %s; epoch %s", args.feed, epoch)


def _broker(args: argparse.Namespace) -> RedisBroker | None:
    if args.redis is None:
        return None
    from ticker.cluster.config import RedisConfig
    from ticker.cluster.loader import RedisMissing, redis_broker

    try:
        return redis_broker(RedisConfig(args.redis, shards=args.redis_shards))
    except RedisMissing as exc:
        print(f"ticker: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def feed(args: argparse.Namespace) -> int:
    from ticker.cluster import publisher

    broker = _broker(args)
    assert broker is not None
    try:
        feeds = _feeds(args)
    except (RecordingError, ValueError) as exc:
        print(f"ticker feed: error: {exc}", file=sys.stderr)
        return 2
    _log_feed(args, feeds, "from the cluster")
    return publisher.run(feeds, broker)


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
        level=getattr(logging, getattr(args, "log_level", "info").upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    redact.install()
    if args.command == "serve":
        return serve(args)
    if args.command == "convert":
        return convert.run(args)
    if args.command == "record":
        return record.run(args)
    if args.command == "feed":
        return feed(args)
    if args.command == "token":
        return token.run(args)
    if args.command == "tail":
        return tail.run(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
