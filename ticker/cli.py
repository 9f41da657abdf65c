"""Command line: ``ticker serve`` wires settings, feeds and the server together;
``ticker feed`` runs feeds into Redis with no server (a cluster's publisher).

Every flag can also be given as a ``TICKER_*`` environment variable (``--queue-bytes`` is
``TICKER_QUEUE_BYTES``); a flag on the command line wins over the environment.
"""

from __future__ import annotations

import argparse
import logging
import socket
import ssl
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ticker.cluster.wire import DEFAULT_SHARDS
from ticker.commands import (
    convert,
    feeds,
    listen,
    publish,
    publishing,
    record,
    replay,
    security,
    tail,
    token,
    workers,
)
from ticker.commands.argtypes import non_negative, port, positive
from ticker.commands.envparser import EnvParser
from ticker.core.session import Limits
from ticker.recording.problems import RecordingError
from ticker.server import loops, redact
from ticker.server.settings import Settings, url_host

if TYPE_CHECKING:
    from ticker.cluster.redis import RedisBroker
    from ticker.core.bus import Bus
    from ticker.server.replays import ReplayPump

DEFAULT_LIMITS = Limits()
DEFAULT_SETTINGS = Settings()
LOG_LEVELS = ("debug", "info", "warning", "error")
LOOPBACK_OF = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}
"""A browser cannot open "every address": the dashboard URL of a wildcard host."""


def _redis_url(text: str) -> str:
    if not text.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("must start with redis://, rediss:// or unix://")
    return text


_redis_url.__name__ = "Redis URL (redis://host:port/db)"  # what argparse says of a bad one


