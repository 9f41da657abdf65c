"""The one door to the Redis relay: ``redis`` is an optional extra (``ticker[redis]``).

Everything else in ticker imports without it; only building a ``RedisBroker`` needs it,
and then its absence is an error the command line can say in one line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ticker.cluster.config import RedisConfig

if TYPE_CHECKING:
    from ticker.cluster.book_relay import BookRelay
    from ticker.cluster.book_wire import BookHost
    from ticker.cluster.broker import Broker
    from ticker.cluster.candle_store import CandleStore
    from ticker.cluster.redis import RedisBroker
    from ticker.core.candles import Candles

INSTALL_HINT = "pip install 'ticker[redis]'"


class RedisMissing(RuntimeError):
    """The ``redis`` package is not installed (or does not import)."""

    def __init__(self) -> None:
        super().__init__(f"--redis needs the redis package: {INSTALL_HINT}")


def redis_broker(config: RedisConfig) -> RedisBroker:
    """A relay for ``config``; ``RedisMissing`` if the ``redis`` package is not there."""
    try:
        from ticker.cluster.redis import RedisBroker
    except ImportError as exc:
        if (exc.name or "").partition(".")[0] != "redis":
            raise  # one of ours is broken: not a missing extra
        raise RedisMissing() from exc
    return RedisBroker(config)


def candle_store(broker: Broker, candles: Candles) -> CandleStore | None:
    """Where a node of a Redis cluster keeps its closed bars for late joiners; None for
    any other broker (checked by name first: without a Redis broker, no redis package)."""
    if broker.name != "redis":
        return None
    from ticker.cluster.candle_store import CandleStore
    from ticker.cluster.redis import RedisBroker

    assert isinstance(broker, RedisBroker)

    return CandleStore(broker.config, candles)


def book_relay(broker: Broker, books: BookHost | None) -> BookRelay | None:
    """What carries a node's books through the cluster's Redis (the same ``u`` and ``cs``
    on every node); None without books or without a Redis broker."""
    if books is None or broker.name != "redis":
        return None
    from ticker.cluster.book_relay import BookRelay
    from ticker.cluster.redis import RedisBroker

    assert isinstance(broker, RedisBroker)

    return BookRelay(broker.config, books, broker.origin)
