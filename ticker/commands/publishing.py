"""``ticker serve``'s publishing flags: ``--publish`` and the bounds every publisher meets.

Off by default: a server that takes ticks from the network must be asked to. Without an
auth key only loopback clients may publish; with one, a token needs a ``pub`` claim
(docs/publishing.md).
"""

from __future__ import annotations

import argparse

from ticker.commands.argtypes import positive
from ticker.commands.envparser import EnvParser
from ticker.core.publish import PublishLimits

DEFAULT = PublishLimits()


def add_publish_options(parser: EnvParser) -> None:
    """The flags, each with its ``TICKER_*`` variable."""
    parser.add_flag(
        "--publish",
        help="accept ticks at POST /publish (without an auth key: from loopback clients only)",
    )
    add = parser.add_option
    add(
        "--max-publish-ticks",
        type=positive(int),
        default=DEFAULT.max_ticks,
        help="ticks one publish request may carry; more get 413",
    )
    add(
        "--max-publish-bytes",
        type=positive(int),
        default=DEFAULT.max_bytes,
        help="bytes of one publish request body; more get 413",
    )
    add(
        "--publish-ticks-per-s",
        type=positive(float),
        default=DEFAULT.ticks_per_s,
        help="ticks per second each publisher may publish; more get 429",
    )
    add(
        "--max-universe",
        type=positive(int),
        default=DEFAULT.max_universe,
        help="symbols the server may know in all; a publish adding more gets universe_full",
    )
    add(
        "--idempotency-ttl",
        type=positive(float),
        default=DEFAULT.idempotency_ttl_s,
        help="seconds an Idempotency-Key is remembered",
    )


def publish_limits(args: argparse.Namespace) -> PublishLimits | None:
    """The ``Settings.publish`` value: None unless ``--publish``."""
    if not args.publish:
        return None
    return PublishLimits(
        max_ticks=args.max_publish_ticks,
        max_bytes=args.max_publish_bytes,
        ticks_per_s=args.publish_ticks_per_s,
        max_universe=args.max_universe,
        idempotency_ttl_s=args.idempotency_ttl,
    )
