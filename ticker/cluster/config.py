"""What configures the Redis relay, importable without the ``redis`` package."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from ticker.cluster.wire import DEFAULT_SHARDS


@dataclass(frozen=True, slots=True)
class RedisConfig:
    """One node's link to the cluster's Redis (``--redis`` and ``--redis-shards``)."""

    url: str
    shards: int = DEFAULT_SHARDS
    """Channels symbols are hashed onto; 0 = one channel per symbol (see docs/scaling.md)."""
    prefix: str = "ticker"
    """Namespace of every key and channel: several clusters can share one Redis."""
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    timeout: float = 5.0
    """Connecting, and any command (a Redis that stops answering is a lost link)."""
    ping_interval: float = 5.0
    """An idle link is checked this often."""
    max_pending_bytes: int = 8 * 1024 * 1024
    """Ticks waiting to be published; past this (Redis too slow) they are dropped."""


def redacted(url: str) -> str:
    """The URL without its password, for logs and ``/readyz``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