def build_parser() -> argparse.ArgumentParser:
    """Every subcommand on one ``EnvParser`` tree, so each flag has its variable."""
    parser = EnvParser(
        prog="ticker",
        description="Real-time market-data broadcaster over WebSocket, SSE and long polling.",
    )
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=EnvParser
    )
    serve = commands.add_parser(
        "serve",
        help="run the broadcaster",
        description="Run the broadcaster: feeds -> topic bus -> WebSocket clients at /ws.",
        refuse_extras=True,
    )
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
        "--candle-history",
        type=non_negative(int),
        default=DEFAULT_SETTINGS.candle_history,
        help="closed bars kept per symbol and interval for SYMBOL@INTERVAL topics and "
        "/candles (56 bytes each); 0 = no candles",
    )
    serve.add_option(
        "--candle-update-ms",
        type=positive(int),
        default=round(DEFAULT_SETTINGS.candle_update_s * 1000),
        help="a candle topic's open bar is sent at most once per this many ms",
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
    serve.add_option(
        "--event-loop",
        default="auto",
        choices=loops.CHOICES,
        help="event loop: uvloop (auto: when installed, the default) or asyncio's own",
    )
    replay.add_record_options(serve)
    security.add_security_options(serve)
    publishing.add_publish_options(serve)
    workers.add_workers_option(serve)
    serve.checks += [_feed_flags_apply, _serve_flags_agree, workers.workers_agree]
    feed = commands.add_parser(
        "feed",
        help="run a feed into Redis, with no server (a cluster's publisher)",
        description="Run a feed and publish its ticks to Redis for every node of the cluster.",
    )
    _add_feed_options(feed)
    _add_redis_options(feed, "the cluster's Redis (required), e.g. redis://host:6379/0")
    feed.checks.append(_feed_flags_apply)
    feed.add_option("--log-level", default="info", choices=LOG_LEVELS, help="how much to log")
    convert.add_parser(commands)
    record.add_parser(commands)
    token.add_parser(commands)
    tail.add_parser(commands)
    publish.add_parser(commands)
    return parser


def _add_feed_options(parser: EnvParser) -> None:
    """The same choices for both commands, so one TICKER_FEED works for either."""
    parser.add_option(
        "--feed",
        type=feeds.feed_arg,
        env_type=feeds.feeds_env,
        action=feeds.Repeated,
        default=feeds.DEFAULT,
        metavar="NAME[:ARGS]",
        help="where ticks come from, repeatable (several feeds, each its own symbols): "
        "sim = simulated, replay:PATH[,PATH...] = a recording, an installed plugin "
        "(entry point group ticker.feeds) or package.module:factory[:ARGS] (docs/feeds.md); "
        "none (serve only) = only what comes through --redis; the variable takes several "
        "separated by spaces",
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
    parser.add_option(
        "--sim-books",
        type=non_negative(int),
        default=feeds.DEFAULT_SIM_BOOKS,
        metavar="N",
        help="sim: the first N simulated symbols have order books (SYMBOL@book10...); 0 = none",
    )
    parser.add_option(
        "--book-interval-ms",
        type=non_negative(int),
        default=round(DEFAULT_SETTINGS.book_interval_s * 1000),
        help="the feeds' books are applied (and book topics get one merged delta) once per "
        "this many ms at most; 0 = no books",
    )
    replay.add_replay_options(parser)
    feeds.add_exchange_options(parser)


def _add_redis_options(parser: EnvParser, help_text: str) -> None:
    parser.add_option("--redis", type=_redis_url, default=None, help=help_text)
    parser.add_option(
        "--redis-shards",
        type=non_negative(int),
        default=DEFAULT_SHARDS,
        help="channels symbols are spread over; 0 = one channel per symbol (docs/scaling.md)",
    )


SIM_ONLY = ("rate", "skew", "seed", "sim_books")
"""The options only the simulated feed reads."""
REPLAY_ONLY = (
    *("speed", "loop", "keep_time", "start", "end"),
    *("format", "columns", "time_unit", "on_error", "sort"),  # how to read the files
)
"""The options only a replay feed reads."""


def _feed_flags_apply(args: argparse.Namespace, parser: EnvParser) -> str | None:
    """A flag no chosen feed would read (``--speed`` with sim, ``--rate`` with a plugin,
    which takes its options in its ARGS) is refused, not dropped."""
    chosen: feeds.Feeds = args.feed
    if problem := feeds.mix_problem(chosen):
        return problem
    names = chosen.names()
    foreign: list[tuple[str, str]] = []
    if "sim" not in names:
        foreign += [(dest, "sim") for dest in SIM_ONLY]
    if "replay" not in names:
        foreign += [(dest, "replay:PATH") for dest in REPLAY_ONLY]
    foreign += feeds.foreign_exchange_flags(names)
    if isinstance(args.symbols, list) and "replay" not in names:
        foreign.append(("symbols", "replay:PATH (the simulated feed takes a number of symbols)"))
    if isinstance(args.symbols, int) and "sim" not in names:
        foreign.append(("symbols", "sim (a replay takes a list of symbols)"))
    for dest, owner in foreign:
        flag = parser.given(args, dest)
        if flag:
            return f"{flag} is for --feed {owner}, not {chosen.flags()}: drop it"
    return None


def _serve_flags_agree(args: argparse.Namespace, parser: EnvParser) -> str | None:
    """Flags that mean nothing without another one, or clash with it."""
    if args.feed.names() == {"none"} and args.redis is None and not args.publish:
        return (
            "--feed none serves only what comes through Redis: it needs --redis URL"
            " (or --publish, to serve what publishers send)"
        )
    for dest, needs in (
        ("metrics_host", "metrics_port"),
        ("record_format", "record"),
        ("record_max_bytes", "record"),
    ):
        flag = parser.given(args, dest)
        if flag and parser.given(args, needs) is None:
            other = parser.flag(needs)
            return f"{flag} goes with {other}: give {other} too, or drop it"
    if args.no_metrics and args.metrics_port is not None:
        return "--metrics-port serves /metrics, which --no-metrics turns off: drop one"
    if args.metrics_port == args.port and (args.metrics_host or args.host) == args.host:
        return (
            f"--metrics-port {args.port} is --port too: give /metrics a port of its own, "
            "or drop --metrics-port to serve /metrics on --port"
        )
    return None


def settings_from(args: argparse.Namespace) -> Settings:
    """The parsed flags as one frozen ``Settings``: the server never reads argparse."""
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
        candle_history=args.candle_history,
        candle_update_s=args.candle_update_ms / 1000,
        book_interval_s=args.book_interval_ms / 1000,
        record_dir=args.record,
        poll_hold_s=args.poll_hold,
        poll_session_s=args.poll_session,
        max_http_sessions=args.max_http_sessions,
        publish=publishing.publish_limits(args),
    )


def serve(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """Check and take everything the server needs before it logs a line: a mistake is
    one line on stderr and exit 2, with nothing started. ``argv`` is the command line
    itself: with ``--workers``, each worker runs it again."""
    from aiohttp import web

    from ticker.server.app import create_app
    from ticker.server.node import Node
    from ticker.server.recorder import BusRecorder

    worker = workers.worker_of()
    if worker is None and args.workers > 1:
        return _serve_workers(args, argv)
    try:
        loop_name = loops.resolve(args.event_loop)
        settings = settings_from(args)
        tls = security.ssl_context(args)
        built: feeds.Built = []
        metrics_sockets: list[socket.socket] = []
        if worker is not None:
            settings = worker.settings(settings)
            owners = worker.owners(settings, tls=tls is not None)
            sockets = worker.sockets()
            node = Node(settings, broker=worker.broker())
        else:
            built = feeds.build(args)
            sockets = listen.bind(args.host, args.port, host_flag="--host", port_flag="--port")
            metrics_sockets = _metrics_sockets(args, settings)
            node = Node(settings, feeds.adapters(built), broker=_broker(args))
            node.on_fatal = feeds.stop_serving
        app = create_app(node, metrics_sockets, metrics_port_here=worker is None)
        if worker is not None:
            worker.mark(app)
            owners.attach(app)
        if args.record is not None:
            try:
                recorder = BusRecorder(
                    node.bus,
                    args.record,
                    suffix=f".{args.record_format}",
                    max_bytes=args.record_max_bytes,
                    books=node.books,
                )
            except (FileExistsError, NotADirectoryError):
                raise ValueError(f"--record {args.record}: not a directory") from None
            except (OSError, ValueError) as exc:
                why = exc.strerror if isinstance(exc, OSError) else exc
                raise ValueError(f"--record {args.record}: {why}") from None
            recorder.attach(app)
        if (pump := _replays(args)) is not None:
            node.replays = pump
            pump.attach(app)
    except (OSError, ValueError, ssl.SSLError, RecordingError, listen.ListenError) as exc:
        print(f"ticker serve: error: {exc}", file=sys.stderr)
        return 2
    log = logging.getLogger("ticker")
    if worker is None:
        feeds.log_feeds(args, built, node.bus.epoch)
        _log_setup(args, settings)
    scheme = "http" if tls is None else "https"
    where = f"{url_host(settings.host)}:{settings.port}"
    page = f"{url_host(LOOPBACK_OF.get(settings.host, settings.host))}:{settings.port}"
    log.info("event loop: %s", loop_name)
    web.run_app(
        app,
        loop=loops.new_loop(loop_name),
        sock=sockets,
        shutdown_timeout=settings.close_grace_s + 1.0,
        ssl_context=tls,
        access_log=None,  # none: a query string may hold a token (docs/security.md)
        print=lambda _: log.info(
            "listening on %s://%s/ws, /sse and /poll; dashboard at %s://%s/ (Ctrl-C to stop)",
            "ws" if tls is None else "wss",
            where,
            scheme,
            page,
        ),
    )
    log.info("stopped")
    return node.exit_status


def _replays(args: argparse.Namespace) -> ReplayPump | None:
    """``--replay-dir``'s pump, or None without it; a bad directory is a ``ValueError``."""
    from ticker.server.replays import ReplayPump

    if args.replay_dir is None:
        return None
    try:
        return ReplayPump(args.replay_dir)
    except ValueError as exc:
        raise ValueError(f"--replay-dir: {exc}") from None


def _metrics_sockets(args: argparse.Namespace, settings: Settings) -> list[socket.socket]:
    """``--metrics-port``'s sockets, bound now (a port in use is one line), or none."""
    if not settings.metrics or args.metrics_port is None:
        return []
    return listen.bind(
        args.metrics_host or args.host,
        args.metrics_port,
        host_flag="--metrics-host" if args.metrics_host else "--host",
        port_flag="--metrics-port",
    )


def _serve_workers(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """``--workers N``: this process runs the feeds and N workers serve the clients."""
    import asyncio

    from ticker.core.bus import Bus
    from ticker.server import primary

    try:
        loop_name = loops.resolve(args.event_loop)
        settings = settings_from(args)
        security.ssl_context(args)  # the same
        _replays(args)  # each worker loads its own; a mistake is said once, here
        built = feeds.build(args)
        groups = listen.bind_copies(
            args.host, args.port, args.workers, host_flag="--host", port_flag="--port"
        )
        metrics_sockets = _metrics_sockets(args, settings)
    except (OSError, ValueError, ssl.SSLError, RecordingError, listen.ListenError) as exc:
        print(f"ticker serve: error: {exc}", file=sys.stderr)
        return 2
    bus = Bus(history=settings.history)
    feeds.log_feeds(args, built, bus.epoch)
    _log_setup(args, settings)
    command = [sys.executable, "-m", "ticker", *argv]
    log = logging.getLogger("ticker")
    log.info("event loop: %s", loop_name)
    with asyncio.Runner(loop_factory=lambda: loops.new_loop(loop_name)) as runner:
        runner.run(
            primary.serve(settings, bus, feeds.adapters(built), command, groups, metrics_sockets)
        )
    log.info("stopped")
    return 0


def _log_setup(args: argparse.Namespace, settings: Settings) -> None:
    """What a reader of the log wants to know first: who may connect, where ticks go."""
    log = logging.getLogger("ticker")
    if settings.auth is None:
        log.info("auth off: any client may connect (--auth-secret or --auth-public-key turn it on)")
    elif args.auth_secret:
        log.info("auth on: clients need HS256 tokens signed with --auth-secret")
    else:
        log.info(
            "auth on: clients need %s tokens signed by the private half of %s",
            settings.auth.algorithms[0],
            args.auth_public_key,
        )
    if args.record is not None:
        log.info(
            "recording every tick into %s (%s files of up to %d bytes)",
            args.record,
            args.record_format,
            args.record_max_bytes,
        )
    if args.replay_dir is not None:
        log.info("clients may replay the recordings in %s", args.replay_dir)


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
    """``ticker feed``: a cluster's publisher, the feed with no server in front of it."""
    from ticker.cluster import publisher

    broker = _broker(args)
    assert broker is not None
    try:
        built = feeds.build(args)
    except (RecordingError, ValueError) as exc:
        print(f"ticker feed: error: {exc}", file=sys.stderr)
        return 2
    feeds.log_feeds(args, built, "from the cluster")
    from feeds.supervisor import book_resyncs
    from ticker.server.books import BookService

    adapters = feeds.adapters(built)

    def books(bus: Bus) -> BookService:  # the feeds' books, numbered here
        service = BookService(interval_s=args.book_interval_ms / 1000, status=bus.status.set)
        service.on_crossed.append(book_resyncs(adapters))
        return service

    return publisher.run(adapters, broker, books if args.book_interval_ms else None)


def main(argv: Sequence[str] | None = None) -> int:
    """The ``ticker`` entry point: parse, log to stderr, run one subcommand, exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "feed" and "none" in args.feed.names():
        parser.error("ticker feed runs a feed: --feed none is for ticker serve")
    if args.command == "feed" and args.redis is None:
        parser.error("ticker feed publishes to Redis: it needs --redis URL (or TICKER_REDIS)")
    worker = workers.worker_of()
    logging.basicConfig(
        level=getattr(logging, getattr(args, "log_level", "info").upper()),
        format="%(asctime)s %(levelname)s "
        + (f"worker {worker.index} " if worker else "")
        + "%(name)s: %(message)s",
        stream=sys.stderr,
    )
    redact.install()
    if args.command == "serve":
        return serve(args, sys.argv[1:] if argv is None else argv)
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
    if args.command == "publish":
        return publish.run(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
